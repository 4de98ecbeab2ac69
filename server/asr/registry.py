"""The speech recognizers `--asr` can name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..proctree import usable_cpus
from ..registry import Registry
from .base import ASREngine

if TYPE_CHECKING:
    from ..config import ServerConfig

ASR_ENGINES: Registry[ASREngine] = Registry("speech recognizer", "--asr")


def worker_count(config: ServerConfig) -> int:
    """The inference workers the configured engine starts: `--asr-workers`, or for 0 one per CPU
    this process may use (pocketsphinx: at most 4, past that the machine serves more sessions than
    one server's loop)."""
    if config.asr_workers > 0:
        return config.asr_workers
    cpus = usable_cpus()
    return min(4, cpus) if config.asr == "pocketsphinx" else cpus


def _pocketsphinx(config: ServerConfig) -> ASREngine:
    from .pocketsphinx import PocketsphinxEngine

    return PocketsphinxEngine(workers=worker_count(config))


def _funasr_pool(config: ServerConfig) -> tuple[int, str, int]:
    """How a FunASR engine's inference pool runs: workers, their kind (process or thread), threads each."""
    return config.asr_workers, config.asr_worker_kind, config.asr_threads


def _paraformer_streaming(config: ServerConfig) -> ASREngine:
    from .funasr import paraformer_streaming_engine

    return paraformer_streaming_engine(
        config.asr_model,
        config.asr_model_offline,
        config.punc_model,
        config.asr_2pass,
        *_funasr_pool(config),
        runtime=config.asr_runtime,
    )


def _window(config: ServerConfig) -> ASREngine:
    from .funasr import window_engine

    return window_engine(
        config.asr_model, config.asr_language, config.asr_window_s, config.asr_step_ms, *_funasr_pool(config)
    )


def _none(config: ServerConfig) -> ASREngine:
    from .none import NoASREngine

    return NoASREngine()


ASR_ENGINES.register(
    "pocketsphinx",
    _pocketsphinx,
    "CMU pocketsphinx, English (the en-us model shipped in its wheel), in worker processes",
)
ASR_ENGINES.register(
    "funasr-paraformer-streaming",
    _paraformer_streaming,
    "FunASR paraformer-zh-streaming, Mandarin, 600 ms chunks, 2-pass final with punctuation (`funasr` extra)",
)
ASR_ENGINES.register(
    "funasr-window",
    _window,
    "an offline FunASR model (SenseVoiceSmall: zh, en, yue, ja, ko) re-decoded over a sliding window (`funasr` extra)",
)
ASR_ENGINES.register(
    "none", _none, "no recognizer: VAD events and an empty final per utterance, so no reply (the ingest path)"
)
