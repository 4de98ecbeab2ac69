"""A recording's bytes -> 16 kHz mono PCM16, the format found from the bytes themselves.

WAV, MP3, FLAC, OGG (and whatever else FFmpeg recognizes) go through PyAV; raw PCM16 has no header
to recognize, so it is taken only when the caller says so by giving its sample rate, and only when
the bytes do not start like a container (a WAV posted with a sample_rate is still a WAV). Blocking:
call off the event loop. The duration cap is checked while decoding, so an hour of MP3 is refused
after decoding the first `max_seconds`, not after all of it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from hark.protocol import ErrorCode

from ..audio import resample_pcm16
from .errors import OfflineError

RATE = 16000
BYTES_PER_SECOND = RATE * 2
# signatures of the containers we expect; anything else without a sample_rate is still tried by FFmpeg
_MAGIC = {
    b"RIFF": "wav",
    b"RF64": "wav",
    b"fLaC": "flac",
    b"OggS": "ogg",
    b"ID3": "mp3",
    b"\x1aE\xdf\xa3": "webm",
}


@dataclass(frozen=True, slots=True)
class DecodedAudio:
    pcm: bytes  # 16 kHz mono PCM16 little-endian
    source_format: str  # wav, mp3, flac, ogg, ..., or pcm16 for raw samples
    source_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / BYTES_PER_SECOND


def sniff_container(data: bytes) -> str | None:
    """The container the first bytes announce, or None (raw PCM has no signature)."""
    for magic, name in _MAGIC.items():
        if data.startswith(magic):
            return name
    if len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0 and data[1] & 0x06:
        return "mp3"  # an MPEG audio frame header (layer bits non-zero) without an ID3 tag
    return None


def decode_audio(data: bytes, *, max_seconds: float, sample_rate: int | None = None) -> DecodedAudio:
    """Raises OfflineError: audio_empty, audio_undecodable (400) or audio_too_long (413)."""
    if not data:
        raise OfflineError(400, ErrorCode.AUDIO_EMPTY, "the audio is empty (0 bytes)")
    container = sniff_container(data)
    if container is None and sample_rate is not None:
        decoded = _raw_pcm16(data, sample_rate, max_seconds)
    else:
        decoded = _with_ffmpeg(data, max_seconds, container)
    if not decoded.pcm:
        raise OfflineError(400, ErrorCode.AUDIO_EMPTY, f"the {decoded.source_format} file holds no audio samples")
    return decoded


def _too_long(seconds: float, max_seconds: float) -> OfflineError:
    return OfflineError(
        413,
        ErrorCode.AUDIO_TOO_LONG,
        f"the audio is longer than this server takes ({seconds:.0f}+ s > {max_seconds:g} s, --http-max-audio-s)",
    )


def _raw_pcm16(data: bytes, sample_rate: int, max_seconds: float) -> DecodedAudio:
    if sample_rate < 8000 or sample_rate > 192000:
        raise OfflineError(400, ErrorCode.INVALID_FIELD, f"sample_rate {sample_rate} is outside 8000..192000 Hz")
    if len(data) % 2:
        raise OfflineError(
            400, ErrorCode.AUDIO_UNDECODABLE, f"raw PCM16 needs an even number of bytes, got {len(data)}"
        )
    seconds = len(data) / 2 / sample_rate
    if seconds > max_seconds:
        raise _too_long(seconds, max_seconds)
    pcm = np.frombuffer(data, dtype="<i2")
    return DecodedAudio(resample_pcm16(pcm, sample_rate, RATE).astype("<i2").tobytes(), "pcm16", sample_rate)


def _with_ffmpeg(data: bytes, max_seconds: float, container: str | None) -> DecodedAudio:
    try:
        import av  # PyAV (the webrtc extra) bundles FFmpeg; the server runs without it, WAV only then
    except ImportError:
        if container == "wav":
            return _wav_without_ffmpeg(data, max_seconds)
        raise OfflineError(
            400, ErrorCode.AUDIO_UNDECODABLE, "only WAV and raw PCM16 without PyAV: pip install 'hark[webrtc]'"
        ) from None
    hint = "" if container else " (raw PCM16 needs its sample_rate)"
    try:
        with av.open(io.BytesIO(data), mode="r") as source:
            streams = source.streams.audio
            if not streams:
                raise OfflineError(400, ErrorCode.AUDIO_UNDECODABLE, "the file has no audio stream")
            stream = streams[0]
            resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
            out = bytearray()
            cap = int(max_seconds * BYTES_PER_SECOND)
            for frame in source.decode(stream):
                for converted in resampler.resample(frame):
                    out += converted.to_ndarray().tobytes()
                if len(out) > cap:
                    raise _too_long(len(out) / BYTES_PER_SECOND, max_seconds)
            for converted in resampler.resample(None):
                out += converted.to_ndarray().tobytes()
            if len(out) > cap:
                raise _too_long(len(out) / BYTES_PER_SECOND, max_seconds)
            name = container or source.format.name.split(",")[0]
            return DecodedAudio(bytes(out), name, stream.rate or RATE)
    except OfflineError:
        raise
    except (av.FFmpegError, ValueError, IndexError, OSError) as exc:
        raise OfflineError(
            400, ErrorCode.AUDIO_UNDECODABLE, f"the audio could not be decoded{hint}: {str(exc)[:200]}"
        ) from None


def _wav_without_ffmpeg(data: bytes, max_seconds: float) -> DecodedAudio:
    import wave

    try:
        with wave.open(io.BytesIO(data)) as wav:
            rate, channels, width, frames = wav.getframerate(), wav.getnchannels(), wav.getsampwidth(), wav.getnframes()
            if width != 2:
                raise OfflineError(400, ErrorCode.AUDIO_UNDECODABLE, f"WAV of {8 * width}-bit samples needs PyAV")
            if frames / rate > max_seconds:
                raise _too_long(frames / rate, max_seconds)
            samples = np.frombuffer(wav.readframes(frames), dtype="<i2")
    except (wave.Error, EOFError) as exc:
        raise OfflineError(400, ErrorCode.AUDIO_UNDECODABLE, f"the WAV could not be read: {exc}") from None
    mono = samples.reshape(-1, channels).mean(axis=1).astype("<i2") if channels > 1 else samples
    return DecodedAudio(resample_pcm16(mono, rate, RATE).astype("<i2").tobytes(), "wav", rate)
