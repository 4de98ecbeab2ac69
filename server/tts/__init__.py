"""Text-to-speech: engines behind `TTSEngine`, and the chunker that feeds them LLM text."""

from __future__ import annotations

from collections.abc import Callable

from hark.server.tts.base import Pcm16, TTSEngine
from hark.server.tts.chunker import SentenceChunker

__all__ = ["Pcm16", "SentenceChunker", "TTSEngine", "create_tts_engine"]


def _espeak() -> TTSEngine:
    # Imported lazily so that merely importing the package does not need the espeak-ng wheel.
    from hark.server.tts.espeak import EspeakEngine

    return EspeakEngine()


_ENGINES: dict[str, Callable[[], TTSEngine]] = {"espeak": _espeak}


def create_tts_engine(name: str) -> TTSEngine:
    """A new, not yet started engine; call `await engine.start()` before use."""
    try:
        factory = _ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown TTS engine {name!r}; known: {', '.join(sorted(_ENGINES))}") from None
    return factory()
