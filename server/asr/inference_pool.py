"""Inference workers for FunASR: threads or processes, one model per worker, and their load.

Each worker runs a handler `(op, stream_id, payload) -> result` that owns its models and the state
of the streams placed on it, so one utterance's chunks run in order on one worker. Placement is per
utterance, on the worker with the fewest open utterances (then the least busy). Every call is timed
inside the worker (`Timed`), so the engine sees both how busy each worker is and how long calls
waited in its queue, for either kind.

Processes (the default) keep FunASR's Python, which holds the GIL between PyTorch kernels, off the
event loop's process and away from each other, and a crash takes one worker, not the server; each
pays its own import of funasr (~0.3 GiB). Threads share one process and that import: PyTorch
releases the GIL inside its kernels, so they also decode in parallel, with more tail latency at
capacity. docs/performance.md ("FunASR") has the measurement behind the default.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from ..procpool import ProcessWorker

log = logging.getLogger(__name__)

Handler = Callable[[str, str, Any], Any]

LOAD_WINDOW_S = 5.0
# new sessions are refused while every worker was busy for more than this share of the last
# LOAD_WINDOW_S, or while calls waited longer than MAX_QUEUE_WAIT_S for a worker on average
MAX_BUSY_FRACTION = 0.8
MAX_QUEUE_WAIT_S = 0.25


class Timed:
    """Wraps a handler factory; the handler's results come back as (seconds busy, result)."""

    def __init__(self, factory: Callable[[], Handler]) -> None:
        self.factory = factory

    def __call__(self) -> Handler:
        handler = self.factory()

        def timed(op: str, stream_id: str, payload: Any) -> tuple[float, Any]:
            started = time.perf_counter()
            result = handler(op, stream_id, payload)
            return time.perf_counter() - started, result

        return timed


class Worker(Protocol):
    name: str
    streams: int

    @property
    def alive(self) -> bool: ...

    async def start(self) -> None: ...

    async def call(self, op: str, stream_id: str, payload: Any = None) -> Any: ...

    async def stop(self) -> None: ...


class ThreadWorker:
    """One thread, one handler; requests queue in order (bounded by max_in_flight)."""

    def __init__(self, name: str, factory: Callable[[], Handler], max_in_flight: int) -> None:
        self.name = name
        self.streams = 0
        self._factory = factory
        self._limit = asyncio.Semaphore(max_in_flight)
        self._queue: queue.SimpleQueue[tuple[asyncio.Future[Any], str, str, Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = self._loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=self.name, daemon=True)
        self._thread.start()
        await ready

    def _run(self, ready: asyncio.Future[None]) -> None:
        assert self._loop is not None
        try:
            handler = self._factory()
        except BaseException as exc:
            self._loop.call_soon_threadsafe(_settle, ready, False, exc)
            return
        self._loop.call_soon_threadsafe(_settle, ready, True, None)
        while (item := self._queue.get()) is not None:
            fut, op, stream_id, payload = item
            try:
                result, ok = handler(op, stream_id, payload), True
            except Exception as exc:  # report it to the caller; keep serving the other streams
                result, ok = RuntimeError(f"{type(exc).__name__}: {exc}"), False
            try:
                self._loop.call_soon_threadsafe(_settle, fut, ok, result)
            except RuntimeError:  # the loop closed during shutdown
                return

    async def call(self, op: str, stream_id: str, payload: Any = None) -> Any:
        async with self._limit:
            if self._loop is None or not self.alive:
                raise RuntimeError(f"{self.name} is not running")
            fut: asyncio.Future[Any] = self._loop.create_future()
            self._queue.put((fut, op, stream_id, payload))
            return await fut

    async def stop(self) -> None:
        self._queue.put(None)
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5.0)


def _settle(fut: asyncio.Future[Any], ok: bool, result: Any) -> None:
    if fut.done():
        return
    if ok:
        fut.set_result(result)
    else:
        fut.set_exception(result if isinstance(result, BaseException) else RuntimeError(str(result)))


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
    def __init__(self, name: str, factory: Callable[[], Handler], workers: int, kind: str, max_in_flight: int = 32):
        if kind not in ("thread", "process"):
            raise ValueError(f"unknown ASR worker kind {kind!r} (thread or process)")
        self._name = name
        self._factory = Timed(factory)
        self._kind = kind
        self._max_in_flight = max_in_flight
        self._workers: list[Worker] = [self._new(i) for i in range(max(1, workers))]
        self.meter = LoadMeter()

    def _new(self, i: int) -> Worker:
        cls = ThreadWorker if self._kind == "thread" else ProcessWorker
        worker: Worker = cls(f"{self._name}-{i}", self._factory, self._max_in_flight)
        return worker

    async def start(self) -> None:
        # one after another: each worker loads its own copy of the models (peaks add up otherwise)
        for worker in self._workers:
            await worker.start()

    async def acquire(self) -> Worker:
        """The live worker with the fewest open utterances (a dead process worker is replaced)."""
        for i, worker in enumerate(self._workers):
            if not worker.alive:
                log.warning("restarting %s", worker.name)
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
        busy, result = await worker.call(op, stream_id, payload)
        self.meter.record(worker.name, busy, max(0.0, time.perf_counter() - started - busy))
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
