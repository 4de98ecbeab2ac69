"""Loaded by the server subprocesses of tests/test_overload.py (PYTHONPATH): a hung ASR engine.

- HARK_FAULT_HANG_ASR_FILE=PATH: while PATH exists, every call into the ASR inference pool waits
  (as a worker stuck in a decode would: the call neither returns nor shows in the pool's busy time);
  the calls go on once the file is removed.
"""

from __future__ import annotations

import os

_HANG_FILE = os.environ.get("HARK_FAULT_HANG_ASR_FILE")

if _HANG_FILE:
    import asyncio
    from typing import Any

    from hark.server.asr.inference_pool import InferencePool, Worker

    _call = InferencePool.call

    async def call(self: InferencePool, worker: Worker, op: str, stream_id: str, payload: Any = None) -> Any:
        # a test's file is the switch (another process sets it): polled, and a stat is microseconds
        while os.path.exists(_HANG_FILE):  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.05)
        return await _call(self, worker, op, stream_id, payload)

    InferencePool.call = call  # type: ignore[method-assign]
