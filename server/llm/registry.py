"""The language models `--llm` can name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import Registry
from .base import LLMEngine

if TYPE_CHECKING:
    from ..config import ServerConfig
    from .http import LLMSettings
    from .prompt import ChatMLPrompt

LLM_ENGINES: Registry[LLMEngine] = Registry("language model", "--llm")


def _echo(config: ServerConfig) -> LLMEngine:
    from .echo import EchoEngine

    return EchoEngine()


def _http_parts(config: ServerConfig) -> tuple[LLMSettings, ChatMLPrompt]:
    """What both HTTP engines take from the configuration: the connection and the prompt."""
    from .http import LLMSettings
    from .prompt import DEFAULT_SYSTEM_PROMPT, ChatMLPrompt

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
    return settings, prompt


def _sglang(config: ServerConfig) -> LLMEngine:
    from .sglang import SGLangEngine

    return SGLangEngine(*_http_parts(config))


def _openai(config: ServerConfig) -> LLMEngine:
    from .openai_compat import OpenAICompatEngine

    return OpenAICompatEngine(*_http_parts(config))


LLM_ENGINES.register("echo", _echo, 'offline demo mode: replies "You said: ..." with the user\'s words')
LLM_ENGINES.register(
    "sglang", _sglang, "SGLang's native `/generate` (`--llm-url`), with speculative prefill while the user talks"
)
LLM_ENGINES.register(
    "openai", _openai, "any OpenAI-compatible `/v1/chat/completions` server (`--llm-url`, `--llm-model`)"
)
