"""The WebSocket transport: admission (auth and origin at the handshake, capacity), the read loop,
a bounded writer, and the watchers that end a session nobody uses or nobody reads.

The session never touches the socket. Everything it sends goes through `WebSocketOutbox`, a
bounded queue drained by one writer task; a client that stops reading fills it, stalls one send
past `slow_consumer_timeout_s`, or leaves a ping that follows our output unanswered that long, and
is disconnected (`slow_consumer`), so it cannot hold server memory.

Teardown is bounded: whichever of the session's tasks ends first (or the socket closing) ends the
session, the client learns why (an `error` and a close code) when it is still there, and the
handler cancels the rest and waits for them at most `TEARDOWN_TIMEOUT_S`. No send is wrapped in
`asyncio.wait_for`, which on Python 3.11 can swallow a cancellation that arrives as the send
completes (the writer then waited on its queue forever, and with it the handler and SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request

from hark.protocol import PROTOCOL_VERSION, CloseCode, Error, ErrorCode, ServerEvent, SessionCreated, encode

from ..admission import session_limit
from ..config import ServerConfig
from ..context import ServerContext
from ..session import Session, TurnState

log = logging.getLogger(__name__)

TEARDOWN_TIMEOUT_S = 5.0  # a session's tasks get this long to stop once cancelled
FATAL_FLUSH_S = 2.0  # how long a fatal error and its close frame may take to go out
READ_PROBE_INTERVAL_S = 1.0  # after output, how soon a ping checks that the client reads it
_PONG_POLL_S = 0.25


class WebSocketOutbox:
    def __init__(self, conn: ServerConnection, ctx: ServerContext) -> None:
        self._conn = conn
        self._ctx = ctx
        self._queue: asyncio.Queue[str | bytes | tuple[int, str]] = asyncio.Queue(maxsize=ctx.config.send_queue_limit)
        self.failed = False
        self.sent = 0  # messages handed to the socket so far
        self._closing: asyncio.Task[None] | None = None

    def send_event(self, event: ServerEvent) -> None:
        for text in self.wire_texts(event):
            self._put(text)

    def wire_texts(self, event: ServerEvent) -> list[str]:
        """The text frames that carry `event` on this connection's wire protocol."""
        return [encode(event)]

    def send_audio(self, pcm: bytes) -> None:
        self._put(pcm)

    def close_after(self, code: CloseCode, reason: str) -> None:
        """Close once everything queued before has been sent (a fatal error event, say)."""
        self._put((int(code), reason))

    def fatal(self, code: ErrorCode, message: str, close_code: CloseCode) -> None:
        """A fatal error event, then the close; both behind what is already queued."""
        self._ctx.metrics.errors.labels(code.value).inc()
        self.send_event(Error(code=code.value, message=message, fatal=True))
        self.close_after(close_code, code.value)

    async def fatal_now(self, code: ErrorCode, message: str, close_code: CloseCode) -> None:
        """The fatal error and the close sent directly, for when the writer is the part that failed."""
        self._ctx.metrics.errors.labels(code.value).inc()
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(FATAL_FLUSH_S):
                for text in self.wire_texts(Error(code=code.value, message=message, fatal=True)):
                    await self._conn.send(text)
        await self._conn.close(close_code, code.value)

    def _put(self, item: str | bytes | tuple[int, str]) -> None:
        if self.failed:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.slow_consumer(f"{self._queue.qsize()} messages waiting")

    def slow_consumer(self, detail: str) -> None:
        if self.failed:
            return
        self.failed = True
        self._ctx.metrics.errors.labels(ErrorCode.SLOW_CONSUMER.value).inc()
        log.warning("closing a slow consumer: %s", detail)
        # it is not reading, so an error event would never arrive: say it in the close frame
        self._closing = asyncio.get_running_loop().create_task(
            self._conn.close(CloseCode.POLICY_VIOLATION, f"{ErrorCode.SLOW_CONSUMER.value}: client is not reading")
        )

    async def run_writer(self) -> None:
        """Send what is queued, in order. Returns after a close item or when the client is too slow;
        raises ConnectionClosed when the socket went away."""
        timeout = self._ctx.config.slow_consumer_timeout_s
        while True:
            item = await self._queue.get()
            if isinstance(item, tuple):
                await self._conn.close(item[0], item[1])  # bounded by the connection's close_timeout
                return
            try:
                # asyncio.timeout counts cancellations: one from outside is never mistaken for ours
                async with asyncio.timeout(timeout):
                    await self._conn.send(item)
            except TimeoutError:
                self.slow_consumer(f"one send blocked for over {timeout:g} s")
                return
            self.sent += 1


@dataclass(frozen=True, slots=True)
class HandshakeRefusal:
    """Why the opening handshake is answered with an HTTP error instead of a WebSocket."""

    status: int
    code: ErrorCode
    message: str


def offered_keys(headers: Mapping[str, str], path: str) -> list[str]:
    """The API keys a request offers: `Authorization: Bearer KEY` and `?token=KEY`."""
    offered: list[str] = []
    authorization = headers.get("Authorization")
    if authorization and authorization.lower().startswith("bearer "):
        offered.append(authorization[7:].strip())
    return offered + parse_qs(urlsplit(path).query).get("token", [])


def matching_key(config: ServerConfig, offered: Sequence[str]) -> str | None:
    """The configured key one of `offered` is, compared in constant time against every key."""
    found = None
    for key in config.api_keys:
        for candidate in offered:
            if hmac.compare_digest(candidate.encode(), key.encode()):
                found = key
    return found


def offered_key_matches(
    config: ServerConfig, headers: Mapping[str, str], path: str, also_offered: Sequence[str] = ()
) -> bool:
    """An API key in `Authorization: Bearer KEY`, `?token=KEY` or `also_offered` that is one of the
    configured keys. Headers and target rather than a request: the WebSocket handshake (websockets)
    and the HTTP routes (aiohttp) share this one check."""
    return matching_key(config, [*also_offered, *offered_keys(headers, path)]) is not None


def origin_refusal(config: ServerConfig, origin: str | None) -> HandshakeRefusal | None:
    """A browser Origin off the allow-list (no Origin header: not a browser, nothing to check)."""
    if config.allowed_origins and origin is not None and origin not in config.allowed_origins:
        return HandshakeRefusal(403, ErrorCode.ORIGIN_NOT_ALLOWED, f"origin {origin[:200]!r} is not allowed")
    return None


KEY_MESSAGE = "missing or wrong API key: send 'Authorization: Bearer KEY' or '?token=KEY'"


def handshake_refusal(
    config: ServerConfig, request: Request, also_offered: Sequence[str] = (), key_hint: str = ""
) -> HandshakeRefusal | None:
    """Origin and API key, checked before the WebSocket exists (401/403 is what clients expect)."""
    refusal = origin_refusal(config, request.headers.get("Origin"))
    if refusal is not None:
        return refusal
    if config.api_keys and not offered_key_matches(config, request.headers, request.path, also_offered):
        return HandshakeRefusal(401, ErrorCode.UNAUTHORIZED, KEY_MESSAGE + key_hint)
    return None


class Admission:
    """Admits an authenticated connection if one more session will not hurt the running ones."""

    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx
        self.open_sessions = 0
        self.limit = session_limit(ctx.config)  # --max-sessions, or what the engines carry
        self._recognizer_behind = False  # tripped: the recognizer's lag must fall to half to admit
        log.info("admitting up to %d sessions", self.limit)

    @contextlib.asynccontextmanager
    async def slot(self, conn: ServerConnection, encode_error: Callable[[Error], str] = encode) -> AsyncIterator[bool]:
        """Yields True with a session slot held, or refuses the connection (fatal server_busy,
        close 1013) and yields False."""
        busy = self.claim()
        if busy is not None:
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                async with asyncio.timeout(FATAL_FLUSH_S):
                    await conn.send(encode_error(Error(code=ErrorCode.SERVER_BUSY.value, message=busy, fatal=True)))
            await conn.close(CloseCode.TRY_AGAIN_LATER, ErrorCode.SERVER_BUSY.value)
            yield False
            return
        try:
            yield True
        finally:
            self.release()

    def claim(self) -> str | None:
        """Takes a session slot (returns None) or says why not (nothing held); for sessions with no
        WebSocket (a POSTed WebRTC offer), which give it back with `release()`."""
        busy = self._busy_reason()
        if busy is not None:
            self._ctx.metrics.errors.labels(ErrorCode.SERVER_BUSY.value).inc()
            return busy
        self.open_sessions += 1
        self._ctx.metrics.sessions_open.inc()
        self._ctx.metrics.sessions_total.inc()
        return None

    def release(self) -> None:
        self.open_sessions -= 1
        self._ctx.metrics.sessions_open.dec()

    def _busy_reason(self) -> str | None:
        """Why one more session would hurt the running ones: capacity, a late loop, audio waiting
        to be processed (the server is behind real time), a recognizer trailing the speech, or an
        ASR engine at its limit."""
        cfg, ctx = self._ctx.config, self._ctx
        if self.open_sessions >= self.limit:
            reason = f"server is at its limit of {self.limit} sessions"
        elif 0 < cfg.overload_loop_lag_ms < ctx.loop_lag_s * 1000.0:
            reason = f"server is overloaded (event loop {ctx.loop_lag_s * 1000.0:.0f} ms late)"
        elif 0 < cfg.overload_frame_wait_ms < ctx.frame_wait_s * 1000.0:
            reason = f"server is behind real time (audio waits {ctx.frame_wait_s * 1000.0:.0f} ms)"
        elif recognizer := self._recognizer_lag():
            reason = recognizer
        else:
            engine = ctx.asr.overload_reason()
            if engine is None:
                return None
            reason = engine
        return f"{reason}; retry later"

    def _recognizer_lag(self) -> str | None:
        """Why the recognizer is behind, with hysteresis: past `--overload-asr-lag-ms` it trips, and
        it admits again only below half of it. Without that, admission sat on the threshold: each
        dip below it let in one more session, which pushed the lag back over (a run at twice the
        capacity admitted three sessions more that way, each refused moments before)."""
        cfg, ctx = self._ctx.config, self._ctx
        if cfg.overload_asr_lag_ms <= 0:
            return None
        limit_ms = cfg.overload_asr_lag_ms / 2 if self._recognizer_behind else cfg.overload_asr_lag_ms
        lag_ms, final_ms = ctx.asr_lag.mean_s() * 1000.0, ctx.final_lag.mean_s() * 1000.0
        self._recognizer_behind = lag_ms > limit_ms or final_ms > limit_ms
        if lag_ms > limit_ms:
            return f"speech recognition is behind (it trails the speech by {lag_ms:.0f} ms)"
        if final_ms > limit_ms:
            return f"speech recognition is behind (ended turns wait {final_ms:.0f} ms for their transcript)"
        return None


def session_created(ctx: ServerContext, session: Session) -> SessionCreated:
    return SessionCreated(
        session_id=session.id,
        protocol=PROTOCOL_VERSION,
        config=session.config.to_dict(),
        limits=ctx.config.limits.to_dict(),
        engines={"asr": ctx.asr.name, "llm": ctx.llm.name, "tts": ctx.tts.name},
    )


class _Activity:
    """When the client last sent a message (audio or an event; control frames do not count)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()


class StreamHandler:
    """Serves `/v1/stream`: one Session per accepted connection."""

    def __init__(self, ctx: ServerContext, admission: Admission) -> None:
        self._ctx = ctx
        self.admission = admission

    async def __call__(self, conn: ServerConnection) -> None:
        async with self.admission.slot(conn, self._encode_error) as admitted:
            if admitted:
                await self._serve(conn)

    async def _serve(self, conn: ServerConnection) -> None:
        session_id = uuid.uuid4().hex
        if self._ctx.config.send_buffer_bytes:
            sock = conn.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._ctx.config.send_buffer_bytes)
        outbox, session = self._open(conn, session_id)
        activity = _Activity()
        tasks = {
            "writer": asyncio.create_task(outbox.run_writer(), name=f"{session_id}-writer"),
            "input": asyncio.create_task(session.run(), name=f"{session_id}-input"),
            "reader": asyncio.create_task(self._read(conn, session, outbox, activity), name=f"{session_id}-reader"),
            "idle": asyncio.create_task(self._watch_idle(session, outbox, activity), name=f"{session_id}-idle"),
            "probe": asyncio.create_task(self._probe_reading(conn, outbox), name=f"{session_id}-probe"),
            # the socket gone ends the session even while every task above waits on something else
            "socket": asyncio.create_task(conn.wait_closed(), name=f"{session_id}-socket"),
        }
        log.info("session %s opened from %s", session_id, conn.remote_address)
        try:
            done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
            await self._conclude(session_id, session, outbox, tasks, done)
        finally:
            await self._teardown(session_id, conn, tasks)

    async def _conclude(
        self,
        session_id: str,
        session: Session,
        outbox: WebSocketOutbox,
        tasks: dict[str, asyncio.Task[None]],
        done: set[asyncio.Task[None]],
    ) -> None:
        """Tell the client why the session ends, when it is still there to hear it."""
        writer = tasks["writer"]
        failed = [
            (name, exc)
            for name, task in tasks.items()
            if task in done and not task.cancelled() and (exc := task.exception()) is not None
        ]
        broken = [(name, exc) for name, exc in failed if not isinstance(exc, ConnectionClosed)]
        if tasks["input"] in done and session.closed.is_set():
            outbox.close_after(CloseCode.NORMAL, "session closed")
            await asyncio.wait({writer}, timeout=self._ctx.config.slow_consumer_timeout_s)
        elif broken:
            for name, exc in broken:
                log.error("session %s: the %s task failed", session_id, name, exc_info=exc)
            message = "internal error: the session broke"
            if writer in done:  # nothing left to send with: send directly
                await outbox.fatal_now(ErrorCode.INTERNAL_ERROR, message, CloseCode.INTERNAL_ERROR)
                return
            outbox.fatal(ErrorCode.INTERNAL_ERROR, message, CloseCode.INTERNAL_ERROR)
            await asyncio.wait({writer}, timeout=FATAL_FLUSH_S)
        elif tasks["idle"] in done and writer not in done:
            await asyncio.wait({writer}, timeout=FATAL_FLUSH_S)

    async def _teardown(self, session_id: str, conn: ServerConnection, tasks: dict[str, asyncio.Task[None]]) -> None:
        for task in tasks.values():
            task.cancel()
        # asyncio.wait neither cancels nor swallows: a task that ignores its cancellation is
        # reported and left behind, the handler (and the slot, and SIGTERM) is not held by it
        done, pending = await asyncio.wait(tasks.values(), timeout=TEARDOWN_TIMEOUT_S)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: already logged by _conclude if it mattered
        if pending:
            names = ", ".join(sorted(name for name, task in tasks.items() if task in pending))
            log.error("session %s: %s did not stop within %g s of cancellation", session_id, names, TEARDOWN_TIMEOUT_S)
            conn.transport.abort()
        log.info("session %s closed (%s)", session_id, conn.close_code)

    @staticmethod
    def _encode_error(error: Error) -> str:
        return encode(error)

    def _open(self, conn: ServerConnection, session_id: str) -> tuple[WebSocketOutbox, Session]:
        """The session and the outbox it writes to, with session.created queued first."""
        outbox = WebSocketOutbox(conn, self._ctx)
        session = Session(self._ctx, outbox, session_id)
        outbox.send_event(session_created(self._ctx, session))
        return outbox, session

    @staticmethod
    async def _read(conn: ServerConnection, session: Session, outbox: WebSocketOutbox, activity: _Activity) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in conn:
                activity.touch()
                if isinstance(message, str):
                    await session.on_text(message)
                else:
                    await session.on_binary(message)

    async def _watch_idle(self, session: Session, outbox: WebSocketOutbox, activity: _Activity) -> None:
        """No audio and no events for `limits.idle_timeout_s` ends the session. A reply in progress
        is activity too (a client may listen to a long reply in silence); WebSocket pings are not."""
        limit = self._ctx.config.limits.idle_timeout_s
        if limit <= 0:
            await asyncio.Event().wait()  # never: the session ends some other way
        while True:
            if session.state is not TurnState.LISTENING:
                activity.touch()
            idle = time.monotonic() - activity.last
            if idle >= limit:
                break
            await asyncio.sleep(min(limit - idle, 1.0))
        outbox.fatal(
            ErrorCode.IDLE_TIMEOUT,
            f"no audio and no events for {limit:g} s: session closed (send audio continuously, silence included)",
            CloseCode.POLICY_VIOLATION,
        )

    async def _probe_reading(self, conn: ServerConnection, outbox: WebSocketOutbox) -> None:
        """After we sent something, a ping must come back within `slow_consumer_timeout_s`.

        The kernel buffers of both ends can hold whole replies, so a client that stopped reading
        would otherwise only show when they are full (or at the next keepalive, 40 s later). A
        reading client answers at once: the server sends audio at most ~200 ms ahead of playback.
        """
        timeout = self._ctx.config.slow_consumer_timeout_s
        confirmed = 0
        while not outbox.failed:
            await asyncio.sleep(READ_PROBE_INTERVAL_S)
            if outbox.sent == confirmed:
                continue
            sent = outbox.sent
            try:
                pong = await conn.ping()
                answered = await _answered_while_reading(conn, pong, timeout)
            except ConnectionClosed:
                return
            if not answered:
                outbox.slow_consumer(f"no pong within {timeout:g} s of output")
                return
            confirmed = sent


async def _answered_while_reading(conn: ServerConnection, pong: Awaitable[float], budget_s: float) -> bool:
    """Whether the pong arrives within `budget_s` of time the server was reading the socket.

    While the session's inbox is full the server stops reading (backpressure on the client's audio),
    and the pong waits behind that audio: the time the server did not read is not the client's."""
    loop = asyncio.get_running_loop()
    waited = 0.0
    while waited < budget_s:
        started = loop.time()
        try:
            async with asyncio.timeout(min(_PONG_POLL_S, budget_s - waited)):
                await asyncio.shield(pong)
            return True
        except TimeoutError:
            if conn.transport.is_reading():
                waited += loop.time() - started
    return False
