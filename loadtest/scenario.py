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
from typing import Any

from hark.protocol import ProtocolError, validate_config_patch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "default.toml"
DEFAULT_CLIPS = ("en_goforward_command", "en_vosk_digits", "en_librivox_sense_0920")
SAMPLE_RATE = 16000
FRAME_MS = 100
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2
SILENCE = b"\0" * FRAME_BYTES

_KEYS = {
    "clips",
    "pause_ms",
    "turns_per_session",
    "barge_in_probability",
    "barge_in_after_ms",
    "turn_timeout_s",
    "seed",
    "session",
}


def corpus_dir() -> Path:
    return Path(os.environ.get("HARK_CORPUS", REPO.parent / "shared" / "corpus"))


@dataclass(frozen=True, slots=True)
class Scenario:
    clips: tuple[str, ...] = DEFAULT_CLIPS
    pause_ms: tuple[int, int] = (800, 2000)
    turns_per_session: int = 0
    barge_in_probability: float = 0.0
    barge_in_after_ms: int = 600
    turn_timeout_s: float = 30.0
    seed: int = 1
    session: dict[str, Any] = field(default_factory=dict)

    def pause_s(self, rng: random.Random) -> float:
        low, high = self.pause_ms
        return rng.uniform(low, high) / 1000.0


def parse_scenario(data: dict[str, Any], source: str = "scenario") -> Scenario:
    """Validate a decoded TOML table; raises ValueError naming the bad key."""
    unknown = set(data) - _KEYS
    if unknown:
        raise ValueError(f"{source}: unknown keys {sorted(unknown)} (known: {sorted(_KEYS)})")
    base = Scenario()
    clips = data.get("clips", list(base.clips))
    if not isinstance(clips, list) or not clips or not all(isinstance(c, str) and c for c in clips):
        raise ValueError(f"{source}: clips must be a non-empty list of clip names or paths")
    pause = data.get("pause_ms", list(base.pause_ms))
    if _is_int(pause):
        pause = [pause, pause]
    if not (isinstance(pause, list) and len(pause) == 2 and all(_is_int(p) for p in pause)):
        raise ValueError(f"{source}: pause_ms must be an integer or [min, max]")
    if not 0 <= pause[0] <= pause[1] <= 600_000:
        raise ValueError(f"{source}: pause_ms must satisfy 0 <= min <= max <= 600000")
    turns = data.get("turns_per_session", base.turns_per_session)
    if not _is_int(turns) or turns < 0:
        raise ValueError(f"{source}: turns_per_session must be an integer >= 0")
    prob = data.get("barge_in_probability", base.barge_in_probability)
    if not _is_num(prob) or not 0.0 <= prob <= 1.0:
        raise ValueError(f"{source}: barge_in_probability must be a number in [0, 1]")
    after = data.get("barge_in_after_ms", base.barge_in_after_ms)
    if not _is_int(after) or after < 0:
        raise ValueError(f"{source}: barge_in_after_ms must be an integer >= 0")
    timeout = data.get("turn_timeout_s", base.turn_timeout_s)
    if not _is_num(timeout) or timeout <= 0:
        raise ValueError(f"{source}: turn_timeout_s must be a number > 0")
    seed = data.get("seed", base.seed)
    if not _is_int(seed):
        raise ValueError(f"{source}: seed must be an integer")
    session = data.get("session", {})
    if not isinstance(session, dict):
        raise ValueError(f"{source}: [session] must be a table of session settings")
    try:
        session = validate_config_patch(session) if session else {}
    except ProtocolError as exc:
        raise ValueError(f"{source}: [session]: {exc}") from None
    return Scenario(
        clips=tuple(clips),
        pause_ms=(int(pause[0]), int(pause[1])),
        turns_per_session=int(turns),
        barge_in_probability=float(prob),
        barge_in_after_ms=int(after),
        turn_timeout_s=float(timeout),
        seed=int(seed),
        session=dict(session),
    )


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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
