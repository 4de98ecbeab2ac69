"""PCM conversions and WAV files, input resampling (soxr) and the map from the input audio clock to wall time."""

from __future__ import annotations

import bisect
import io
import wave
from collections import deque

import numpy as np
import numpy.typing as npt
import soxr

Float32Array = npt.NDArray[np.float32]
Int16Array = npt.NDArray[np.int16]


def pcm16_to_float(pcm: bytes) -> Float32Array:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(audio: Float32Array) -> Int16Array:
    """The inverse of `pcm16_to_float`: x32768 and rounded, so PCM16 -> float -> PCM16 is lossless."""
    pcm: Int16Array = np.clip(np.rint(audio * 32768.0), -32768.0, 32767.0).astype("<i2")
    return pcm


def wav_bytes(pcm: Int16Array, rate: int) -> bytes:
    """A mono 16-bit WAV file of `pcm` at `rate`."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
    return buf.getvalue()


class InputResampler:
    """Streams client audio at any supported rate to the 16 kHz the VAD and ASR run at.

    Only for rates that need it: 16 kHz input goes around it, so the ASR gets the client's samples
    unchanged (see `Listener`).
    """

    def __init__(self, in_rate: int, out_rate: int = 16000) -> None:
        if in_rate == out_rate:
            raise ValueError(f"no resampling needed at {in_rate} Hz: pass the audio through")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32")

    def process(self, audio: Float32Array) -> Float32Array:
        out: Float32Array = self._stream.resample_chunk(audio)
        return out


def resample_pcm16(audio: Int16Array, in_rate: int, out_rate: int) -> Int16Array:
    """One-shot resampling of a whole synthesized chunk (TTS output to the session's output rate)."""
    if in_rate == out_rate or len(audio) == 0:
        return audio
    out: Int16Array = soxr.resample(audio, in_rate, out_rate)
    return out


class ArrivalClock:
    """Remembers when each stretch of input audio arrived, to turn an audio time into wall time.

    Latency is measured from the wall time at which the audio at the end of speech reached the
    server, so a client that sends faster than real time is not credited with time it never waited.
    """

    def __init__(self, horizon: int = 600) -> None:
        self._ends: deque[int] = deque(maxlen=horizon)  # frame end sample (16 kHz clock), increasing
        self._walls: deque[float] = deque(maxlen=horizon)

    def add(self, end_sample: int, arrival_wall: float) -> None:
        self._ends.append(end_sample)
        self._walls.append(arrival_wall)

    def wall_time_of(self, sample: int) -> float | None:
        if not self._ends:
            return None
        i = bisect.bisect_left(self._ends, sample)
        return self._walls[min(i, len(self._walls) - 1)]
