"""Realtime audio formats: their GA and beta spellings, their rates, and checks on decoded audio."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

from .errors import RealtimeError, RealtimeErrorCode


class AudioFormat(StrEnum):
    PCM = "audio/pcm"  # PCM16 little-endian mono at 24 kHz
    PCMU = "audio/pcmu"  # G.711 mu-law, 8 kHz
    PCMA = "audio/pcma"  # G.711 A-law, 8 kHz

    @property
    def sample_rate(self) -> int:
        return 24000 if self is AudioFormat.PCM else 8000

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self is AudioFormat.PCM else 1

    def ga(self) -> dict[str, Any]:
        return {"type": self.value, "rate": 24000} if self is AudioFormat.PCM else {"type": self.value}

    def beta(self) -> str:
        return _BETA_NAMES[self]


_BETA_NAMES = {AudioFormat.PCM: "pcm16", AudioFormat.PCMU: "g711_ulaw", AudioFormat.PCMA: "g711_alaw"}
_BY_BETA_NAME = {name: fmt for fmt, name in _BETA_NAMES.items()}


def parse_format(value: Any, param: str) -> AudioFormat:
    """Either spelling in either dialect (clients mix them): `{"type": "audio/pcm", "rate": 24000}` or `"pcm16"`."""
    if isinstance(value, str):
        if value in _BY_BETA_NAME:
            return _BY_BETA_NAME[value]
        if value in AudioFormat._value2member_map_:
            return AudioFormat(value)
    elif isinstance(value, dict):
        kind = value.get("type", AudioFormat.PCM.value)
        if isinstance(kind, str) and kind in AudioFormat._value2member_map_:
            fmt = AudioFormat(kind)
            rate = value.get("rate")
            if rate is not None and (fmt is not AudioFormat.PCM or rate != 24000):
                raise RealtimeError(
                    RealtimeErrorCode.INVALID_VALUE,
                    f"{param}.rate must be 24000 for audio/pcm (G.711 is always 8000 and takes no rate)",
                    f"{param}.rate",
                )
            return fmt
    raise RealtimeError(
        RealtimeErrorCode.INVALID_VALUE,
        f"{param} must be {{'type': 'audio/pcm', 'rate': 24000}}, {{'type': 'audio/pcmu'}} or "
        "{'type': 'audio/pcma'} (beta: 'pcm16', 'g711_ulaw', 'g711_alaw')",
        param,
    )


# Containers and compressed streams a client might send where raw samples belong, each recognised by
# enough of its header that raw audio matching it by chance is vanishingly rare (over 32 bits)
_SIGNATURES: tuple[tuple[Callable[[bytes], bool], str], ...] = (
    (lambda b: b[:4] == b"RIFF" and b[8:12] == b"WAVE", "a WAV (RIFF) file"),
    (lambda b: b[:5] == b"OggS\x00", "an Ogg stream"),
    (lambda b: b[:4] == b"fLaC" and len(b) > 4 and b[4] & 0x7F == 0, "a FLAC stream"),
    (lambda b: b[:3] == b"ID3" and len(b) > 4 and b[3] in (2, 3, 4) and b[4] == 0, "an MP3 file"),
    (lambda b: b[:4] == b"\x1aE\xdf\xa3", "a WebM/Matroska stream"),
)


def check_input_audio(audio: bytes, fmt: AudioFormat) -> None:
    """Raise invalid_audio_format for bytes that cannot be samples of `fmt` (whole-sample count, no container)."""
    for looks_like, what in _SIGNATURES:
        if looks_like(audio):
            raise RealtimeError(
                RealtimeErrorCode.INVALID_AUDIO_FORMAT,
                f"input_audio_buffer.append got {what}; send raw {_describe(fmt)} samples, base64-encoded",
                "audio",
            )
    if len(audio) % fmt.bytes_per_sample:
        raise RealtimeError(
            RealtimeErrorCode.INVALID_AUDIO_FORMAT,
            f"input_audio_buffer.append has {len(audio)} bytes: {_describe(fmt)} needs a whole number of "
            f"{fmt.bytes_per_sample}-byte samples",
            "audio",
        )


def _describe(fmt: AudioFormat) -> str:
    if fmt is AudioFormat.PCM:
        return "PCM16 little-endian mono 24 kHz"
    return f"G.711 {'mu-law' if fmt is AudioFormat.PCMU else 'A-law'} 8 kHz"
