"""The ASR engines' inference pool: workers (threads or processes, `workers.py`) and their load.

Every ASR engine that decodes (pocketsphinx, FunASR) runs here. Each worker runs a handler
`(op, stream_id, payload) -> result` that owns its models and the state of the streams placed on
it, so one utterance's chunks run in order on one worker. Placement is per utterance, on the worker
with the fewest open utterances (then the least busy). Every call is timed inside the worker
(`Timed`), so the engine sees both how busy each worker is and how long calls waited in its queue,
for either kind: that is the overload signal that refuses new sessions with server_busy.

Processes keep a library that holds the GIL (pocketsphinx always; FunASR's Python between PyTorch
kernels) off the event loop's process and away from each other, and a crash takes one worker, not
the server; each pays its own import (funasr ~0.3 GiB). Threads share one process and that import:
PyTorch releases the GIL inside its kernels, so FunASR threads also decode in parallel, with more
tail latency at capacity. docs/performance.md ("FunASR") has the measurement behind the default.
A handler factory with `batched = True` gets workers that hand it every request queued for it at
once (`batch_workers.py`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from .batch_workers import BatchProcessWorker, BatchThreadWorker
from .workers import Handler, ProcessWorker, ThreadWorker, Worker

log = logging.getLogger(__name__)

__all__ = ["Handler", "InferencePool", "LoadMeter", "Timed", "TimedHandler", "Worker"]

LOAD_WINDOW_S = 5.0
# new sessions are refused while every worker was busy for more than this share of the last
# LOAD_WINDOW_S, or while calls waited longer than MAX_QUEUE_WAIT_S for a worker on average
MAX_BUSY_FRACTION = 0.8
MAX_QUEUE_WAIT_S = 0.25


class Timed:
    """Wraps a handler factory; the handler's results come back as (seconds busy, seconds served,
    result): a request answered in a batch was served from the batch's start until its answer and
    made the worker busy for its share of the batch."""

    def __init__(self, factory: Callable[[], Handler]) -> None:
        self.factory = factory

    def __call__(self) -> TimedHandler:
        return TimedHandler(self.factory())


class TimedHandler:
    """Times each call; the time spent in `after_reply` counts towards the next call's busy time."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._after: Callable[[], None] | None = getattr(handler, "after_reply", None)
        self._carried = 0.0

    def __call__(self, op: str, stream_id: str, payload: Any) -> tuple[float, float, Any]:
        started = time.perf_counter()
        result = self._handler(op, stream_id, payload)
        busy, self._carried = time.perf_counter() - started + self._carried, 0.0
        return busy, busy, result

    def handle_batch(self, requests: list[tuple[str, str, Any]]) -> Iterator[tuple[int, bool, Any]]:
        """Each answer as it comes: busy for the time since the previous answer (so a batch's
        requests together made the worker busy for the batch), served since the batch began."""
        started = last = time.perf_counter()
        carried, self._carried = self._carried, 0.0
        for i, ok, result in self._handler.handle_batch(requests):  # type: ignore[attr-defined]
            now = time.perf_counter()
            busy, last, carried = now - last + carried, now, 0.0
            yield i, ok, (busy, now - started, result) if ok else result

    def after_reply(self) -> None:
        if self._after is not None:
            started = time.perf_counter()
            self._after()
            self._carried += time.perf_counter() - started


class LoadMeter:
    """Busy seconds and queue waits of the last LOAD_WINDOW_S, per worker."""

    def __init__(self) -> None:
        self._calls: dict[str, collections.deque[tuple[float, float, float]]] = collections.defaultdict(
            collections.deque
        )

    def record(self, worker: str, busy: float, waited: float) -> None:
        calls = self._calls[worker]
        calls.append((time.monotonic(), busy, waited))
        self._trim(calls)

    def _trim(self, calls: collections.deque[tuple[float, float, float]]) -> None:
        horizon = time.monotonic() - LOAD_WINDOW_S
        while calls and calls[0][0] < horizon:
            calls.popleft()

    def busy_fraction(self, worker: str) -> float:
        calls = self._calls[worker]
        self._trim(calls)
        return min(1.0, sum(busy for _, busy, _ in calls) / LOAD_WINDOW_S)

    def mean_wait(self) -> float:
        waits = []
        for calls in self._calls.values():
            self._trim(calls)
            waits += [waited for _, _, waited in calls]
        return sum(waits) / len(waits) if waits else 0.0


class InferencePool:
    """A fixed set of workers of one kind; dead process workers are replaced at the next placement."""

    def __init__(
        self,
        name: str,
        factory: Callable[[], Handler],
        workers: int,
        kind: str,
        max_in_flight: int = 32,
        parallel_start: bool = False,
    ) -> None:
        if kind not in ("thread", "process"):
            raise ValueError(f"unknown ASR worker kind {kind!r} (thread or process)")
        self._name = name
        self._factory = Timed(factory)
        self._kind = kind
        self._max_in_flight = max_in_flight
        self._parallel_start = parallel_start
        self._workers: list[Worker] = [self._new(i) for i in range(max(1, workers))]
        self._restarting = asyncio.Lock()  # two placements must not both replace one dead worker
        self.meter = LoadMeter()

    @property
    def workers(self) -> list[Worker]:
        return list(self._workers)

    def _new(self, i: int) -> Worker:
        cls: type[ThreadWorker | ProcessWorker]
        if getattr(self._factory.factory, "batched", False):  # its handler takes several requests at once
            cls = BatchThreadWorker if self._kind == "thread" else BatchProcessWorker
        else:
            cls = ThreadWorker if self._kind == "thread" else ProcessWorker
        worker: Worker = cls(f"{self._name}-{i}", self._factory, self._max_in_flight)
        return worker

    async def start(self) -> None:
        if self._parallel_start:  # small models: no load peaks to keep apart
            await asyncio.gather(*(w.start() for w in self._workers))
            return
        # one after another: each worker loads its own copy of the models (peaks add up otherwise)
        for worker in self._workers:
            await worker.start()

    async def acquire(self) -> Worker:
        """The live worker with the fewest open utterances (a dead process worker is replaced)."""
        async with self._restarting:
            for i, worker in enumerate(self._workers):
                if not worker.alive:
                    log.warning("restarting %s", worker.name)
                    await worker.stop()  # reap it (or end one whose pipe broke but still runs)
                    self._workers[i] = self._new(i)
                    await self._workers[i].start()
        # open utterances first: a stream just placed has not shown up in the busy time yet
        worker = min(self._workers, key=lambda w: (w.streams, self.meter.busy_fraction(w.name)))
        worker.streams += 1
        return worker

    @staticmethod
    def release(worker: Worker) -> None:
        worker.streams -= 1

    async def call(self, worker: Worker, op: str, stream_id: str, payload: Any = None) -> Any:
        started = time.perf_counter()
        busy, served, result = await worker.call(op, stream_id, payload)
        self.meter.record(worker.name, busy, max(0.0, time.perf_counter() - started - served))
        return result

    def overload_reason(self) -> str | None:
        busy = min(self.meter.busy_fraction(w.name) for w in self._workers)
        wait = self.meter.mean_wait()
        if busy >= MAX_BUSY_FRACTION or wait >= MAX_QUEUE_WAIT_S:
            return (
                f"speech recognition is at capacity (least busy of {len(self._workers)} workers "
                f"{busy:.0%} busy, chunks waiting {wait * 1000:.0f} ms)"
            )
        return None

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self._workers), return_exceptions=True)
