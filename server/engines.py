"""Builds the engines a configuration names. New engines register here."""

from __future__ import annotations

import os

from .asr.base import ASREngine
from .config import ServerConfig
from .llm.base import LLMEngine
from .tts.base import TTSEngine


def create_asr(config: ServerConfig) -> ASREngine:
    if config.asr == "pocketsphinx":
        from .asr.pocketsphinx import PocketsphinxEngine

        workers = config.asr_workers or min(4, os.cpu_count() or 1)
        return PocketsphinxEngine(workers=workers)
    raise ValueError(f"unknown ASR engine {config.asr!r} (known: pocketsphinx)")


def create_llm(config: ServerConfig) -> LLMEngine:
    if config.llm == "echo":
        from .llm.echo import EchoEngine

        return EchoEngine()
    raise ValueError(f"unknown LLM engine {config.llm!r} (known: echo)")


def create_tts(config: ServerConfig) -> TTSEngine:
    if config.tts == "espeak":
        from .tts.espeak import EspeakEngine

        return EspeakEngine()
    raise ValueError(f"unknown TTS engine {config.tts!r} (known: espeak)")
