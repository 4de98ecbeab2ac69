"""Builds the engines a configuration names. New engines register here."""

from __future__ import annotations

import os

from .asr.base import ASREngine
from .config import ServerConfig
from .llm.base import LLMEngine
from .tts.base import TTSEngine


def create_asr(config: ServerConfig) -> ASREngine:
    if config.asr == "none":
        from .asr.none import NoASREngine

        return NoASREngine()
    if config.asr == "pocketsphinx":
        from .asr.pocketsphinx import PocketsphinxEngine

        workers = config.asr_workers or min(4, os.cpu_count() or 1)
        return PocketsphinxEngine(workers=workers)
    if config.asr == "funasr-paraformer-streaming":
        from .asr.funasr import paraformer_streaming_engine

        return paraformer_streaming_engine(
            config.asr_model,
            config.asr_model_offline,
            config.punc_model,
            config.asr_2pass,
            config.asr_workers,
            config.asr_worker_kind,
            config.asr_threads,
        )
    if config.asr == "funasr-window":
        from .asr.funasr import window_engine

        return window_engine(
            config.asr_model,
            config.asr_language,
            config.asr_window_s,
            config.asr_step_ms,
            config.asr_workers,
            config.asr_worker_kind,
            config.asr_threads,
        )
    raise ValueError(
        f"unknown ASR engine {config.asr!r} (known: pocketsphinx, funasr-paraformer-streaming, funasr-window)"
    )


def create_llm(config: ServerConfig) -> LLMEngine:
    if config.llm == "echo":
        from .llm.echo import EchoEngine

        return EchoEngine()
    if config.llm in ("sglang", "openai"):
        from .llm.http import LLMSettings
        from .llm.openai_compat import OpenAICompatEngine
        from .llm.prompt import DEFAULT_SYSTEM_PROMPT, ChatMLPrompt
        from .llm.sglang import SGLangEngine

        if not config.llm_url:
            raise ValueError(f"--llm {config.llm} needs --llm-url (e.g. http://127.0.0.1:30000)")
        settings = LLMSettings(
            url=config.llm_url,
            model=config.llm_model,
            api_key=config.llm_api_key,
            max_tokens=config.llm_max_tokens,
            temperature=config.llm_temperature,
            top_p=config.llm_top_p,
            connect_timeout_s=config.llm_connect_timeout_s,
            first_byte_timeout_s=config.llm_first_byte_timeout_s,
            idle_timeout_s=config.llm_idle_timeout_s,
            breaker_failures=config.llm_breaker_failures,
            breaker_reset_s=config.llm_breaker_reset_s,
        )
        prompt = ChatMLPrompt(
            system_prompt=config.llm_system_prompt or DEFAULT_SYSTEM_PROMPT,
            empty_think=config.llm_empty_think,
            history_token_budget=config.llm_history_tokens,
        )
        if config.llm == "sglang":
            return SGLangEngine(settings, prompt)
        return OpenAICompatEngine(settings, prompt)
    raise ValueError(f"unknown LLM engine {config.llm!r} (known: echo, sglang, openai)")


def create_tts(config: ServerConfig) -> TTSEngine:
    from .tts import create_tts_engine  # the TTS package keeps its own registry

    return create_tts_engine(config.tts)
