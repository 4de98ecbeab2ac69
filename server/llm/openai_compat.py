"""Any OpenAI-compatible chat server: vLLM, llama.cpp's server, Ollama, SGLang's /v1 endpoint.

No speculation here: a chat API applies its own template and appends the end of the user turn,
so a prefix computed mid-sentence would not be the start of the final prompt (see
shared/notes/sglang.md). Servers with a prefix cache still reuse the conversation so far.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from .base import LLMEngine, LLMRequest, LLMUsage
from .http import HttpLLMClient, LLMSettings
from .prompt import ChatMLPrompt

log = logging.getLogger(__name__)


class OpenAICompatEngine(LLMEngine):
    name = "openai"

    def __init__(self, settings: LLMSettings, prompt: ChatMLPrompt) -> None:
        if not settings.model:
            raise ValueError("--llm openai needs --llm-model NAME (the model the server serves)")
        self._http = HttpLLMClient(settings)
        self._settings = settings
        self._prompt = prompt

    async def start(self) -> None:
        await self._http.start()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncIterator[str]:
        s = self._settings
        body: dict[str, Any] = {
            "model": s.model,
            "messages": self._prompt.chat_messages(request.messages),
            "max_tokens": min(request.max_tokens, s.max_tokens),
            "temperature": s.temperature,
            "top_p": s.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
            # Qwen3 hybrid models: answer at once, no reasoning block (ignored by servers without it)
            "chat_template_kwargs": {"enable_thinking": False},
        }
        events = self._http.stream_events("v1/chat/completions", body, request.session_id)
        try:
            async for event in events:
                for choice in event.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        yield str(delta)
                stats = event.get("usage")
                if stats:
                    usage.prompt_tokens = int(stats.get("prompt_tokens") or 0)
                    details = stats.get("prompt_tokens_details") or {}
                    usage.cached_tokens = int(details.get("cached_tokens") or 0)
        finally:
            await events.aclose()  # closing the response is how an OpenAI-style server is told to stop
