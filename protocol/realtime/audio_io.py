"""Audio between the Realtime wire formats and Hark's PCM16: decode and frame the input, encode the output.

The Session is asked for the wire's own rate (24 kHz for audio/pcm, 8 kHz for G.711), so PCM needs no
resampling and G.711 only its codec. Input is cut into valid hark.v1 frames (10 to 1000 ms); a tail
shorter than 10 ms waits for the next append. Output arriving at another rate than the wire's (a
Session that could not honour the rate) is resampled with soxr rather than sent at the wrong pitch.
"""

from __future__ import annotations

import base64

import numpy as np

from ..audio import BYTES_PER_SAMPLE
from .formats import AudioFormat, check_input_audio
from .g711 import G711Codec

MIN_FRAME_MS = 10
MAX_FRAME_MS = 1000


class InputAudio:
    """Wire bytes of one format -> PCM16 frames at that format's rate."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self.rate = fmt.sample_rate
        self._codec = None if fmt is AudioFormat.PCM else G711Codec(fmt, "r")
        self._carry = b""
        self._min_bytes = self.rate * MIN_FRAME_MS // 1000 * BYTES_PER_SAMPLE
        self._max_bytes = self.rate * MAX_FRAME_MS // 1000 * BYTES_PER_SAMPLE

    def ms(self, pcm_bytes: int) -> float:
        return pcm_bytes / BYTES_PER_SAMPLE * 1000.0 / self.rate

    def frames(self, wire: bytes) -> list[bytes]:
        """Check and decode one append; return the whole frames it completes."""
        check_input_audio(wire, self.format)
        pcm = wire if self._codec is None else self._codec.decode(wire)
        buf = self._carry + pcm
        out = [buf[i : i + self._max_bytes] for i in range(0, len(buf) - len(buf) % self._max_bytes, self._max_bytes)]
        rest = buf[len(out) * self._max_bytes :]
        if len(rest) >= self._min_bytes:
            out.append(rest)
            rest = b""
        self._carry = rest
        return out

    def flush(self) -> list[bytes]:
        """At a commit: the held tail, padded with silence to the shortest valid frame (under 10 ms)."""
        if not self._carry:
            return []
        frame = self._carry + bytes(self._min_bytes - len(self._carry))
        self._carry = b""
        return [frame]

    def clear(self) -> None:
        self._carry = b""


class OutputAudio:
    """Session PCM16 (at `source_rate`) -> base64 wire audio of one format."""

    def __init__(self, fmt: AudioFormat, source_rate: int) -> None:
        self.format = fmt
        self._codec = None if fmt is AudioFormat.PCM else G711Codec(fmt, "w")
        self._resampler = None
        if source_rate != fmt.sample_rate:
            import soxr

            self._resampler = soxr.ResampleStream(source_rate, fmt.sample_rate, 1, dtype="int16")

    def encode(self, pcm: bytes) -> tuple[str, float]:
        """Return (base64 delta, its duration in ms)."""
        if self._resampler is not None:
            samples = np.frombuffer(pcm, dtype="<i2")
            pcm = self._resampler.resample_chunk(samples).astype("<i2", copy=False).tobytes()
        ms = len(pcm) / BYTES_PER_SAMPLE * 1000.0 / self.format.sample_rate
        wire = pcm if self._codec is None else self._codec.encode(pcm)
        return base64.b64encode(wire).decode("ascii"), ms
