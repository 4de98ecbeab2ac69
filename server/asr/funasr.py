"""FunASR recognizers: paraformer-zh-streaming (+ 2-pass) and an offline model in a sliding window.

FunASR is imported lazily, inside the inference workers, only when one of these engines is selected.
Models load at startup (`start()`); the server answers /healthz 503 until they have. Inference runs
in a pool of workers (`inference_pool`), one AutoModel per worker since generate() is not
thread-safe, never on the event loop. Each utterance is placed on the worker with the fewest open
utterances and its chunks run there in order.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

from ..proctree import usable_cpus
from .base import ASREngine, ASRStream
from .funasr_load import ModelLoadError, probe_hub, resolve
from .inference_pool import Handler, InferencePool
from .paraformer_batch import DEFAULT_MAX_BATCH
from .paraformer_runtime import ASR_RUNTIMES, choose_runtime
from .pooled import PooledStream

log = logging.getLogger(__name__)

DEFAULT_STREAMING_MODEL = "iic/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-online"
DEFAULT_OFFLINE_MODEL = "iic/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-pytorch"
DEFAULT_PUNC_MODEL = "iic/punc_ct-transformer_zh-cn-common-vocab272727-pytorch"
DEFAULT_WINDOW_MODEL = "iic/SenseVoiceSmall"
SENSEVOICE_LANGUAGES = ("auto", "zh", "en", "yue", "ja", "ko")


class FunASREngine(ASREngine):
    sample_rate = 16000

    def __init__(
        self, name: str, factory: Callable[[], Handler], models: dict[str, str], workers: int, kind: str
    ) -> None:
        self.name = name
        self._models = models  # flag -> resolved model, for the hub probe and messages
        self._hub_models = {flag: spec for flag, spec in models.items() if not os.path.isdir(spec)}
        self._pool = InferencePool(name, factory, workers or usable_cpus(), kind)

    async def start(self) -> None:
        for flag, spec in self._hub_models.items():
            await asyncio.to_thread(probe_hub, flag, spec)
        try:
            await self._pool.start()
        except ModelLoadError:
            raise
        except Exception as exc:  # a worker process reports its load error as text
            message = str(exc)
            if f"{ModelLoadError.__name__}: " in message:  # already says which option and why
                raise ModelLoadError(message.split(f"{ModelLoadError.__name__}: ", 1)[1]) from exc
            raise ModelLoadError(f"{self.name}: the models did not load: {message}") from exc
        log.info("%s ready: %s", self.name, ", ".join(f"{k} {v}" for k, v in self._models.items()))

    def open_stream(self, session_id: str) -> ASRStream:
        return FunASRStream(self._pool, session_id, self.name)

    def overload_reason(self) -> str | None:
        return self._pool.overload_reason()

    async def aclose(self) -> None:
        await self._pool.stop()


class FunASRStream(PooledStream):
    """Session side of one stream: its utterance lives on one worker from begin to finalize."""

    def __init__(self, pool: InferencePool, session_id: str, engine: str) -> None:
        super().__init__(pool, session_id, engine)
        self._stable: str | None = None
        self._metadata: dict[str, Any] = {}

    @property
    def stable_text(self) -> str | None:
        return self._stable

    @property
    def metadata(self) -> dict[str, Any]:
        return self._metadata

    async def begin(self) -> None:
        self._stable, self._metadata = "", {}
        await self._begin()

    async def accept(self, pcm: bytes) -> str:
        hypothesis, self._stable, self._metadata = await self._call("accept", pcm)
        return str(hypothesis)

    async def finalize(self) -> str:
        text, self._metadata = await self._call("finalize")
        await self._finished()
        return str(text)


def paraformer_streaming_engine(
    model: str,
    offline_model: str,
    punc_model: str,
    two_pass: bool,
    workers: int,
    kind: str,
    ncpu: int,
    max_batch: int = DEFAULT_MAX_BATCH,
    runtime: str = "auto",
) -> FunASREngine:
    """`max_batch`: most streams in one forward pass (1: one FunASR `generate` call per stream, on
    torch). `runtime`: torch, onnx / onnx-int8 (exported beside the model at the first start), or
    auto: onnx when a current export is there, else torch (`paraformer_runtime`)."""
    from .paraformer_factory import ParaformerHostFactory

    if runtime not in ASR_RUNTIMES:
        raise ModelLoadError(f"--asr-runtime {runtime!r}: one of {', '.join(ASR_RUNTIMES)}")
    models = {"--asr-model": resolve(model or DEFAULT_STREAMING_MODEL, "--asr-model")}
    if two_pass:
        models["--asr-model-offline"] = resolve(offline_model or DEFAULT_OFFLINE_MODEL, "--asr-model-offline")
        models["--punc-model"] = resolve(punc_model or DEFAULT_PUNC_MODEL, "--punc-model")
    choice = choose_runtime(runtime, models["--asr-model"])
    log.info("funasr-paraformer-streaming runs on %s: %s", choice.runtime, choice.reason)
    settings = {
        "model": models["--asr-model"],
        "offline_model": models.get("--asr-model-offline", ""),
        "punc_model": models.get("--punc-model", ""),
        "two_pass": two_pass,
        "ncpu": ncpu,
        "max_batch": max_batch,
        "runtime": choice.runtime,
    }
    return FunASREngine("funasr-paraformer-streaming", ParaformerHostFactory(settings), models, workers, kind)


def window_engine(
    model: str, language: str, window_s: float, step_ms: int, workers: int, kind: str, ncpu: int
) -> FunASREngine:
    from .window_host import WindowHostFactory

    if language not in SENSEVOICE_LANGUAGES:
        raise ModelLoadError(f"--asr-language {language!r}: one of {', '.join(SENSEVOICE_LANGUAGES)}")
    if window_s < 1 or step_ms < 100:
        raise ModelLoadError("--asr-window-s must be >= 1 and --asr-step-ms >= 100")
    models = {"--asr-model": resolve(model or DEFAULT_WINDOW_MODEL, "--asr-model")}
    settings = {
        "model": models["--asr-model"],
        "language": language,
        "window_s": window_s,
        "step_ms": step_ms,
        "ncpu": ncpu,
    }
    return FunASREngine("funasr-window", WindowHostFactory(settings), models, workers, kind)
