"""WAV files <-> PCM16 mono bytes, the only audio format hark.v1 speaks on the wire."""

from __future__ import annotations

import os
import wave
from typing import TypeAlias

import numpy as np
import soxr

StrPath: TypeAlias = str | os.PathLike[str]

_PCM16 = np.dtype("<i2")  # WAV and hark.v1 are both little-endian


def read_wav(path: StrPath, target_rate: int | None = None) -> tuple[bytes, int]:
    """Read a 16-bit PCM WAV into (PCM16 LE mono bytes, sample rate).

    Multi-channel files are downmixed by averaging; with `target_rate` the audio is resampled to it.
    Raises ValueError with a readable reason for anything that is not 16-bit PCM WAV.
    """
    try:
        with wave.open(os.fspath(path), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except wave.Error as exc:
        # the stdlib reader also rejects WAVE_FORMAT_EXTENSIBLE headers (e.g. some 24-bit/float exports)
        raise ValueError(f"{os.fspath(path)}: not a 16-bit PCM WAV file ({exc})") from None
    except EOFError:
        raise ValueError(f"{os.fspath(path)}: truncated WAV file") from None
    if width != 2:
        raise ValueError(f"{os.fspath(path)}: {8 * width}-bit samples; only 16-bit PCM WAV is supported")
    samples = np.frombuffer(raw[: len(raw) - len(raw) % (2 * channels)], dtype=_PCM16)
    if channels > 1:
        frames = samples.reshape(-1, channels).astype(np.int32)
        # average in int32 so two full-scale channels cannot overflow
        samples = np.round(frames.mean(axis=1)).astype(_PCM16)
    pcm = samples.astype(_PCM16).tobytes()
    if target_rate is not None and target_rate != rate:
        pcm = resample_pcm16(pcm, rate, target_rate)
        rate = target_rate
    return pcm, rate


def resample_pcm16(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resample PCM16 mono bytes with soxr (high quality, whole-buffer so no chunk-edge artifacts)."""
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if from_rate == to_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype=_PCM16)
    out = soxr.resample(samples, from_rate, to_rate)
    return np.asarray(out, dtype=_PCM16).tobytes()


def write_wav(path: StrPath, pcm: bytes, sample_rate: int) -> None:
    """Write PCM16 LE mono bytes as a playable WAV file."""
    if len(pcm) % 2:
        raise ValueError(f"PCM16 needs an even number of bytes, got {len(pcm)}")
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
