"""Inference workers that hand their handler every request waiting for it in one call.

The same tick as the VAD batcher (server/vad_batch.py): a worker takes the first request it is
given, then whatever else has queued up meanwhile (at most MAX_REQUESTS), and runs them with
`handler.handle_batch`, so batching adds no waiting of its own: at low load a batch is one
request, at capacity it is every stream whose chunk came in while the last batch ran. The handler
keeps each stream's requests in order and answers each request as soon as its answer is known (the
reply goes then, so a slow answer holds back only those after it); a request that fails fails alone.
"""

from __future__ import annotations

import asyncio
import queue
import signal
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any, Protocol

from .workers import Handler, ProcessWorker, ThreadWorker, _after_reply, _settle

MAX_REQUESTS = 64  # most requests taken at once (the pool lets 32 per worker be in flight)
Request = tuple[str, str, Any]  # (op, stream_id, payload)
Answer = tuple[int, bool, Any]  # (index of the request, ok, result or the exception)


class BatchHandler(Protocol):
    def __call__(self, op: str, stream_id: str, payload: Any) -> Any: ...

    def handle_batch(self, requests: list[Request]) -> Iterator[Answer]:
        """One answer per request, each as soon as it is known."""
        ...


def _error(result: Any) -> Any:
    return f"{type(result).__name__}: {result}" if isinstance(result, BaseException) else result


def run_batch(handler: Handler, requests: list[Request]) -> Iterator[Answer]:
    """The handler's answers, then an error for each request it left unanswered (it raised)."""
    unanswered = set(range(len(requests)))
    failure: Any = RuntimeError("the batch handler gave no answer")
    try:
        for i, ok, result in handler.handle_batch(requests):  # type: ignore[attr-defined]
            if i in unanswered:
                unanswered.discard(i)
                yield i, ok, result
    except Exception as exc:
        failure = exc
    for i in sorted(unanswered):
        yield i, False, failure


class BatchThreadWorker(ThreadWorker):
    def _run(self, ready: asyncio.Future[None]) -> None:
        assert self._loop is not None
        if (handler := self._build_handler(ready)) is None:
            return
        stopping = False
        while not stopping and (item := self._queue.get()) is not None:
            batch = [item]
            while len(batch) < MAX_REQUESTS:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:  # stop once this batch is answered
                    stopping = True
                    break
                batch.append(more)
            requests = [(op, stream_id, payload) for _, op, stream_id, payload in batch]
            try:
                for i, ok, result in run_batch(handler, requests):
                    reply = result if ok else RuntimeError(_error(result))
                    self._loop.call_soon_threadsafe(_settle, batch[i][0], ok, reply)
            except RuntimeError:  # the loop closed during shutdown
                return
            _after_reply(handler)


def _batch_process_main(conn: Connection, factory: Callable[[], Handler]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as workers._process_main: the parent decides
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        handler = factory()
    except Exception as exc:
        conn.send(("ready", False, _error(exc)))
        return
    conn.send(("ready", True, None))
    stopping = False
    while not stopping:
        try:
            msg = conn.recv()
            if msg is None:
                return
            batch = [msg]
            while len(batch) < MAX_REQUESTS and conn.poll():
                more = conn.recv()
                if more is None:  # stop once this batch is answered
                    stopping = True
                    break
                batch.append(more)
        except (EOFError, OSError):
            return
        for i, ok, result in run_batch(handler, [(op, stream_id, payload) for _, op, stream_id, payload in batch]):
            conn.send((batch[i][0], ok, result if ok else _error(result)))
        _after_reply(handler)


class BatchProcessWorker(ProcessWorker):
    _main = staticmethod(_batch_process_main)
