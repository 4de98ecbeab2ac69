"""Error and close codes of hark.v1: stable strings and numbers clients can switch on."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ErrorCode(StrEnum):
    # malformed client messages (non-fatal: the message is dropped)
    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    UNKNOWN_EVENT = "unknown_event"
    INVALID_FIELD = "invalid_field"
    MESSAGE_TOO_LARGE = "message_too_large"
    # audio frames (non-fatal: the frame is dropped)
    AUDIO_ODD_LENGTH = "audio_odd_length"
    AUDIO_FRAME_TOO_SHORT = "audio_frame_too_short"
    AUDIO_FRAME_TOO_LONG = "audio_frame_too_long"
    AUDIO_FLOOD = "audio_flood"
    RATE_LIMITED = "rate_limited"
    # state (non-fatal)
    SESSION_CLOSED = "session_closed"
    NOTHING_TO_COMMIT = "nothing_to_commit"
    NO_ACTIVE_RESPONSE = "no_active_response"
    RESPONSE_FAILED = "response_failed"
    LLM_UNAVAILABLE = "llm_unavailable"
    TTS_UNAVAILABLE = "tts_unavailable"  # the reply goes on as text
    # voices (non-fatal: nothing is stored or changed)
    VOICE_CLIP_INVALID = "voice_clip_invalid"
    VOICE_CLIP_TOO_SHORT = "voice_clip_too_short"
    VOICE_CLIP_TOO_LONG = "voice_clip_too_long"
    VOICE_LIMIT_REACHED = "voice_limit_reached"
    VOICE_CLONING_UNSUPPORTED = "voice_cloning_unsupported"
    UNKNOWN_VOICE = "unknown_voice"
    # connection-level (fatal: the server closes the socket after sending it)
    UNAUTHORIZED = "unauthorized"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    SERVER_BUSY = "server_busy"
    SERVER_NOT_READY = "server_not_ready"
    SLOW_CONSUMER = "slow_consumer"
    PING_FLOOD = "ping_flood"  # close reason only: too many WebSocket ping/pong frames
    IDLE_TIMEOUT = "idle_timeout"  # no audio and no events for limits.idle_timeout_s
    INTERNAL_ERROR = "internal_error"


class CloseCode(IntEnum):
    """WebSocket close codes the server uses (RFC 6455 section 7.4.1)."""

    NORMAL = 1000  # session.close handled, or the client closed
    GOING_AWAY = 1001  # server shutting down
    INVALID_DATA = 1007  # a text frame that is not UTF-8 (closed by the WebSocket layer, RFC 6455 8.1)
    POLICY_VIOLATION = 1008  # the reason or a fatal error names it: slow_consumer, ping_flood, idle_timeout, ...
    MESSAGE_TOO_BIG = 1009  # a frame over the hard limit (closed by the WebSocket layer)
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # server busy or still loading models


class ProtocolError(Exception):
    """A message that breaks the hark.v1 contract. The only exception `decode_*` raise."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
