"""Pure parsing of the Realtime client events that carry content: items, responses, appended audio.

Each function validates one event's fields and returns plain values, or raises RealtimeError naming
the offending field; the translator owns all state.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Literal

from ..codec import MAX_TEXT_CHARS
from ..config import MAX_INSTRUCTIONS_CHARS
from ..events import MAX_ID_CHARS, MAX_TOOL_OUTPUT_CHARS
from .errors import RealtimeError, RealtimeErrorCode
from .formats import AudioFormat, parse_format
from .session_config import parse_max_output_tokens, parse_modalities, parse_voice, tools_refusal

MAX_ITEM_ID_CHARS = 32  # as OpenAI's service
Role = Literal["user", "assistant", "system"]


def reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def utf8_size(data: str | bytes, limit: int) -> int:
    """Bytes on the wire; the exact count is only needed when a str could be over the limit."""
    if isinstance(data, bytes) or len(data) * 4 <= limit:
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


_SURROGATES = re.compile("[\ud800-\udfff]")


def has_lone_surrogate(obj: Any) -> bool:
    stack = [obj]  # iterative: JSON nested as deep as the parser allows must not overflow here
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if not node.isascii() and _SURROGATES.search(node):
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def require(obj: dict[str, Any], key: str, kind: type, event: str) -> Any:
    if key not in obj or obj[key] is None:
        raise RealtimeError(RealtimeErrorCode.MISSING_REQUIRED_PARAMETER, f"{event}: missing '{key}'", key)
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = {str: "a string", int: "an integer", dict: "an object", list: "a list"}
        raise _invalid(f"{event}: '{key}' must be {names[kind]}", key)
    return value


def decode_audio(obj: dict[str, Any]) -> bytes:
    """The bytes of `input_audio_buffer.append`'s base64 `audio`."""
    audio = require(obj, "audio", str, "input_audio_buffer.append")
    if not audio:
        raise _invalid("input_audio_buffer.append: 'audio' is empty", "audio")
    if any(c in audio for c in "\r\n "):  # line-wrapped base64 (encodebytes) is still base64
        audio = "".join(audio.split())
    try:
        return base64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(
            "input_audio_buffer.append: 'audio' is not valid base64 (standard alphabet, with padding)", "audio"
        ) from None


@dataclass(frozen=True, slots=True)
class NewMessage:
    item_id: str | None  # None: the translator names it
    role: Role
    text: str
    previous_item_id: str | None


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """A client tool's result (`function_call_output`) for the model's call `call_id`."""

    item_id: str | None
    call_id: str
    output: str
    previous_item_id: str | None


def parse_item_create(obj: dict[str, Any]) -> NewMessage | ToolOutput:
    event = "conversation.item.create"
    item = require(obj, "item", dict, event)
    kind = item.get("type", "message")
    if kind == "function_call_output":
        return _parse_tool_output(obj, item, event)
    if kind == "function_call":
        raise _unsupported(
            f"{event}: function_call items come from the model here (in a response); a client adds only their "
            "function_call_output",
            "item.type",
        )
    if isinstance(kind, str) and kind.startswith("mcp"):
        raise RealtimeError(
            RealtimeErrorCode.MCP_NOT_SUPPORTED,
            f"{event}: {kind} items are not supported; the server runs its own MCP servers' tools itself",
            "item.type",
        )
    if kind != "message":
        raise _invalid(f"{event}: item.type must be 'message' or 'function_call_output'", "item.type")
    role = item.get("role")
    if role not in ("user", "assistant", "system"):
        raise _invalid(f"{event}: item.role must be 'user', 'assistant' or 'system'", "item.role")
    content = require(item, "content", list, event)
    texts = [_part_text(part, role, i) for i, part in enumerate(content)]
    text = "\n".join(t for t in texts if t)
    if not text.strip() or len(text) > MAX_TEXT_CHARS:
        raise _invalid(f"{event}: the item's text must be 1 to {MAX_TEXT_CHARS} chars", "item.content")
    item_id, previous = _item_ids(obj, item, event)
    return NewMessage(item_id=item_id, role=role, text=text, previous_item_id=previous)


def _item_ids(obj: dict[str, Any], item: dict[str, Any], event: str) -> tuple[str | None, str | None]:
    item_id = item.get("id")
    if item_id is not None and (not isinstance(item_id, str) or not 1 <= len(item_id) <= MAX_ITEM_ID_CHARS):
        raise _invalid(f"{event}: item.id must be a string of 1 to {MAX_ITEM_ID_CHARS} chars", "item.id")
    previous = obj.get("previous_item_id")
    if previous is not None and not isinstance(previous, str):
        raise _invalid(f"{event}: previous_item_id must be a string", "previous_item_id")
    return item_id, previous


def _parse_tool_output(obj: dict[str, Any], item: dict[str, Any], event: str) -> ToolOutput:
    call_id = require(item, "call_id", str, f"{event} item")
    if not 1 <= len(call_id) <= MAX_ID_CHARS:
        raise _invalid(f"{event}: item.call_id must be 1 to {MAX_ID_CHARS} chars", "item.call_id")
    output = require(item, "output", str, f"{event} item")
    if len(output) > MAX_TOOL_OUTPUT_CHARS:
        raise _invalid(
            f"{event}: item.output is {len(output)} chars; at most {MAX_TOOL_OUTPUT_CHARS} (the model reads all of it)",
            "item.output",
        )
    item_id, previous = _item_ids(obj, item, event)
    return ToolOutput(item_id=item_id, call_id=call_id, output=output, previous_item_id=previous)


def _part_text(part: Any, role: str, index: int) -> str:
    param = f"item.content[{index}]"
    if not isinstance(part, dict):
        raise _invalid(f"{param} must be an object", param)
    kind = part.get("type")
    if role == "assistant" and kind in ("output_text", "text"):
        return _text_field(part, "text", param)
    if role == "assistant" and kind in ("output_audio", "audio"):
        if part.get("audio"):
            raise _unsupported(
                f"{param}: assistant audio cannot be added; send its transcript (the model reads text)", param
            )
        return _text_field(part, "transcript", param)
    if role != "assistant" and kind in ("input_text", "text"):
        return _text_field(part, "text", param)
    if kind == "input_audio":
        raise _unsupported(
            f"{param}: audio items cannot be added; stream it with input_audio_buffer.append and commit", param
        )
    if kind in ("input_image", "item_reference"):
        raise _unsupported(f"{param}: {kind} content is not supported", param)
    raise _invalid(f"{param}: content type {str(kind)[:32]!r} is not valid for a {role} message", param)


def _text_field(part: dict[str, Any], key: str, param: str) -> str:
    value = part.get(key)
    if not isinstance(value, str):
        raise _invalid(f"{param}.{key} must be a string", f"{param}.{key}")
    return value


@dataclass(frozen=True, slots=True)
class ResponseRequest:
    instructions: str | None
    audio_output: bool | None
    max_output_tokens: int | Literal["inf"] | None
    metadata: dict[str, Any] | None
    refusals: tuple[RealtimeError, ...]  # refused parts (tools) while the response goes ahead


def parse_response_create(obj: dict[str, Any], session_format: AudioFormat, session_voice: str) -> ResponseRequest:
    event = "response.create"
    response = obj.get("response")
    if response is None:
        response = {}
    if not isinstance(response, dict):
        raise _invalid(f"{event}: 'response' must be an object", "response")
    conversation = response.get("conversation")
    if conversation not in (None, "auto"):
        raise _unsupported(
            f"{event}: out-of-band responses (conversation {str(conversation)[:16]!r}) are not supported; "
            "every response answers the conversation",
            "response.conversation",
        )
    if response.get("input"):
        raise _unsupported(
            f"{event}: response.input (a custom context) is not supported; add items with conversation.item.create",
            "response.input",
        )
    instructions = response.get("instructions")
    if instructions is not None and (not isinstance(instructions, str) or len(instructions) > MAX_INSTRUCTIONS_CHARS):
        raise _invalid(
            f"{event}: response.instructions must be a string of at most {MAX_INSTRUCTIONS_CHARS} chars",
            "response.instructions",
        )
    modalities = response.get("output_modalities", response.get("modalities"))
    audio_output = None if modalities is None else parse_modalities(modalities, "response.output_modalities")
    max_tokens_value = response.get("max_output_tokens", response.get("max_response_output_tokens"))
    max_tokens = (
        None if max_tokens_value is None else parse_max_output_tokens(max_tokens_value, "response.max_output_tokens")
    )
    audio = response.get("audio")
    output = audio.get("output") if isinstance(audio, dict) else None
    output = output if isinstance(output, dict) else {}
    fmt_value = output.get("format", response.get("output_audio_format"))
    if fmt_value is not None and parse_format(fmt_value, "response.audio.output.format") is not session_format:
        raise _unsupported(
            f"{event}: a per-response output format is not supported; change it with session.update",
            "response.audio.output.format",
        )
    voice_value = output.get("voice", response.get("voice"))
    if voice_value is not None and parse_voice(voice_value, "response.audio.output.voice") != session_voice:
        raise _unsupported(
            f"{event}: a per-response voice is not supported; change it with session.update",
            "response.audio.output.voice",
        )
    metadata = response.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _invalid(f"{event}: response.metadata must be an object", "response.metadata")
    refusals = []
    if response.get("tools"):
        refusal = tools_refusal(response["tools"], "response.tools")
        if refusal is not None:
            refusals.append(refusal)
    return ResponseRequest(instructions, audio_output, max_tokens, metadata, tuple(refusals))


def _invalid(message: str, param: str | None = None) -> RealtimeError:
    return RealtimeError(RealtimeErrorCode.INVALID_VALUE, message, param)


def _unsupported(message: str, param: str | None = None) -> RealtimeError:
    return RealtimeError(RealtimeErrorCode.UNSUPPORTED_FEATURE, message, param)
