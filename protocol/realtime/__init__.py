"""The OpenAI Realtime API (GA and beta dialects) translated onto Hark's Session, sans-IO.

`RealtimeTranslator` is the whole interface: Realtime client events in, session operations (ops.py)
out; hark.v1 server events and reply PCM in, Realtime server events out.
"""

from . import ops
from .errors import RealtimeError, RealtimeErrorCode
from .events import Dialect
from .formats import AudioFormat
from .translator import Inbound, RealtimeTranslator, encode

REALTIME_PATH = "/v1/realtime"

__all__ = [
    "REALTIME_PATH",
    "AudioFormat",
    "Dialect",
    "Inbound",
    "RealtimeError",
    "RealtimeErrorCode",
    "RealtimeTranslator",
    "encode",
    "ops",
]
