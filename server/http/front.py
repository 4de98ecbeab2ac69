"""One listener for WebSockets and plain HTTP: a protocol that reads the request head, then hands
the connection to websockets (an upgrade) or to aiohttp's low-level server (everything else).

websockets 17 refuses any request with a body, so HTTP routes that take one (audio, SDP) live in
an aiohttp application. Both libraries are asyncio protocols, so the choice is made per connection
before either sees a byte: `serve(create_connection=...)` returns a `FrontProtocol` to
`loop.create_server`; it buffers the head (at most `HEAD_LIMIT` bytes, within `HEAD_TIMEOUT_S`),
then `transport.set_protocol(...)`, `connection_made`, and the buffered bytes are replayed into the
chosen protocol. websockets' `connection_made` is what starts its handler task, so the websockets
Server only ever knows upgraded connections (its drain, ping budget and handshake stay as they
were); aiohttp keeps the connection alive for further HTTP requests. A WebSocket upgrade on a
keep-alive HTTP connection after other requests is not supported: only the first request chooses.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, cast

from websockets.asyncio.server import Server, ServerConnection
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from hark.protocol import ErrorCode

log = logging.getLogger(__name__)

HEAD_LIMIT = 16 * 1024  # request line and headers; browsers send well under 8 KiB
HEAD_TIMEOUT_S = 10.0  # websockets' own open_timeout: a slowloris head is aborted after this

_HEAD_END = b"\r\n\r\n"


def wants_websocket(head: bytes) -> bool:
    """Whether a request head carries `Upgrade: websocket` (a token in any Upgrade header, any case)."""
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"upgrade":
            if any(token.strip().lower() == b"websocket" for token in value.split(b",")):
                return True
    return False


class FrontProtocol(asyncio.Protocol):
    """Owns a fresh connection until its request head is read, then hands it over for good."""

    def __init__(
        self,
        websocket: ServerConnection,
        http_protocol: Callable[[], asyncio.Protocol],
        pending: set[FrontProtocol],
        on_refused: Callable[[int], None],
        head_timeout_s: float = HEAD_TIMEOUT_S,
    ) -> None:
        self.websocket = websocket
        # websockets' protocol_factory asserts `protocol is connection.protocol` for the connection
        # it returned (this object) when it selects a subprotocol
        self.protocol: ServerProtocol = websocket.protocol
        self._http_protocol = http_protocol
        self._pending = pending
        self._on_refused = on_refused
        self._head_timeout_s = head_timeout_s
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._pending.add(self)
        self._timer = asyncio.get_running_loop().call_later(self._head_timeout_s, self._head_timed_out)

    def data_received(self, data: bytes) -> None:
        if self._transport is None:  # refused already; the transport is closing
            return
        searched = max(0, len(self._buffer) - len(_HEAD_END) + 1)
        self._buffer += data
        end = self._buffer.find(_HEAD_END, searched)
        if end < 0:
            if len(self._buffer) > HEAD_LIMIT:
                self._refuse_head_too_large()
            return
        if end + len(_HEAD_END) > HEAD_LIMIT:
            self._refuse_head_too_large()
            return
        upgrade = wants_websocket(bytes(self._buffer[:end]))
        self._hand_over(self.websocket if upgrade else self._http_protocol())

    def eof_received(self) -> bool | None:
        self._forget()  # a half-closed client before a whole head: nothing to answer
        return None  # False: the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()

    def abort(self) -> None:
        """Shutdown: a connection that never finished its head is dropped."""
        transport = self._transport
        self._forget()
        if transport is not None:
            transport.abort()

    def _hand_over(self, protocol: asyncio.Protocol) -> None:
        transport = self._transport
        assert transport is not None
        data = bytes(self._buffer)
        self._forget()
        # public asyncio API (BaseTransport.set_protocol), supported by uvloop's transports too
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if not transport.is_closing():
            protocol.data_received(data)

    def _refuse_head_too_large(self) -> None:
        transport = self._transport
        assert transport is not None
        self._forget()
        message = f"the request head is over {HEAD_LIMIT} bytes"
        body = json.dumps({"error": {"code": ErrorCode.HEADERS_TOO_LARGE.value, "message": message}}).encode()
        transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"
            b"Cache-Control: no-store\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        transport.close()  # after the buffered response is written
        self._on_refused(431)

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._transport is not None:
            log.debug("no complete request head within %g s; dropping the connection", self._head_timeout_s)
            self.abort()

    def _forget(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None
        self._buffer = bytearray()
        self._pending.discard(self)


class Front:
    """The `create_connection` for websockets' `serve`, and the connections it has not handed over yet."""

    def __init__(
        self,
        websocket_class: type[ServerConnection],
        http_protocol: Callable[[], asyncio.Protocol],
        on_refused: Callable[[int], None] = lambda status: None,
        head_timeout_s: float = HEAD_TIMEOUT_S,
    ) -> None:
        self._websocket_class = websocket_class
        self._http_protocol = http_protocol
        self._on_refused = on_refused
        self._head_timeout_s = head_timeout_s
        self.pending: set[FrontProtocol] = set()

    def __call__(self, protocol: ServerProtocol, server: Server, **kwargs: Any) -> FrontProtocol:
        """websockets calls `create_connection(protocol, server, **kwargs)` and gives what it returns
        to `loop.create_server`; its annotation says a ServerConnection class, any callable works."""
        websocket = self._websocket_class(protocol, server, **kwargs)
        return FrontProtocol(websocket, self._http_protocol, self.pending, self._on_refused, self._head_timeout_s)

    def abort_pending(self) -> None:
        for front in list(self.pending):
            front.abort()


def select_through_front(
    select: Callable[[ServerConnection, Sequence[Subprotocol]], Subprotocol | None],
) -> Callable[[Any, Sequence[Subprotocol]], Subprotocol | None]:
    """`serve(select_subprotocol=...)` is called with what create_connection returned (a FrontProtocol);
    the selection itself wants the WebSocket connection (its request)."""

    def selected(conn: Any, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        return select(conn.websocket if isinstance(conn, FrontProtocol) else conn, offered)

    return selected
