"""What the micro-batchers (the VAD's, the turn detector's) share: a loop task run from start() to
stop(), and the one way each takes its next batch off its queue."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from typing import Any, Protocol, TypeVar


class _Job(Protocol):
    @property
    def future(self) -> asyncio.Future[Any]: ...


_J = TypeVar("_J", bound=_Job)


async def next_batch(queue: asyncio.Queue[_J], limit: int) -> list[_J]:
    """Wait for one job, then take what else already waits, up to `limit`: batching adds no delay.

    Jobs whose future is already done (their session went away) are dropped, never computed."""
    while True:
        jobs = [await queue.get()]
        while len(jobs) < limit and not queue.empty():
            jobs.append(queue.get_nowait())
        jobs = [job for job in jobs if not job.future.done()]
        if jobs:
            return jobs


class BatchLoop(ABC):
    """Runs `_run` as one named background task from `start()` until `stop()`."""

    def __init__(self, task_name: str) -> None:
        self._task_name = task_name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._task_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @abstractmethod
    async def _run(self) -> None: ...
