"""`turn_detection` in the session config: how the server decides that the user's turn is over.

Two policies, told apart by `type`:
- `{"type": "silence", "silence_ms": 500}`: the turn ends after that much silence, whatever was
  said. `silence_ms` is the same setting as the top-level `min_silence_ms` (its older name, kept
  for old clients: a patch that sets `min_silence_ms` alone selects this policy).
- `{"type": "semantic", "eagerness": "medium", "max_silence_ms": 2500, "text_signal": false,
  "llm": true}`: at a short pause a turn-completion model judges whether the words sound finished;
  `eagerness` trades waiting for interruptions, `max_silence_ms` ends the turn regardless.
  `text_signal` (opt-in) lets the transcript's last word lower the model's probability (a trailing "the",
  "and", "的话"...); `llm` asks the language model too, where the engine can say.

A `turn_detection` value replaces the previous one whole: fields it leaves out take their defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta

from .errors import ErrorCode, ProtocolError
from .schema import FieldSchema, Mismatch, UnknownField

Eagerness = Literal["low", "medium", "high", "auto"]  # "auto" is "medium" (OpenAI's semantic_vad has it)
SILENCE_MS_RANGE: Final = (100, 5000)
SilenceMs = Annotated[int, Meta(ge=SILENCE_MS_RANGE[0], le=SILENCE_MS_RANGE[1])]


class SilenceTurnDetection(msgspec.Struct, frozen=True, tag="silence", tag_field="type", forbid_unknown_fields=True):
    """The turn ends after `silence_ms` of silence. Held in a SessionConfig with `silence_ms` None:
    the value lives in `SessionConfig.min_silence_ms`, so the two names never disagree."""

    silence_ms: SilenceMs | None = None


class SemanticTurnDetection(msgspec.Struct, frozen=True, tag="semantic", tag_field="type", forbid_unknown_fields=True):
    """The turn ends when a turn-completion model says the words are finished, or at `max_silence_ms`."""

    eagerness: Eagerness = "medium"
    max_silence_ms: Annotated[int, Meta(ge=500, le=10000)] = 2500
    # off by default: make bench-turns measured no gain from it (docs/performance.md, "Turn taking")
    text_signal: bool = False
    llm: bool = True


TurnDetection = SilenceTurnDetection | SemanticTurnDetection
_POLICIES: Final[dict[str, type[SilenceTurnDetection] | type[SemanticTurnDetection]]] = {
    "silence": SilenceTurnDetection,
    "semantic": SemanticTurnDetection,
}
_SCHEMAS: Final = {name: FieldSchema(cls) for name, cls in _POLICIES.items()}
_NAME = "config.turn_detection"


def parse_turn_detection(value: Any) -> TurnDetection:
    """A policy from its JSON object (an already parsed policy passes through); raises
    ProtocolError(invalid_field) naming the field and what it takes."""
    if isinstance(value, SilenceTurnDetection | SemanticTurnDetection):
        return value
    if not isinstance(value, Mapping):
        raise ProtocolError(ErrorCode.INVALID_FIELD, f'{_NAME} must be an object with a "type"')
    kind = value.get("type")
    known = ", ".join(f'"{name}"' for name in _POLICIES)
    if not isinstance(kind, str) or kind not in _POLICIES:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"{_NAME}.type must be one of {known}")
    fields = {key: item for key, item in value.items() if key != "type"}
    try:
        checked = _SCHEMAS[kind].check(fields)
    except UnknownField as exc:
        settings = ", ".join(_SCHEMAS[kind].hints)
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, f"{_NAME}.{exc.name[:64]} is not a setting of {kind} (known: {settings})"
        ) from None
    except Mismatch as exc:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"{_NAME}.{exc.name} must be {exc.expected}") from None
    return _POLICIES[kind](**checked)


def parse_turn_detection_option(text: str) -> TurnDetection:
    """`--turn-detection`: a JSON object, or a policy's type alone (`semantic`, `silence`)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = msgspec.json.decode(stripped)
        except msgspec.DecodeError as exc:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"--turn-detection is not valid JSON: {exc}") from None
        return parse_turn_detection(value)
    return parse_turn_detection({"type": stripped})


def turn_detection_dict(policy: TurnDetection, min_silence_ms: int) -> dict[str, Any]:
    """The wire form, with the silence policy's `silence_ms` filled in from `min_silence_ms`."""
    data: dict[str, Any] = msgspec.to_builtins(policy)
    if isinstance(policy, SilenceTurnDetection):
        data["silence_ms"] = min_silence_ms
    return data
