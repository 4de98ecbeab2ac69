"""The session side of a stream decoded on the inference pool: one worker per utterance.

An utterance is placed at `begin` on the worker with the fewest open utterances and stays there
until `finalize` (or `close`); between utterances a session holds nothing on any worker. Any
failure (a worker that died, a model that raised) frees what the utterance held where the worker
still lives and becomes an `ASRError`: that utterance is lost, the session goes on.
"""

from __future__ import annotations

import contextlib
from typing import Any

from .base import ASRError, ASRStream
from .inference_pool import InferencePool, Worker


class PooledStream(ASRStream):
    def __init__(self, pool: InferencePool, session_id: str, engine: str) -> None:
        self._pool = pool
        self._id = session_id
        self._engine = engine
        self._worker: Worker | None = None

    async def _begin(self, payload: Any = None) -> None:
        """Place a new utterance (dropping one begun again without finalize) and start it there."""
        await self._release()
        try:
            self._worker = await self._pool.acquire()
        except Exception as exc:  # a dead worker that does not come back
            raise ASRError(f"{self._engine} begin failed: {exc}") from exc
        await self._call("begin", payload)

    async def _call(self, op: str, payload: Any = None) -> Any:
        if self._worker is None:
            raise ASRError(f"{self._engine} {op} outside an utterance")
        try:
            return await self._pool.call(self._worker, op, self._id, payload)
        except Exception as exc:
            await self._release()
            raise ASRError(f"{self._engine} {op} failed: {exc}") from exc

    async def _finished(self) -> None:
        """After a finalize: the worker has already let go of the utterance."""
        await self._release(send_close=False)

    async def close(self) -> None:
        await self._release()

    async def _release(self, send_close: bool = True) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            if send_close and worker.alive:
                with contextlib.suppress(Exception):  # the worker died meanwhile: nothing left to free
                    await worker.call("close", self._id)
        finally:
            self._pool.release(worker)
