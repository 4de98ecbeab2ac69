"""paraformer-streaming's batched stages on onnxruntime (`--asr-runtime onnx|onnx-int8`, issue 17).

`BatchedParaformer` with its two heavy steps swapped: the SANM encoder layers and the decoder run
as the ONNX graphs `paraformer_onnx_export` writes from FunASR's own modules; the front end, the
per-stream encoder prelude, the CIF predictor and the stacking/scattering of every stream's FunASR
cache dict stay exactly as in the torch path, so the caches keep FunASR's layout (torch tensors,
here views of onnxruntime's output arrays). A stream's "no cache yet" goes in as the graphs' neutral
input: zero-length look-back, zero FSMN memory.

fp32 decodes as the torch path does, token for token (tests/test_funasr_onnx.py). int8 is dynamic
quantization: each MatMul's activations get one scale per tensor, computed at run time over the
whole batch, so in int8 a stream's tokens can depend on which streams share its batch (a loud
stream coarsens its neighbours' activation grid). Weight-only 8-bit `MatMulNBits` would quantize per
row instead, but measured slower here (full-size encoder, 1 thread: 100 ms per stream-chunk at
B=1 and 121 at B=8, against 76 and 55 for dynamic int8 and 136 and 87 for fp32).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .paraformer_batch import (
    CHUNK_SIZE,
    DECODER_LOOK_BACK,
    DEFAULT_MAX_BATCH,
    ENCODER_LOOK_BACK,
    BatchedParaformer,
)
from .paraformer_onnx_export import OnnxFiles, decoder_cache_shapes, encoder_cache_shape, ensure_exported


def _session(path: str, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _array(tensor: Any) -> Any:
    return np.ascontiguousarray(tensor.numpy(), dtype=np.float32)


class OnnxParaformer(BatchedParaformer):
    """The batched decoder with the encoder layers and the decoder on onnxruntime sessions."""

    def __init__(self, auto_model: Any, files: OnnxFiles, max_batch: int = DEFAULT_MAX_BATCH, threads: int = 1) -> None:
        super().__init__(auto_model, max_batch)
        self.files = files
        self._encoder = _session(str(files.path("encoder")), threads)
        self._decoder = _session(str(files.path("decoder")), threads)
        self._encoder_inputs = {i.name for i in self._encoder.get_inputs()}
        self._decoder_inputs = {i.name for i in self._decoder.get_inputs()}
        self._heads, self._d_k = encoder_cache_shape(self.net)
        self._fsmn_channels, self._kernel, self._dec_heads, self._dec_d_k = decoder_cache_shapes(self.net)
        self._decoder_layers = len(self.net.decoder.decoders)
        self._drop_torch_weights()

    def _drop_torch_weights(self) -> None:
        """The graphs hold their own copy of the encoder layers' and the decoder's weights (most of
        the model): torch's go, so a worker does not hold both. The modules stay (their shapes and
        settings are read); the prelude (positional encoding) and the CIF predictor keep theirs."""
        torch = self._torch
        encoder, decoder = self.net.encoder, self.net.decoder
        for module in (*encoder.encoders0, *encoder.encoders, decoder):
            for param in module.parameters():
                param.data = torch.empty(0)

    @classmethod
    def load(cls, auto_model: Any, int8: bool, max_batch: int = DEFAULT_MAX_BATCH, threads: int = 1) -> OnnxParaformer:
        """Exports the model's ONNX files first if they are missing or stale (once, beside the model)."""
        files = ensure_exported(auto_model, CHUNK_SIZE, ENCODER_LOOK_BACK, DECODER_LOOK_BACK, int8)
        return cls(auto_model, files, max_batch, threads)

    def _encoder_layers(self, xs: Any, caches: list[Any], chunk_size: list[int], look_back: int) -> Any:
        torch = self._torch
        batch = xs.shape[0]
        empty = np.zeros((batch, self._heads, 0, self._d_k), np.float32)
        feed = {"xs": _array(xs)}
        for i, cache in enumerate(caches):
            for kind in ("k", "v"):
                feed[f"cache_{kind}_{i}"] = empty if cache is None else _array(cache[kind])
        out = self._encoder.run(None, {name: value for name, value in feed.items() if name in self._encoder_inputs})
        for i in range(len(caches)):
            caches[i] = {"k": torch.from_numpy(out[1 + 2 * i]), "v": torch.from_numpy(out[2 + 2 * i])}
        return torch.from_numpy(out[0])

    def _decoder_step(self, memory: Any, tgt: Any, stacked: dict[str, Any]) -> Any:
        torch = self._torch
        batch, layers = memory.shape[0], self._decoder_layers
        fsmn, opt = stacked["decode_fsmn"], stacked["opt"]
        zero_fsmn = np.zeros((batch, self._fsmn_channels, self._kernel), np.float32)
        empty = np.zeros((batch, self._dec_heads, 0, self._dec_d_k), np.float32)
        feed = {"memory": _array(memory), "tgt": _array(tgt)}
        for i in range(layers):
            feed[f"fsmn_{i}"] = zero_fsmn if fsmn is None else _array(fsmn[i])
            for kind in ("k", "v"):
                feed[f"cache_{kind}_{i}"] = empty if opt is None or opt[i] is None else _array(opt[i][kind])
        out = self._decoder.run(None, {name: value for name, value in feed.items() if name in self._decoder_inputs})
        stacked["decode_fsmn"] = [torch.from_numpy(out[1 + i]) for i in range(layers)]
        if stacked["decoder_chunk_look_back"] > 0 or stacked["decoder_chunk_look_back"] == -1:
            keys, values = out[1 + layers : 1 + 2 * layers], out[1 + 2 * layers : 1 + 3 * layers]
            stacked["opt"] = [
                {"k": torch.from_numpy(k), "v": torch.from_numpy(v)} for k, v in zip(keys, values, strict=True)
            ]
        return torch.from_numpy(out[0])
