"""Inference workers: a thread or a spawned process running one handler, fed over a queue or a pipe.

A handler is `(op, stream_id, payload) -> result` and owns the models and the per-stream state of
everything placed on its worker, so one utterance's requests run there in order. A bounded number
of requests may be in flight per worker (`max_in_flight`). For a process worker, callers keep each
request small (the ASR streams send at most 16 KB), so what is unread stays below the socket buffer
and `send` never blocks the event loop; a reader thread turns replies into resolved futures.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing as mp
import queue
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

log = logging.getLogger(__name__)

Handler = Callable[[str, str, Any], Any]
"""handler(op, stream_id, payload) -> result, run inside the worker. A handler may also have an
`after_reply()` method: the worker runs it once each reply has gone, for clean-up that no caller
should wait for."""


def _after_reply(handler: Handler) -> None:
    hook = getattr(handler, "after_reply", None)
    if hook is None:
        return
    try:
        hook()
    except Exception:  # clean-up only: the streams are served on
        log.exception("after_reply failed")


class WorkerDied(RuntimeError):
    """The worker is gone (it crashed, or never started); its streams' state went with it."""


class Worker(Protocol):
    name: str
    streams: int  # utterances placed here and not yet finished, for least-loaded placement

    @property
    def alive(self) -> bool: ...

    async def start(self) -> None: ...

    async def call(self, op: str, stream_id: str, payload: Any = None) -> Any: ...

    async def stop(self) -> None: ...


class ThreadWorker:
    """One thread, one handler; requests queue in order. For libraries that release the GIL."""

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

    def _build_handler(self, ready: asyncio.Future[None]) -> Handler | None:
        """In the worker thread: the handler, with `ready` settled either way (None: it failed)."""
        assert self._loop is not None
        try:
            handler = self._factory()
        except BaseException as exc:
            self._loop.call_soon_threadsafe(_settle, ready, False, exc)
            return None
        self._loop.call_soon_threadsafe(_settle, ready, True, None)
        return handler

    def _run(self, ready: asyncio.Future[None]) -> None:
        assert self._loop is not None
        if (handler := self._build_handler(ready)) is None:
            return
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
            _after_reply(handler)

    async def call(self, op: str, stream_id: str, payload: Any = None) -> Any:
        async with self._limit:
            if self._loop is None or not self.alive:
                raise WorkerDied(f"{self.name} is not running")
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


def _process_main(conn: Connection, factory: Callable[[], Handler]) -> None:
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
        _after_reply(handler)


class ProcessWorker:
    """A spawned process, one handler; for libraries that hold the GIL, and so a crash takes one
    worker, not the server. The factory must be picklable."""

    _main = staticmethod(_process_main)  # the process's loop (batch_workers swaps in a batching one)

    def __init__(self, name: str, factory: Callable[[], Handler], max_in_flight: int) -> None:
        self.name = name
        self.streams = 0
        self._factory = factory
        self._limit = asyncio.Semaphore(max_in_flight)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count()
        self._conn: Connection | None = None
        self._proc: mp.process.BaseProcess | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[bool] | None = None
        self._broken = False  # its pipe failed: dead for us even before the OS has reaped it

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        context = mp.get_context("spawn")
        parent, child = context.Pipe(duplex=True)
        self._conn = parent
        self._proc = context.Process(target=self._main, args=(child, self._factory), name=self.name, daemon=True)
        self._proc.start()
        child.close()
        threading.Thread(target=self._read_replies, name=f"{self.name}-reader", daemon=True).start()
        await self._ready

    @property
    def alive(self) -> bool:
        return not self._broken and self._proc is not None and self._proc.is_alive()

    async def call(self, op: str, stream_id: str, payload: Any = None) -> Any:
        async with self._limit:
            if self._conn is None or self._loop is None or not self.alive:
                raise WorkerDied(f"{self.name} is not running")
            req_id = next(self._ids)
            fut: asyncio.Future[Any] = self._loop.create_future()
            self._pending[req_id] = fut
            try:
                try:
                    self._conn.send((req_id, op, stream_id, payload))
                except OSError as exc:  # the process is gone (or going): a broken pipe
                    self._broken = True
                    raise WorkerDied(f"{self.name} exited ({exc})") from exc
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
        self._broken = True
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
