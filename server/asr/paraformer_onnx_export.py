"""paraformer-streaming's batched stages as ONNX files, exported once beside the model (issue 17).

FunASR's own exporter (`export_meta.py`, `SANMEncoderChunkOptExport`) writes the streaming encoder
without its look-back caches, so it computes look-back 0, not the 4 chunks Hark decodes with. Here
thin wrappers trace FunASR's own modules' `forward_chunk` with every cache an input and an output:

- encoder: the SANM layers (encoders0 + encoders) and `after_norm`, each layer's look-back (k, v)
  in and out; the per-stream prelude (fbank, LFR, CMVN, positional encoding, overlap) stays in torch.
  A stream's first chunk feeds zero-length caches, which `cat` makes the same as FunASR's "no cache".
- decoder: `ParaformerSANMDecoder.forward_chunk` with its FSMN caches and cross-attention
  look-back (k, v) in and out, logits out. The first chunk feeds zero FSMN caches `kernel_size` long:
  for a causal FSMN (checked) that is exactly FunASR's left zero padding.
- the CIF predictor stays in torch: its fire loop runs over frames with data-dependent control flow
  (a trace would freeze one chunk's firing pattern) and costs well under 1 % of a chunk.

Axes: batch dynamic everywhere; frames (15, or 5 for the tail chunk), tokens and cache lengths
dynamic (streams are grouped by look-back length). The TorchScript exporter (`dynamo=False`, no
onnxscript needed); int8 through onnxruntime's `quantize_dynamic` with FunASR's own settings (MatMul,
per channel, uint8 weights, the output layer kept fp32). Files go to MODEL_DIR/hark-onnx/ with a
manifest of the weights' and config's sha256 and the exporter version: a changed model re-exports.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EXPORTER_VERSION = 1
OPSET = 17
ONNX_DIRNAME = "hark-onnx"
STAGES = ("encoder", "decoder")


class OnnxExportError(RuntimeError):
    """The model cannot be exported (an architecture this runtime does not cover, an unwritable dir)."""


@dataclass(frozen=True)
class OnnxFiles:
    directory: Path
    int8: bool

    def path(self, stage: str) -> Path:
        return self.directory / f"{stage}{'.int8' if self.int8 else ''}.onnx"


# the wrappers ------------------------------------------------------------------------------------


def _encoder_step(encoder: Any, chunk_size: list[int], look_back: int) -> Any:
    import torch

    class EncoderLayersStep(torch.nn.Module):
        """(xs, k_0, v_0, ..., k_L-1, v_L-1) -> (enc, new k_0, new v_0, ...): FunASR's layers."""

        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList([*encoder.encoders0, *encoder.encoders])
            self.after_norm: Any = encoder.after_norm if encoder.normalize_before else None

        def forward(self, xs: torch.Tensor, *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
            new: list[torch.Tensor] = []
            layer: Any
            for i, layer in enumerate(self.layers):
                cache = {"k": caches[2 * i], "v": caches[2 * i + 1]}
                xs, cache = layer.forward_chunk(xs, cache, chunk_size, look_back)
                new += [cache["k"], cache["v"]]
            if self.after_norm is not None:
                xs = self.after_norm(xs)
            return (xs, *new)

    return EncoderLayersStep().eval()


def _decoder_step(decoder: Any, chunk_size: list[int], look_back: int) -> Any:
    import torch

    layers = len(decoder.decoders)

    class DecoderStep(torch.nn.Module):
        """(memory, tgt, fsmn_0.., k_0.., v_0..) -> (logits, new fsmn_0.., new k_0.., new v_0..)."""

        def __init__(self) -> None:
            super().__init__()
            self.decoder = decoder

        def forward(self, memory: torch.Tensor, tgt: torch.Tensor, *caches: torch.Tensor) -> tuple[torch.Tensor, ...]:
            fsmn, keys, values = caches[:layers], caches[layers : 2 * layers], caches[2 * layers :]
            cache: dict[str, Any] = {
                "decode_fsmn": list(fsmn),
                "opt": [{"k": k, "v": v} for k, v in zip(keys, values, strict=True)],
                "chunk_size": chunk_size,
                "decoder_chunk_look_back": look_back,
            }
            logits = self.decoder.forward_chunk(memory, tgt, cache)
            opt = cache["opt"]
            return (logits, *cache["decode_fsmn"], *(c["k"] for c in opt), *(c["v"] for c in opt))

    return DecoderStep().eval()


def check_supported(net: Any) -> None:
    """The architectures the wrappers reproduce exactly; anything else stays on the torch runtime."""
    decoder = net.decoder
    if decoder.decoders2 is not None and len(decoder.decoders2) > 0:
        raise OnnxExportError(
            "the ONNX runtime covers decoders without a decoders2 stack (att_layer_num == num_blocks)"
        )
    for layer in decoder.decoders:
        if layer.self_attn is None or tuple(layer.self_attn.pad_fn.padding)[1] != 0:
            raise OnnxExportError("the ONNX runtime needs a causal decoder FSMN (sanm_shfit = (kernel_size - 1) / 2)")
    if net.encoder.embed is None:
        raise OnnxExportError("the ONNX runtime expects the streaming encoder's positional encoding (pe_online)")


def encoder_cache_shape(net: Any) -> tuple[int, int]:
    """(heads, d_k) of the encoder's look-back caches."""
    attn = net.encoder.encoders[0].self_attn
    return int(attn.h), int(attn.d_k)


def decoder_cache_shapes(net: Any) -> tuple[int, int, int, int]:
    """(FSMN channels, FSMN kernel, cross-attention heads, d_k)."""
    layer = net.decoder.decoders[0]
    fsmn = layer.self_attn
    return int(fsmn.fsmn_block.in_channels), int(fsmn.kernel_size), int(layer.src_attn.h), int(layer.src_attn.d_k)


# export --------------------------------------------------------------------------------------------


def _export_encoder(net: Any, path: Path, chunk_size: list[int], look_back: int) -> None:
    import torch

    encoder = net.encoder
    step = _encoder_step(encoder, chunk_size, look_back)
    heads, d_k = encoder_cache_shape(net)
    layers = len(step.layers)
    frames = chunk_size[0] + chunk_size[1] + chunk_size[2]
    in_size = encoder.encoders0[0].in_size
    xs = torch.randn(2, frames, in_size)
    caches = [torch.randn(2, heads, look_back * chunk_size[1], d_k) for _ in range(2 * layers)]
    names = [f"{kind}_{i}" for i in range(layers) for kind in ("k", "v")]
    dynamic = {"xs": {0: "batch", 1: "frames"}, "enc": {0: "batch", 1: "frames"}}
    dynamic |= {f"cache_{n}": {0: "batch", 2: "look_back"} for n in names}
    dynamic |= {f"new_{n}": {0: "batch", 2: "new_look_back"} for n in names}
    _export(
        step,
        (xs, *caches),
        path,
        ["xs", *(f"cache_{n}" for n in names)],
        ["enc", *(f"new_{n}" for n in names)],
        dynamic,
    )


def _export_decoder(net: Any, path: Path, chunk_size: list[int], look_back: int) -> None:
    import torch

    decoder = net.decoder
    step = _decoder_step(decoder, chunk_size, look_back)
    layers = len(decoder.decoders)
    channels, kernel, heads, d_k = decoder_cache_shapes(net)
    size = net.encoder.output_size()
    frames = chunk_size[0] + chunk_size[1] + chunk_size[2]
    memory = torch.randn(2, frames, size)
    tgt = torch.randn(2, 3, size)
    fsmn = [torch.randn(2, channels, kernel) for _ in range(layers)]
    opt = [torch.randn(2, heads, look_back * chunk_size[1], d_k) for _ in range(2 * layers)]
    inputs = ["memory", "tgt", *(f"fsmn_{i}" for i in range(layers))]
    inputs += [f"cache_{kind}_{i}" for kind in ("k", "v") for i in range(layers)]
    outputs = ["logits", *(f"new_fsmn_{i}" for i in range(layers))]
    outputs += [f"new_{kind}_{i}" for kind in ("k", "v") for i in range(layers)]
    dynamic: dict[str, dict[int, str]] = {
        "memory": {0: "batch", 1: "frames"},
        "tgt": {0: "batch", 1: "tokens"},
        "logits": {0: "batch", 1: "tokens"},
    }
    dynamic |= {name: {0: "batch", 2: "fsmn_len"} for name in inputs if name.startswith("fsmn_")}
    dynamic |= {name: {0: "batch", 2: "new_fsmn_len"} for name in outputs if name.startswith("new_fsmn_")}
    dynamic |= {name: {0: "batch", 2: "look_back"} for name in inputs if name.startswith("cache_")}
    dynamic |= {
        name: {0: "batch", 2: "new_look_back"} for name in outputs if name.startswith("new_") and "fsmn" not in name
    }
    _export(step, (memory, tgt, *fsmn, *opt), path, inputs, outputs, dynamic)


def _export(
    module: Any,
    args: tuple[Any, ...],
    path: Path,
    inputs: list[str],
    outputs: list[str],
    dynamic: dict[str, dict[int, str]],
) -> None:
    import torch

    with torch.no_grad(), warnings_quiet():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


@contextlib.contextmanager
def warnings_quiet() -> Iterator[None]:
    """The tracer warns about every Python-level size check in FunASR's modules (by design here)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def quantize(fp32: Path, int8: Path) -> None:
    """FunASR's own int8 settings (funasr/utils/export_utils.py): MatMul weights, per channel, uint8,
    the nodes named "output" (the decoder's output layer) kept fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    nodes = [n.name for n in onnx.load(str(fp32), load_external_data=False).graph.node]
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # the quantizer logs a line per tensor on the root logger
    try:
        quantize_dynamic(
            model_input=str(fp32),
            model_output=str(int8),
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            reduce_range=False,
            weight_type=QuantType.QUInt8,
            nodes_to_exclude=[n for n in nodes if "output" in n],
        )
    finally:
        root.setLevel(level)


# the cache beside the model ------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _weights_sha256(path: Path, seen: Any) -> tuple[str, dict[str, Any]]:
    """The weights' sha256, and the stat it was taken at: a file with the size and mtime recorded
    last time is not read again (a full-size model.pt is 0.9 GB, hashed by every worker at start)."""
    st = path.stat()
    stat = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if isinstance(seen, dict) and {k: seen.get(k) for k in stat} == stat and isinstance(seen.get("sha256"), str):
        return seen["sha256"], seen
    digest = _sha256(path)
    return digest, stat | {"sha256": digest}


def fingerprint(
    model_dir: Path, chunk_size: list[int], encoder_look_back: int, decoder_look_back: int, weights_sha256: str
) -> dict[str, Any]:
    """What the exported files depend on: a change in any of it re-exports."""
    return {
        "exporter_version": EXPORTER_VERSION,
        "opset": OPSET,
        "weights_sha256": weights_sha256,
        "config_sha256": _sha256(model_dir / "config.yaml"),
        "chunk_size": list(chunk_size),
        "encoder_look_back": encoder_look_back,
        "decoder_look_back": decoder_look_back,
    }


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest: Any = {}
    with contextlib.suppress(OSError, ValueError):
        manifest = json.loads(path.read_text())
    return manifest if isinstance(manifest, dict) else {}


def export_status(model_dir: Path, chunk_size: list[int], encoder_look_back: int, decoder_look_back: int) -> str | None:
    """None when `model_dir` holds a current fp32 export, else why not (for `--asr-runtime auto`).
    Cheap: reads the manifest and config.yaml and stats model.pt; never hashes the weights (a
    model.pt whose size or mtime moved since the export counts as changed) and never exports."""
    out = model_dir / ONNX_DIRNAME
    manifest = _read_manifest(out / "manifest.json")
    weights = model_dir / "model.pt"
    if not manifest:
        return f"no ONNX export in {out}"
    if not weights.is_file() or not (model_dir / "config.yaml").is_file():
        return f"no model.pt and config.yaml in {model_dir}"
    seen, st = manifest.get("weights"), weights.stat()
    if (
        not isinstance(seen, dict)
        or (seen.get("size"), seen.get("mtime_ns")) != (st.st_size, st.st_mtime_ns)
        or not isinstance(seen.get("sha256"), str)
    ):
        return f"model.pt changed since the export in {out}"
    want = fingerprint(model_dir, chunk_size, encoder_look_back, decoder_look_back, seen["sha256"])
    if manifest.get("fingerprint") != want:
        return f"the export in {out} is stale (another config.yaml, exporter version or chunking)"
    missing = [stage for stage in STAGES if not OnnxFiles(out, int8=False).path(stage).is_file()]
    if missing:
        return f"the export in {out} lacks {', '.join(f'{stage}.onnx' for stage in missing)}"
    return None


def ensure_exported(
    auto_model: Any, chunk_size: list[int], encoder_look_back: int, decoder_look_back: int, int8: bool
) -> OnnxFiles:
    """The ONNX files for this model, exported (and quantized) now if missing or stale. Workers that
    start together take a file lock: one exports, the others then find the files."""
    model_dir = Path(auto_model.kwargs["model_path"])
    if not (model_dir / "model.pt").is_file():
        raise OnnxExportError(f"--asr-runtime onnx: no model.pt in {model_dir} to export from")
    check_supported(auto_model.model)
    out = model_dir / ONNX_DIRNAME
    try:
        out.mkdir(exist_ok=True)
        lock = (out / ".lock").open("w")
    except OSError as exc:
        raise OnnxExportError(f"--asr-runtime onnx: cannot write the exported files to {out}: {exc}") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest_path = out / "manifest.json"
        manifest = _read_manifest(manifest_path)
        sha, weights = _weights_sha256(model_dir / "model.pt", manifest.get("weights"))
        want = fingerprint(model_dir, chunk_size, encoder_look_back, decoder_look_back, sha)
        fp32 = OnnxFiles(out, int8=False)
        if manifest.get("fingerprint") != want or not all(fp32.path(s).is_file() for s in STAGES):
            log.warning("exporting %s to ONNX in %s (once per model, about a minute at full size)", model_dir, out)
            manifest = {"fingerprint": want, "weights": weights, "int8": False}
            for stage in STAGES:
                fp32.path(stage).unlink(missing_ok=True)
                OnnxFiles(out, int8=True).path(stage).unlink(missing_ok=True)
            exporters = {
                "encoder": (_export_encoder, encoder_look_back),
                "decoder": (_export_decoder, decoder_look_back),
            }
            for stage, (export, look_back) in exporters.items():
                _atomic(fp32.path(stage), lambda tmp, e=export, lb=look_back: e(auto_model.model, tmp, chunk_size, lb))
            _write_manifest(manifest_path, manifest)
        elif manifest.get("weights") != weights:  # the same weights, touched: hashed once more, not again
            manifest["weights"] = weights
            _write_manifest(manifest_path, manifest)
        files = OnnxFiles(out, int8=int8)
        if int8 and (not manifest.get("int8") or not all(files.path(s).is_file() for s in STAGES)):
            log.warning("quantizing the ONNX files in %s to int8 (once per model)", out)
            for stage in STAGES:
                _atomic(files.path(stage), lambda tmp, s=stage: quantize(fp32.path(s), tmp))
            _write_manifest(manifest_path, manifest | {"int8": True})
        return files


def _atomic(path: Path, write: Any) -> None:
    """`write(tmp)` then rename: a crash mid-export leaves no half file under the final name."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(0o644)  # mkstemp's 0600 would hide the files from workers running as another user
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    _atomic(path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2)))
