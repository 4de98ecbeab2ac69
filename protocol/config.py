"""Per-session configuration and limits: what `session.update` may change and what the server enforces."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

from msgspec import Meta

from .errors import ErrorCode, ProtocolError
from .schema import FieldSchema, Mismatch, OneOf, UnknownField

SUPPORTED_SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
MAX_INSTRUCTIONS_CHARS = 4000

SampleRate = Annotated[int, OneOf(SUPPORTED_SAMPLE_RATES)]


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Everything a client may set with `session.update`. Defaults are the server's.

    The annotations are the rules `session.update` is checked against (`validate_config_patch`).
    """

    input_sample_rate: SampleRate = 16000
    output_sample_rate: SampleRate = 16000
    vad_threshold: Annotated[float, Meta(ge=0.05, le=0.95)] = 0.5
    min_silence_ms: Annotated[int, Meta(ge=100, le=5000)] = 500
    speech_pad_ms: Annotated[int, Meta(ge=0, le=1000)] = 200
    min_interrupt_ms: Annotated[int, Meta(ge=0, le=5000)] = 300
    audio_output: bool = True
    voice: Annotated[str, Meta(max_length=64)] = "en-us"
    instructions: Annotated[str, Meta(max_length=MAX_INSTRUCTIONS_CHARS)] = ""
    # a spoken turn the recognizer is less sure of than this is not answered: the assistant asks
    # to repeat or type it (0 turns that off; engines that report no confidence never trigger it)
    min_asr_confidence: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.65

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, patch: Mapping[str, Any]) -> SessionConfig:
        """Return a copy with `patch` applied; raises ProtocolError(invalid_field) naming the bad key."""
        return dataclasses.replace(self, **validate_config_patch(patch))


_CONFIG_SCHEMA = FieldSchema(SessionConfig)


def validate_config_patch(patch: Mapping[str, Any]) -> dict[str, Any]:
    """Check every key and value of a partial config; unknown keys are errors (typos must not pass silently)."""
    try:
        return _CONFIG_SCHEMA.check(patch)
    except UnknownField as exc:
        known = ", ".join(_CONFIG_SCHEMA.hints)
        raise ProtocolError(
            ErrorCode.INVALID_FIELD, f"config.{exc.name[:64]} is not a known setting (known: {known})"
        ) from None
    except Mismatch as exc:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"config.{exc.name} must be {exc.expected}") from None


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
