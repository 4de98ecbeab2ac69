"""Batched VAD: the same speech events as per-session VAD, from one model call per round."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from conftest import load_pcm

from hark.server.metrics import Metrics
from hark.server.vad import SileroVad, VadEvent, VadStream
from hark.server.vad_batch import VadBatcher

CLIPS = ("en_goforward_command", "en_vosk_digits", "zh_funasr_asr_example", "en_librivox_sense_0920")


def _audio(name: str) -> np.ndarray:
    return np.frombuffer(load_pcm(name), dtype=np.int16).astype(np.float32) / 32768.0


def _per_session(model: SileroVad, audio: np.ndarray, frame: int) -> list[VadEvent]:
    stream = VadStream(model)
    events: list[VadEvent] = []
    for i in range(0, len(audio), frame):
        events += stream.process(audio[i : i + frame])
    return events


async def _batched(batcher: VadBatcher, model: SileroVad, audio: np.ndarray, frame: int) -> list[VadEvent]:
    stream = VadStream(model)
    events: list[VadEvent] = []
    for i in range(0, len(audio), frame):
        probabilities, stream.state = await batcher.score(stream.take_windows(audio[i : i + frame]), stream.state)
        events += stream.apply(probabilities)
        await asyncio.sleep(0)  # let the other streams interleave
    return events


async def test_batched_vad_matches_per_session() -> None:
    model = SileroVad()
    metrics = Metrics()
    clips = [_audio(name) for name in CLIPS]
    # frame sizes that do and do not divide the 512-sample window, as clients send
    frames = [1600, 1600, 480, 4000]
    expected = [_per_session(model, clip, frame) for clip, frame in zip(clips, frames, strict=True)]
    assert all(expected), "every clip has speech: the comparison must not be between empty lists"
    with ThreadPoolExecutor(1) as pool:
        batcher = VadBatcher(model, pool, metrics)
        batcher.start()
        try:
            got = await asyncio.gather(
                *(_batched(batcher, model, clip, frame) for clip, frame in zip(clips, frames, strict=True))
            )
        finally:
            await batcher.stop()
    assert got == expected
    # some model calls really were shared between streams
    batches = metrics.registry.get_sample_value("hark_vad_batch_windows_count")
    singles = metrics.registry.get_sample_value("hark_vad_batch_windows_bucket", {"le": "1.0"})
    assert batches and singles is not None and singles < batches


def test_windows_carry_context_across_frames() -> None:
    """take_windows gives each window the 64 samples before it, whatever the frame boundaries."""
    model = SileroVad()
    audio = np.arange(3 * 512 + 100, dtype=np.float32)
    stream = VadStream(model)
    first = stream.take_windows(audio[:700])
    second = stream.take_windows(audio[700:])
    windows = np.concatenate([first, second])
    assert windows.shape == (3, 576)
    assert np.array_equal(windows[0, 64:], audio[:512]) and not windows[0, :64].any()
    for i in (1, 2):
        assert np.array_equal(windows[i], audio[i * 512 - 64 : (i + 1) * 512])


async def test_a_session_that_leaves_mid_batch_does_not_stall_the_others() -> None:
    model = SileroVad()
    with ThreadPoolExecutor(1) as pool:
        batcher = VadBatcher(model, pool, Metrics())
        batcher.start()
        try:
            stream = VadStream(model)
            windows = stream.take_windows(np.zeros(16000, dtype=np.float32))
            leaving = asyncio.ensure_future(batcher.score(windows, stream.state))
            await asyncio.sleep(0)
            leaving.cancel()
            probabilities, _ = await asyncio.wait_for(batcher.score(windows, stream.state), 30)
            assert len(probabilities) == len(windows)
        finally:
            await batcher.stop()
