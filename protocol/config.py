"""Per-session configuration and limits: what `session.update` may change and what the server enforces."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ErrorCode, ProtocolError

SUPPORTED_SAMPLE_RATES = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
MAX_INSTRUCTIONS_CHARS = 4000


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Everything a client may set with `session.update`. Defaults are the server's."""

    input_sample_rate: int = 16000
    output_sample_rate: int = 16000
    vad_threshold: float = 0.5
    min_silence_ms: int = 500
    speech_pad_ms: int = 200
    min_interrupt_ms: int = 300
    audio_output: bool = True
    voice: str = "en-us"
    instructions: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def updated(self, patch: Mapping[str, Any]) -> SessionConfig:
        """Return a copy with `patch` applied; raises ProtocolError(invalid_field) naming the bad key."""
        return dataclasses.replace(self, **validate_config_patch(patch))


def _int_in(lo: int, hi: int) -> Any:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"config.{name} must be an integer in [{lo}, {hi}]")
        return value

    return check


def _rate(name: str, value: Any) -> int:
    if isinstance(value, bool) or value not in SUPPORTED_SAMPLE_RATES:
        rates = ", ".join(map(str, SUPPORTED_SAMPLE_RATES))
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"config.{name} must be one of {rates}")
    return int(value)


def _unit_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.05 <= value <= 0.95:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"config.{name} must be a number in [0.05, 0.95]")
    return float(value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"config.{name} must be true or false")
    return value


def _text(max_chars: int) -> Any:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or len(value) > max_chars:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"config.{name} must be a string of at most {max_chars} chars")
        return value

    return check


_VALIDATORS: dict[str, Any] = {
    "input_sample_rate": _rate,
    "output_sample_rate": _rate,
    "vad_threshold": _unit_float,
    "min_silence_ms": _int_in(100, 5000),
    "speech_pad_ms": _int_in(0, 1000),
    "min_interrupt_ms": _int_in(0, 5000),
    "audio_output": _bool,
    "voice": _text(64),
    "instructions": _text(MAX_INSTRUCTIONS_CHARS),
}


def validate_config_patch(patch: Mapping[str, Any]) -> dict[str, Any]:
    """Check every key and value of a partial config; unknown keys are errors (typos must not pass silently)."""
    clean: dict[str, Any] = {}
    for name, value in patch.items():
        validator = _VALIDATORS.get(name)
        if validator is None:
            known = ", ".join(_VALIDATORS)
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"config.{name} is not a known setting (known: {known})")
        clean[name] = validator(name, value)
    return clean


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
    max_utterance_s: float = 60.0  # an utterance this long ends the turn (0: no cap)
    # user words of replies cut before any was heard ride with the next turn; the oldest go past this
    max_carried_text_chars: int = 8000
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.update(data.pop("extra"))
        return data
