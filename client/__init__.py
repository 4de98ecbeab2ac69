"""Python client for hark.v1: `HarkClient`, pacing (`stream_pcm`), result collection and WAV helpers."""

from .client import (
    AudioChunk,
    Conversation,
    HarkClient,
    HarkConnectError,
    HarkConnectionClosed,
    HarkError,
    HarkServerError,
    IncomingEvent,
    Pace,
    StreamStats,
    TurnResult,
    stream_pcm,
)
from .wav import read_wav, resample_pcm16, write_wav

__all__ = [
    "AudioChunk",
    "Conversation",
    "HarkClient",
    "HarkConnectError",
    "HarkConnectionClosed",
    "HarkError",
    "HarkServerError",
    "IncomingEvent",
    "Pace",
    "StreamStats",
    "TurnResult",
    "read_wav",
    "resample_pcm16",
    "stream_pcm",
    "write_wav",
]
