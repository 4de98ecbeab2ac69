"""CMU pocketsphinx streaming ASR (English model shipped in the wheel), on the inference pool.

pocketsphinx holds the GIL while decoding, so its decoders live in worker processes of the same
inference pool FunASR uses (`inference_pool`): utterances are placed on the least-loaded worker,
and new sessions are refused with server_busy when the workers cannot keep up.

A decoder costs ~90 MB and 0.3 s to build, and holds one utterance at a time. Each worker keeps
them in a `DecoderPool`: an utterance takes one at `begin` and gives it back at `finalize`, so a
session that is not speaking holds none, and memory follows the number of people speaking at
once, not the number of sessions. Idle decoders are kept for the next utterances, at most as many
as are in use plus `keep_idle`, so after a burst of speakers the worker returns to `keep_idle`
decoders (and gives the memory back to the OS). A decoder grows ~12 MB per minute of a single
utterance and keeps that after it ends: one that decoded a long utterance is replaced.

The cepstral mean adapts to a speaker's channel over an utterance; each session carries its own
between utterances, so a decoder reused across sessions starts from the right one, and its front
end is restarted, so an utterance decodes the same on any decoder.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import ASREngine
from .inference_pool import InferencePool
from .pooled import PooledStream
from .posterior import CONFIDENCE_OPTIONS, mean_word_posterior

# Only the first (fwdtree) search pass: the fwdflat second pass and bestpath lattice rescoring
# run at end_utt, i.e. while the user waits for the reply (135-485 ms per utterance here), and on
# the corpus clips they did not lower the word error rate (docs/performance.md, "ASR settings").
# With `confidence` (the default) a bounded bestpath pass runs after all, for its word posteriors:
# posterior.py says what it costs (bench/asr_confidence.py)
DEFAULT_OPTIONS: dict[str, Any] = {"bestpath": False, "fwdflat": False}
RATE = 16000
# what one request to a worker carries at most: 8 in flight of this stay far below the socket
# buffer, so the pipe write never blocks the event loop (see workers.py)
MAX_REQUEST_BYTES = 16 * 1024
MAX_IN_FLIGHT = 8
KEEP_IDLE = 2  # decoders built at start and always kept: the next utterances start without a build
RECYCLE_AFTER_S = 30.0  # a decoder that decoded one utterance longer than this is replaced


def _trim_heap() -> None:
    """Give freed decoders' memory back to the OS (glibc keeps most of it otherwise)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class DecoderPool:
    """The decoders of one worker: one per utterance in progress, idle ones kept for reuse."""

    def __init__(self, make: Callable[[], Any], keep_idle: int) -> None:
        self._make = make
        self._keep_idle = keep_idle
        self._idle = [make() for _ in range(keep_idle)]
        self.in_use = 0
        self._retired: list[Any] = []
        self._worn = 0  # worn decoders among the retired: replaced while fewer than keep_idle are idle

    @property
    def idle(self) -> int:
        return len(self._idle)

    def take(self) -> Any:
        decoder = self._idle.pop() if self._idle else self._make()
        self.in_use += 1
        return decoder

    def give_back(self, decoder: Any, worn: bool) -> None:
        self.in_use -= 1
        (self._retired if worn else self._idle).append(decoder)
        self._worn += worn
        # as many idle as in use (the load may come back) plus the few kept always
        excess = len(self._idle) - (self.in_use + self._keep_idle)
        if excess > 0:
            self._retired += self._idle[-excess:]
            del self._idle[-excess:]

    def free_retired(self) -> None:
        """Destroy the decoders given up and trim the heap (~50 ms each); a worn one is replaced
        (0.3 s) while fewer than keep_idle are idle. The worker runs this after it has replied
        (`after_reply`), never while a final transcript waits."""
        if not self._retired:
            return
        self._retired.clear()
        _trim_heap()
        while self._worn and len(self._idle) < self._keep_idle:
            self._idle.append(self._make())
            self._worn -= 1
        self._worn = 0


@dataclass(slots=True)
class _Utterance:
    decoder: Any
    samples: int = 0


class DecoderHost:
    """Runs in the worker process: the pool's ops for every utterance placed on this worker."""

    def __init__(self, options: dict[str, Any], keep_idle: int = KEEP_IDLE, recycle_after_s: float = RECYCLE_AFTER_S):
        from pocketsphinx import Decoder

        def make() -> Any:
            return Decoder(samprate=RATE, loglevel="FATAL", **options)

        self.decoders = DecoderPool(make, keep_idle)
        self._recycle_after = int(recycle_after_s * RATE)
        self._utterances: dict[str, _Utterance] = {}
        self._posteriors = bool(options.get("bestpath"))  # without the lattice pass every posterior is 1.0
        # a reused decoder still holds the last speaker's cepstral mean: new sessions start from this
        probe = self.decoders.take()
        self._initial_cmn: str = probe.get_cmn()
        self.decoders.give_back(probe, worn=False)

    def after_reply(self) -> None:
        self.decoders.free_retired()

    def __call__(self, op: str, stream_id: str, payload: Any) -> Any:
        if op == "begin":
            self._end(stream_id)  # begun again without finalize
            decoder = self.decoders.take()
            self._utterances[stream_id] = _Utterance(decoder)
            # a reused decoder's front end runs on from the last utterance it decoded (whoever
            # spoke it): a fresh one (0.07 ms), so the words do not depend on which decoder this is
            decoder.reinit_feat()
            decoder.set_cmn(payload or self._initial_cmn)
            decoder.start_utt()
            return None
        if op == "accept":
            utt = self._utterances[stream_id]
            utt.decoder.process_raw(payload, False, False)
            utt.samples += len(payload) // 2
            hyp = utt.decoder.hyp()
            return hyp.hypstr if hyp is not None else ""
        if op == "finalize":
            utt = self._utterances[stream_id]
            utt.decoder.end_utt()
            hyp = utt.decoder.hyp()
            confidence = mean_word_posterior(utt.decoder.seg()) if self._posteriors and hyp is not None else None
            result = (hyp.hypstr if hyp is not None else "", utt.decoder.get_cmn(), confidence)
            self._end(stream_id, ended=True)
            return result
        if op == "close":
            self._end(stream_id)
            return None
        raise ValueError(f"unknown op {op}")

    def _end(self, stream_id: str, ended: bool = False) -> None:
        utt = self._utterances.pop(stream_id, None)
        if utt is None:
            return
        if not ended:
            utt.decoder.end_utt()
        self.decoders.give_back(utt.decoder, worn=utt.samples > self._recycle_after)


class DecoderHostFactory:
    """Picklable, so the spawned worker builds its own decoders."""

    def __init__(self, options: dict[str, Any], keep_idle: int, recycle_after_s: float) -> None:
        self.options = options
        self.keep_idle = keep_idle
        self.recycle_after_s = recycle_after_s

    def __call__(self) -> DecoderHost:
        return DecoderHost(self.options, self.keep_idle, self.recycle_after_s)


class PocketsphinxEngine(ASREngine):
    name = "pocketsphinx"
    sample_rate = RATE

    def __init__(
        self,
        workers: int = 1,
        keep_idle: int = KEEP_IDLE,
        options: dict[str, Any] | None = None,
        recycle_after_s: float = RECYCLE_AFTER_S,
        confidence: bool = True,
    ) -> None:
        # confidence: word posteriors from the lattice pass (posterior.py), so a final says how sure it is
        settings = {**DEFAULT_OPTIONS, **(CONFIDENCE_OPTIONS if confidence else {}), **(options or {})}
        factory = DecoderHostFactory(settings, keep_idle, recycle_after_s)
        self.pool = InferencePool(
            "asr-pocketsphinx", factory, workers, "process", max_in_flight=MAX_IN_FLIGHT, parallel_start=True
        )

    async def start(self) -> None:
        await self.pool.start()

    def open_stream(self, session_id: str) -> PocketsphinxStream:
        return PocketsphinxStream(self.pool, session_id)

    def overload_reason(self) -> str | None:
        return self.pool.overload_reason()

    async def aclose(self) -> None:
        await self.pool.stop()


class PocketsphinxStream(PooledStream):
    def __init__(self, pool: InferencePool, session_id: str) -> None:
        super().__init__(pool, session_id, "pocketsphinx")
        self._cmn: str | None = None  # this speaker's channel, carried from one utterance to the next
        self._confidence: float | None = None

    @property
    def confidence(self) -> float | None:
        return self._confidence

    async def begin(self) -> None:
        await self._begin(self._cmn)

    async def accept(self, pcm: bytes) -> str:
        result = ""
        for start in range(0, len(pcm), MAX_REQUEST_BYTES):
            result = await self._call("accept", pcm[start : start + MAX_REQUEST_BYTES])
        return str(result)

    async def finalize(self) -> str:
        self._confidence = None
        text, self._cmn, self._confidence = await self._call("finalize")
        await self._finished()
        return str(text)
