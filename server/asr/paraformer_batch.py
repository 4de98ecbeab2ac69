"""paraformer-zh-streaming for many streams in one forward pass: each stream's caches stacked in.

FunASR decodes one stream per call (`ParaformerStreaming.inference`: its online front end, its CIF
predictor cache and `generate_chunk` assume batch size 1). `decode_chunks` runs FunASR's own
modules over every stream with a 600 ms chunk ready, each stream keeping FunASR's cache dict (the
layout of `ParaformerStreaming.init_cache`, so a stream could switch between this and `generate`):

- front end (WavFrontendOnline: fbank remainder, LFR splice, CMVN): per stream, through FunASR's
  `extract_fbank` (each waveform leaves its own remainder; about 1 % of a chunk's cost).
- encoder (SANMEncoderChunkOpt.forward_chunk, split in two): the streaming positional encoding and
  the 5-frame overlap run per stream (each stream is at its own position, `start_idx`), then the SANM
  layers' `forward_chunk` runs once over the batch with their look-back caches (k, v) stacked. The
  attention there takes no mask, so a batch holds streams whose look-back is equally long: a
  stream's first 4 chunks (2.4 s, 10 frames more each) batch with streams of the same age, after
  that every stream is in one group.
- CIF predictor (`forward_chunk`): batched; it stores its cache as (1, B) and (1, B, H), the reason
  FunASR's own batch breaks on the second chunk, so it is stacked as (B, 1) and cut back per stream.
- decoder (ParaformerSANMDecoder.forward_chunk): batched over the streams whose CIF fired, the
  acoustic embeddings zero-padded to the most tokens. Its FSMN self-attention is causal (no right
  context: checked at load), so padded rows change no real row, and each stream's FSMN cache is cut
  from its own columns; only its last `kernel_size` columns are ever read, so it is kept that long
  and streams with different token histories share a batch.

Equal to FunASR's single-stream `generate` token for token (tests/test_funasr_batch.py). The two
heavy steps (`_encoder_layers`, `_decoder_step`) are methods so that `paraformer_onnx` can run them
on onnxruntime with everything else shared.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

CHUNK_SIZE = [0, 10, 5]
CHUNK_SAMPLES = CHUNK_SIZE[1] * 960  # 600 ms at 16 kHz
ENCODER_LOOK_BACK = 4
DECODER_LOOK_BACK = 1
TAIL_SAMPLES = 960  # FunASR: a final piece shorter than this decodes only the cached overlap frames
DEFAULT_MAX_BATCH = 16

Float32Array = np.ndarray[Any, np.dtype[np.float32]]


@dataclass
class ChunkJob:
    """One stream's next piece of audio: a whole chunk, or the rest of the utterance (`is_final`)."""

    cache: dict[str, Any]  # FunASR's streaming cache (init_cache layout), updated in place
    audio: Float32Array
    is_final: bool
    text: str | BaseException = ""  # the new text, or why this stream failed
    # between the stages
    _x: Any = None
    _tokens: int = 0
    _embeds: Any = None
    _enc: Any = None


class AutoModelBatcher:
    """What a batched decoder reads from a FunASR AutoModel: its network, front end and tokenizer,
    and how many requests one pass takes (the streaming chunks here, the 2-pass finals in
    `paraformer_offline_batch`)."""

    def __init__(self, auto_model: Any, max_batch: int) -> None:
        import torch

        self._torch = torch
        self._auto = auto_model
        self.net = auto_model.model
        self._frontend = auto_model.kwargs["frontend"]
        self._tokenizer = auto_model.kwargs["tokenizer"]
        self.max_batch = max(1, max_batch)
        self.largest_batch = 0  # most requests in one pass so far


class BatchedParaformer(AutoModelBatcher):
    """FunASR's ParaformerStreaming (from an AutoModel) decoding many streams' chunks at once."""

    def __init__(self, auto_model: Any, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        super().__init__(auto_model, max_batch)
        decoder = self.net.decoder
        # a padded token row may only be read by later rows, never by earlier ones
        self._causal_decoder = all(
            tuple(layer.self_attn.pad_fn.padding)[1] == 0 for layer in decoder.decoders if layer.self_attn is not None
        ) and (decoder.decoders2 is None or len(decoder.decoders2) == 0)

    def new_cache(self) -> dict[str, Any]:
        cache: dict[str, Any] = {}
        kwargs = self._auto.kwargs
        self.net.init_cache(
            cache,
            chunk_size=CHUNK_SIZE,
            encoder_chunk_look_back=ENCODER_LOOK_BACK,
            decoder_chunk_look_back=DECODER_LOOK_BACK,
            encoder_conf=kwargs["encoder_conf"],
            frontend_conf=kwargs["frontend_conf"],
        )
        return cache

    def decode(self, jobs: Sequence[ChunkJob]) -> None:
        """Decode one piece per job (one job per stream); each job's `text` is set, or its error."""
        with self._torch.no_grad():
            live = [job for job in jobs if self._prepare(job)]
            for group in _groups(live, self._encoder_key, self.max_batch):
                self.largest_batch = max(self.largest_batch, len(group))
                self._guard(group, self._encode)
            fired = [job for job in live if not isinstance(job.text, BaseException)]
            for group in _groups(fired, lambda j: (tuple(j._enc.shape), j.is_final), self.max_batch):
                self._guard(group, self._predict)
            speaking = [job for job in fired if not isinstance(job.text, BaseException) and job._tokens > 0]
            for group in _groups(speaking, self._decoder_key, self.max_batch):
                self._guard(group, self._decode_tokens)

    @staticmethod
    def _guard(group: list[ChunkJob], stage: Callable[[list[ChunkJob]], None]) -> None:
        try:
            stage(group)
        except Exception as exc:  # these streams' caches are spent: their utterances fail, others go on
            for job in group:
                job.text = exc

    # front end and the encoder's per-stream prelude -----------------------------------------------

    def _prepare(self, job: ChunkJob) -> bool:
        try:
            job._x = self._features(job)
            return True
        except Exception as exc:
            job.text = exc
            return False

    def _features(self, job: ChunkJob) -> Any:
        from funasr.utils.load_utils import extract_fbank

        torch = self._torch
        enc_cache = job.cache["encoder"]
        if job.is_final and len(job.audio) < TAIL_SAMPLES:
            enc_cache["tail_chunk"] = True
            feats = enc_cache["feats"]
        else:
            feats, _ = extract_fbank(
                [torch.from_numpy(np.ascontiguousarray(job.audio, dtype=np.float32))],
                data_type="sound",
                frontend=self._frontend,
                cache=job.cache["frontend"],
                is_final=job.is_final,
            )
        encoder = self.net.encoder
        # SANMEncoderChunkOpt.forward_chunk up to its layers, as FunASR runs it: the scaling is in
        # place (for the tail chunk that scales the cached overlap it then decodes)
        feats *= encoder.output_size() ** 0.5
        x = encoder.embed(feats, enc_cache) if encoder.embed is not None else feats
        if enc_cache["tail_chunk"]:
            return enc_cache["feats"]
        return encoder._add_overlap_chunk(x, enc_cache)

    @staticmethod
    def _encoder_key(job: ChunkJob) -> Hashable:
        opt = job.cache["encoder"]["opt"]
        return tuple(job._x.shape), None if opt is None else tuple(opt[0]["k"].shape)

    # stages over a batch -----------------------------------------------------------------------

    def _encode(self, group: list[ChunkJob]) -> None:
        torch = self._torch
        encoder = self.net.encoder
        first = group[0].cache["encoder"]
        chunk_size, look_back = first["chunk_size"], first["encoder_chunk_look_back"]
        xs = torch.cat([job._x for job in group])
        layers = len(encoder.encoders0) + len(encoder.encoders)
        caches = _stack_layers([job.cache["encoder"]["opt"] for job in group], layers)
        xs = self._encoder_layers(xs, caches, chunk_size, look_back)
        keep = look_back > 0 or look_back == -1
        for b, job in enumerate(group):
            job._enc = xs[b : b + 1]
            if keep:
                job.cache["encoder"]["opt"] = [_row_kv(c, b) for c in caches]

    def _encoder_layers(self, xs: Any, caches: list[Any], chunk_size: list[int], look_back: int) -> Any:
        """The SANM layers and the final norm over a batch; `caches` (one {"k", "v"} or None per
        layer, stacked) are replaced by the new ones. The step the ONNX runtime replaces."""
        encoder = self.net.encoder
        n0 = len(encoder.encoders0)
        for i, layer in enumerate(encoder.encoders0):
            # FunASR keeps encoders0's cache at index 0 (there is one such layer)
            xs, caches[0] = layer.forward_chunk(xs, caches[i], chunk_size, look_back)
        for i, layer in enumerate(encoder.encoders):
            xs, caches[n0 + i] = layer.forward_chunk(xs, caches[n0 + i], chunk_size, look_back)
        if encoder.normalize_before:
            xs = encoder.after_norm(xs)
        return xs

    def _decoder_step(self, memory: Any, tgt: Any, stacked: dict[str, Any]) -> Any:
        """The decoder over a batch: logits; `stacked`'s "decode_fsmn" and "opt" become the new
        caches (FunASR's forward_chunk). The step the ONNX runtime replaces."""
        return self.net.decoder.forward_chunk(memory, tgt, stacked)

    def _predict(self, group: list[ChunkJob]) -> None:
        torch = self._torch
        enc = torch.cat([job._enc for job in group])
        caches = [job.cache["encoder"] for job in group]
        stacked = {
            "chunk_size": caches[0]["chunk_size"],
            "cif_hidden": torch.cat([c["cif_hidden"] for c in caches]),  # (B, 1, H)
            "cif_alphas": torch.cat([c["cif_alphas"] for c in caches]),  # (B, 1)
        }
        embeds, lengths, _, _ = self.net.predictor.forward_chunk(enc, stacked, is_final=group[0].is_final)
        lengths = lengths.round().long()
        for b, (job, cache) in enumerate(zip(group, caches, strict=True)):
            # FunASR's layout for one stream: (1, 1) and (1, 1, H)
            cache["cif_alphas"] = stacked["cif_alphas"][:, b : b + 1]
            cache["cif_hidden"] = stacked["cif_hidden"][:, b : b + 1]
            job._tokens = int(lengths[b])
            job._embeds = embeds[b : b + 1, : job._tokens] if job._tokens > 0 else None
            job.text = ""

    def _decoder_key(self, job: ChunkJob) -> Hashable:
        dec = job.cache["decoder"]
        tokens = None if self._causal_decoder else job._tokens
        return tuple(job._enc.shape), dec["decode_fsmn"] is None, dec["opt"] is None, tokens

    def _decode_tokens(self, group: list[ChunkJob]) -> None:
        from funasr.utils import postprocess_utils

        torch = self._torch
        decoder = self.net.decoder
        most = max(job._tokens for job in group)
        memory = torch.cat([job._enc for job in group])
        tgt = torch.cat([torch.nn.functional.pad(job._embeds, (0, 0, 0, most - job._tokens)) for job in group])
        caches = [job.cache["decoder"] for job in group]
        layers = len(decoder.decoders)
        fsmn = caches[0]["decode_fsmn"]
        stacked = {
            "decode_fsmn": None
            if fsmn is None
            else [torch.cat(layer) for layer in zip(*(c["decode_fsmn"] for c in caches), strict=True)],
            "opt": None if caches[0]["opt"] is None else _stack_layers([c["opt"] for c in caches], layers),
            "chunk_size": caches[0]["chunk_size"],
            "decoder_chunk_look_back": caches[0]["decoder_chunk_look_back"],
        }
        logits = self._decoder_step(memory, tgt, stacked)
        scores = torch.log_softmax(logits, dim=-1)
        kernels = [layer.self_attn.kernel_size for layer in decoder.decoders]
        net = self.net
        for b, (job, cache) in enumerate(zip(group, caches, strict=True)):
            pad = most - job._tokens
            # this stream's own FSMN columns (the padding is last), of which the next chunk reads the
            # last kernel_size - 1: kept kernel_size long so every stream's cache has one shape
            cache["decode_fsmn"] = [
                layer[b : b + 1, :, : layer.shape[2] - pad][:, :, -kernel:]
                for layer, kernel in zip(stacked["decode_fsmn"], kernels, strict=True)
            ]
            if stacked["opt"] is not None:
                cache["opt"] = [_row_kv(c, b) for c in stacked["opt"]]
            ids = scores[b, : job._tokens].argmax(dim=-1).tolist()
            ids = [i for i in ids if i not in (net.eos, net.sos, net.blank_id)]
            text, _ = postprocess_utils.sentence_postprocess(self._tokenizer.ids2tokens(ids))
            job.text = str(text)


def _groups(jobs: Sequence[ChunkJob], key: Callable[[ChunkJob], Hashable], cap: int) -> list[list[ChunkJob]]:
    """Jobs whose tensors stack (same key), at most `cap` to a forward pass."""
    by_key: dict[Hashable, list[ChunkJob]] = {}
    for job in jobs:
        by_key.setdefault(key(job), []).append(job)
    return [group[i : i + cap] for group in by_key.values() for i in range(0, len(group), cap)]


def _stack_layers(per_stream: Sequence[list[Any] | None], layers: int) -> list[Any]:
    """Per-layer {"k", "v"} look-back caches of several streams stacked on the batch axis (all of
    a group's streams have one, or none has)."""
    import torch

    if per_stream[0] is None:
        return [None] * layers
    return [
        {name: torch.cat([stream[i][name] for stream in per_stream if stream is not None]) for name in ("k", "v")}
        for i in range(layers)
    ]


def _row_kv(cache: dict[str, Any] | None, b: int) -> dict[str, Any] | None:
    if cache is None:
        return None
    return {name: cache[name][b : b + 1] for name in ("k", "v")}


def held_bytes(cache: Any) -> int:
    """Bytes of the tensors a stream's cache refers to (views counted at their own size)."""
    if isinstance(cache, dict):
        return sum(held_bytes(v) for v in cache.values())
    if isinstance(cache, list | tuple):
        return sum(held_bytes(v) for v in cache)
    nbytes = getattr(cache, "nbytes", None)
    return int(nbytes) if isinstance(nbytes, int) else 0
