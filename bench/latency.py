"""End-to-end turn latency against a running hark-server, seen through the wire protocol only.

Each session streams corpus clips in 100 ms PCM16 frames at real-time pace, then keeps streaming
silence (as a live microphone would) until the turn has settled: every utterance the server found
has its `transcript.final` and every response its `response.done`. Pacing at real time matters:
the server measures latency from the moment the end-of-speech audio *arrived*, so audio sent
faster than real time would hide the time the endpointer waits for silence.

Primary numbers are the server's `response.done.metrics` (final_ms, first_token_ms, first_audio_ms,
in ms from the end of user speech). Beside them, the client's view of the same intervals: from the
moment it sent the frame that carried the end of speech (the `speech.stopped` audio position) to
the arrival of `transcript.final`, of the first `response.text.delta`, and of the first audio frame.

The events are read by `hark.protocol`'s conversation tracker, and each utterance becomes a
`hark.loadtest` TurnRecord (the harness's statistics summarize them): beside those, only the
standard library and websockets. It is a client like any other.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from hark.loadtest.analysis import STAGES, turn_summary
from hark.loadtest.reader import follow
from hark.loadtest.recorder import TurnRecord, measured_turn
from hark.loadtest.scenario import load_clip
from hark.protocol import ConversationError, ConversationTracker, ProtocolError, Turn, Utterance, decode_server
from hark.protocol import events as ev

CLIPS = ("en_goforward_command", "en_vosk_digits", "en_librivox_sense_0920")
SAMPLE_RATE = 16000
FRAME_MS = 100
FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000 * 2
SILENCE = b"\0" * FRAME_BYTES
# silence streamed after a clip before a turn may count as settled: above the server's default
# min_silence_ms (500), so the endpoint is always found by the VAD, never cut short by us
MIN_TAIL_MS = 1000
METRICS = STAGES  # final_ms, first_token_ms, first_audio_ms: the server's, from response.done.metrics
CLIENT_METRICS = tuple(f"client_{m}" for m in METRICS)
QUANTILES = (50, 90, 99)  # what `make bench` reports (the harness uses p95)
ANSWERED = ("completed", "cancelled")


@dataclass(slots=True)
class Occupancy:
    """Sessions of a phase open right now (one event loop, so a plain counter)."""

    open: int = 0


@dataclass(slots=True)
class SessionTrace:
    """Everything one connection saw, with arrival times on this process's monotonic clock."""

    index: int
    occupancy: Occupancy = field(default_factory=Occupancy)
    tracker: ConversationTracker = field(default_factory=ConversationTracker)
    clips_sent: list[tuple[str, float]] = field(default_factory=list)  # (clip, when its first frame went out)
    clip_of: dict[int, int] = field(default_factory=dict)  # turn id -> index in clips_sent of the clip it cut
    active_at_stop: dict[int, int] = field(default_factory=dict)  # turn id -> sessions open at its speech.stopped
    errors: list[str] = field(default_factory=list)
    sent_ends: list[int] = field(default_factory=list)  # end sample of each frame sent, increasing
    sent_at: list[float] = field(default_factory=list)  # when that frame was handed to the socket
    max_send_lag_ms: float = 0.0
    timeouts: int = 0
    min_silence_ms: int | None = None  # the endpointing silence of this session, from session.created
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def sent_time_of(self, audio_ms: int) -> float | None:
        """When the frame carrying input-audio position `audio_ms` was sent (the server's clock is ours)."""
        if not self.sent_ends:
            return None
        i = bisect.bisect_left(self.sent_ends, audio_ms * SAMPLE_RATE // 1000)
        return self.sent_at[min(i, len(self.sent_at) - 1)]

    def spoken(self, first_turn: int = 0) -> list[tuple[Turn, Utterance]]:
        """The utterances the server found, from turn `first_turn` on."""
        return [
            (t, t.utterance) for t in self.tracker.turns.values() if t.utterance is not None and t.turn_id >= first_turn
        ]

    def settled(self, first_turn: int) -> bool:
        """All utterances since `first_turn` are final and all their responses are done."""
        mine = self.spoken(first_turn)
        return bool(mine) and all(turn.settled for turn, _ in mine)  # none yet: the server has not reached our speech


async def _read(conn: ClientConnection, trace: SessionTrace) -> None:
    def on_event(event: ev.ServerEvent, at: float) -> None:
        if isinstance(event, ev.SpeechStarted):
            trace.clip_of[event.turn_id] = len(trace.clips_sent) - 1
        elif isinstance(event, ev.SpeechStopped):
            trace.active_at_stop[event.turn_id] = trace.occupancy.open
        elif isinstance(event, ev.Error):
            trace.errors.append(event.code)

    def on_refused(exc: ProtocolError) -> None:  # counted, and the reading goes on: the report lists them
        kind = f"violation:{exc.violation.value}" if isinstance(exc, ConversationError) else f"undecodable:{exc.code}"
        trace.errors.append(kind)

    try:
        await follow(conn, trace.tracker, on_event, on_refused)
    finally:
        trace.closed.set()


async def send_at(conn: ClientConnection, frame: bytes, due: float) -> tuple[float, float]:
    """Send `frame` at `due` (real-time pacing on an absolute schedule, so delays do not accumulate);
    returns when it went out and how late, in ms."""
    delay = due - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    now = time.monotonic()
    await conn.send(frame)
    return now, (now - due) * 1000.0


async def _send_frame(conn: ClientConnection, trace: SessionTrace, frame: bytes, due: float) -> float:
    now, late_ms = await send_at(conn, frame, due)
    trace.max_send_lag_ms = max(trace.max_send_lag_ms, late_ms)
    trace.sent_ends.append((trace.sent_ends[-1] if trace.sent_ends else 0) + len(frame) // 2)
    trace.sent_at.append(now)
    return due + len(frame) / 2 / SAMPLE_RATE


async def run_session(
    url: str,
    index: int,
    clips: Sequence[tuple[str, bytes]],
    turn_timeout_s: float = 60.0,
    occupancy: Occupancy | None = None,
) -> SessionTrace:
    """One connection: each clip, then silence until the turn settles (or `turn_timeout_s` passes)."""
    trace = SessionTrace(index, occupancy or Occupancy())
    async with connect(url, open_timeout=30, close_timeout=5, max_size=16 << 20, compression=None) as conn:
        first = decode_server(await asyncio.wait_for(conn.recv(), 30))
        if not isinstance(first, ev.SessionCreated):
            raise RuntimeError(f"session {index}: expected session.created, got {first!r}")
        trace.min_silence_ms = _int(first.config.get("min_silence_ms"))
        reader = asyncio.create_task(_read(conn, trace))
        trace.occupancy.open += 1
        try:
            due = time.monotonic()
            for name, pcm in clips:
                trace.clips_sent.append((name, max(due, time.monotonic())))
                first_turn = trace.tracker.last_turn_id + 1
                for i in range(0, len(pcm), FRAME_BYTES):
                    frame = pcm[i : i + FRAME_BYTES]
                    due = await _send_frame(conn, trace, frame + b"\0" * (FRAME_BYTES - len(frame)), due)
                deadline = time.monotonic() + turn_timeout_s
                tail_ms = 0
                while tail_ms < MIN_TAIL_MS or not trace.settled(first_turn):
                    if trace.closed.is_set():
                        raise RuntimeError(f"session {index}: server closed the connection ({trace.errors})")
                    if time.monotonic() > deadline:
                        trace.timeouts += 1
                        break
                    due = await _send_frame(conn, trace, SILENCE, due)
                    tail_ms += FRAME_MS
        finally:
            trace.occupancy.open -= 1
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    return trace


def records(trace: SessionTrace, t0: float) -> list[TurnRecord]:
    """One record per utterance the server found (a clip can be cut into several), times since `t0`."""
    spoken = trace.spoken()
    per_clip = Counter(trace.clip_of.get(turn.turn_id, -1) for turn, _ in spoken)
    out: list[TurnRecord] = []
    for n, (turn, u) in enumerate(spoken):
        clip_index = trace.clip_of.get(turn.turn_id, -1)
        clip, clip_started = trace.clips_sent[clip_index] if clip_index >= 0 else ("", u.started_at)
        reply = turn.response
        done = reply.done if reply is not None else None
        if u.final is None or (u.text and done is None):
            status = "timeout"
        elif done is None:
            status = "no_text"  # an empty transcript: no response follows
        else:
            status = done.status
        out.append(
            measured_turn(
                session=trace.index,
                turn=n,
                clip=clip,
                status=status,
                t0=t0,
                started_at=clip_started,
                speech_end=trace.sent_time_of(u.stop_audio_ms) if u.stop_audio_ms is not None else None,
                active_sessions=trace.active_at_stop.get(turn.turn_id, 0),
                utterances=per_clip[clip_index],
                spoken=u,
                reply=reply,
                errors=[e.code for e in reply.errors] if reply is not None else (),
            )
        )
    return out


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def summarize(turns: Sequence[TurnRecord]) -> dict[str, Any]:
    """Percentiles of every metric over all responses that reached that point.

    A reply cut by barge-in (the digits clip pauses between number groups) still has a valid
    final_ms, and a first_audio_ms if it got that far; utterances with no response are counted only.
    """
    stages = turn_summary([t for t in turns if t.status in ANSWERED], QUANTILES)
    metrics = {**stages["server_ms"], **{f"client_{m}": p for m, p in stages["client_ms"].items()}}
    return {"utterances": len(turns), "statuses": dict(Counter(t.status for t in turns)), "metrics": metrics}


def _plan(turns: int, offset: int) -> list[str]:
    return [CLIPS[(offset + i) % len(CLIPS)] for i in range(turns)]


def sequential_plans(sessions: int, turns: int) -> list[list[str]]:
    """`turns` clips (cycling through CLIPS) dealt round-robin over `sessions` sessions."""
    plan = _plan(turns, 0)
    return [p for p in (plan[i::sessions] for i in range(sessions)) if p]


def concurrent_plans(concurrency: int, turns_each: int) -> list[list[str]]:
    """Each session starts at a different clip, so endpoints of long and short clips interleave."""
    return [_plan(turns_each, i) for i in range(concurrency)]


async def run_phase(
    url: str, phase: str, plans: Sequence[Sequence[str]], concurrent: bool, stagger_s: float = 0.37
) -> dict[str, Any]:
    """Run one session per plan, one after another or all at once; returns records and a summary."""
    audio = {name: load_clip(name) for plan in plans for name in plan}
    started = time.monotonic()
    occupancy = Occupancy()
    traces: list[SessionTrace] = []
    if concurrent:

        async def staggered(i: int, plan: Sequence[str]) -> SessionTrace:
            # real devices do not start in lockstep; staggering spreads the endpoints apart
            await asyncio.sleep(i * stagger_s)
            return await run_session(url, i, [(n, audio[n]) for n in plan], occupancy=occupancy)

        traces = list(await asyncio.gather(*(staggered(i, p) for i, p in enumerate(plans))))
    else:
        for i, plan in enumerate(plans):
            traces.append(await run_session(url, i, [(n, audio[n]) for n in plan], occupancy=occupancy))
    turns = [r for t in traces for r in records(t, started)]
    return {
        "phase": phase,
        "sessions": len(plans),
        "concurrent": concurrent,
        "clips_sent": sum(len(p) for p in plans),
        "audio_sent_s": sum(t.sent_ends[-1] for t in traces if t.sent_ends) / SAMPLE_RATE,
        "min_silence_ms": next((t.min_silence_ms for t in traces if t.min_silence_ms is not None), None),
        "wall_s": time.monotonic() - started,
        "errors": [e for t in traces for e in t.errors],
        "timeouts": sum(t.timeouts for t in traces),
        "max_send_lag_ms": max((t.max_send_lag_ms for t in traces), default=0.0),
        **summarize(turns),
        "turns": [asdict(t) for t in turns],
    }


async def run_latency(
    url: str, sessions: int = 4, turns: int = 10, concurrency: int = 8, concurrent_turns: int = 2, limit_s: float = 300
) -> dict[str, Any]:
    """Sequential phase: `turns` clips dealt over `sessions` sessions run one after another.
    Concurrent phase: `concurrency` sessions at once, `concurrent_turns` clips each."""
    check_loopback(url)
    async with asyncio.timeout(limit_s):  # a stuck server must not hang the caller
        return {
            "url": url,
            "sequential": await run_phase(url, "sequential", sequential_plans(sessions, turns), concurrent=False),
            "concurrent": await run_phase(url, "concurrent", concurrent_plans(concurrency, concurrent_turns), True),
        }


def check_loopback(url: str) -> None:
    if not url.startswith(("ws://127.0.0.1:", "ws://localhost:", "ws://[::1]:")):
        raise ValueError(f"{url}: the latency benchmark only talks to a loopback server")


def latency_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows (with a header) shared by the console table and the markdown report."""
    rows = [["run", "metric", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"]]
    for key in ("sequential", "concurrent"):
        phase = result[key]
        label = f"{key} ({phase['sessions']} session{'s' if phase['sessions'] != 1 else ''})"
        for name in METRICS + CLIENT_METRICS:
            p = phase["metrics"][name]
            if not p:
                rows.append([label, name, "0", "-", "-", "-", "-"])
                continue
            rows.append([label, name, f"{p['n']:.0f}", *(f"{p[k]:.0f}" for k in ("p50", "p90", "p99", "max"))])
    return rows


def print_rows(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = (c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        print("  ".join(cells))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def print_phase_notes(result: dict[str, Any]) -> None:
    for key in ("sequential", "concurrent"):
        p = result[key]
        print(
            f"{key}: {p['clips_sent']} clips, {p['utterances']} utterances {p['statuses']}, "
            f"{p['wall_s']:.1f} s, timeouts {p['timeouts']}, errors {p['errors'] or 'none'}, "
            f"max send lag {p['max_send_lag_ms']:.0f} ms"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Turn latency of a running hark-server (loopback only).")
    parser.add_argument("--url", default="ws://127.0.0.1:8765/v1/stream")
    parser.add_argument("--sessions", type=int, default=4, help="sessions of the sequential run")
    parser.add_argument("--turns", type=int, default=10, help="clips sent in the sequential run, over all sessions")
    parser.add_argument("--concurrency", type=int, default=8, help="sessions at once in the concurrent run")
    parser.add_argument("--concurrent-turns", type=int, default=2, help="clips per session in the concurrent run")
    parser.add_argument("--json", help="also write the raw result here")
    args = parser.parse_args(argv)
    result = asyncio.run(run_latency(args.url, args.sessions, args.turns, args.concurrency, args.concurrent_turns))
    print_rows(latency_rows(result))
    print_phase_notes(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
