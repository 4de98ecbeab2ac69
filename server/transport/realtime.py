"""The OpenAI Realtime API at `/v1/realtime`: apps and SDKs written for it talk to the same Session.

The WebSocket is the hark.v1 transport's (ws.py: admission, the bounded writer, the idle and
read-probe watchers, the bounded teardown); only the wire format differs. Client text frames go
through the connection's `RealtimeTranslator` (hark.protocol.realtime, sans-IO) into Session
operations (realtime_bridge.py); everything the Session sends comes back through it as Realtime JSON.
Audio travels as base64 inside JSON, so binary frames are refused.

The handshake decides the connection's dialect and identity before anything is sent:
- GA by default; beta when the client sends `OpenAI-Beta: realtime=v1` or offers the subprotocol
  `openai-beta.realtime-v1` (browsers cannot set headers);
- `?model=` is reported back in the session (any name: the server runs what it runs);
- the API key may come as `Authorization: Bearer KEY` or, from a browser, as the subprotocol
  `openai-insecure-api-key.KEY`; a client offering `realtime` gets it back as the selected subprotocol.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request
from websockets.typing import Subprotocol

from hark.protocol import CloseCode, Error, ErrorCode, ServerEvent
from hark.protocol.realtime import REALTIME_PATH, Dialect, RealtimeTranslator, encode
from hark.protocol.realtime.emitter import Emitter, Event

from ..config import ServerConfig
from ..context import ServerContext
from ..session import Session
from .realtime_bridge import RealtimeBridge
from .ws import (
    FATAL_FLUSH_S,
    HandshakeRefusal,
    StreamHandler,
    WebSocketOutbox,
    _Activity,
    handshake_refusal,
    session_created,
)

REALTIME_SUBPROTOCOL = Subprotocol("realtime")
BETA_SUBPROTOCOL = "openai-beta.realtime-v1"
KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."
DEFAULT_MODEL = "hark"
MAX_MODEL_CHARS = 128
_SERVER_ERRORS = {ErrorCode.SERVER_BUSY.value, ErrorCode.SERVER_NOT_READY.value, ErrorCode.INTERNAL_ERROR.value}


# ---------------------------------------------------------------------- the handshake


def offered_subprotocols(headers: Headers) -> list[str]:
    return [item.strip() for value in headers.get_all("Sec-WebSocket-Protocol") for item in value.split(",")]


def dialect_of(headers: Headers) -> Dialect:
    beta = any("realtime=v1" in value.replace(" ", "") for value in headers.get_all("OpenAI-Beta"))
    return Dialect.BETA if beta or BETA_SUBPROTOCOL in offered_subprotocols(headers) else Dialect.GA


def model_of(request: Request) -> str:
    model = parse_qs(urlsplit(request.path).query).get("model", [""])[0].strip()
    return model[:MAX_MODEL_CHARS] or DEFAULT_MODEL


def realtime_handshake_refusal(config: ServerConfig, request: Request) -> HandshakeRefusal | None:
    """As for /v1/stream (origin, API key), with the browser's key subprotocol as one more place for the key."""
    keys = [
        p[len(KEY_SUBPROTOCOL_PREFIX) :]
        for p in offered_subprotocols(request.headers)
        if p.startswith(KEY_SUBPROTOCOL_PREFIX)
    ]
    return handshake_refusal(config, request, keys, f" or the subprotocol '{KEY_SUBPROTOCOL_PREFIX}KEY'")


def select_subprotocol(conn: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """`serve(select_subprotocol=...)`: `realtime` on /v1/realtime when offered; no subprotocol elsewhere."""
    request = conn.request
    if request is not None and urlsplit(request.path).path == REALTIME_PATH and REALTIME_SUBPROTOCOL in offered:
        return REALTIME_SUBPROTOCOL
    return None


def error_text(error: Error, dialect: Dialect = Dialect.GA) -> str:
    """A hark.v1 error as a Realtime `error` event, for when there is no translator (refusals)."""
    kind = "server_error" if error.code in _SERVER_ERRORS else "invalid_request_error"
    return encode(Emitter(dialect).error(error.code, error.message, error_type=kind))


async def refuse_not_ready(conn: ServerConnection) -> None:
    """The port is bound while models load: say so in the client's protocol, and close 1013."""
    refusal = Error(
        code=ErrorCode.SERVER_NOT_READY.value, message="models are still loading; retry shortly", fatal=True
    )
    with contextlib.suppress(ConnectionClosed, TimeoutError):
        async with asyncio.timeout(FATAL_FLUSH_S):
            await conn.send(error_text(refusal))
    await conn.close(CloseCode.TRY_AGAIN_LATER, ErrorCode.SERVER_NOT_READY.value)


# ---------------------------------------------------------------------- the connection


class RealtimeOutbox(WebSocketOutbox):
    """The Session's output as Realtime events, through the connection's translator (and its bridge,
    which notes the items they name), into the hark.v1 transport's bounded queue."""

    def __init__(self, conn: ServerConnection, ctx: ServerContext, translator: RealtimeTranslator) -> None:
        super().__init__(conn, ctx)
        self.translator = translator
        self.bridge: RealtimeBridge | None = None

    def wire_texts(self, event: ServerEvent) -> list[str]:
        events = self.bridge.translate(event) if self.bridge is not None else self.translator.on_server_event(event)
        return [encode(e) for e in events]

    def send_audio(self, pcm: bytes) -> None:
        self.send_realtime(
            self.bridge.translate_audio(pcm) if self.bridge is not None else self.translator.on_reply_audio(pcm)
        )

    def send_realtime(self, events: Iterable[Event]) -> None:
        for event in events:
            self._put(encode(event))


class RealtimeHandler(StreamHandler):
    """Serves `/v1/realtime`: one Session per accepted connection, as StreamHandler does for /v1/stream."""

    @staticmethod
    def _encode_error(error: Error) -> str:
        return error_text(error)

    def _open(self, conn: ServerConnection, session_id: str) -> tuple[WebSocketOutbox, Session]:
        request = conn.request
        assert request is not None  # a handler runs after the handshake
        translator = RealtimeTranslator(
            dialect_of(request.headers),
            model_of(request),
            max_message_bytes=self._ctx.config.limits.max_message_bytes,
        )
        outbox = RealtimeOutbox(conn, self._ctx, translator)
        session = Session(self._ctx, outbox, session_id)
        outbox.bridge = RealtimeBridge(session, translator, outbox.send_realtime)
        outbox.send_event(session_created(self._ctx, session))
        return outbox, session

    @staticmethod
    async def _read(conn: ServerConnection, session: Session, outbox: WebSocketOutbox, activity: _Activity) -> None:
        assert isinstance(outbox, RealtimeOutbox) and outbox.bridge is not None
        bridge = outbox.bridge
        try:
            await bridge.start()
            with contextlib.suppress(ConnectionClosed):
                async for message in conn:
                    activity.touch()
                    await bridge.receive(message)
        finally:
            bridge.close()
