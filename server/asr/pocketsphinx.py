"""CMU pocketsphinx streaming ASR (English model shipped in the wheel), in worker processes.

pocketsphinx holds the GIL while decoding, so decoders live in spawned worker processes
(`server.procpool`). Each worker keeps a free list of decoders (about 95 MB each) so a new
utterance does not pay the 0.35 s model load. The cepstral mean adapts to a speaker's channel
over an utterance; each session carries its own between utterances, so a decoder reused across
sessions starts from the right one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from ..procpool import ProcessPool, ProcessWorker
from .base import ASREngine, ASRError, ASRStream

log = logging.getLogger(__name__)


class _DecoderHost:
    """Runs in the worker process: one decoder per active stream, reused from a free list."""

    def __init__(self, options: dict[str, Any], prewarm: int) -> None:
        from pocketsphinx import Decoder

        self._make: Callable[[], Any] = lambda: Decoder(samprate=16000, loglevel="FATAL", **options)
        self._free = [self._make() for _ in range(prewarm)]
        self._active: dict[str, Any] = {}
        self._in_utterance: set[str] = set()
        # a reused decoder still holds the last speaker's cepstral mean: new sessions start from this
        self._initial_cmn: str = (self._free[0] if self._free else self._make()).get_cmn()

    def __call__(self, op: str, stream_id: str, payload: Any) -> Any:
        if op == "begin":
            decoder = self._active.get(stream_id)
            if decoder is None:
                decoder = self._free.pop() if self._free else self._make()
                self._active[stream_id] = decoder
            elif stream_id in self._in_utterance:  # begun again without finalize
                decoder.end_utt()
            self._in_utterance.add(stream_id)
            decoder.set_cmn(payload or self._initial_cmn)
            decoder.start_utt()
            return None
        decoder = self._active[stream_id]
        if op == "accept":
            decoder.process_raw(payload, False, False)
            hyp = decoder.hyp()
            return hyp.hypstr if hyp is not None else ""
        if op == "finalize":
            self._in_utterance.discard(stream_id)
            decoder.end_utt()
            hyp = decoder.hyp()
            return (hyp.hypstr if hyp is not None else "", decoder.get_cmn())
        if op == "close":
            decoder = self._active.pop(stream_id)
            if stream_id in self._in_utterance:
                self._in_utterance.discard(stream_id)
                decoder.end_utt()
            self._free.append(decoder)
            return None
        raise ValueError(f"unknown op {op}")


class _HostFactory:
    """Picklable factory, so the spawned worker builds its own decoders."""

    def __init__(self, options: dict[str, Any], prewarm: int) -> None:
        self.options = options
        self.prewarm = prewarm

    def __call__(self) -> _DecoderHost:
        return _DecoderHost(self.options, self.prewarm)


# Only the first (fwdtree) search pass: the fwdflat second pass and bestpath lattice rescoring
# run at end_utt, i.e. while the user waits for the reply (135-485 ms per utterance here), and on
# the corpus clips they did not lower the word error rate (docs/performance.md, "ASR settings").
MAX_REQUEST_BYTES = 16 * 1024
DEFAULT_OPTIONS: dict[str, Any] = {"bestpath": False, "fwdflat": False}


class PocketsphinxEngine(ASREngine):
    name = "pocketsphinx"
    sample_rate = 16000

    def __init__(self, workers: int = 1, prewarm_decoders: int = 2, options: dict[str, Any] | None = None) -> None:
        self._pool = ProcessPool(
            "asr-pocketsphinx", _HostFactory({**DEFAULT_OPTIONS, **(options or {})}, prewarm_decoders), workers
        )

    async def start(self) -> None:
        await self._pool.start()

    def open_stream(self, session_id: str) -> ASRStream:
        return _PocketsphinxStream(self._pool, session_id)

    async def aclose(self) -> None:
        await self._pool.stop()


class _PocketsphinxStream(ASRStream):
    def __init__(self, pool: ProcessPool, session_id: str) -> None:
        self._pool = pool
        self._id = session_id
        self._worker: ProcessWorker | None = None
        self._cmn: str | None = None

    async def _call(self, op: str, payload: Any = None) -> Any:
        try:
            if self._worker is None:
                self._worker = await self._pool.acquire()
            return await self._worker.call(op, self._id, payload)
        except Exception as exc:
            worker, self._worker = self._worker, None
            if worker is not None:
                if worker.alive:  # the worker lives on: free this stream's decoder there
                    with contextlib.suppress(Exception):
                        await worker.call("close", self._id)
                self._pool.release(worker)
            raise ASRError(f"pocketsphinx {op} failed: {exc}") from exc

    async def begin(self) -> None:
        await self._call("begin", self._cmn)

    async def accept(self, pcm: bytes) -> str:
        # pieces of at most 16 KB, so the requests in flight to a worker stay far below the
        # socket buffer and the pipe write never blocks the event loop (see procpool)
        result = ""
        for start in range(0, len(pcm), MAX_REQUEST_BYTES):
            result = await self._call("accept", pcm[start : start + MAX_REQUEST_BYTES])
        return result

    async def finalize(self) -> str:
        text, self._cmn = await self._call("finalize")
        return str(text)

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is None:
            return
        try:
            await worker.call("close", self._id)
        except Exception as exc:  # the worker is gone; nothing left to free
            log.debug("close of %s failed: %s", self._id, exc)
        finally:
            self._pool.release(worker)
