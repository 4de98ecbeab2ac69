"""Stream one turn-taking item through a hark.v1 session as a live microphone would, and record
what the server said and when.

One session per item: `session.update` sets the endpointing policy under test, then the item's
audio goes out in 100 ms PCM16 frames paced at real time on an absolute schedule, then silence
(a microphone does not stop when the person does) until the turn at the true end has been decided
and its reply has started to sound, or `max_tail_ms` of silence has passed. That reply is then
cancelled by us (`response.cancel`), so its `response.done` comes back at once with the server's
latency metrics (`endpoint_ms`, `first_audio_ms`) instead of after seconds of paced audio; every
other cancellation the trace holds was the server's own (a barge-in, a newer turn, a merge).

Only hark.protocol and websockets: a client like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.latency import send_at
from hark.protocol import (
    Error,
    ProtocolError,
    ResponseAudioStarted,
    ResponseCancel,
    ResponseDone,
    ResponseStarted,
    SessionCreated,
    SessionUpdate,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    decode_server,
    encode,
)

SAMPLE_RATE = 16000
FRAME_MS = 100
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2
SILENCE = bytes(FRAME_BYTES)
# a speech.stopped whose speech end is at most this much before the true end is the turn's real
# end (the server's VAD may close speech a window or two earlier than the set's analysis)
TRUE_END_TOLERANCE_MS = 300
CONNECT_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0
DONE_WAIT_S = 3.0  # after the tail: how long our own response.cancel may take to come back


class BenchError(RuntimeError):
    """The server refused what the benchmark needs (a setting, the session): the run stops."""


class ServerBusy(BenchError):
    """The server refused the session for now (server_busy: it is behind real time); retry later."""


@dataclass(frozen=True, slots=True)
class Stop:
    """One speech.stopped: the server's decision that a turn ended."""

    turn_id: int
    audio_ms: int  # where the server says the speech ended, on the input clock
    arrival: float  # time.monotonic() when it reached us
    reason: str | None
    probability: float | None


@dataclass(slots=True)
class Reply:
    response_id: str
    turn_id: int
    started: float
    audio_started: float | None = None
    status: str | None = None  # from response.done; None: still running when the session ended
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ItemTrace:
    """Everything one session saw, times on this process's monotonic clock (the server's is ours)."""

    item_id: str
    true_end: int  # samples
    config: dict[str, Any] = field(default_factory=dict)  # the session config after our update
    frame_sent: list[float] = field(default_factory=list)  # when frame k (samples k*1600..) went out
    starts: list[tuple[int, int]] = field(default_factory=list)  # speech.started (turn_id, audio_ms)
    stops: list[Stop] = field(default_factory=list)
    finals: dict[int, str] = field(default_factory=dict)  # turn_id -> transcript.final text
    replies: dict[str, Reply] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    final_stop: Stop | None = None  # the speech.stopped that ended the turn at the true end
    final_reply: str | None = None  # the reply started after it (a merged turn keeps its turn_id)
    cancelled_by_bench: str | None = None
    tail_ms: int = 0  # silence streamed after the item's audio
    max_send_lag_ms: float = 0.0

    def spoken_at(self, sample: int) -> float:
        """When a live microphone would have captured `sample`: its frame went out as soon as the
        frame was full, so the sample was spoken (frame end - sample) before that."""
        k = max(sample - 1, 0) // FRAME_SAMPLES
        return self.frame_sent[k] - ((k + 1) * FRAME_SAMPLES - sample) / SAMPLE_RATE

    def is_true_end(self, stop_audio_ms: int) -> bool:
        return stop_audio_ms * SAMPLE_RATE // 1000 >= self.true_end - TRUE_END_TOLERANCE_MS * SAMPLE_RATE // 1000


class _Session:
    """The reader's side of one item: files events into the trace and says when it is settled."""

    def __init__(self, trace: ItemTrace) -> None:
        self.trace = trace
        self.settled = asyncio.Event()  # the true end's reply is done (or there is none to wait for)
        self.outgoing: list[str] = []  # text messages for the sender to put between frames

    def on_event(self, event: Any, now: float) -> None:
        trace = self.trace
        match event:
            case SpeechStarted(turn_id=turn, audio_ms=ms):
                trace.starts.append((turn, ms))
            case SpeechStopped(turn_id=turn, audio_ms=ms):
                stop = Stop(turn, ms, now, event.reason, event.probability)
                trace.stops.append(stop)
                if trace.final_stop is None and trace.is_true_end(ms):
                    trace.final_stop = stop
            case TranscriptFinal(turn_id=turn, text=text):
                trace.finals[turn] = text
                if trace.final_stop is not None and turn == trace.final_stop.turn_id and not text.strip():
                    self.settled.set()  # nothing heard, so no reply follows
            case ResponseStarted(turn_id=turn, response_id=rid):
                trace.replies[rid] = Reply(rid, turn, now)
                final = trace.final_stop
                if final is not None and trace.final_reply is None and turn == final.turn_id:
                    trace.final_reply = rid
            case ResponseAudioStarted(response_id=rid) if rid in trace.replies:
                trace.replies[rid].audio_started = now
                if rid == trace.final_reply and trace.cancelled_by_bench is None:
                    trace.cancelled_by_bench = rid
                    self.outgoing.append(encode(ResponseCancel(response_id=rid)))
            case ResponseDone(response_id=rid, status=status, metrics=metrics) if rid in trace.replies:
                reply = trace.replies[rid]
                reply.status, reply.metrics = status.value, dict(metrics)
                if rid == trace.final_reply:
                    self.settled.set()
            case Error(code=code, message=message):
                trace.errors.append(f"{code}: {message}")

    async def flush(self, conn: ClientConnection) -> None:
        while self.outgoing:
            await conn.send(self.outgoing.pop(0))

    async def read(self, conn: ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in conn:
                if isinstance(message, bytes):
                    continue  # reply audio: only its start matters here
                now = time.monotonic()
                try:
                    self.on_event(decode_server(message), now)
                except ProtocolError as exc:
                    self.trace.errors.append(f"undecodable: {exc.code}")
        self.settled.set()  # the server closed: nothing more will come


async def _configure(conn: ClientConnection, patch: dict[str, Any]) -> dict[str, Any]:
    """session.created, then our session.update: the config the server accepted, or BenchError."""
    created = decode_server(await asyncio.wait_for(conn.recv(), CONNECT_TIMEOUT_S))
    if isinstance(created, Error) and created.code == "server_busy":
        raise ServerBusy(created.message)
    if not isinstance(created, SessionCreated):
        raise BenchError(f"expected session.created, got {created!r}")
    await conn.send(encode(SessionUpdate(config=patch)))
    while True:
        message = await asyncio.wait_for(conn.recv(), CONNECT_TIMEOUT_S)
        if isinstance(message, bytes):
            continue
        event = decode_server(message)
        if isinstance(event, SessionUpdated):
            return event.config
        if isinstance(event, Error):
            raise BenchError(f"the server refused session.update {patch}: {event.code}: {event.message}")


async def _send_frame(conn: ClientConnection, trace: ItemTrace, frame: bytes, due: float) -> float:
    """Send `frame` at `due` (an absolute schedule: a late frame does not delay the next ones)."""
    now, late_ms = await send_at(conn, frame, due)
    trace.max_send_lag_ms = max(trace.max_send_lag_ms, late_ms)
    trace.frame_sent.append(now)
    return due + FRAME_MS / 1000.0


async def stream_item(
    url: str, item_id: str, pcm: bytes, true_end: int, patch: dict[str, Any], max_tail_ms: int = 4000
) -> ItemTrace:
    """Stream `pcm` through a new session configured with `patch` (see the module doc)."""
    trace = ItemTrace(item_id, true_end)
    session = _Session(trace)
    padded = pcm + bytes(-len(pcm) % FRAME_BYTES)
    async with connect(
        url, open_timeout=CONNECT_TIMEOUT_S, close_timeout=CLOSE_TIMEOUT_S, max_size=16 << 20, compression=None
    ) as conn:
        trace.config = await _configure(conn, patch)
        reader = asyncio.create_task(session.read(conn))
        try:
            due = time.monotonic()
            for i in range(0, len(padded), FRAME_BYTES):
                await session.flush(conn)
                due = await _send_frame(conn, trace, padded[i : i + FRAME_BYTES], due)
            while not session.settled.is_set() and trace.tail_ms < max_tail_ms:
                await session.flush(conn)
                due = await _send_frame(conn, trace, SILENCE, due)
                trace.tail_ms += FRAME_MS
            await session.flush(conn)
            if trace.cancelled_by_bench is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(session.settled.wait(), DONE_WAIT_S)
        finally:
            # close with the reader still reading: a reader cancelled first leaves the server's
            # last frames unread, its sends block and the close handshake never completes
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await asyncio.wait_for(conn.close(), CLOSE_TIMEOUT_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), CLOSE_TIMEOUT_S)
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
    return trace
