"""G.711 (mu-law `audio/pcmu`, A-law `audio/pcma`) to and from PCM16 at 8 kHz, with FFmpeg's codecs via PyAV.

PyAV comes with the `webrtc` extra; without it the G.711 formats are refused with a message saying what
to install, and PCM keeps working. The codecs are stateless per sample, so one context per direction
and connection is enough. Cost: about 10-12 us per 100 ms either way (python -m bench.realtime_translator).
"""

from __future__ import annotations

import importlib.util
from typing import Literal

import numpy as np

from .errors import RealtimeError, RealtimeErrorCode
from .formats import AudioFormat

RATE = 8000
_CODECS: dict[AudioFormat, Literal["pcm_mulaw", "pcm_alaw"]] = {
    AudioFormat.PCMU: "pcm_mulaw",
    AudioFormat.PCMA: "pcm_alaw",
}


def available() -> bool:
    return importlib.util.find_spec("av") is not None


def require(fmt: AudioFormat, param: str) -> None:
    """Refuse a G.711 format up front when PyAV is missing (rather than failing on the first frame)."""
    if fmt in _CODECS and not available():
        raise RealtimeError(
            RealtimeErrorCode.UNSUPPORTED_FEATURE,
            f"{fmt.value} needs PyAV on the server: pip install 'hark[webrtc]' (or av>=12); audio/pcm works without it",
            param,
        )


class G711Codec:
    """One direction of one G.711 variant: `encode` PCM16 -> G.711 bytes, or `decode` G.711 -> PCM16."""

    def __init__(self, fmt: AudioFormat, mode: Literal["r", "w"]) -> None:
        import av  # the webrtc extra; checked by require()

        if fmt not in _CODECS:
            raise ValueError(f"no G.711 codec for {fmt}")
        self._ctx = av.CodecContext.create(_CODECS[fmt], mode)
        self._ctx.sample_rate = RATE
        self._ctx.layout = "mono"
        if mode == "w":
            self._ctx.format = "s16"
        self._ctx.open()
        self._av = av

    def encode(self, pcm: bytes) -> bytes:
        if not pcm:
            return b""
        samples = np.frombuffer(pcm, dtype="<i2").reshape(1, -1)
        frame = self._av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = RATE
        return b"".join(bytes(packet) for packet in self._ctx.encode(frame))

    def decode(self, data: bytes) -> bytes:
        if not data:  # an empty packet would flush the decoder
            return b""
        frames = self._ctx.decode(self._av.Packet(data))
        return b"".join(frame.to_ndarray().astype("<i2", copy=False).tobytes() for frame in frames)
