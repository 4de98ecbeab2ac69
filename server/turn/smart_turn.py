"""Smart Turn v3.2: P(the turn is complete) from the last 8 s of the utterance's audio.

The model (Pipecat's, BSD-2, ~8 M parameters, int8, Whisper-Tiny encoder and a linear head) is an
ONNX file fetched by `make install` (server/models.py pins it). Its input is `input_features`
[batch, 80, 800] (features.py), its output `logits` [batch, 1], already a sigmoid probability; the
batch axis is dynamic, so `SmartTurnDetector` scores every session's pending check in one call
(batch.py), in a thread off the event loop, with up to two onnxruntime threads.

`check_model` / `load_smart_turn` are what startup calls when semantic turn detection is selected:
a missing, corrupt or wrong file raises `ModelFileError` naming `--turn-model` and `make install`.
Nothing is ever downloaded at run time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..models import FETCH_HINT, SMART_TURN, ModelFileError, default_path, verify
from ..proctree import usable_cpus
from .batch import DEFAULT_MAX_BATCH, DEFAULT_MAX_PENDING, TurnBatcher
from .features import N_FRAMES, N_MELS, AudioArray, Float32Array, log_mel

if TYPE_CHECKING:
    from ..config import ServerConfig

OPTION = "--turn-model"
MAX_THREADS = 2
WHAT = "Smart Turn model"


def turn_model_path(configured: str | Path | None = None) -> Path:
    """`--turn-model` if set, else the fetched file in the models directory."""
    return Path(configured) if configured else default_path(SMART_TURN)


def check_model(path: str | Path | None = None) -> Path:
    """The model file to load, or ModelFileError. The fetched default must match its pinned sha256;
    a file given with --turn-model must exist (load_smart_turn then checks it is a Smart Turn model)."""
    resolved = turn_model_path(path)
    if not path or resolved.resolve() == default_path(SMART_TURN).resolve():
        return verify(resolved, SMART_TURN, WHAT, OPTION)
    if not resolved.is_file():
        raise ModelFileError("model_missing", f"{WHAT} file {resolved} ({OPTION}) is missing: {FETCH_HINT}")
    return resolved


def _expects(shape: Sequence[Any], tail: tuple[int, ...]) -> bool:
    return len(shape) == len(tail) + 1 and tuple(shape[1:]) == tail


class SmartTurnModel:
    """The ONNX session. Blocking: call `predict` off the event loop."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        # a check's latency is dead air: two threads cut one call from ~90 to ~60 ms wall at about the
        # same CPU (python -m bench.turn_model --threads 1, then 2), where the process may use two
        # CPUs; threads that spin while idle would burn a core the VAD and the recognizer need
        self.threads = threads or min(MAX_THREADS, usable_cpus())
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = onnxruntime.InferenceSession(
                str(path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise ModelFileError(
                "model_corrupt", f"{WHAT} file {path} could not be loaded ({exc}): {FETCH_HINT} or fix {OPTION}"
            ) from None
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if not (
            len(inputs) == 1
            and inputs[0].name == "input_features"
            and _expects(inputs[0].shape, (N_MELS, N_FRAMES))
            and len(outputs) == 1
            and _expects(outputs[0].shape, (1,))
        ):
            found = [(i.name, i.shape) for i in inputs], [(o.name, o.shape) for o in outputs]
            raise ModelFileError(
                "model_corrupt",
                f"{path} is not a Smart Turn model (inputs/outputs {found}, expected input_features "
                f"[batch, {N_MELS}, {N_FRAMES}] -> [batch, 1]): {FETCH_HINT} or fix {OPTION}",
            )
        self.path = path

    def predict(self, features: Float32Array) -> Float32Array:
        """features [batch, 80, 800] -> P(turn complete) [batch]."""
        (logits,) = self._session.run(None, {"input_features": features})
        probabilities: Float32Array = np.asarray(logits, dtype=np.float32)[:, 0]
        return probabilities


def load_smart_turn(path: str | Path | None = None, threads: int | None = None) -> SmartTurnModel:
    """Check and load the model (blocking, ~0.1 s); ModelFileError says what is wrong and how to fix it.
    `threads`: onnxruntime's per call (default: up to two, as the CPUs allow)."""
    return SmartTurnModel(check_model(path), threads)


@dataclass(slots=True)
class TurnCost:
    """What the checks cost so far: thread CPU time in the detector's worker (features and model).
    With more than one onnxruntime thread the model's figure is the calling thread's share only;
    bench/turn_model.py reads the whole process's."""

    checks: int = 0
    batches: int = 0
    largest_batch: int = 0
    features_cpu_s: float = 0.0
    model_cpu_s: float = 0.0

    @property
    def cpu_ms_per_check(self) -> float:
        return 1000.0 * (self.features_cpu_s + self.model_cpu_s) / self.checks if self.checks else 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "checks": self.checks,
            "batches": self.batches,
            "largest_batch": self.largest_batch,
            "features_cpu_s": round(self.features_cpu_s, 6),
            "model_cpu_s": round(self.model_cpu_s, 6),
            "cpu_ms_per_check": round(self.cpu_ms_per_check, 3),
        }


class SmartTurnDetector:
    """The turn-detector engine: `await score(audio)` -> P(turn complete), batched across sessions."""

    name = "smart-turn-v3.2"

    def __init__(
        self,
        model: SmartTurnModel,
        executor: Executor | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.model = model
        self._own_executor: ThreadPoolExecutor | None = None
        if executor is None:
            # one round at a time is in flight, so one worker thread is all the batcher can use
            executor = self._own_executor = ThreadPoolExecutor(1, thread_name_prefix="turn")
        self._batcher = TurnBatcher(self.predict, executor, max_batch, max_pending)
        self.cost = TurnCost()
        self.observe_latency: Callable[[float], None] | None = None  # seconds per answered check (metrics)

    async def start(self) -> None:
        self._batcher.start()

    async def stop(self) -> None:
        await self._batcher.stop()
        if self._own_executor is not None:
            self._own_executor.shutdown(wait=False, cancel_futures=True)

    @property
    def pending(self) -> int:
        return self._batcher.pending

    async def score(self, audio: AudioArray) -> float:
        """P(turn complete) of an utterance from its last 8 s of 16 kHz mono audio (int16, or float in
        [-1, 1]); raises TurnDetectorBusy when too many checks wait (the caller keeps its silence rule)."""
        started = time.monotonic()
        probability = await self._batcher.score(audio)
        if self.observe_latency is not None:
            self.observe_latency(time.monotonic() - started)
        return probability

    def predict(self, audios: Sequence[AudioArray]) -> Float32Array:
        """Blocking, one batch: features of each utterance, then one model call for all of them."""
        started = time.thread_time()
        features = np.stack([log_mel(audio) for audio in audios])
        featured = time.thread_time()
        probabilities = self.model.predict(features)
        cost = self.cost
        cost.features_cpu_s += featured - started
        cost.model_cpu_s += time.thread_time() - featured
        cost.checks += len(audios)
        cost.batches += 1
        cost.largest_batch = max(cost.largest_batch, len(audios))
        return probabilities


def create_turn_detector(config: ServerConfig, executor: Executor | None = None) -> SmartTurnDetector:
    """Factory for the engine registry: the model of `config.turn_model` (default: the fetched file).
    Blocking (loads the model); raises ModelFileError when it is missing or corrupt."""
    return SmartTurnDetector(load_smart_turn(config.turn_model or None), executor)
