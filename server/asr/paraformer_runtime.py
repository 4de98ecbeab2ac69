"""Which runtime paraformer-streaming's batched stages run on: `--asr-runtime auto|torch|onnx|onnx-int8`.

`auto` (the default, issue 17) picks onnx fp32 when the model directory holds a current export
(`paraformer_onnx_export.export_status`: manifest fingerprint, files present; nothing is hashed or
exported to find out) and onnxruntime is installed, else torch. fp32 rather than int8: fp32 decodes
exactly as torch does (tests/test_funasr_onnx.py), while dynamic int8 is batch-coupled (one activation
scale per tensor over the whole batch) and its accuracy on a trained model is unmeasured here
(docs/performance.md, "funasr batched"); int8 stays an explicit choice. `onnx` and `onnx-int8` export
on the first start as before. The choice is made once per process per model (admission asks too).
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .paraformer_batch import CHUNK_SIZE, DECODER_LOOK_BACK, ENCODER_LOOK_BACK
from .paraformer_onnx_export import export_status

ASR_RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")
AUTO_ONNX = "onnx"  # what auto runs when the export is there (see above: exact, not batch-coupled)


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str  # torch, onnx or onnx-int8: never auto
    reason: str


@functools.lru_cache(maxsize=16)
def choose_runtime(requested: str, model: str) -> RuntimeChoice:
    """`requested` as given; `auto` decided from `model` (a resolved directory, or a hub id)."""
    if requested != "auto":
        return RuntimeChoice(requested, f"--asr-runtime {requested}")
    path = Path(model)
    if not path.is_dir():
        return RuntimeChoice("torch", f"auto: {model} is a hub id, not a local directory with an ONNX export")
    if importlib.util.find_spec("onnxruntime") is None:
        return RuntimeChoice("torch", "auto: onnxruntime is not installed (pip install -e '.[funasr]')")
    stale = export_status(path, CHUNK_SIZE, ENCODER_LOOK_BACK, DECODER_LOOK_BACK)
    if stale is None:
        return RuntimeChoice(AUTO_ONNX, f"auto: a current ONNX export beside the model in {path}")
    return RuntimeChoice(
        "torch", f"auto: {stale} (`make funasr-onnx ASR_MODEL={path}` or one `--asr-runtime onnx` start exports it)"
    )
