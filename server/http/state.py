"""What the HTTP routes share with the rest of the server; filled in once the models are loaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hark.protocol import ErrorCode

from ..config import ServerConfig
from ..context import ServerContext
from ..metrics import Metrics
from .errors import HttpError

if TYPE_CHECKING:
    from ..transport.webrtc import WebRTCHandler
    from ..transport.ws import Admission


@dataclass(slots=True)
class HttpState:
    config: ServerConfig
    metrics: Metrics
    ctx: ServerContext | None = None  # None while the models load (the port is bound first)
    admission: Admission | None = None
    webrtc: WebRTCHandler | None = None  # None: the webrtc extra is not installed

    def ready(self) -> ServerContext:
        """The loaded context, or a 503 the client can retry on."""
        if self.ctx is None:
            raise HttpError(503, ErrorCode.SERVER_NOT_READY, "models are still loading; retry shortly")
        return self.ctx
