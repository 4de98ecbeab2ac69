"""Inference in worker processes, for libraries that hold the GIL (pocketsphinx does).

Each worker is a spawned process running a handler over a duplex pipe. Requests that belong to one
stream stay on one worker (the decoder state lives there). A bounded number of requests may be in
flight per worker; with callers keeping each request small (the ASR sends at most 16 KB), that
keeps everything unread below the socket buffer, so `send` does not block the event loop. A reader
thread per worker turns replies into resolved asyncio futures.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing as mp
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[str, str, Any], Any]
"""handler(op, stream_id, payload) -> result, run inside the worker process."""


class WorkerDied(RuntimeError):
    pass


def _worker_main(conn: Connection, factory: Callable[[], Handler]) -> None:
    # Ctrl-C and a service manager's SIGTERM reach the whole process group: the parent decides
    # when workers stop (it sends None, or its end of the pipe closes when it exits)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        handler = factory()
    except Exception as exc:  # say why (a model that does not load), instead of only dying
        conn.send(("ready", False, f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", True, None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        req_id, op, stream_id, payload = msg
        try:
            conn.send((req_id, True, handler(op, stream_id, payload)))
        except Exception as exc:  # report, keep serving other streams
            conn.send((req_id, False, f"{type(exc).__name__}: {exc}"))


class ProcessWorker:
    def __init__(self, name: str, factory: Callable[[], Handler], max_in_flight: int) -> None:
        self.name = name
        self.streams = 0  # streams pinned here, for least-loaded placement
        self._factory = factory
        self._limit = asyncio.Semaphore(max_in_flight)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._conn: Connection | None = None
        self._proc: mp.process.BaseProcess | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[bool] | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        parent, child = mp.get_context("spawn").Pipe(duplex=True)
        self._conn = parent
        self._proc = mp.get_context("spawn").Process(
            target=_worker_main, args=(child, self._factory), name=self.name, daemon=True
        )
        self._proc.start()
        child.close()
        threading.Thread(target=self._read_replies, name=f"{self.name}-reader", daemon=True).start()
        await self._ready

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    async def call(self, op: str, stream_id: str, payload: Any = None) -> Any:
        async with self._limit:
            if self._conn is None or self._loop is None or not self.alive:
                raise WorkerDied(f"{self.name} is not running")
            req_id = next(self._ids)
            fut: asyncio.Future[Any] = self._loop.create_future()
            self._pending[req_id] = fut
            try:
                self._conn.send((req_id, op, stream_id, payload))
                return await fut
            finally:
                self._pending.pop(req_id, None)

    def _read_replies(self) -> None:
        assert self._conn is not None and self._loop is not None
        while True:
            try:
                req_id, ok, result = self._conn.recv()
            except (EOFError, OSError):
                break
            self._loop.call_soon_threadsafe(self._resolve, req_id, ok, result)
        try:
            self._loop.call_soon_threadsafe(self._fail_all)
        except RuntimeError:  # loop already closed at shutdown
            pass

    def _resolve(self, req_id: Any, ok: bool, result: Any) -> None:
        if req_id == "ready":
            if self._ready is not None and not self._ready.done():
                if ok:
                    self._ready.set_result(True)
                else:
                    self._ready.set_exception(WorkerDied(f"{self.name} failed to start: {result}"))
            return
        fut = self._pending.get(req_id)
        if fut is None or fut.done():
            return
        if ok:
            fut.set_result(result)
        else:
            fut.set_exception(RuntimeError(result))

    def _fail_all(self) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(WorkerDied(f"{self.name} exited during start"))
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(WorkerDied(f"{self.name} exited"))
        if self._proc is not None and not self._proc.is_alive():
            log.error("%s exited with code %s", self.name, self._proc.exitcode)

    async def stop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.send(None)
            except OSError:
                pass
        if self._proc is not None:
            proc = self._proc
            await asyncio.get_running_loop().run_in_executor(None, proc.join, 5.0)
            if proc.is_alive():
                proc.kill()
        if self._conn is not None:
            self._conn.close()


class ProcessPool:
    """A fixed set of workers; streams are pinned to the least-loaded live worker."""

    def __init__(self, name: str, factory: Callable[[], Handler], workers: int, max_in_flight: int = 8) -> None:
        self._name = name
        self._factory = factory
        self._max_in_flight = max_in_flight
        self._workers = [ProcessWorker(f"{name}-{i}", factory, max_in_flight) for i in range(workers)]

    async def start(self) -> None:
        await asyncio.gather(*(w.start() for w in self._workers))

    async def acquire(self) -> ProcessWorker:
        """Pick a worker for a new stream, replacing any that died."""
        for i, worker in enumerate(self._workers):
            if not worker.alive:
                log.warning("restarting %s", worker.name)
                replacement = ProcessWorker(worker.name, self._factory, self._max_in_flight)
                self._workers[i] = replacement
                await replacement.start()
        worker = min(self._workers, key=lambda w: w.streams)
        worker.streams += 1
        return worker

    @staticmethod
    def release(worker: ProcessWorker) -> None:
        worker.streams -= 1

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self._workers), return_exceptions=True)
