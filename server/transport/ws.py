"""The WebSocket transport: admission (auth, origin, capacity), the read loop, a paced writer.

The session never touches the socket. Everything it sends goes through `WebSocketOutbox`, a
bounded queue drained by one writer task; a client that stops reading fills it (or stalls one
send past `slow_consumer_timeout_s`) and is disconnected, so it cannot hold server memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from hark.protocol import PROTOCOL_VERSION, CloseCode, Error, ErrorCode, ServerEvent, SessionCreated, encode

from ..context import ServerContext
from ..session import Session

log = logging.getLogger(__name__)


class WebSocketOutbox:
    def __init__(self, conn: ServerConnection, ctx: ServerContext) -> None:
        self._conn = conn
        self._ctx = ctx
        self._queue: asyncio.Queue[str | bytes | tuple[int, str]] = asyncio.Queue(maxsize=ctx.config.send_queue_limit)
        self.failed = False
        self._closing: asyncio.Task[None] | None = None

    def send_event(self, event: ServerEvent) -> None:
        self._put(encode(event))

    def send_audio(self, pcm: bytes) -> None:
        self._put(pcm)

    def close_after(self, code: CloseCode, reason: str) -> None:
        """Close once everything queued before has been sent (a fatal error event, say)."""
        self._put((int(code), reason))

    def _put(self, item: str | bytes | tuple[int, str]) -> None:
        if self.failed:
            return
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._slow_consumer(f"{self._queue.qsize()} messages waiting")

    def _slow_consumer(self, detail: str) -> None:
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
        timeout = self._ctx.config.slow_consumer_timeout_s
        while True:
            item = await self._queue.get()
            if isinstance(item, tuple):
                await self._conn.close(item[0], item[1])
                return
            try:
                await asyncio.wait_for(self._conn.send(item), timeout)
            except TimeoutError:
                self._slow_consumer(f"one send blocked for over {timeout:g} s")
                return


class Admission:
    """Checks a new connection against readiness, origin, API keys and capacity."""

    def __init__(self, ctx: ServerContext, is_ready: Callable[[], bool]) -> None:
        self._ctx = ctx
        self._is_ready = is_ready
        self.open_sessions = 0

    @contextlib.asynccontextmanager
    async def slot(self, conn: ServerConnection) -> AsyncIterator[bool]:
        """Yields True with a session slot held, or refuses the connection (fatal error, close) and
        yields False."""
        refusal = self.refuse_reason(conn)
        if refusal is not None:
            code, message, close_code = refusal
            self._ctx.metrics.errors.labels(code.value).inc()
            with contextlib.suppress(ConnectionClosed):
                await conn.send(encode(Error(code=code.value, message=message, fatal=True)))
                await conn.close(close_code, code.value)
            yield False
            return
        self.open_sessions += 1
        self._ctx.metrics.sessions_open.inc()
        self._ctx.metrics.sessions_total.inc()
        try:
            yield True
        finally:
            self.open_sessions -= 1
            self._ctx.metrics.sessions_open.dec()

    def refuse_reason(self, conn: ServerConnection) -> tuple[ErrorCode, str, CloseCode] | None:
        cfg = self._ctx.config
        request = conn.request
        assert request is not None
        if not self._is_ready():
            return ErrorCode.SERVER_NOT_READY, "models are still loading; retry shortly", CloseCode.TRY_AGAIN_LATER
        origin = request.headers.get("Origin")
        if cfg.allowed_origins and origin is not None and origin not in cfg.allowed_origins:
            return ErrorCode.ORIGIN_NOT_ALLOWED, f"origin {origin!r} is not allowed", CloseCode.POLICY_VIOLATION
        if cfg.api_keys and not self._authorized(request.headers.get("Authorization"), request.path):
            return (
                ErrorCode.UNAUTHORIZED,
                "missing or wrong API key: send 'Authorization: Bearer KEY' or '?token=KEY'",
                CloseCode.POLICY_VIOLATION,
            )
        busy = self._busy_reason()
        if busy is not None:
            return ErrorCode.SERVER_BUSY, f"{busy}; retry later", CloseCode.TRY_AGAIN_LATER
        return None

    def _busy_reason(self) -> str | None:
        """Why one more session would hurt the running ones: capacity, a late loop, audio waiting
        to be processed (the server is behind real time), or an ASR engine at its limit."""
        cfg, ctx = self._ctx.config, self._ctx
        if self.open_sessions >= cfg.max_sessions:
            return f"server is at its limit of {cfg.max_sessions} sessions"
        if 0 < cfg.overload_loop_lag_ms < ctx.loop_lag_s * 1000.0:
            return f"server is overloaded (event loop {ctx.loop_lag_s * 1000.0:.0f} ms late)"
        if 0 < cfg.overload_frame_wait_ms < ctx.frame_wait_s * 1000.0:
            return f"server is behind real time (audio waits {ctx.frame_wait_s * 1000.0:.0f} ms)"
        return ctx.asr.overload_reason()

    def _authorized(self, authorization: str | None, path: str) -> bool:
        offered: list[str] = []
        if authorization and authorization.lower().startswith("bearer "):
            offered.append(authorization[7:].strip())
        offered += parse_qs(urlsplit(path).query).get("token", [])
        # constant-time comparison against every configured key
        return any(hmac.compare_digest(o.encode(), k.encode()) for o in offered for k in self._ctx.config.api_keys)


def session_created(ctx: ServerContext, session: Session) -> SessionCreated:
    return SessionCreated(
        session_id=session.id,
        protocol=PROTOCOL_VERSION,
        config=session.config.to_dict(),
        limits=ctx.config.limits.to_dict(),
        engines={"asr": ctx.asr.name, "llm": ctx.llm.name, "tts": ctx.tts.name},
    )


class StreamHandler:
    """Serves `/v1/stream`: one Session per accepted connection."""

    def __init__(self, ctx: ServerContext, admission: Admission) -> None:
        self._ctx = ctx
        self.admission = admission

    async def __call__(self, conn: ServerConnection) -> None:
        async with self.admission.slot(conn) as admitted:
            if admitted:
                await self._serve(conn)

    async def _serve(self, conn: ServerConnection) -> None:
        session_id = uuid.uuid4().hex
        outbox = WebSocketOutbox(conn, self._ctx)
        if self._ctx.config.send_buffer_bytes:
            sock = conn.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._ctx.config.send_buffer_bytes)
        session = Session(self._ctx, outbox, session_id)
        outbox.send_event(session_created(self._ctx, session))
        writer = asyncio.create_task(outbox.run_writer(), name=f"{session_id}-writer")
        worker = asyncio.create_task(session.run(), name=f"{session_id}-input")
        reader = asyncio.create_task(self._read(conn, session), name=f"{session_id}-reader")
        log.info("session %s opened from %s", session_id, conn.remote_address)
        try:
            done, _ = await asyncio.wait({writer, worker, reader}, return_when=asyncio.FIRST_COMPLETED)
            if worker in done and session.closed.is_set():
                outbox.close_after(CloseCode.NORMAL, "session closed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(writer), self._ctx.config.slow_consumer_timeout_s)
            elif worker in done and worker.exception() is not None:
                log.error("session %s crashed", session_id, exc_info=worker.exception())
                outbox.send_event(Error(code=ErrorCode.INTERNAL_ERROR.value, message="internal error", fatal=True))
                outbox.close_after(CloseCode.INTERNAL_ERROR, ErrorCode.INTERNAL_ERROR.value)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(writer), 2.0)
        finally:
            for task in (reader, worker, writer):
                task.cancel()
            await asyncio.gather(reader, worker, writer, return_exceptions=True)
            log.info("session %s closed (%s)", session_id, conn.close_code)

    @staticmethod
    async def _read(conn: ServerConnection, session: Session) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in conn:
                if isinstance(message, str):
                    await session.on_text(message)
                else:
                    await session.on_binary(message)
