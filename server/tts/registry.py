"""The speech synthesizers `--tts` can name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import Registry
from .base import TTSEngine

if TYPE_CHECKING:
    from ..config import ServerConfig

TTS_ENGINES: Registry[TTSEngine] = Registry("speech synthesizer", "--tts")


def _espeak(config: ServerConfig) -> TTSEngine:
    # imported when chosen, so that listing the engines does not need the espeak-ng wheel
    from .espeak import EspeakEngine

    return EspeakEngine()


TTS_ENGINES.register(
    "espeak", _espeak, "espeak-ng (library and voices from the `espeakng-loader` wheel) on one dedicated thread"
)
