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
    # tools (protocol/tools.py; non-fatal: nothing of the update is applied)
    INVALID_TOOL = "invalid_tool"
    INVALID_TOOL_NAME = "invalid_tool_name"
    DUPLICATE_TOOL_NAME = "duplicate_tool_name"
    INVALID_TOOL_PARAMETERS = "invalid_tool_parameters"
    TOOL_TOO_LARGE = "tool_too_large"
    TOO_MANY_TOOLS = "too_many_tools"
    INVALID_TOOL_CHOICE = "invalid_tool_choice"
    UNKNOWN_TOOL_CHOICE = "unknown_tool_choice"
    # tool calls in a reply (non-fatal)
    UNKNOWN_CALL_ID = "unknown_call_id"  # function_call.output for no call awaiting one
    TOOL_ARGUMENTS_INVALID = "tool_arguments_invalid"  # the model wrote bad arguments twice: the turn ends
    TOOL_ROUND_LIMIT = "tool_round_limit"  # the model kept calling tools past the round limit: the turn ends
    # connection-level (fatal: the server closes the socket after sending it)
    UNAUTHORIZED = "unauthorized"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    SERVER_BUSY = "server_busy"
    SERVER_NOT_READY = "server_not_ready"
    SLOW_CONSUMER = "slow_consumer"
    PING_FLOOD = "ping_flood"  # close reason only: too many WebSocket ping/pong frames
    IDLE_TIMEOUT = "idle_timeout"  # no audio and no events for limits.idle_timeout_s
    INTERNAL_ERROR = "internal_error"
    # HTTP routes only (the JSON error body's code; the status says the rest)
    BAD_REQUEST = "bad_request"  # 400: a request aiohttp could not parse, or a body that is not what the route takes
    NOT_FOUND = "not_found"  # 404
    METHOD_NOT_ALLOWED = "method_not_allowed"  # 405
    PAYLOAD_TOO_LARGE = "payload_too_large"  # 413: over --http-max-body-mb
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # 415
    HEADERS_TOO_LARGE = "headers_too_large"  # 431: a request head over 16 KiB
    # HTTP audio routes (server/http/audio_routes.py)
    AUDIO_INVALID_BASE64 = "audio_invalid_base64"  # 400: audio_base64 is not base64
    AUDIO_UNDECODABLE = "audio_undecodable"  # 400: not WAV/MP3/FLAC/OGG, nor raw PCM16 with a sample_rate
    AUDIO_EMPTY = "audio_empty"  # 400: no audio samples at all
    AUDIO_TOO_LONG = "audio_too_long"  # 413: longer than --http-max-audio-s
    AUDIO_MISSING = "audio_missing"  # 400: no `file` part / no audio_base64
    NO_SPEECH = "no_speech"  # 400: a voice turn whose audio holds no recognizable speech
    PROMPT_TEMPLATE_INVALID = "prompt_template_invalid"  # 400: a prompt_template without {asr_text}
    # HTTP WebRTC routes (server/http/webrtc_routes.py: POST /v1/webrtc/offer, WHIP)
    INVALID_SDP = "invalid_sdp"  # 400: the body is not an SDP offer, or aiortc could not answer it
    SDP_NO_AUDIO = "sdp_no_audio"  # 400: an offer without an audio m-line
    UNKNOWN_SESSION = "unknown_session"  # 404: DELETE of a session that is not running (or not this key's)


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
