"""Load scenarios: what each virtual device says and how it behaves, read from a TOML file.

Keys (all optional; loadtest/scenarios/default.toml spells out the defaults):

    clips = ["en_goforward_command", ...]  # corpus clips (name or path to a 16 kHz mono PCM16 WAV), cycled
    pause_ms = [800, 2000]                 # pause between the end of reply playback and the next turn:
                                           # a fixed int or a [min, max] range drawn uniformly per turn
    turns_per_session = 0                  # 0: keep talking until --duration ends
    barge_in_probability = 0.0             # chance a turn is interrupted by the next clip
    barge_in_after_ms = 600                # ... this long after the first reply audio byte arrived
    turn_timeout_s = 30.0                  # a turn not settled this long after its clip ended is a timeout
    seed = 1                               # one seed for the run; each device derives its own
    [session]                              # optional session.update config sent before speaking
    min_silence_ms = 500
"""

from __future__ import annotations

import os
import random
import tomllib
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from msgspec import Meta

from hark.protocol import ProtocolError, validate_config_patch
from hark.protocol.schema import FieldSchema, Mismatch, UnknownField

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "default.toml"
DEFAULT_CLIPS = ("en_goforward_command", "en_vosk_digits", "en_librivox_sense_0920")
SAMPLE_RATE = 16000
FRAME_MS = 100
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2
SILENCE = b"\0" * FRAME_BYTES


def corpus_dir() -> Path:
    return Path(os.environ.get("HARK_CORPUS", REPO.parent / "shared" / "corpus"))


PauseMs = Annotated[int, Meta(ge=0, le=600_000)]


@dataclass(frozen=True, slots=True)
class Scenario:
    """What each virtual device says and how it behaves; the annotations are the rules a file is checked by."""

    clips: Annotated[
        tuple[Annotated[str, Meta(min_length=1)], ...],
        Meta(min_length=1, description="a non-empty list of clip names or paths"),
    ] = DEFAULT_CLIPS
    pause_ms: Annotated[tuple[PauseMs, PauseMs], Meta(description="an integer or [min, max] in [0, 600000]")] = (
        800,
        2000,
    )
    turns_per_session: Annotated[int, Meta(ge=0, le=1_000_000)] = 0
    barge_in_probability: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.0
    barge_in_after_ms: Annotated[int, Meta(ge=0, le=600_000)] = 600
    turn_timeout_s: Annotated[float, Meta(gt=0.0, le=3600.0)] = 30.0
    seed: Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)] = 1
    session: Annotated[dict[str, Any], Meta(description="a table of session settings")] = field(default_factory=dict)

    def pause_s(self, rng: random.Random) -> float:
        low, high = self.pause_ms
        return rng.uniform(low, high) / 1000.0


_SCHEMA = FieldSchema(Scenario)
_DEFAULT = Scenario()


def parse_scenario(data: dict[str, Any], source: str = "scenario") -> Scenario:
    """Validate a decoded TOML table; raises ValueError naming the bad key."""
    data = dict(data)
    if isinstance(data.get("pause_ms"), int) and not isinstance(data["pause_ms"], bool):
        data["pause_ms"] = [data["pause_ms"], data["pause_ms"]]  # a fixed pause
    try:
        values = _SCHEMA.check(data)
    except UnknownField:
        unknown = sorted(str(k) for k in data if k not in _SCHEMA.hints)
        raise ValueError(f"{source}: unknown keys {unknown} (known: {sorted(_SCHEMA.hints)})") from None
    except Mismatch as exc:
        raise ValueError(f"{source}: {exc.name} must be {exc.expected}") from None
    low, high = values.get("pause_ms", _DEFAULT.pause_ms)
    if low > high:
        raise ValueError(f"{source}: pause_ms must satisfy min <= max")
    try:
        values["session"] = validate_config_patch(values.get("session", {}))
    except ProtocolError as exc:
        raise ValueError(f"{source}: [session]: {exc}") from None
    return Scenario(**values)


def load_scenario(path: Path | None) -> Scenario:
    """The scenario at `path`, or the checked-in default (built-in defaults if that file is missing)."""
    path = path or DEFAULT_SCENARIO
    if not path.is_file():
        if path == DEFAULT_SCENARIO:
            return Scenario()
        raise ValueError(f"scenario file {path} not found")
    with open(path, "rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return parse_scenario(data, str(path))


def clip_path(name: str) -> Path:
    if name.endswith(".wav") or "/" in name:
        return Path(name)
    return corpus_dir() / "audio" / f"{name}.wav"


def load_clip(name: str) -> bytes:
    """PCM16 of a 16 kHz mono clip, padded with silence to whole 100 ms frames."""
    path = clip_path(name)
    if not path.is_file():
        raise ValueError(f"clip {name}: {path} not found (set HARK_CORPUS to the corpus directory)")
    with wave.open(str(path), "rb") as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (SAMPLE_RATE, 1, 2):
            raise ValueError(f"clip {name}: must be 16 kHz mono 16-bit PCM")
        pcm = wav.readframes(wav.getnframes())
    return pcm + b"\0" * (-len(pcm) % FRAME_BYTES)


def load_clips(scenario: Scenario) -> dict[str, bytes]:
    return {name: load_clip(name) for name in dict.fromkeys(scenario.clips)}
