"""Silero VAD for every session in one model call per tick.

Per-session VAD makes one onnxruntime call per 32 ms window per session, and at hundreds of
sessions the fixed cost of a call (input checks, allocation, thread hand-off) dominates the
arithmetic. Here sessions hand their windows to one batcher task; whatever has arrived while the
previous batch ran goes into the next one, so batching adds no waiting of its own. The recurrent
state stays with each `VadStream`: the batcher stacks the states of the streams in a batch, runs
the model, and hands each stream its slice back. A stream with several windows (a 100 ms frame
holds three or four) takes part in as many rounds, each round one model call over every stream
that still has a window left, so each stream's windows are still scored strictly in order.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from .batching import BatchLoop, next_batch
from .metrics import Metrics
from .vad import Float32Array, SileroVad

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Job:
    windows: Float32Array  # [n, CONTEXT + WINDOW]
    state: Float32Array  # [2, 1, 128]
    future: asyncio.Future[tuple[Float32Array, Float32Array]]
    probabilities: Float32Array = field(init=False)

    def __post_init__(self) -> None:
        self.probabilities = np.empty(len(self.windows), dtype=np.float32)


class VadBatcher(BatchLoop):
    def __init__(self, model: SileroVad, executor: Executor, metrics: Metrics, max_streams: int = 512) -> None:
        super().__init__("vad-batcher")
        self._model = model
        self._executor = executor
        self._metrics = metrics
        self._max_streams = max_streams
        # one entry per session at most (each awaits its result before sending more)
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()

    async def score(self, windows: Float32Array, state: Float32Array) -> tuple[Float32Array, Float32Array]:
        """Speech probability of each window, in order, and the state after the last one."""
        if len(windows) == 0:
            return np.zeros(0, dtype=np.float32), state
        future: asyncio.Future[tuple[Float32Array, Float32Array]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(windows, state, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await next_batch(self._queue, self._max_streams)
            self._metrics.vad_batch.observe(len(jobs))
            try:
                await loop.run_in_executor(self._executor, self._score_batch, jobs)
            except Exception as exc:  # a broken model fails these sessions' frames, not the batcher
                log.exception("batched VAD failed")
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for job in jobs:
                if not job.future.done():
                    job.future.set_result((job.probabilities, job.state))

    def _score_batch(self, jobs: list[_Job]) -> None:
        """Off the loop: round r scores window r of every job that has one."""
        rounds = max(len(job.windows) for job in jobs)
        for r in range(rounds):
            active = [job for job in jobs if len(job.windows) > r]
            inputs = np.stack([job.windows[r] for job in active])
            states = np.concatenate([job.state for job in active], axis=1)
            probabilities, states = self._model.run(inputs, states)
            for i, job in enumerate(active):
                job.probabilities[r] = probabilities[i]
                job.state = states[:, i : i + 1, :]
