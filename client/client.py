"""Async client for the hark.v1 WebSocket protocol, plus pacing and result collection helpers.

Only `protocol` is imported from the project: the client must work against any server speaking hark.v1.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidHandshake, InvalidStatus, InvalidURI

from hark.protocol import (
    BYTES_PER_SAMPLE,
    ConversationTracker,
    ErrorCode,
    ProtocolError,
    SessionConfig,
    SessionLimits,
    TrackedResponse,
    Turn,
    decode_client,
    decode_server,
    encode,
    validate_audio_frame,
)
from hark.protocol import events as ev

log = logging.getLogger("hark.client")

# Reply audio frames are not bound by the server's *input* limit; leave generous headroom.
_MAX_INCOMING_BYTES = 16 << 20

# Turns the client's own tracker remembers: enough to look back at, bounded for long sessions.
_CLIENT_HISTORY_TURNS = 32

# Errors that answer a session.update (anything else arriving meanwhile belongs to other traffic).
_UPDATE_ERRORS = {
    ErrorCode.INVALID_FIELD,
    ErrorCode.INVALID_EVENT,
    ErrorCode.INVALID_JSON,
    ErrorCode.RATE_LIMITED,
    ErrorCode.MESSAGE_TOO_LARGE,
}


class HarkError(Exception):
    """Base class of the client's own exceptions."""


class HarkConnectError(HarkError):
    """The WebSocket could not be opened (refused, bad URL, HTTP rejection, timeout)."""


class HarkServerError(HarkError):
    """The server answered with an `error` event that stops what the client was doing."""

    def __init__(self, error: ev.Error) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error


class HarkConnectionClosed(HarkError):
    """The connection closed abnormally (any close code other than 1000/1001, or no close frame)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"connection closed abnormally (code {code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """One binary frame of reply audio: PCM16 LE mono belonging to the last `response.audio.started`."""

    response_id: str
    pcm: bytes
    sample_rate: int

    @property
    def duration_ms(self) -> float:
        return len(self.pcm) / BYTES_PER_SAMPLE * 1000.0 / self.sample_rate


IncomingEvent = ev.ServerEvent | AudioChunk


def _config_from(data: Mapping[str, Any]) -> SessionConfig:
    # keep only known keys: a newer server may announce settings this client does not know yet
    known = {f.name for f in dataclasses.fields(SessionConfig)}
    return SessionConfig(**{k: v for k, v in data.items() if k in known})


def _limits_from(data: Mapping[str, Any]) -> SessionLimits:
    known = {f.name for f in dataclasses.fields(SessionLimits)} - {"extra"}
    return SessionLimits(
        **{k: v for k, v in data.items() if k in known},
        extra={k: v for k, v in data.items() if k not in known},
    )


class HarkClient:
    """One hark.v1 session over a WebSocket.

    `async with HarkClient(url) as c:` connects, waits for `session.created` and, if `config` was given,
    applies it (waiting for `session.updated`). Send with the methods below; read everything the server
    says with `events()`. Sending and reading may run concurrently (e.g. a sender task plus a reader loop),
    but only one reader at a time.

    Everything received goes through `tracker` (a `ConversationTracker` of the recent turns): it says
    which response a binary frame belongs to, and a server breaking the conversation rules makes
    reading raise `ConversationError` (a `ProtocolError`).
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        config: Mapping[str, Any] | None = None,
        *,
        open_timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.api_key = api_key
        self.initial_config = dict(config) if config else None
        self.open_timeout = open_timeout
        self.session_created: ev.SessionCreated | None = None
        self.config = SessionConfig()
        self.limits = SessionLimits()
        self._ws: ClientConnection | None = None
        self._pending: deque[IncomingEvent] = deque()  # read while waiting for a reply, not yet consumed
        self._reading = False
        self.tracker = ConversationTracker(history=_CLIENT_HISTORY_TURNS)

    # ------------------------------------------------------------ connection

    async def __aenter__(self) -> HarkClient:
        if self._ws is None:  # connect() may have been awaited already, e.g. to handle its errors apart
            await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Open the socket and wait for session.created (and session.updated if a config was given)."""
        if self._ws is not None:
            raise RuntimeError("already connected; a HarkClient is one session")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else None
        try:
            self._ws = await connect(
                self.url,
                additional_headers=headers,
                open_timeout=self.open_timeout,
                max_size=_MAX_INCOMING_BYTES,
                # PCM barely compresses and deflate adds latency and CPU on every frame
                compression=None,
            )
        except InvalidURI as exc:
            raise HarkConnectError(f"invalid URL {self.url!r}: {exc}") from exc
        except InvalidStatus as exc:
            status = exc.response.status_code
            hint = " (check the API key)" if status in (401, 403) else ""
            raise HarkConnectError(f"{self.url} rejected the connection: HTTP {status}{hint}") from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise HarkConnectError(f"cannot connect to {self.url}: is hark-server running? ({exc})") from exc
        try:
            async with asyncio.timeout(self.open_timeout):
                await self._handshake()
        except TimeoutError:
            await self.aclose()
            raise HarkConnectError(f"{self.url}: no session.created within {self.open_timeout:g} s") from None
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            detail = f"code {rcvd.code}{': ' + rcvd.reason if rcvd.reason else ''}" if rcvd else "no close frame"
            raise HarkConnectError(f"{self.url} closed the connection before session.created ({detail})") from None
        except BaseException:
            await self.aclose()
            raise

    async def _handshake(self) -> None:
        first = await self._recv_one()
        if isinstance(first, ev.Error):
            raise HarkServerError(first)
        if not isinstance(first, ev.SessionCreated):
            raise HarkError(f"expected session.created as the first message, got {type(first).__name__}")
        self.session_created = first
        self.config = _config_from(first.config)
        self.limits = _limits_from(first.limits)
        if self.initial_config:
            await self.update(self.initial_config, wait=True)

    async def aclose(self) -> None:
        """Close the socket now (code 1000). To let the server finish the turn, use close_session()."""
        if self._ws is not None:
            await self._ws.close()

    @property
    def session_id(self) -> str:
        if self.session_created is None:
            raise RuntimeError("not connected")
        return self.session_created.session_id

    @property
    def close_code(self) -> int | None:
        return None if self._ws is None else self._ws.close_code

    @property
    def close_reason(self) -> str | None:
        return None if self._ws is None else self._ws.close_reason

    @property
    def ws(self) -> ClientConnection:
        if self._ws is None:
            raise RuntimeError("not connected; use `async with HarkClient(...)` or await connect()")
        return self._ws

    # ------------------------------------------------------------ sending

    async def send_audio(self, pcm: bytes) -> None:
        """Send one frame of PCM16 LE mono at the session's input rate; checked against the limits first."""
        validate_audio_frame(pcm, self.config.input_sample_rate, self.limits)
        await self.ws.send(pcm)

    async def commit(self) -> None:
        await self._send(ev.AudioCommit())

    async def send_text(self, text: str) -> None:
        await self._send(ev.InputText(text))

    async def cancel(self, response_id: str | None = None) -> None:
        await self._send(ev.ResponseCancel(response_id))

    async def playback_position(self, response_id: str, played_ms: int) -> None:
        await self._send(ev.PlaybackPosition(response_id, int(played_ms)))

    async def tool_output(self, call_id: str, output: str) -> None:
        """Answer a `response.function_call` with the tool's result (`function_call.output`)."""
        await self._send(ev.FunctionCallOutput(call_id, output))

    async def ping(self, id: str | None = None) -> str:
        """Send a protocol-level ping; the matching `Pong` arrives through events(). Returns its id."""
        ping_id = id if id is not None else uuid.uuid4().hex[:12]
        await self._send(ev.Ping(ping_id))
        return ping_id

    async def close_session(self) -> None:
        """Say "done sending": the server finishes the turn in progress, then closes with 1000."""
        await self._send(ev.SessionClose())

    async def update(self, config: Mapping[str, Any], *, wait: bool = False) -> None:
        """Send `session.update`. With wait=True, block until `session.updated` (then `.config` is current)
        or raise HarkServerError if rejected; not allowed while another task iterates events()."""
        if wait and self._reading:
            raise RuntimeError("update(wait=True) while events() is being read; use wait=False")
        await self._send(ev.SessionUpdate(dict(config)))
        if not wait:
            return  # `.config` follows when events() delivers session.updated
        while True:
            event = await self._recv_one()
            if isinstance(event, ev.SessionUpdated):
                return
            if isinstance(event, ev.Error) and (event.fatal or event.code in _UPDATE_ERRORS):
                raise HarkServerError(event)
            self._pending.append(event)

    async def send_raw(self, data: str | bytes) -> None:
        """Send a frame as is, without local checks (for testing how a server handles bad input)."""
        await self.ws.send(data)

    async def _send(self, event: ev.ClientEvent) -> None:
        text = encode(event)
        # fail fast with the very ProtocolError the server would answer with
        decode_client(text)
        await self.ws.send(text)

    # ------------------------------------------------------------ receiving

    async def events(self) -> AsyncGenerator[IncomingEvent, None]:
        """Yield server events (binary frames as AudioChunk) until the server closes the connection.

        Ends normally on close code 1000/1001; raises HarkConnectionClosed on an abnormal close.
        `session.created` and the `session.updated` awaited by update(wait=True) are not repeated here.
        """
        if self._reading:
            raise RuntimeError("events() is already being iterated by another consumer")
        self._reading = True
        try:
            while True:
                if self._pending:
                    yield self._pending.popleft()
                    continue
                try:
                    event = await self._recv_one()
                except ConnectionClosedOK:
                    return
                except ConnectionClosed as exc:
                    rcvd = exc.rcvd
                    raise HarkConnectionClosed(rcvd.code if rcvd else None, rcvd.reason if rcvd else "") from None
                yield event
        finally:
            self._reading = False

    async def _recv_one(self) -> IncomingEvent:
        """Receive and decode the next frame, keeping client state (config, the tracker) current."""
        while True:
            data = await self.ws.recv()
            now = time.monotonic()
            if isinstance(data, bytes):
                owner = self.tracker.audio(len(data), now)
                return AudioChunk(owner.response_id, data, owner.sample_rate or self.config.output_sample_rate)
            try:
                event = decode_server(data)
            except ProtocolError as exc:
                if exc.code is ErrorCode.UNKNOWN_EVENT:
                    # a newer server may add event types; skipping them keeps old clients working
                    log.warning("ignoring unknown server event: %s", exc.message)
                    continue
                raise
            self.tracker.feed(event, now)
            if isinstance(event, ev.SessionUpdated):
                self.config = _config_from(event.config)
            return event


# ---------------------------------------------------------------- pacing


@dataclass(frozen=True, slots=True)
class StreamStats:
    frames: int
    audio_ms: float
    wall_s: float


Pace = Literal["realtime", "fast"]

# Stay a little inside the server's limits so jitter and rounding never tip a frame into audio_flood.
PACE_BURST_FRACTION = 0.9
PACE_RATE_FRACTION = 0.95


async def stream_pcm(
    client: HarkClient,
    pcm: bytes,
    sample_rate: int,
    frame_ms: int = 100,
    pace: Pace = "realtime",
) -> StreamStats:
    """Send PCM16 mono in `frame_ms` frames; a short last frame is padded with silence to the minimum length.

    "realtime" sends frame i at start + i*frame_ms, like a microphone. "fast" sends as fast as the advertised
    limits allow: a burst of up to `audio_burst_ms`, then `max_audio_rate` times real time. Both modes run a
    token bucket slightly smaller and slower than the server's (capacity burst, refill rate x real time), so
    neither fast mode nor realtime catching up after a stall ever gets `audio_flood`.
    """
    if sample_rate != client.config.input_sample_rate:
        raise ValueError(
            f"audio is {sample_rate} Hz but the session expects {client.config.input_sample_rate} Hz; "
            "resample it (client.wav.resample_pcm16) or update input_sample_rate first"
        )
    if pace not in ("realtime", "fast"):
        raise ValueError(f"pace must be 'realtime' or 'fast', not {pace!r}")
    limits = client.limits
    if not limits.min_frame_ms <= frame_ms <= limits.max_frame_ms:
        raise ValueError(f"frame_ms must be in [{limits.min_frame_ms}, {limits.max_frame_ms}], got {frame_ms}")
    if len(pcm) % BYTES_PER_SAMPLE:
        raise ValueError(f"PCM16 needs an even number of bytes, got {len(pcm)}")
    if limits.max_audio_rate <= 0:
        raise ValueError("the server advertises max_audio_rate <= 0: it accepts no sustained audio")

    frame_bytes = sample_rate * frame_ms // 1000 * BYTES_PER_SAMPLE
    min_bytes = -(-sample_rate * limits.min_frame_ms // 1000) * BYTES_PER_SAMPLE
    # a bucket smaller and slower than the server's never admits what the server would refuse
    capacity = max(PACE_BURST_FRACTION * limits.audio_burst_ms, float(frame_ms))
    refill_ms_per_s = PACE_RATE_FRACTION * limits.max_audio_rate * 1000.0

    loop = asyncio.get_running_loop()
    start = last = loop.time()
    tokens = capacity
    sent_ms = 0.0
    frames = 0
    for offset in range(0, len(pcm), frame_bytes):
        frame = pcm[offset : offset + frame_bytes]
        if len(frame) < min_bytes:
            frame += bytes(min_bytes - len(frame))
        duration = len(frame) / BYTES_PER_SAMPLE * 1000.0 / sample_rate
        due = start + sent_ms / 1000.0 if pace == "realtime" else start
        while True:
            now = loop.time()
            tokens = min(capacity, tokens + (now - last) * refill_ms_per_s)
            last = now
            delay = max(due - now, (duration - tokens) / refill_ms_per_s)
            if delay <= 0:
                break
            await asyncio.sleep(delay)
        tokens -= duration
        await client.send_audio(frame)
        sent_ms += duration
        frames += 1
    return StreamStats(frames=frames, audio_ms=sent_ms, wall_s=loop.time() - start)


# ---------------------------------------------------------------- collecting results


@dataclass(slots=True)
class TurnResult:
    """Everything about one response and the user turn that led to it: the tracker's records plus the audio."""

    turn: Turn
    tracked: TrackedResponse
    audio: bytearray = field(default_factory=bytearray)

    @property
    def response_id(self) -> str:
        return self.tracked.response_id

    @property
    def turn_id(self) -> int:
        return self.tracked.turn_id

    @property
    def finals(self) -> list[str]:
        """The turn's final transcript (none for typed turns, or while it has not arrived)."""
        u = self.turn.utterance
        return [u.final.text] if u is not None and u.final is not None else []

    @property
    def partials(self) -> list[str]:
        u = self.turn.utterance
        return [p.text for p in u.partials] if u is not None else []

    @property
    def text_deltas(self) -> list[str]:
        return self.tracked.deltas

    @property
    def done_text(self) -> str | None:
        return None if self.tracked.done is None else self.tracked.done.text

    @property
    def sample_rate(self) -> int | None:
        return self.tracked.sample_rate

    @property
    def audio_ms(self) -> int | None:
        """As announced by response.audio.done."""
        return None if self.tracked.audio_done is None else self.tracked.audio_done.audio_ms

    @property
    def status(self) -> str | None:
        """completed | cancelled | failed; None while in progress."""
        return self.tracked.status

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.tracked.metrics)

    @property
    def errors(self) -> list[ev.Error]:
        """Errors that arrived while this response was active."""
        return self.tracked.errors

    @property
    def started_at(self) -> float:
        """time.monotonic() of response.started (or the `at` it was fed with)."""
        return self.tracked.started_at

    @property
    def first_audio_at(self) -> float | None:
        return self.tracked.first_audio_at

    @property
    def done_at(self) -> float | None:
        return self.tracked.done_at

    @property
    def transcript(self) -> str:
        return " ".join(t for t in self.finals if t)

    @property
    def text(self) -> str:
        """The reply text: the server's final text, or what streamed so far."""
        return self.tracked.text

    @property
    def done(self) -> bool:
        return self.status is not None


class Conversation:
    """Sans-IO collector: feed() it every incoming event after session.created; it groups them per response.

    The hark.v1 rules are those of `tracker` (a `ConversationTracker`): an event they do not allow
    raises `ConversationError` (a `ProtocolError`). Transcripts are joined to responses by `turn_id`.
    """

    def __init__(self) -> None:
        self.tracker = ConversationTracker()
        self.responses: list[TurnResult] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self._by_id: dict[str, TurnResult] = {}

    def feed(self, event: IncomingEvent, at: float | None = None) -> TurnResult | None:
        """Record one event that arrived at `at` (default: now, time.monotonic()); returns its response, if any."""
        now = time.monotonic() if at is None else at
        if isinstance(event, AudioChunk):
            owner = self._by_id[self.tracker.audio(len(event.pcm), now).response_id]
            owner.audio += event.pcm
            return owner
        tracked = self.tracker.feed(event, now)
        if tracked is None:
            return None
        result = self._by_id.get(tracked.response_id)
        if result is None:  # response.started
            result = TurnResult(self.tracker.turns[tracked.turn_id], tracked)
            self.responses.append(result)
            self._by_id[tracked.response_id] = result
        return result

    def response(self, response_id: str) -> TurnResult | None:
        return self._by_id.get(response_id)

    @property
    def finals(self) -> list[ev.TranscriptFinal]:
        return [u.final for t in self.tracker.turns.values() if (u := t.utterance) is not None and u.final is not None]

    @property
    def partials(self) -> list[ev.TranscriptPartial]:
        return [p for t in self.tracker.turns.values() if t.utterance is not None for p in t.utterance.partials]

    @property
    def errors(self) -> list[ev.Error]:
        return self.tracker.errors

    @property
    def event_count(self) -> int:
        """Events and audio frames fed."""
        return self.tracker.event_count + self.tracker.audio_frames

    @property
    def audio_bytes(self) -> int:
        return self.tracker.audio_bytes

    @property
    def reply_audio(self) -> bytes:
        return b"".join(bytes(r.audio) for r in self.responses)

    async def collect(self, client: HarkClient) -> Conversation:
        """Feed every event of `client` until the server closes; bound it with `asyncio.timeout` if needed."""
        try:
            async for event in client.events():
                self.feed(event)
        finally:
            self.close_code, self.close_reason = client.close_code, client.close_reason or ""
        return self
