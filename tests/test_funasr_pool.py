"""The FunASR inference pool without models: order per stream, errors, and the overload signal."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from hark.server.asr.inference_pool import MAX_BUSY_FRACTION, InferencePool


class _Sleepy:
    """A handler that takes `payload` seconds of wall time and records the order it ran in."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def __call__(self, op: str, stream_id: str, payload: Any) -> Any:
        if op == "fail":
            raise ValueError("broken chunk")
        time.sleep(payload or 0)
        self.seen.append((stream_id, op))
        return f"{stream_id}:{op}"


class _Factory:
    def __init__(self) -> None:
        self.handler = _Sleepy()

    def __call__(self) -> _Sleepy:
        return self.handler


async def test_one_streams_calls_run_in_order_and_errors_do_not_kill_the_worker() -> None:
    factory = _Factory()
    pool = InferencePool("test", factory, workers=1, kind="thread")
    await pool.start()
    try:
        worker = await pool.acquire()
        results = await asyncio.gather(*(pool.call(worker, f"op{i}", "s", 0.001) for i in range(20)))
        assert results == [f"s:op{i}" for i in range(20)]
        with pytest.raises(RuntimeError, match="broken chunk"):
            await pool.call(worker, "fail", "s")
        assert await pool.call(worker, "after", "s") == "s:after"
    finally:
        await pool.stop()


async def test_new_sessions_are_refused_while_the_workers_cannot_keep_up() -> None:
    pool = InferencePool("test", _Factory(), workers=2, kind="thread")
    await pool.start()
    try:
        assert pool.overload_reason() is None
        workers = [await pool.acquire(), await pool.acquire()]
        assert workers[0] is not workers[1], "a new utterance goes to the idle worker"
        # sixteen streams' 100 ms chunks at once on two workers: on average they wait 350 ms
        await asyncio.gather(*(pool.call(workers[i % 2], "accept", f"s{i}", 0.1) for i in range(16)))
        reason = pool.overload_reason()
        assert reason is not None and "capacity" in reason, reason
        # busy fraction alone: a worker busy MAX_BUSY_FRACTION of the window on both
        quiet = InferencePool("quiet", _Factory(), workers=2, kind="thread")
        for worker in quiet._workers:
            quiet.meter.record(worker.name, busy=MAX_BUSY_FRACTION * 5.0, waited=0.0)
        assert quiet.overload_reason() is not None
        quiet.meter.record(quiet._workers[0].name, busy=0.0, waited=0.0)
        assert quiet.overload_reason() is not None  # still busy over the last 5 s
    finally:
        await pool.stop()


class _Tidy:
    """Its clean-up (after_reply) waits until the caller has the reply, then takes 0.2 s."""

    def __init__(self) -> None:
        self.replied = threading.Event()
        self.cleaned_after_reply: list[bool] = []

    def __call__(self, op: str, stream_id: str, payload: Any) -> Any:
        return len(self.cleaned_after_reply)

    def after_reply(self) -> None:
        self.cleaned_after_reply.append(self.replied.wait(10))
        time.sleep(0.2)


async def test_clean_up_runs_after_the_reply_and_counts_as_busy() -> None:
    handler = _Tidy()
    pool = InferencePool("tidy", lambda: handler, workers=1, kind="thread")
    await pool.start()
    try:
        worker = await pool.acquire()
        assert await pool.call(worker, "a", "s") == 0
        handler.replied.set()  # a clean-up that ran before the reply would wait 10 s for this in vain
        assert await pool.call(worker, "b", "s") == 1  # the next call ran after the clean-up
        assert handler.cleaned_after_reply[0] is True
        # the clean-up's 0.2 s is the worker's busy time, seen by the overload signal
        assert pool.meter.busy_fraction(worker.name) * 5.0 >= 0.2
    finally:
        await pool.stop()
