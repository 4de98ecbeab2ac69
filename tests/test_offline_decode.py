"""server/offline: decoding uploads (format from the bytes), VAD segmentation of whole recordings,
and OpenAI's transcript formats. Real corpus clips, the real Silero model, PyAV's real codecs."""

from __future__ import annotations

import asyncio
import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from audio_files import encode, wav_file
from conftest import load_pcm

from hark.protocol import ErrorCode
from hark.server.http import audio_formats as fmt
from hark.server.offline.decode import BYTES_PER_SECOND, decode_audio, sniff_container
from hark.server.offline.errors import OfflineError
from hark.server.offline.segments import SegmentSettings, SpeechSegment, speech_segments
from hark.server.offline.transcribe import TranscribedSegment, join_text
from hark.server.vad import SileroVad

# the 70 s clip's reference speech segments (ms), from the corpus manifest's notes (a model's output)
ZH_70S_REFERENCE = [(70, 2340), (2620, 6200), (6480, 23670), (23950, 26250), (26780, 28990), (29950, 31430)]


def refused(data: bytes, **kwargs: object) -> OfflineError:
    with pytest.raises(OfflineError) as caught:
        decode_audio(data, **{"max_seconds": 60.0, **kwargs})  # type: ignore[arg-type]
    return caught.value


def test_wav_is_the_samples_as_they_are() -> None:
    pcm = load_pcm("en_goforward_command")
    decoded = decode_audio(wav_file(pcm), max_seconds=60)
    assert decoded.source_format == "wav" and decoded.source_rate == 16000
    assert decoded.pcm == pcm


def test_stereo_44k_wav_becomes_16k_mono() -> None:
    pcm = np.frombuffer(load_pcm("en_goforward_command"), dtype="<i2")
    import soxr

    up = soxr.resample(pcm, 16000, 44100).astype("<i2")
    stereo = np.stack([up, up], axis=1).tobytes()
    decoded = decode_audio(wav_file(stereo, 44100, 2), max_seconds=60)
    assert decoded.source_rate == 44100
    assert abs(decoded.duration_s - len(pcm) / 16000) < 0.01
    back = np.frombuffer(decoded.pcm, dtype="<i2").astype(np.float64)
    n = min(len(back), len(pcm))
    assert np.corrcoef(back[:n], pcm[:n])[0, 1] > 0.95  # the same signal, not just the same length


@pytest.mark.parametrize("kind", ["mp3", "flac", "ogg"])
def test_compressed_formats_found_from_their_bytes(kind: str) -> None:
    pcm = load_pcm("en_vosk_digits")
    data = encode(pcm, kind)
    assert sniff_container(data) == kind
    decoded = decode_audio(data, max_seconds=60, sample_rate=8000)  # a container's own rate wins
    assert decoded.source_format == kind
    assert abs(decoded.duration_s - len(pcm) / BYTES_PER_SECOND) < 0.1
    if kind == "flac":
        assert decoded.pcm == pcm  # lossless


def test_raw_pcm16_only_with_its_sample_rate() -> None:
    pcm = load_pcm("en_goforward_command")
    assert decode_audio(pcm, max_seconds=60, sample_rate=16000).pcm == pcm
    error = refused(pcm)
    assert error.code is ErrorCode.AUDIO_UNDECODABLE and "sample_rate" in error.message
    eight_k = np.frombuffer(pcm, dtype="<i2")[::2].tobytes()
    decoded = decode_audio(eight_k, max_seconds=60, sample_rate=8000)
    assert decoded.source_format == "pcm16" and abs(decoded.duration_s - len(pcm) / BYTES_PER_SECOND) < 0.01


def test_bad_audio_gets_its_code() -> None:
    assert refused(b"").code is ErrorCode.AUDIO_EMPTY
    assert refused(wav_file(b"")).code is ErrorCode.AUDIO_EMPTY
    assert refused(b"\x01\x02\x03", sample_rate=16000).code is ErrorCode.AUDIO_UNDECODABLE  # odd byte count
    assert refused(b"this is not audio at all, just text" * 20).code is ErrorCode.AUDIO_UNDECODABLE
    assert refused(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk").code is ErrorCode.AUDIO_UNDECODABLE
    truncated = encode(load_pcm("en_goforward_command"), "mp3")[:40]
    assert refused(truncated).code in (ErrorCode.AUDIO_UNDECODABLE, ErrorCode.AUDIO_EMPTY)
    assert refused(b"\0\0" * 100, sample_rate=1000).code is ErrorCode.INVALID_FIELD


@pytest.mark.parametrize("kind", ["wav", "mp3", "pcm"])
def test_longer_than_the_cap_is_413(kind: str) -> None:
    pcm = load_pcm("en_goforward_command")  # 2.8 s
    data = {"wav": wav_file(pcm), "mp3": encode(pcm, "mp3"), "pcm": pcm}[kind]
    error = refused(data, max_seconds=1.0, sample_rate=16000)
    assert (error.status, error.code) == (413, ErrorCode.AUDIO_TOO_LONG)
    assert decode_audio(data, max_seconds=3.0, sample_rate=16000).duration_s > 2.7


def segments_of(pcm: bytes, settings: SegmentSettings | None = None) -> list[SpeechSegment]:
    async def collect() -> list[SpeechSegment]:
        with ThreadPoolExecutor(1) as executor:
            return [s async for s in speech_segments(pcm, SileroVad(), executor, settings or SegmentSettings())]

    return asyncio.run(collect())


def test_segments_of_the_70s_clip_match_its_reference() -> None:
    pcm = load_pcm("zh_vad_example_70s")
    found = segments_of(pcm)
    spans = [(s.start_ms, s.end_ms) for s in found]
    for ref_start, ref_end in ZH_70S_REFERENCE:  # the reference speech is (nearly all) inside found segments
        covered = sum(max(0, min(end, ref_end) - max(start, ref_start)) for start, end in spans)
        assert covered >= 0.9 * (ref_end - ref_start), ((ref_start, ref_end), spans)
    assert 8 <= len(found) <= 25, spans  # cut at the pauses, not at every breath nor nowhere
    starts = [s.start for s in found]
    assert starts == sorted(starts) and all(a.end <= b.start for a, b in itertools.pairwise(found))
    assert all(s.pcm == pcm[2 * s.start : 2 * s.end] for s in found)
    assert all(0.5 < s.speech_probability <= 1.0 for s in found)


def test_segments_come_before_the_vad_has_read_the_whole_file() -> None:
    pcm = load_pcm("zh_vad_example_70s")
    calls = 0

    class Counting(ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal calls
            calls += 1
            return super().submit(fn, *args, **kwargs)

    async def first() -> int:
        with Counting(1) as executor:
            async for _ in speech_segments(pcm, SileroVad(), executor):
                return calls
        raise AssertionError("no segment")

    assert asyncio.run(first()) < 5  # of 36 scans of 2 s


def test_long_speech_is_cut_at_max_segment_s() -> None:
    pcm = load_pcm("multi_pyannote_sample_2spk")  # 23 s of talk after 6.7 s of non-speech
    settings = SegmentSettings(max_segment_s=5.0)
    found = segments_of(pcm, settings)
    assert len(found) >= 4
    assert all(s.end_ms - s.start_ms <= 5000 + 2 * settings.speech_pad_ms + 40 for s in found)


def test_silence_has_no_segments() -> None:
    assert segments_of(b"\0\0" * 16000 * 3) == []


def test_join_text_spaces_words_not_chinese_characters() -> None:
    assert join_text("go forward", "ten meters") == "go forward ten meters"
    assert join_text("我想问", "我在滨海新区有房") == "我想问我在滨海新区有房"
    assert join_text("", "hello") == "hello"


def test_subtitle_formats() -> None:
    segments = [
        TranscribedSegment(0, 280, 2344, "go forward", 0.9, 0.8),
        TranscribedSegment(1, 3_600_120, 3_601_000, "ten meters", None, 0.6),
    ]
    assert fmt.srt(segments) == (
        "1\n00:00:00,280 --> 00:00:02,344\ngo forward\n\n2\n01:00:00,120 --> 01:00:01,000\nten meters\n"
    )
    assert fmt.vtt(segments).startswith("WEBVTT\n\n00:00:00.280 --> 00:00:02.344\ngo forward\n")
    verbose = fmt.verbose_json("go forward ten meters", segments, 3601.0, "english", "whisper-1")
    first, second = verbose["segments"]
    assert (first["start"], first["end"], first["seek"]) == (0.28, 2.344, 28)
    assert first["avg_logprob"] == pytest.approx(np.log(0.9), abs=1e-3) and second["avg_logprob"] == 0.0
    assert first["no_speech_prob"] == pytest.approx(0.2) and second["no_speech_prob"] == pytest.approx(0.4)
