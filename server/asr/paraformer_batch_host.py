"""paraformer-zh-streaming inside one batching inference worker: every stream's ready chunk at once.

The worker (`batch_workers`) hands over every request that queued while the last batch ran. They
run in rounds, each round one request per stream, so a stream's requests keep their order; in a
round, every stream with a 600 ms chunk ready, and every utterance that ends (its `is_final`
piece), go through one `BatchedParaformer.decode`; a stream with several chunks queued takes part
in as many passes. With 2-pass, the utterances that end in one round then get their offline decode
in passes of similar lengths (`BatchedOfflineParaformer`, token-equal to one at a time), shortest
first, and ct-punc one after another.
A stream whose request fails (bad audio, a decode that raised) gets its error and loses its
utterance; the others in its batch are answered as if it had not been there. Each answer goes back
as soon as it is known (the partials of a pass before any 2-pass final).
`settings["runtime"]`: "torch" (FunASR's modules), "onnx" or "onnx-int8" (`paraformer_onnx`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

import numpy as np

from .paraformer_batch import DEFAULT_MAX_BATCH, BatchedParaformer, ChunkJob, held_bytes
from .paraformer_host import ParaformerStreamingHost, _Utterance, join_text
from .paraformer_offline_batch import BatchedOfflineParaformer, OfflineJob
from .utterance_host import Float32Array

Request = tuple[str, str, Any]
Answer = tuple[int, bool, Any]  # (index of the request, ok, result or the exception)


def pcm_to_float(payload: Any) -> Float32Array:
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise TypeError(f"audio must be 16-bit PCM bytes, not {type(payload).__name__}")
    if len(payload) % 2:
        raise ValueError(f"audio must be whole 16-bit samples ({len(payload)} bytes)")
    return np.frombuffer(payload, np.int16).astype(np.float32) / 32768.0


class ParaformerBatchHost(ParaformerStreamingHost):
    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        import torch

        torch.set_num_threads(settings["ncpu"])  # FunASR's generate sets it per call; this path once
        max_batch = int(settings.get("max_batch", DEFAULT_MAX_BATCH))
        runtime = settings.get("runtime", "torch")
        self._batcher: BatchedParaformer
        if runtime == "torch":
            self._batcher = BatchedParaformer(self._online, max_batch)
        else:  # the heavy stages on onnxruntime, exported beside the model at the first start
            from .paraformer_onnx import OnnxParaformer

            self._batcher = OnnxParaformer.load(self._online, runtime == "onnx-int8", max_batch, settings["ncpu"])
        self._offline_batcher = None if self._offline is None else BatchedOfflineParaformer(self._offline, max_batch)

    def __call__(self, op: str, stream_id: str, payload: Any) -> Any:
        if op == "stats":  # for tests and benchmarks: what this worker holds
            return {
                "utterances": len(self._streams),
                "cache_bytes": sum(held_bytes(utt.cache) for utt in self._streams.values()),
                "largest_batch": self._batcher.largest_batch,
                "largest_final_batch": 0 if self._offline_batcher is None else self._offline_batcher.largest_batch,
            }
        return super().__call__(op, stream_id, payload)

    def new_utterance(self) -> _Utterance:
        return _Utterance(cache=self._batcher.new_cache())

    def _decode(self, utt: _Utterance, chunk: Float32Array, is_final: bool) -> str:
        """A request outside a batch (`__call__`): a batch of one."""
        job = ChunkJob(utt.cache, chunk, is_final)
        self._batcher.decode([job])
        if isinstance(job.text, BaseException):
            raise job.text
        return job.text

    def handle_batch(self, requests: list[Request]) -> Iterator[Answer]:
        queues: dict[str, deque[int]] = {}
        for i, (_, stream_id, _) in enumerate(requests):
            queues.setdefault(stream_id, deque()).append(i)
        while queues:
            yield from self._round([(i, *requests[i]) for i in (q.popleft() for q in queues.values())])
            queues = {stream_id: q for stream_id, q in queues.items() if q}

    def _round(self, requests: list[tuple[int, str, str, Any]]) -> Iterator[Answer]:
        """At most one request per stream. The partials go first, then the finals (the 2-pass ones
        pass by pass over the round's ended utterances)."""
        accepting: dict[int, tuple[str, _Utterance]] = {}
        ending: dict[int, tuple[str, _Utterance]] = {}
        for i, op, stream_id, payload in requests:
            try:
                if op == "accept":
                    utt = self._streams[stream_id]
                    self._take(utt, pcm_to_float(payload))
                    accepting[i] = (stream_id, utt)
                elif op == "finalize":
                    utt = self._streams.pop(stream_id)
                    if utt.samples == 0:
                        yield i, True, ("", {})  # as `finalize`: nothing to decode
                    else:
                        ending[i] = (stream_id, utt)
                else:
                    yield i, True, self(op, stream_id, payload)
            except Exception as exc:
                yield i, False, exc
        yield from self._decode_round(accepting, ending)
        for i, (_, utt) in accepting.items():
            yield i, True, self._hypothesis(utt)
        yield from self._finals({i: utt for i, (_, utt) in ending.items()})

    def _finals(self, ending: dict[int, _Utterance]) -> Iterator[Answer]:
        """The round's ended utterances: their 2-pass decodes in offline passes of similar lengths,
        each pass's finals (punctuated one by one) answered as soon as it is done; one that fails
        gets its error, the others their finals."""
        for i, utt in ending.items():
            if not (self._two_pass and utt.audio):
                yield i, True, (utt.text, {})
        two_pass = {
            i: OfflineJob(np.concatenate(utt.audio)) for i, utt in ending.items() if self._two_pass and utt.audio
        }
        if not two_pass:
            return
        assert self._offline_batcher is not None
        index = {id(job): i for i, job in two_pass.items()}
        for done in self._offline_batcher.decode_passes(list(two_pass.values())):
            for job in done:
                i = index[id(job)]
                try:
                    if isinstance(job.text, BaseException):
                        raise job.text
                    final: tuple[str, dict[str, Any]] = (self._punctuate(job.text) or ending[i].text, {})
                except Exception as exc:  # this utterance's offline decode or punctuation
                    yield i, False, exc
                else:
                    yield i, True, final

    def _decode_round(
        self, accepting: dict[int, tuple[str, _Utterance]], ending: dict[int, tuple[str, _Utterance]]
    ) -> Iterator[Answer]:
        """Pass after pass until no stream has a whole chunk left; the ends go in the first pass. A
        stream that fails is answered with its error and leaves `accepting`/`ending`."""
        finals = [(i, utt, ChunkJob(utt.cache, utt.pending, True)) for i, (_, utt) in ending.items()]
        while True:
            jobs = [
                (i, utt, ChunkJob(utt.cache, chunk, False))
                for i, (_, utt) in accepting.items()
                if (chunk := self._next_chunk(utt)) is not None
            ]
            jobs, finals = jobs + finals, []
            if not jobs:
                return
            self._batcher.decode([job for _, _, job in jobs])
            for i, utt, job in jobs:
                if isinstance(job.text, BaseException):
                    stream_id = (accepting.pop(i, None) or ending.pop(i))[0]
                    self._streams.pop(stream_id, None)  # its caches are spent: free them now
                    yield i, False, job.text
                else:
                    utt.text = join_text(utt.text, job.text)
