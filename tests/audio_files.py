"""Corpus clips re-encoded as the files users upload: MP3, FLAC, OGG/Opus, made here with PyAV's
bundled FFmpeg encoders (libmp3lame, flac, libopus), so no encoded copy is committed."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest

# (PyAV container, encoder, encoder rate): Opus runs at 48 kHz only
FORMATS = {"mp3": ("mp3", "libmp3lame", 16000), "flac": ("flac", "flac", 16000), "ogg": ("ogg", "libopus", 48000)}


def encode(pcm: bytes, kind: str, rate: int = 16000) -> bytes:
    """16-bit mono `pcm` at `rate` as a `kind` file (mp3, flac, ogg)."""
    try:
        import av
    except ImportError:
        pytest.fail("encoding test audio needs PyAV: pip install -e '.[webrtc]' (av)")
    container_name, codec, codec_rate = FORMATS[kind]
    if codec not in av.codecs_available:
        pytest.fail(f"this PyAV wheel has no {codec} encoder: install a PyAV build with it (pip install 'av>=12')")
    out = io.BytesIO()
    with av.open(out, mode="w", format=container_name) as container:
        stream = container.add_stream(codec, rate=codec_rate, layout="mono")
        assert isinstance(stream, av.AudioStream)
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=codec_rate)
        samples = np.frombuffer(pcm, dtype="<i2")
        for start in range(0, len(samples), rate // 10):
            frame = av.AudioFrame.from_ndarray(
                samples[None, start : start + rate // 10].copy(), format="s16", layout="mono"
            )
            frame.sample_rate = rate
            for converted in resampler.resample(frame):
                container.mux(stream.encode(converted))
        for converted in resampler.resample(None):
            container.mux(stream.encode(converted))
        container.mux(stream.encode(None))
    return out.getvalue()


def wav_file(pcm: bytes, rate: int = 16000, channels: int = 1) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
    return out.getvalue()
