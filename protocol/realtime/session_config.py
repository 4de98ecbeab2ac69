"""The Realtime session as the client sees it, and `session.update` (GA or beta shape) mapped onto Hark.

Hark settings that exist in hark.v1's SessionConfig go out as one validated config patch; the rest
(turn detection mode, create/interrupt_response, max_output_tokens, transcription) are kept here and
go out as their own ops. An update with an invalid value is refused whole (nothing of it applies),
bad function tools included (with hark.v1's tool codes); features Hark does not have (`mcp` tools,
stored prompts) are refused one by one while the rest applies, since SDKs send them in the same update
as everything else. Function tools are the session's client tools (protocol/tools.py): the model's
calls go to the client as `function_call` items (responses.py).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import MAX_INSTRUCTIONS_CHARS, validate_config_patch
from ..errors import ProtocolError
from ..tools import ToolChoiceSetting, ToolDefinition
from . import g711
from .errors import RealtimeError, RealtimeErrorCode
from .events import Dialect
from .formats import AudioFormat, parse_format
from .ops import SessionOp, SetMaxOutputTokens, SetTranscription, SetTurnDetection, TurnDetectionType

# hark.v1's accepted ranges (protocol/config.py); Realtime values outside them but inside Realtime's
# own ranges are clamped, and the echo shows the value in effect. The patch still goes through
# validate_config_patch, so a drift between the two files is an error, not a silent pass.
_HARK_CLAMPS = {"vad_threshold": (0.05, 0.95), "speech_pad_ms": (0, 1000), "min_silence_ms": (100, 5000)}
_EAGERNESS = ("low", "medium", "high", "auto")
_MISSING: Any = object()


@dataclass(slots=True)
class TurnDetection:
    type: TurnDetectionType
    create_response: bool = True
    interrupt_response: bool = True
    eagerness: str = "auto"  # semantic_vad only
    idle_timeout_ms: int | None = None  # server_vad only


@dataclass(slots=True)
class Transcription:
    model: str | None = None
    language: str | None = None
    prompt: str | None = None


@dataclass(slots=True)
class RealtimeSession:
    """What `session.created` / `session.updated` report. `hark` mirrors the hark.v1 SessionConfig."""

    id: str
    model: str
    hark: dict[str, Any]
    input_format: AudioFormat = AudioFormat.PCM
    output_format: AudioFormat = AudioFormat.PCM
    turn_detection: TurnDetection | None = field(default_factory=lambda: TurnDetection("server_vad"))
    transcription: Transcription | None = field(default_factory=Transcription)
    max_output_tokens: int | Literal["inf"] = "inf"

    @property
    def audio_output(self) -> bool:
        return bool(self.hark.get("audio_output", True))

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The session's function tools in their wire shape (hark.v1's config holds the same list)."""
        return [_tool_dict(tool) for tool in self.hark.get("tools") or ()]

    @property
    def tool_choice(self) -> str | dict[str, Any]:
        choice = self.hark.get("tool_choice", "auto")
        return choice.to_wire() if isinstance(choice, ToolChoiceSetting) else choice

    def render(self, dialect: Dialect) -> dict[str, Any]:
        hark = self.hark
        transcription = None if self.transcription is None else _transcription_dict(self.transcription)
        if dialect is Dialect.GA:
            return {
                "type": "realtime",
                "object": "realtime.session",
                "id": self.id,
                "model": self.model,
                "output_modalities": ["audio"] if self.audio_output else ["text"],
                "instructions": hark.get("instructions", ""),
                "tools": self.tools,
                "tool_choice": self.tool_choice,
                "max_output_tokens": self.max_output_tokens,
                "tracing": None,
                "audio": {
                    "input": {
                        "format": self.input_format.ga(),
                        "transcription": transcription,
                        "noise_reduction": None,
                        "turn_detection": self._render_turn_detection(dialect),
                    },
                    "output": {"format": self.output_format.ga(), "voice": hark.get("voice"), "speed": 1.0},
                },
            }
        # beta: flat; its `model` is a closed list of OpenAI's names, so Hark's is not echoed there
        return {
            "object": "realtime.session",
            "id": self.id,
            "modalities": ["text", "audio"] if self.audio_output else ["text"],
            "instructions": hark.get("instructions", ""),
            "voice": hark.get("voice"),
            "input_audio_format": self.input_format.beta(),
            "output_audio_format": self.output_format.beta(),
            "input_audio_transcription": transcription,
            "input_audio_noise_reduction": None,
            "turn_detection": self._render_turn_detection(dialect),
            "tools": self.tools,
            "tool_choice": choice if isinstance(choice := self.tool_choice, str) else choice["name"],
            "max_response_output_tokens": self.max_output_tokens,
            "speed": 1.0,
        }

    def _render_turn_detection(self, dialect: Dialect) -> dict[str, Any] | None:
        td = self.turn_detection
        if td is None:
            return None
        if td.type == "semantic_vad":
            return {
                "type": "semantic_vad",
                "eagerness": td.eagerness,
                "create_response": td.create_response,
                "interrupt_response": td.interrupt_response,
            }
        rendered: dict[str, Any] = {
            "type": "server_vad",
            "threshold": self.hark.get("vad_threshold"),
            "prefix_padding_ms": self.hark.get("speech_pad_ms"),
            "silence_duration_ms": self.hark.get("min_silence_ms"),
            "create_response": td.create_response,
            "interrupt_response": td.interrupt_response,
        }
        if dialect is Dialect.GA:
            rendered["idle_timeout_ms"] = td.idle_timeout_ms
        return rendered

    def turn_detection_op(self, event_id: str | None) -> SetTurnDetection:
        td = self.turn_detection
        if td is None:
            return SetTurnDetection(mode=None, policy=None, event_id=event_id)
        policy: dict[str, Any]
        if td.type == "semantic_vad":
            policy = {"type": "semantic", "eagerness": td.eagerness}
        else:
            policy = {"type": "silence", "silence_ms": self.hark.get("min_silence_ms")}
        return SetTurnDetection(
            mode=td.type,
            policy=policy,
            create_response=td.create_response,
            interrupt_response=td.interrupt_response,
            idle_timeout_ms=td.idle_timeout_ms,
            event_id=event_id,
        )


def _tool_dict(tool: Any) -> dict[str, Any]:
    return tool.to_dict() if isinstance(tool, ToolDefinition) else dict(tool)


def _transcription_dict(t: Transcription) -> dict[str, Any]:
    fields = {"model": t.model, "language": t.language, "prompt": t.prompt}
    return {key: value for key, value in fields.items() if value is not None}


@dataclass(slots=True)
class UpdatePlan:
    session: RealtimeSession  # the session after the update
    patch: dict[str, Any]  # for hark.v1's SessionConfig, validated
    ops: list[SessionOp]  # for the settings hark.v1 lacks
    refusals: list[RealtimeError]  # features refused while the rest of the update applies


def plan_update(update: Any, current: RealtimeSession, event_id: str | None) -> UpdatePlan:
    """Map `session.update`'s `session` object onto Hark; raises RealtimeError for an invalid value."""
    if not isinstance(update, dict):
        raise RealtimeError(RealtimeErrorCode.INVALID_VALUE, "session.update: 'session' must be an object", "session")
    session = copy.deepcopy(current)
    reader = _Reader(update)
    patch: dict[str, Any] = {}
    ops: list[SessionOp] = []
    refusals: list[RealtimeError] = []

    kind = update.get("type", "realtime")
    if kind != "realtime":
        raise RealtimeError(
            RealtimeErrorCode.UNSUPPORTED_FEATURE,
            f"session.type {str(kind)[:32]!r} is not served here; only 'realtime' (speech-to-speech) sessions",
            "session.type",
        )
    instructions = reader.get("session.instructions", ("instructions",))
    if instructions is not _MISSING:
        if not isinstance(instructions, str) or len(instructions) > MAX_INSTRUCTIONS_CHARS:
            raise RealtimeError(
                RealtimeErrorCode.INVALID_VALUE,
                f"session.instructions must be a string of at most {MAX_INSTRUCTIONS_CHARS} characters",
                "session.instructions",
            )
        patch["instructions"] = instructions
    modalities = reader.get("session.output_modalities", ("output_modalities",), ("modalities",))
    if modalities is not _MISSING:
        patch["audio_output"] = parse_modalities(modalities, "session.output_modalities")
    voice = reader.get("session.audio.output.voice", ("audio", "output", "voice"), ("voice",))
    if voice is not _MISSING:
        patch["voice"] = parse_voice(voice, "session.audio.output.voice")
    speed = reader.get("session.audio.output.speed", ("audio", "output", "speed"), ("speed",))
    if speed is not _MISSING and speed is not None:
        # accepted so SDK defaults pass; Hark's TTS speaks at its own rate (the echo says 1.0)
        if not _is_number(speed) or not 0.25 <= speed <= 1.5:
            raise RealtimeError(
                RealtimeErrorCode.INVALID_VALUE, "session.audio.output.speed must be in [0.25, 1.5]", "speed"
            )
    for direction, rate_key in (("input", "input_sample_rate"), ("output", "output_sample_rate")):
        value = reader.get(
            f"session.audio.{direction}.format", ("audio", direction, "format"), (f"{direction}_audio_format",)
        )
        if value is not _MISSING:
            fmt = parse_format(value, f"session.audio.{direction}.format")
            g711.require(fmt, f"session.audio.{direction}.format")
            if direction == "input":
                session.input_format = fmt
            else:
                session.output_format = fmt
            patch[rate_key] = fmt.sample_rate
    transcription = reader.get(
        "session.audio.input.transcription", ("audio", "input", "transcription"), ("input_audio_transcription",)
    )
    if transcription is not _MISSING:
        session.transcription = _parse_transcription(transcription)
        t = session.transcription
        ops.append(
            SetTranscription(
                enabled=t is not None,
                model=t.model if t else None,
                language=t.language if t else None,
                prompt=t.prompt if t else None,
                event_id=event_id,
            )
        )
    turn_detection = reader.get(
        "session.audio.input.turn_detection", ("audio", "input", "turn_detection"), ("turn_detection",)
    )
    if turn_detection is not _MISSING:
        session.turn_detection = _parse_turn_detection(turn_detection, current.turn_detection, patch)
    max_tokens = reader.get("session.max_output_tokens", ("max_output_tokens",), ("max_response_output_tokens",))
    if max_tokens is not _MISSING:
        session.max_output_tokens = parse_max_output_tokens(max_tokens, "session.max_output_tokens")
        limit = session.max_output_tokens
        ops.append(SetMaxOutputTokens(limit=None if limit == "inf" else limit, event_id=event_id))
    tools = update.get("tools")
    if tools is not None:
        patch["tools"] = function_tools(tools, "session.tools", refusals)
    tool_choice = update.get("tool_choice")
    if tool_choice is not None:
        if isinstance(tool_choice, dict) and tool_choice.get("type") == "mcp":
            refusals.append(_mcp_refusal("session.tool_choice"))
        elif isinstance(tool_choice, str) and tool_choice not in ("auto", "none", "required"):
            patch["tool_choice"] = {"type": "function", "name": tool_choice}  # beta's type is a string: a name
        else:
            patch["tool_choice"] = tool_choice
    if update.get("prompt") is not None:
        refusals.append(
            RealtimeError(
                RealtimeErrorCode.UNSUPPORTED_FEATURE,
                "session.prompt (a prompt stored on OpenAI's platform) cannot be fetched here; send its text "
                "as session.instructions",
                "session.prompt",
            )
        )

    try:
        patch = validate_config_patch(patch)
    except ProtocolError as exc:  # tools have their own codes; the clamps keep the rest inside (drift guard)
        code = RealtimeErrorCode(exc.code.value) if exc.code.value in _TOOL_CODES else RealtimeErrorCode.INVALID_VALUE
        param = "session.tool_choice" if code is RealtimeErrorCode.INVALID_TOOL_CHOICE else "session"
        raise RealtimeError(
            code, _realtime_names(exc.message), "session.tools" if code in _TOOLS_PARAM else param
        ) from None
    if "tools" in patch:  # the ops carry the wire shape (JSON), checked: validate_config_patch parses it again
        patch["tools"] = [tool.to_dict() for tool in patch["tools"]]
    if "tool_choice" in patch:
        patch["tool_choice"] = patch["tool_choice"].to_wire()
    choice = patch.get("tool_choice", session.tool_choice)
    if isinstance(choice, dict):  # a forced function must be a tool (the Session also knows its server tools)
        names = {tool["name"] for tool in patch.get("tools", session.tools)}
        if choice["name"] not in names:
            raise RealtimeError(
                RealtimeErrorCode.UNKNOWN_TOOL_CHOICE,
                f"session.tool_choice names {choice['name']!r}, which is not one of session.tools "
                f"({', '.join(sorted(names)) or 'none'})",
                "session.tool_choice",
            )
    session.hark.update(patch)
    if turn_detection is not _MISSING:
        ops.insert(0, session.turn_detection_op(event_id))
    return UpdatePlan(session=session, patch=patch, ops=ops, refusals=refusals)


class _Reader:
    """Finds a setting at its GA path or its beta (flat) spelling: clients mix the two."""

    def __init__(self, update: dict[str, Any]) -> None:
        self._update = update

    def get(self, param: str, *paths: tuple[str, ...]) -> Any:
        for path in paths:
            node: Any = self._update
            for i, key in enumerate(path):
                if not isinstance(node, dict) or key not in node:
                    break
                node = node[key]
                if i < len(path) - 1 and node is not None and not isinstance(node, dict):
                    prefix = "session." + ".".join(path[: i + 1])
                    raise RealtimeError(RealtimeErrorCode.INVALID_VALUE, f"{prefix} must be an object", prefix)
            else:
                return node
        return _MISSING


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_modalities(value: Any, param: str) -> bool:
    """["audio"] (GA), ["text", "audio"] (beta's default) -> audio replies; ["text"] -> text only."""
    if not isinstance(value, list) or not value or any(m not in ("text", "audio") for m in value):
        raise RealtimeError(RealtimeErrorCode.INVALID_VALUE, f"{param} must be ['audio'] or ['text']", param)
    return "audio" in value


def parse_voice(value: Any, param: str) -> str:
    if isinstance(value, dict):  # a custom voice object {"id": ...}
        value = value.get("id")
    if not isinstance(value, str) or not 1 <= len(value) <= 64:
        raise RealtimeError(
            RealtimeErrorCode.INVALID_VALUE, f"{param} must be a voice name of 1 to 64 characters", param
        )
    return value


def parse_max_output_tokens(value: Any, param: str) -> int | Literal["inf"]:
    if value == "inf" or value is None:
        return "inf"
    if not _is_int(value) or not 1 <= value <= 4096:
        raise RealtimeError(RealtimeErrorCode.INVALID_VALUE, f"{param} must be an integer in [1, 4096] or 'inf'", param)
    return int(value)


_TOOL_CODES = {
    code.value
    for code in (
        RealtimeErrorCode.INVALID_TOOL,
        RealtimeErrorCode.INVALID_TOOL_NAME,
        RealtimeErrorCode.DUPLICATE_TOOL_NAME,
        RealtimeErrorCode.INVALID_TOOL_PARAMETERS,
        RealtimeErrorCode.TOOL_TOO_LARGE,
        RealtimeErrorCode.TOO_MANY_TOOLS,
        RealtimeErrorCode.INVALID_TOOL_CHOICE,
        RealtimeErrorCode.UNKNOWN_TOOL_CHOICE,
    )
}
_TOOLS_PARAM = {RealtimeErrorCode(code) for code in _TOOL_CODES} - {
    RealtimeErrorCode.INVALID_TOOL_CHOICE,
    RealtimeErrorCode.UNKNOWN_TOOL_CHOICE,
}


def _realtime_names(message: str) -> str:
    """hark.v1's messages name `config.tools`; the Realtime client sent `session.tools`."""
    return message.replace("config.tools", "session.tools").replace("config.tool_choice", "session.tool_choice")


def _mcp_refusal(param: str) -> RealtimeError:
    return RealtimeError(
        RealtimeErrorCode.MCP_NOT_SUPPORTED,
        f"{param}: MCP servers cannot be attached by a client; the server's own (--mcp-server) serve every "
        "session, and the session goes on without these",
        param,
    )


def function_tools(tools: Any, param: str, refusals: list[RealtimeError]) -> list[Any]:
    """The function tools of a Realtime `tools` list, checked later by hark.v1's parser; `mcp` entries
    are refused (appended to `refusals`) and left out. Fields sent as null (SDKs send unset ones so)
    are dropped, since hark.v1's tool shape has no nulls."""
    if not isinstance(tools, list):
        raise RealtimeError(RealtimeErrorCode.INVALID_TOOL, f"{param} must be a list of tools", param)
    kept: list[Any] = []
    for tool in tools:
        if isinstance(tool, dict) and tool.get("type") == "mcp":
            if not refusals or refusals[-1].code is not RealtimeErrorCode.MCP_NOT_SUPPORTED:
                refusals.append(_mcp_refusal(param))
            continue
        kept.append(
            {key: value for key, value in tool.items() if value is not None} if isinstance(tool, dict) else tool
        )
    return kept


def tools_refusal(tools: Any, param: str) -> RealtimeError | None:
    """Tools given per response (response.create): the session's tools are the only ones."""
    if not isinstance(tools, list):
        return RealtimeError(RealtimeErrorCode.INVALID_VALUE, f"{param} must be a list", param)
    if not tools:
        return None
    if any(isinstance(tool, dict) and tool.get("type") == "mcp" for tool in tools):
        return _mcp_refusal(param)
    return RealtimeError(
        RealtimeErrorCode.TOOLS_NOT_SUPPORTED,
        f"{param}: tools per response are not supported; set them with session.update (session.tools); "
        "the response goes ahead with the session's tools",
        param,
    )


def _parse_transcription(value: Any) -> Transcription | None:
    param = "session.audio.input.transcription"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RealtimeError(RealtimeErrorCode.INVALID_VALUE, f"{param} must be an object or null", param)
    fields: dict[str, str | None] = {}
    for key, limit in (("model", 128), ("language", 32), ("prompt", 4000)):
        item = value.get(key)
        if item is not None and (not isinstance(item, str) or len(item) > limit):
            raise RealtimeError(
                RealtimeErrorCode.INVALID_VALUE,
                f"{param}.{key} must be a string of at most {limit} chars",
                f"{param}.{key}",
            )
        fields[key] = item
    return Transcription(**fields)


def _parse_turn_detection(value: Any, current: TurnDetection | None, patch: dict[str, Any]) -> TurnDetection | None:
    param = "session.audio.input.turn_detection"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RealtimeError(RealtimeErrorCode.INVALID_VALUE, f"{param} must be an object or null", param)
    kind = value.get("type", current.type if current else "server_vad")
    if kind not in ("server_vad", "semantic_vad"):
        raise RealtimeError(
            RealtimeErrorCode.INVALID_VALUE, f"{param}.type must be 'server_vad' or 'semantic_vad'", f"{param}.type"
        )
    # fields not given keep their value when the mode stays, else take the defaults
    td = copy.copy(current) if current is not None and current.type == kind else TurnDetection(kind)
    for flag in ("create_response", "interrupt_response"):
        if flag in value and value[flag] is not None:
            if not isinstance(value[flag], bool):
                raise RealtimeError(
                    RealtimeErrorCode.INVALID_VALUE, f"{param}.{flag} must be true or false", f"{param}.{flag}"
                )
            setattr(td, flag, value[flag])
    if kind == "semantic_vad":
        eagerness = value.get("eagerness")
        if eagerness is not None:
            if eagerness not in _EAGERNESS:
                raise RealtimeError(
                    RealtimeErrorCode.INVALID_VALUE,
                    f"{param}.eagerness must be one of {', '.join(_EAGERNESS)}",
                    f"{param}.eagerness",
                )
            td.eagerness = eagerness
        return td
    threshold = value.get("threshold")
    if threshold is not None:
        if not _is_number(threshold) or not 0.0 <= threshold <= 1.0:
            raise RealtimeError(
                RealtimeErrorCode.INVALID_VALUE, f"{param}.threshold must be in [0, 1]", f"{param}.threshold"
            )
        patch["vad_threshold"] = _clamp("vad_threshold", float(threshold))
    for realtime_key, hark_key in (("prefix_padding_ms", "speech_pad_ms"), ("silence_duration_ms", "min_silence_ms")):
        ms = value.get(realtime_key)
        if ms is not None:
            if not _is_int(ms) or ms < 0:
                raise RealtimeError(
                    RealtimeErrorCode.INVALID_VALUE,
                    f"{param}.{realtime_key} must be a non-negative integer",
                    f"{param}.{realtime_key}",
                )
            patch[hark_key] = int(_clamp(hark_key, ms))
    if "idle_timeout_ms" in value:
        idle = value["idle_timeout_ms"]
        if idle is not None and (not _is_int(idle) or idle <= 0):
            raise RealtimeError(
                RealtimeErrorCode.INVALID_VALUE,
                f"{param}.idle_timeout_ms must be a positive integer or null",
                f"{param}.idle_timeout_ms",
            )
        td.idle_timeout_ms = idle
    return td


def _clamp(key: str, value: float) -> float:
    lo, hi = _HARK_CLAMPS[key]
    return min(max(value, lo), hi)
