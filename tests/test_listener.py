"""The audio front end: what the ASR engine receives is exactly what the client sent, and each
utterance's audio starts where the previous one's ended (pre-roll never reaches back into it)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import load_pcm
from inprocess import RecordingASR, in_process_session

from hark.protocol import SessionConfig
from hark.server.audio import float_to_pcm16, pcm16_to_float

SILENCE_1S = bytes(32000)


def _locate(utterance: bytes, sent: bytes, audio_ms: int) -> int:
    """The input sample where `utterance` sits in `sent`, starting at speech.started's audio_ms
    (which is floored to the ms); fails when it is not an exact slice there."""
    first = audio_ms * 16
    for start in range(first, first + 16):
        if sent[start * 2 : start * 2 + len(utterance)] == utterance:
            return start
    raise AssertionError(
        f"the {len(utterance) // 2} samples the ASR got at {audio_ms} ms are not the client's samples there"
    )


async def _utterances(sent: bytes, defaults: SessionConfig, batched_vad: bool) -> tuple[list[bytes], list[int]]:
    """Stream `sent` through an in-process session; each utterance's audio as the ASR got it, and
    its speech.started audio_ms."""
    asr = RecordingASR()
    async with in_process_session(asr=asr, defaults=defaults, batched_vad=batched_vad) as s:
        await s.send_pcm(sent)
        await s.close()
        started = [e["audio_ms"] for e in s.outbox.of("speech.started")]
    [stream] = asr.streams
    return [bytes(u) for u in stream.utterances], started


@pytest.mark.parametrize("batched_vad", [True, False], ids=["batched-vad", "per-session-vad"])
@pytest.mark.parametrize("clip", ["en_librivox_sense_0920", "zh_funasr_asr_example"])
async def test_16khz_audio_reaches_the_asr_engine_bit_exact(clip: str, batched_vad: bool) -> None:
    sent = load_pcm(clip) + SILENCE_1S
    utterances, started = await _utterances(sent, SessionConfig(audio_output=False), batched_vad)
    assert utterances and len(utterances) == len(started)
    assert sum(len(u) for u in utterances) >= len(sent) // 2, "most of the clip is speech: it must reach the ASR"
    for utterance, audio_ms in zip(utterances, started, strict=True):
        _locate(utterance, sent, audio_ms)


@pytest.mark.parametrize("batched_vad", [True, False], ids=["batched-vad", "per-session-vad"])
async def test_preroll_never_reaches_into_the_previous_utterance(batched_vad: bool) -> None:
    # a short min_silence_ms ends turns at the short pauses of "And so, my fellow Americans, ...",
    # closer together than speech_pad_ms + min_silence_ms: there pre-roll used to overlap the turn before
    sent = load_pcm("en_whisper_jfk") + SILENCE_1S
    defaults = SessionConfig(audio_output=False, min_silence_ms=100)
    utterances, started = await _utterances(sent, defaults, batched_vad)
    assert len(utterances) >= 3, "the pauses must end turns for this test to mean anything"
    # where each utterance's audio lies on the input clock: from its speech.started and its length
    spans = [(ms * 16, ms * 16 + len(u) // 2) for u, ms in zip(utterances, started, strict=True)]
    overlaps_ms = [(end - start) / 16 for (_, end), (start, _) in itertools.pairwise(spans)]
    assert all(ms <= 0 for ms in overlaps_ms), f"ms of audio fed to two turns: {overlaps_ms}"
    # and the pre-roll still reaches back as far as it may: some utterance starts right at the previous end
    assert 0 in overlaps_ms, overlaps_ms
    for (start, _), utterance, ms in zip(spans, utterances, started, strict=True):
        assert _locate(utterance, sent, ms) == start


def test_pcm16_float_round_trip_is_lossless() -> None:
    every_value = np.arange(-32768, 32768, dtype=np.int16)
    assert np.array_equal(float_to_pcm16(pcm16_to_float(every_value.tobytes())), every_value)


async def test_resampled_input_reaches_the_asr_at_16khz() -> None:
    """48 kHz input: the ASR gets 16 kHz PCM16 that matches the original clip closely."""
    import soxr

    clip = np.frombuffer(load_pcm("en_librivox_sense_0920"), dtype=np.int16)
    at_48k = soxr.resample(clip.astype(np.float32) / 32768.0, 16000, 48000)
    sent = float_to_pcm16(at_48k).tobytes()
    asr = RecordingASR()
    async with in_process_session(asr=asr, defaults=SessionConfig(audio_output=False, input_sample_rate=48000)) as s:
        for i in range(0, len(sent), 9600):  # 100 ms at 48 kHz
            await s.session.on_binary(sent[i : i + 9600])
        await s.session.on_binary(bytes(96000))
        await s.close()
        started = s.outbox.of("speech.started")
    [stream] = asr.streams
    assert stream.utterances
    first = np.frombuffer(bytes(stream.utterances[0]), dtype=np.int16).astype(np.float64)
    start = started[0]["audio_ms"] * 16
    # soxr's stream delay is a few samples: compare against the best-aligned stretch of the original
    original = clip.astype(np.float64)
    errors = []
    for delay in range(-40, 41):
        lo = start + delay
        if lo < 0:
            continue
        reference = original[lo : lo + len(first)]
        n = min(len(reference), len(first))
        errors.append(np.sqrt(np.mean((reference[:n] - first[:n]) ** 2)) / (np.sqrt(np.mean(reference[:n] ** 2)) + 1))
    assert min(errors) < 0.05, f"relative RMS error {min(errors):.3f}"
