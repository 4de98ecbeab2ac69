"""Error codes of the OpenAI Realtime translation: stable strings a client can switch on."""

from __future__ import annotations

from enum import StrEnum

from ..errors import ErrorCode


class RealtimeErrorCode(StrEnum):
    # malformed client messages: the message is dropped, the session goes on
    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"  # JSON that is not an object with a string `type`
    UNKNOWN_EVENT = "unknown_event"  # a `type` that is not a Realtime client event
    MISSING_REQUIRED_PARAMETER = "missing_required_parameter"
    INVALID_VALUE = "invalid_value"
    MESSAGE_TOO_LARGE = "message_too_large"
    BINARY_FRAME_NOT_SUPPORTED = "binary_frame_not_supported"
    INVALID_AUDIO_FORMAT = "invalid_audio_format"  # decodes, but is not audio in the session's format
    # well-formed requests for what Hark does not do (yet)
    UNSUPPORTED_EVENT = "unsupported_event"  # a Realtime event that has no meaning here (output_audio_buffer.*)
    UNSUPPORTED_FEATURE = "unsupported_feature"
    TOOLS_NOT_SUPPORTED = "tools_not_supported"  # per-response tools (response.create's `tools`)
    MCP_NOT_SUPPORTED = "mcp_not_supported"  # `mcp` tools: the server's own MCP servers serve that need
    # function tools: hark.v1's codes (protocol/tools.py), so a client reads the same code either way
    INVALID_TOOL = ErrorCode.INVALID_TOOL.value
    INVALID_TOOL_NAME = ErrorCode.INVALID_TOOL_NAME.value
    DUPLICATE_TOOL_NAME = ErrorCode.DUPLICATE_TOOL_NAME.value
    INVALID_TOOL_PARAMETERS = ErrorCode.INVALID_TOOL_PARAMETERS.value
    TOOL_TOO_LARGE = ErrorCode.TOOL_TOO_LARGE.value
    TOO_MANY_TOOLS = ErrorCode.TOO_MANY_TOOLS.value
    INVALID_TOOL_CHOICE = ErrorCode.INVALID_TOOL_CHOICE.value
    UNKNOWN_TOOL_CHOICE = ErrorCode.UNKNOWN_TOOL_CHOICE.value
    UNKNOWN_CALL_ID = ErrorCode.UNKNOWN_CALL_ID.value  # a function_call_output for no call that awaits one
    # conversation state
    ITEM_NOT_FOUND = "item_not_found"
    INPUT_AUDIO_BUFFER_COMMIT_EMPTY = "input_audio_buffer_commit_empty"
    CONVERSATION_ALREADY_HAS_ACTIVE_RESPONSE = "conversation_already_has_active_response"
    RESPONSE_CANCEL_NOT_ACTIVE = "response_cancel_not_active"


class RealtimeError(Exception):
    """A client event the translator refuses; becomes one Realtime `error` event naming the cause."""

    def __init__(self, code: RealtimeErrorCode, message: str, param: str | None = None) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message
        self.param = param
