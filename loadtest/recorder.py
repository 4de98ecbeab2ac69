"""What the run records: one TurnRecord per device turn, errors, disconnects, and live counters.

All times are seconds since the run started (the harness's monotonic clock), latencies are ms.
`measured_turn` builds a TurnRecord from the conversation tracker's records; bench/latency.py
makes one per utterance with it too.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hark.protocol import TrackedResponse, Utterance

from .stats import percentile, playback

# statuses a turn can end in; the first three are healthy
HEALTHY = ("completed", "cancelled", "ingest")
# completed: reply done | cancelled: reply cut by the scenario's barge-in (or by the user's own
# next phrase) | ingest: --asr none, the turn ends at transcript.final | no_reply: a non-empty
# transcript got no reply, or an empty one when a reply was expected | failed: response.done
# status failed | timeout: not settled within turn_timeout_s | incomplete: the connection ended first
BAD = ("no_reply", "failed", "timeout", "incomplete")


@dataclass(slots=True)
class TurnRecord:
    session: int
    turn: int  # index within the session, from 0
    clip: str
    status: str
    started_at: float  # first frame of the clip sent
    speech_end_at: float | None  # the frame carrying the server's speech.stopped position was sent
    active_sessions: int  # sessions open when speech.stopped arrived
    utterances: int  # server turns the clip was cut into
    transcript: str
    final_ms: float | None  # speech end -> transcript.final arrived
    first_token_ms: float | None  # speech end -> first response.text.delta
    first_audio_ms: float | None  # speech end -> first reply audio byte
    reply_audio_ms: float  # reply audio received
    underruns: int
    underrun_ms: float
    barge_in: bool  # the scenario interrupted this turn's reply
    barge_in_stop_ms: float | None  # interrupting speech reached the server -> reply stopped (see README)
    server_metrics: dict[str, Any]  # response.done.metrics as sent
    errors: list[str] = field(default_factory=list)  # error codes received during the turn


def measured_turn(
    *,
    session: int,
    turn: int,
    clip: str,
    status: str,
    t0: float,
    started_at: float,
    speech_end: float | None,
    active_sessions: int,
    utterances: int,
    spoken: Utterance | None,
    reply: TrackedResponse | None,
    barge_in: bool = False,
    barge_in_stop_ms: float | None = None,
    errors: Sequence[str] = (),
) -> TurnRecord:
    """The record of a turn whose measured utterance is `spoken` and its response `reply` (the tracker's).

    `started_at` and `speech_end` (when the frame carrying the speech.stopped position was sent) are on
    the tracker's clock; `t0` on it is the run's start. Latencies count from `speech_end`; the reply
    audio is played at real time from its first byte (underruns are the gaps that leaves).
    """

    def since(t: float | None) -> float | None:
        return None if t is None or speech_end is None else (t - speech_end) * 1000.0

    played = playback(reply.chunk_seconds()) if reply is not None else None
    return TurnRecord(
        session=session,
        turn=turn,
        clip=clip,
        status=str(status),  # a ResponseStatus from response.done is a plain string in the record
        started_at=started_at - t0,
        speech_end_at=None if speech_end is None else speech_end - t0,
        active_sessions=active_sessions,
        utterances=utterances,
        transcript=(spoken.text or "") if spoken is not None else "",
        final_ms=since(spoken.final_at if spoken is not None else None),
        first_token_ms=since(reply.first_delta_at if reply is not None else None),
        first_audio_ms=since(reply.first_audio_at if reply is not None else None),
        reply_audio_ms=reply.audio_ms if reply is not None else 0.0,
        underruns=played.underruns if played is not None else 0,
        underrun_ms=played.underrun_ms if played is not None else 0.0,
        barge_in=barge_in,
        barge_in_stop_ms=barge_in_stop_ms,
        server_metrics=dict(reply.metrics) if reply is not None else {},
        errors=list(errors),
    )


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    at: float
    session: int
    code: str
    fatal: bool
    message: str


class Recorder:
    """Shared by every device of a run; single event loop, so no locks."""

    def __init__(self, max_errors: int = 10_000) -> None:
        self.t0 = time.monotonic()
        self.turns: list[TurnRecord] = []
        self.errors: deque[ErrorEvent] = deque(maxlen=max_errors)  # bounded: a flood must not eat memory
        self.error_counts: Counter[str] = Counter()
        self.disconnects: Counter[str] = Counter()  # close code (and reason) of unexpected closes
        self.disconnect_times: deque[float] = deque(maxlen=max_errors)
        self.session_seconds = 0.0  # summed over sessions: what server CPU is divided by
        self.clean_closes = 0
        self.refused = 0  # sessions the server refused at connect (server_busy, ...)
        self.active = 0
        self.sessions_started = 0
        self.frames_sent = 0
        self.max_send_lag_ms = 0.0
        self.engines: dict[str, Any] = {}
        self.session_config: dict[str, Any] = {}
        self._first_audio: deque[float] = deque(maxlen=5000)  # recent values, for the live display
        self._final: deque[float] = deque(maxlen=5000)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def rel(self, monotonic_t: float) -> float:
        return monotonic_t - self.t0

    def turn_done(self, record: TurnRecord) -> None:
        self.turns.append(record)
        if record.first_audio_ms is not None:
            self._first_audio.append(record.first_audio_ms)
        if record.final_ms is not None:
            self._final.append(record.final_ms)

    def error(self, session: int, code: str, fatal: bool, message: str) -> None:
        self.error_counts[code] += 1
        self.errors.append(ErrorEvent(self.now(), session, code, fatal, message[:300]))

    def disconnect(self, label: str) -> None:
        self.disconnects[label] += 1
        self.disconnect_times.append(self.now())

    def live(self) -> dict[str, Any]:
        """Numbers for the progress display."""
        recent = list(self._first_audio)
        finals = list(self._final)
        return {
            "elapsed_s": self.now(),
            "active": self.active,
            "started": self.sessions_started,
            "turns": len(self.turns),
            "bad_turns": sum(1 for t in self.turns if t.status in BAD),
            "p50_first_audio_ms": percentile(recent, 50),
            "p95_first_audio_ms": percentile(recent, 95),
            "p95_final_ms": percentile(finals, 95),
            "errors": sum(self.error_counts.values()),
            "disconnects": sum(self.disconnects.values()),
            "frames_sent": self.frames_sent,
        }
