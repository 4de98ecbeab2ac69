"""The verdict: does a run (or one capacity step) meet the SLO?

Reply mode (an ASR is running): p95 of speech end -> first reply audio byte <= slo_ms.
Ingest mode (`--asr none`: VAD events only, no replies): event-loop lag p99 <= max_loop_lag_ms, and
p95 speech end -> transcript.final <= slo_ms: with TCP backpressure a server that falls behind drops
no frame, it processes them late, and the late endpoint is how that shows.
Both: no bad turn, no error event, no unexpected disconnect, no dropped frame. An overload run
(`--allow-refusals`, more sessions than the server carries) judges the sessions the server admitted:
a session refused at connect with server_busy (its error and its 1013 close) is counted, not failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_LOOP_LAG_MS = 20.0
SLO_MARGIN_MS = 500  # default SLO: the session's min_silence_ms + this (issue 5)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    value: float | None  # None: not measured / not reported
    limit: float
    ok: bool
    note: str = ""


@dataclass(slots=True)
class Verdict:
    mode: str  # reply | ingest
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    def failures(self) -> list[str]:
        return [
            f"{c.name}: {_fmt(c.value)} > {_fmt(c.limit)}{' (' + c.note + ')' if c.note else ''}"
            for c in self.checks
            if not c.ok
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "passed": self.passed,
            "checks": [
                {"name": c.name, "value": c.value, "limit": c.limit, "ok": c.ok, "note": c.note} for c in self.checks
            ],
        }


def _fmt(v: float | None) -> str:
    return "not reported" if v is None else f"{v:.0f}" if abs(v) >= 10 else f"{v:.3g}"


def default_slo_ms(session_config: dict[str, Any]) -> float:
    silence = session_config.get("min_silence_ms")
    return float((silence if isinstance(silence, int) else 500) + SLO_MARGIN_MS)


def dropped_frames(summary: dict[str, Any], balance: bool) -> tuple[float | None, str]:
    """Frames lost on the way: the server's dropped counter, and with `balance` (only exact once every
    session has closed) frames the harness sent that the server never processed (or received)."""
    server = summary.get("server", {})
    dropped = server.get("frames_dropped")
    lost = None
    note = ""
    if balance:
        processed, received = server.get("frames_processed"), server.get("frames_received")
        seen = processed if processed is not None else received
        if seen is not None:
            lost = abs(summary["frames_sent"] - seen)
            note = "sent vs processed" if processed is not None else "sent vs received"
    if dropped is None and lost is None:
        return None, "frame counters not reported"
    return max(dropped or 0.0, lost or 0.0), note


def _at_most(name: str, value: float | None, limit: float, missing: str) -> Check:
    """A measured value within its limit; not measured at all is a failure, saying what is missing."""
    return Check(name, value, limit, value is not None and value <= limit, "" if value is not None else missing)


def evaluate(
    summary: dict[str, Any],
    reply_mode: bool,
    slo_ms: float,
    max_loop_lag_ms: float = DEFAULT_MAX_LOOP_LAG_MS,
    frame_balance: bool = True,
    allow_refusals: bool = False,
) -> Verdict:
    verdict = Verdict("reply" if reply_mode else "ingest")
    checks = verdict.checks
    client, server = summary["client_ms"], summary.get("server", {})
    if reply_mode:
        p95 = client["first_audio_ms"].get("p95")
        checks.append(_at_most("p95 speech end -> first audio (ms)", p95, slo_ms, "no reply audio measured"))
    else:
        lag = server.get("loop_lag_p99_ms")
        checks.append(_at_most("loop lag p99 (ms)", lag, max_loop_lag_ms, "hark_event_loop_lag_seconds not reported"))
        final_p95 = client["final_ms"].get("p95")
        checks.append(_at_most("p95 speech end -> final (ms)", final_p95, slo_ms, "no transcript.final measured"))
    turns = summary["turns"]
    checks.append(Check("turns completed", float(turns), 1, turns > 0, "no turn completed" if not turns else ""))
    checks.append(Check("bad turns", float(summary["bad_turns"]), 0, summary["bad_turns"] == 0))
    errors = float(summary["error_events"])
    disconnects = float(sum(summary["disconnects"].values()))
    if allow_refusals:
        refused = float(summary.get("sessions_refused", 0))
        admitted = float(summary.get("sessions_started", 0)) - refused
        checks.append(Check("sessions admitted", admitted, 1, admitted > 0, "every session was refused"))
        errors -= min(refused, float(summary.get("errors_by_code", {}).get("server_busy", 0)))
        disconnects -= min(refused, float(summary["disconnects"].get("1013 server_busy", 0)))
    checks.append(Check("error events", errors, 0, errors == 0))
    checks.append(Check("unexpected disconnects", disconnects, 0, disconnects == 0))
    dropped, note = dropped_frames(summary, frame_balance)
    # not reported: cannot be checked, so it cannot fail the run; the report says so
    checks.append(Check("dropped frames", dropped, 0, dropped is None or dropped == 0, note))
    return verdict
