"""The server's WebSocket connection: websockets' own, with a budget for ping and pong frames.

websockets answers every ping inside its sans-IO parser, before application code sees the frame,
and writes the pong without flow control. So a client that floods pings and never reads grows the
server's write buffer without bound, and one that does read keeps the event loop busy parsing.
Each connection therefore gets a token bucket for control frames (pings and pongs); a frame past it
is neither answered nor recorded, and the connection is failed with 1008 and the reason
`ping_flood`. Legitimate peers send a keepalive ping every few seconds at most (browsers none).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from websockets.asyncio.server import Server, ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from hark.protocol import CloseCode, ErrorCode

from ..ratelimit import TokenBucket

log = logging.getLogger(__name__)

_CONTROL = (Opcode.PING, Opcode.PONG)
FLOOD_CLOSE_GRACE_S = 1.0  # a flooder's socket is aborted this long after its close frame was sent


class GuardedConnection(ServerConnection):
    """A ServerConnection whose peer may send at most `control_frames_per_s` pings and pongs."""

    control_frames_per_s: ClassVar[float] = 10.0

    def __init__(self, protocol: ServerProtocol, server: Server, **kwargs: Any) -> None:
        super().__init__(protocol, server, **kwargs)
        rate = self.control_frames_per_s
        self._control_budget = TokenBucket(rate, max(2.0 * rate, 5.0))
        self.flooded = False
        self._abort_timer: asyncio.TimerHandle | None = None
        # websockets has no hook for control frames, so the guard wraps the one method of this
        # connection's parser that every received frame goes through
        self._handle_frame = protocol.recv_frame
        protocol.recv_frame = self._recv_frame  # type: ignore[method-assign]

    def _recv_frame(self, frame: Frame) -> None:
        if frame.opcode in _CONTROL and (self.flooded or not self._control_budget.try_take(1)):
            self.flooded = True  # dropped: no pong is queued for it; the read that brought it fails us
            return
        self._handle_frame(frame)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.flooded and self.protocol.state is State.OPEN:
            self._fail_flooded()

    def _fail_flooded(self) -> None:
        rate = self.control_frames_per_s
        log.warning("closing a ping flood from %s (over %g control frames a second)", self.remote_address, rate)
        self._flood_detected()
        # fail, not close: nothing more this peer sends is processed
        self.protocol.fail(CloseCode.POLICY_VIOLATION, f"{ErrorCode.PING_FLOOD.value}: over {rate:g} pings a second")
        try:
            self.send_data()
        except Exception as exc:  # the transport is already broken: connection_lost follows
            self.set_connection_exc(exc)
        # not even read and discarded (a flooder keeps sending, and reading costs a core): the close
        # frame gets a moment to leave, then the socket goes, and the session's reader ends with it
        self.transport.pause_reading()
        self._abort_timer = self.loop.call_later(FLOOD_CLOSE_GRACE_S, self.transport.abort)

    def _flood_detected(self) -> None:
        """Hook for the server's metrics."""


def guarded_connection(control_frames_per_s: float, on_flood: Callable[[], None]) -> type[GuardedConnection]:
    """The connection class for `serve(create_connection=...)`, with this server's budget."""

    class HarkConnection(GuardedConnection):
        def _flood_detected(self) -> None:
            on_flood()

    HarkConnection.control_frames_per_s = control_frames_per_s
    return HarkConnection
