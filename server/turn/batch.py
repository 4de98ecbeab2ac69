"""One turn-detector forward pass per round for every session with a check pending.

Like the VAD batcher (server/vad_batch.py): sessions hand their audio to one batcher task; whatever
has arrived while the previous batch ran goes into the next one, so batching adds no waiting of its
own, and the batch runs in a thread off the event loop. The model's batch axis is dynamic, so a
round is a single call however many sessions take part (up to `max_batch`; the rest wait for the
next round). The queue is bounded twice: past `max_pending` checks waiting, or once the checks
ahead of a new one would take more than `max_wait_s` of model time (the seconds per check measured
so far), `score` refuses at once with `TurnDetectorBusy` and the caller falls back to its silence
rule. Before the time bound, a saturated detector left turns waiting to the semantic policy's
2.5 s cap (python -m bench.turncapacity: 30 and more sessions on one core).

The defaults follow bench/turn_model.py: the model's CPU cost per check hardly falls past a batch
of 4 (it is compute, not call overhead), so a bigger batch only makes its first check wait for the
last; and 32 waiting checks are already ~2.5 s of model time on a 2-core EPYC, past the silence cap
at which a turn ends anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from ..batching import BatchLoop, next_batch
from .features import N_SAMPLES, AudioArray, Float32Array

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 8
DEFAULT_MAX_PENDING = 32
# past this, waiting for the model costs more dead air than its judgement saves over the silence
# rule (500 ms): at 0.4 s, 20 sessions on one core (the detector half busy) fell back in 9 % of their
# turns, on bursts of checks; at 1 s in 3 %, and 30 sessions in 34 %, final p50 554 ms, where without
# the bound 23 % waited for the 2.5 s cap (python -m bench.turncapacity)
DEFAULT_MAX_WAIT_S = 1.0
_COST_SMOOTHING = 0.2  # weight of the newest batch in the seconds-per-check estimate

# blocking: the last 8 s of each utterance -> P(turn complete) of each, in order
Predict = Callable[[Sequence[AudioArray]], Float32Array]


class TurnDetectorBusy(RuntimeError):
    code = "turn_detector_busy"


@dataclass(slots=True)
class _Check:
    audio: AudioArray
    future: asyncio.Future[float]


class TurnBatcher(BatchLoop):
    def __init__(
        self,
        predict: Predict,
        executor: Executor,
        max_batch: int = DEFAULT_MAX_BATCH,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        if max_batch < 1 or max_pending < 1 or max_wait_s <= 0:
            raise ValueError("max_batch and max_pending must be at least 1, max_wait_s above 0")
        super().__init__("turn-batcher")
        self._predict = predict
        self._executor = executor
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Check] = asyncio.Queue(maxsize=max_pending)
        self._in_flight: list[_Check] = []
        self.seconds_per_check = 0.0  # smoothed wall time per check of the batches so far (0: none yet)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def stop(self) -> None:
        await super().stop()
        waiting = [*self._in_flight, *(self._queue.get_nowait() for _ in range(self._queue.qsize()))]
        for check in waiting:  # nobody will answer these now
            check.future.cancel()
        self._in_flight = []

    async def score(self, audio: AudioArray) -> float:
        """P(turn complete) from the last 8 s of 16 kHz mono `audio` (int16, or float in [-1, 1])."""
        if not isinstance(audio, np.ndarray) or audio.ndim != 1:
            raise ValueError("turn detector audio must be a 1-D numpy array of 16 kHz mono samples")
        if audio.dtype not in (np.int16, np.float32, np.float64):
            raise ValueError(f"turn detector audio must be int16 or float samples, not {audio.dtype}")
        self.start()
        ahead = self._queue.qsize() + len(self._in_flight)
        if ahead and ahead * self.seconds_per_check > self._max_wait_s:
            raise TurnDetectorBusy(
                f"{ahead} turn checks ahead, ~{ahead * self.seconds_per_check * 1000:.0f} ms of model time"
            )
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        try:
            # a copy of the tail only: the caller's buffer may grow or be reused meanwhile
            self._queue.put_nowait(_Check(audio[-N_SAMPLES:].copy(), future))
        except asyncio.QueueFull:
            raise TurnDetectorBusy(f"{self._queue.maxsize} turn checks already waiting") from None
        return await future

    def _note_cost(self, seconds: float) -> None:
        previous = self.seconds_per_check
        self.seconds_per_check = seconds if previous == 0 else previous + _COST_SMOOTHING * (seconds - previous)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            checks = await next_batch(self._queue, self._max_batch)
            self._in_flight = checks
            started = time.monotonic()
            try:
                probabilities = await loop.run_in_executor(
                    self._executor, self._predict, [check.audio for check in checks]
                )
                self._note_cost((time.monotonic() - started) / len(checks))
                if len(probabilities) != len(checks):
                    raise RuntimeError(f"turn model gave {len(probabilities)} scores for {len(checks)} inputs")
            except Exception as exc:  # a broken model fails these checks, not the batcher
                log.exception("batched turn detection failed")
                self._in_flight = []
                for check in checks:
                    if not check.future.done():
                        check.future.set_exception(exc)
                continue
            self._in_flight = []  # left set when cancelled mid-batch: stop() cancels those checks
            for check, probability in zip(checks, probabilities, strict=True):
                if not check.future.done():
                    check.future.set_result(float(probability))
