"""Loaded by the server subprocesses of tests/test_overload.py (PYTHONPATH): a hung ASR engine.

- HARK_FAULT_HANG_ASR_FILE=PATH: while PATH exists, every call into the ASR inference pool waits
  (as a worker stuck in a decode would: the call neither returns nor shows in the pool's busy time);
  the calls go on once the file is removed.
- HARK_FAULT_SLOW_FINAL_S=SECONDS: every `finalize` call into the pool takes that much longer (a
  recognizer that keeps up with the audio but is late with each turn's final transcript).
- HARK_FAULT_SLOW_ACCEPT_S=SECONDS: every `accept` call (100 ms of speech) takes that much longer
  (a recognizer slower than real time while people speak).
"""

from __future__ import annotations

import os

_HANG_FILE = os.environ.get("HARK_FAULT_HANG_ASR_FILE")
_SLOW_FINAL_S = float(os.environ.get("HARK_FAULT_SLOW_FINAL_S", "0"))
_SLOW_ACCEPT_S = float(os.environ.get("HARK_FAULT_SLOW_ACCEPT_S", "0"))

if _HANG_FILE or _SLOW_FINAL_S or _SLOW_ACCEPT_S:
    import asyncio
    from typing import Any

    from hark.server.asr.inference_pool import InferencePool, Worker

    _call = InferencePool.call

    async def call(self: InferencePool, worker: Worker, op: str, stream_id: str, payload: Any = None) -> Any:
        # a test's file is the switch (another process sets it): polled, and a stat is microseconds
        while _HANG_FILE and os.path.exists(_HANG_FILE):  # noqa: ASYNC110, ASYNC240
            await asyncio.sleep(0.05)
        if op == "finalize" and _SLOW_FINAL_S:
            await asyncio.sleep(_SLOW_FINAL_S)
        if op == "accept" and _SLOW_ACCEPT_S:
            await asyncio.sleep(_SLOW_ACCEPT_S)
        return await _call(self, worker, op, stream_id, payload)

    InferencePool.call = call  # type: ignore[method-assign]
