"""Per-session configuration and limits: what `session.update` may change and what the server enforces."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from msgspec import Meta

from .errors import ErrorCode, ProtocolError
from .schema import FieldSchema, Mismatch, OneOf, UnknownField
from .tools import AUTO, ToolChoiceSetting, ToolDefinition, check_tool_choice, parse_tool_choice, parse_tools
from .turn_detection import (
    SilenceMs,
    SilenceTurnDetection,
    TurnDetection,
    parse_turn_detection,
    turn_detection_dict,
)

SUPPORTED_SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
MAX_INSTRUCTIONS_CHARS = 4000

MAX_TOOL_FILLER_CHARS = 200

SampleRate = Annotated[int, OneOf(SUPPORTED_SAMPLE_RATES)]
SILENCE_POLICY = SilenceTurnDetection()  # the protocol's default; a server with a turn model says semantic


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Everything a client may set with `session.update`. Defaults are the server's.

    The annotations are the rules `session.update` is checked against (`validate_config_patch`).
    `turn_detection` is how a turn ends (turn_detection.py); its silence policy's `silence_ms` is
    `min_silence_ms`, which also stays the semantic policy's fallback when its model cannot answer.
    """

    input_sample_rate: SampleRate = 16000
    output_sample_rate: SampleRate = 16000
    vad_threshold: Annotated[float, Meta(ge=0.05, le=0.95)] = 0.5
    min_silence_ms: SilenceMs = 500
    speech_pad_ms: Annotated[int, Meta(ge=0, le=1000)] = 200
    min_interrupt_ms: Annotated[int, Meta(ge=0, le=5000)] = 300
    audio_output: bool = True
    voice: Annotated[str, Meta(max_length=64)] = "en-us"
    instructions: Annotated[str, Meta(max_length=MAX_INSTRUCTIONS_CHARS)] = ""
    # a spoken turn the recognizer is less sure of than this is not answered: the assistant asks
    # to repeat or type it (0 turns that off; engines that report no confidence never trigger it)
    min_asr_confidence: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.65
    turn_detection: TurnDetection = SILENCE_POLICY
    # function tools the model may call (protocol/tools.py); the client runs them unless the server
    # has a tool of that name (server tools from MCP servers join the list on the server's side)
    tools: tuple[ToolDefinition, ...] = ()
    tool_choice: ToolChoiceSetting = AUTO
    # a client tool not answered (function_call.output) this soon becomes a timeout error for the model
    client_tool_timeout_s: Annotated[float, Meta(gt=0, le=600)] = 30.0
    # spoken once per reply when tools run longer than tool_filler_after_ms and the model said
    # nothing before calling them ("": no filler, the default)
    tool_filler: Annotated[str, Meta(max_length=MAX_TOOL_FILLER_CHARS)] = ""
    tool_filler_after_ms: Annotated[int, Meta(ge=0, le=60_000)] = 1000

    def __post_init__(self) -> None:
        # tools from a dict (session.created, a TOML table) arrive in their wire shape: parse them
        try:
            if not isinstance(self.tools, tuple) or not all(isinstance(t, ToolDefinition) for t in self.tools):
                object.__setattr__(self, "tools", parse_tools(self.tools))
            if not isinstance(self.tool_choice, ToolChoiceSetting):
                object.__setattr__(self, "tool_choice", parse_tool_choice(self.tool_choice))
        except ProtocolError as exc:
            raise TypeError(exc.message) from None
        # built from a dict (a client reading session.created, a TOML table): parse it; a silence
        # policy's own silence_ms moves into min_silence_ms, its one home
        policy = self.turn_detection
        if not isinstance(policy, SilenceTurnDetection) or policy.silence_ms is not None:
            try:
                policy = parse_turn_detection(policy)
            except ProtocolError as exc:
                raise TypeError(exc.message) from None
            if isinstance(policy, SilenceTurnDetection):
                if policy.silence_ms is not None:
                    object.__setattr__(self, "min_silence_ms", policy.silence_ms)
                policy = SilenceTurnDetection()
            object.__setattr__(self, "turn_detection", policy)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["turn_detection"] = turn_detection_dict(self.turn_detection, self.min_silence_ms)
        data["tools"] = [tool.to_dict() for tool in self.tools]
        data["tool_choice"] = self.tool_choice.to_wire()
        return data

    def updated(self, patch: Mapping[str, Any]) -> SessionConfig:
        """Return a copy with `patch` applied; raises ProtocolError(invalid_field) naming the bad key.

        `min_silence_ms` without `turn_detection` in the same patch selects the silence policy (what
        an old client that sets it means); with `turn_detection` in the patch, that one decides."""
        changes = validate_config_patch(patch)
        if "turn_detection" not in changes and "min_silence_ms" in changes:
            changes["turn_detection"] = SilenceTurnDetection()
        return dataclasses.replace(self, **changes)

    def check_tool_choice(self, server_tools: tuple[str, ...] = ()) -> None:
        """Raise ProtocolError(unknown_tool_choice) when a forced function is none of the tools."""
        check_tool_choice(self.tool_choice, self.tools, "config.tool_choice", server_tools)


_CONFIG_SCHEMA = FieldSchema(SessionConfig)


def validate_config_patch(patch: Mapping[str, Any]) -> dict[str, Any]:
    """Check every key and value of a partial config; unknown keys are errors (typos must not pass silently).

    `turn_detection` comes back parsed (a policy object), so a checked patch checks again unchanged."""
    policy: TurnDetection | None = None
    parsed: dict[str, Any] = {}  # fields with their own parser and error codes
    if isinstance(patch, Mapping):
        if "turn_detection" in patch:
            policy = parse_turn_detection(patch["turn_detection"])
        if "tools" in patch:
            parsed["tools"] = parse_tools(patch["tools"])
        if "tool_choice" in patch:
            parsed["tool_choice"] = parse_tool_choice(patch["tool_choice"])
        patch = {key: value for key, value in patch.items() if key not in ("turn_detection", "tools", "tool_choice")}
    try:
        checked = _CONFIG_SCHEMA.check(patch)
    except UnknownField as exc:
        known = ", ".join(_CONFIG_SCHEMA.hints)
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, f"config.{exc.name[:64]} is not a known setting (known: {known})"
        ) from None
    except Mismatch as exc:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"config.{exc.name} must be {exc.expected}") from None
    if policy is not None:
        checked["turn_detection"] = policy
    checked.update(parsed)
    return checked


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What the server enforces on input; sent in `session.created` so clients can stay inside it."""

    max_message_bytes: int = 1 << 20
    min_frame_ms: int = 10
    max_frame_ms: int = 1000
    # audio may arrive at most this many times faster than real time, after an initial burst
    max_audio_rate: float = 2.0
    audio_burst_ms: int = 3000
    max_text_messages_per_s: float = 20.0
    text_message_burst: int = 50
    idle_timeout_s: float = 60.0  # no audio and no client events this long: idle_timeout, close (0: never)
    max_utterance_s: float = 60.0  # an utterance this long ends the turn (0: no cap)
    # user words of replies cut before any was heard ride with the next turn; the oldest go past this
    max_carried_text_chars: int = 8000
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(data.pop("extra"))
        return data
