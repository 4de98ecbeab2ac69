"""The cloned-voice store: clips checked (decodable, duration, rate, not silence) with a code for each
failure and nothing stored; voices survive a restart; server voices from voices.toml; limits."""

from __future__ import annotations

import base64
import io
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import corpus_path, manifest

from hark.protocol import ErrorCode, ProtocolError, decode_client
from hark.server.tts.voices import CLONE_PREFIX, VoiceError, VoiceLimits, VoiceStore, decode_clip

CLIP = "en_librivox_sense_0870"  # 7.1 s of a real reader at 16 kHz


def clip_bytes() -> bytes:
    return corpus_path(CLIP).read_bytes()


def transcript() -> str:
    return str(manifest()[CLIP]["transcript"])


def wav_of(pcm: np.ndarray, rate: int, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


def noise(seconds: float, rate: int = 16000) -> np.ndarray:
    return (np.random.default_rng(1).standard_normal(int(seconds * rate)) * 3000).astype(np.int16)


def stored(root: Path) -> list[Path]:
    clients = root / "clients"
    return sorted(clients.iterdir()) if clients.exists() else []


async def test_a_clip_is_stored_and_survives_a_restart(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path)
    await store.load()
    voice = await store.create(clip_bytes(), "wav", None, "  " + transcript() + " ")
    assert voice.id.startswith(CLONE_PREFIX) and len(voice.id) <= 64
    assert voice.sample_rate == 16000 and 7000 <= voice.duration_ms <= 7200
    first = await store.resolve(voice.id)
    again = VoiceStore(tmp_path)  # a restarted server
    await again.load()
    assert again.knows(voice.id)
    second = await again.resolve(voice.id)
    assert first.clip is not None and second.clip == first.clip
    assert second.clip.transcript == transcript()  # stripped
    with wave.open(io.BytesIO(second.clip.wav)) as wav:  # what the engines send: the clip's own samples
        assert wav.getframerate() == 16000 and wav.getnchannels() == 1
        with wave.open(str(corpus_path(CLIP))) as original:
            assert wav.readframes(wav.getnframes()) == original.readframes(original.getnframes())


@pytest.mark.parametrize(
    ("data", "fmt", "rate", "code"),
    [
        (b"this is not audio at all, just some text " * 50, "wav", None, ErrorCode.VOICE_CLIP_INVALID),
        (b"\x00\x01" * 4000, "mp3", None, ErrorCode.VOICE_CLIP_INVALID),
        (wav_of(noise(0.5), 16000), "wav", None, ErrorCode.VOICE_CLIP_TOO_SHORT),
        (wav_of(noise(31), 16000), "wav", None, ErrorCode.VOICE_CLIP_TOO_LONG),
        (wav_of(noise(5, 8000), 8000), "wav", None, ErrorCode.VOICE_CLIP_INVALID),  # 8 kHz: too coarse
        (wav_of(np.zeros(16000 * 5, dtype=np.int16), 16000), "wav", None, ErrorCode.VOICE_CLIP_INVALID),  # silence
        (noise(5).tobytes(), "pcm_s16le", None, ErrorCode.VOICE_CLIP_INVALID),  # no rate
        (noise(5).tobytes() + b"\x00", "pcm_s16le", 16000, ErrorCode.VOICE_CLIP_INVALID),  # odd length
    ],
    ids=["not-audio", "not-mp3", "half-second", "31-seconds", "8-khz", "silence", "pcm-no-rate", "pcm-odd"],
)
async def test_bad_clips_are_refused_with_a_code_and_nothing_is_stored(
    tmp_path: Path, data: bytes, fmt: str, rate: int | None, code: ErrorCode
) -> None:
    store = VoiceStore(tmp_path)
    await store.load()
    with pytest.raises(VoiceError) as info:
        await store.create(data, fmt, rate, "some words")  # type: ignore[arg-type]
    assert info.value.code == code, info.value.message
    assert stored(tmp_path) == []


async def test_ten_minutes_is_refused_from_the_header_and_by_size(tmp_path: Path) -> None:
    ten_minutes = wav_of(noise(600), 16000)  # 19 MB
    store = VoiceStore(tmp_path)
    with pytest.raises(VoiceError) as by_size:
        await store.create(ten_minutes, "wav", None, "words")
    assert by_size.value.code == ErrorCode.VOICE_CLIP_TOO_LONG and "bytes" in by_size.value.message
    roomy = VoiceLimits(max_clip_bytes=64 << 20)
    with pytest.raises(VoiceError) as by_length:
        decode_clip(ten_minutes, "wav", None, roomy)
    assert by_length.value.code == ErrorCode.VOICE_CLIP_TOO_LONG and "600.0 s" in by_length.value.message
    assert stored(tmp_path) == []


async def test_other_formats_decode_to_the_same_clip(tmp_path: Path) -> None:
    try:
        import soundfile  # type: ignore[import-untyped]
    except ImportError:
        pytest.fail("FLAC/MP3 clips are decoded by soundfile: pip install soundfile")
    with wave.open(str(corpus_path(CLIP))) as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    flac = io.BytesIO()
    soundfile.write(flac, pcm, 16000, format="FLAC")
    stereo = wav_of(np.repeat(pcm, 2), 16000, channels=2)
    store = VoiceStore(tmp_path)
    a = await store.create(flac.getvalue(), "flac", None, "words")
    b = await store.create(stereo, "wav", None, "words")
    c = await store.create(pcm.tobytes(), "pcm_s16le", 16000, "words")
    clips = [(await store.resolve(v.id)).clip for v in (a, b, c)]
    assert all(clip is not None for clip in clips)
    assert clips[0].wav == clips[1].wav == clips[2].wav  # type: ignore[union-attr]


async def test_transcripts_are_checked(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path)
    with pytest.raises(VoiceError) as info:
        await store.create(clip_bytes(), "wav", None, "   ")
    assert info.value.code == ErrorCode.INVALID_FIELD
    # a transcript that is not a string never reaches the store: the protocol refuses the event
    audio = base64.b64encode(b"RIFF").decode()
    with pytest.raises(ProtocolError) as bad:
        decode_client(f'{{"type":"voice.create","audio":"{audio}","transcript":["not","text"]}}')
    assert bad.value.code == ErrorCode.INVALID_FIELD and "transcript" in bad.value.message
    assert stored(tmp_path) == []


async def test_the_count_limit(tmp_path: Path) -> None:
    store = VoiceStore(tmp_path, VoiceLimits(max_voices=2))
    for _ in range(2):
        await store.create(clip_bytes(), "wav", None, "words")
    with pytest.raises(VoiceError) as info:
        await store.create(clip_bytes(), "wav", None, "words")
    assert info.value.code == ErrorCode.VOICE_LIMIT_REACHED
    assert len(stored(tmp_path)) == 2


async def test_server_voices_come_from_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "reader.wav").write_bytes(clip_bytes())
    (tmp_path / "voices.toml").write_text(f'[voices.reader]\nclip = "reader.wav"\ntranscript = "{transcript()}"\n')
    store = VoiceStore(tmp_path)
    await store.load()
    assert store.server_voices() == ["reader"]
    choice = await store.resolve("reader")
    assert choice.clip is not None and choice.clip.transcript == transcript()
    assert (await store.resolve("af_bella")).clip is None  # any other name is the engine's own voice
    with pytest.raises(VoiceError) as unknown:
        await store.resolve(CLONE_PREFIX + "A" * 22)
    assert unknown.value.code == ErrorCode.UNKNOWN_VOICE


async def test_a_bad_server_voice_stops_the_start_naming_it(tmp_path: Path) -> None:
    (tmp_path / "short.wav").write_bytes(wav_of(noise(1), 16000))
    (tmp_path / "voices.toml").write_text('[voices.short]\nclip = "short.wav"\ntranscript = "hi"\n')
    with pytest.raises(ValueError, match=r"voices\.short: voice_clip_too_short"):
        await VoiceStore(tmp_path).load()
