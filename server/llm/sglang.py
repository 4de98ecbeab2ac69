"""SGLang's native API (`POST /generate`): streaming replies and prefill-only speculation.

Requests carry our own ChatML prompt text (the radix cache matches text-derived tokens, so the
prefix we prefill while the user talks is exactly the start of the final prompt), a `rid` to
abort by, and a `priority`: replies outrank speculation (`--enable-priority-scheduling`), and
speculative leaves are evicted first (`--radix-eviction-policy priority`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from .base import LLMEngine, LLMRequest, LLMUnavailable, LLMUsage, Message, PrefillResult, SpeculativeLLM
from .http import HttpLLMClient, LLMSettings
from .prompt import ChatMLPrompt

log = logging.getLogger(__name__)

REPLY_PRIORITY = 10
SPECULATION_PRIORITY = 0


class SGLangEngine(LLMEngine, SpeculativeLLM):
    name = "sglang"

    def __init__(self, settings: LLMSettings, prompt: ChatMLPrompt) -> None:
        self._http = HttpLLMClient(settings)
        self._settings = settings
        self.prompt = prompt

    async def start(self) -> None:
        await self._http.start()
        try:
            async with self._http.session.get("get_model_info") as resp:
                info = await resp.json(content_type=None)
            log.info("SGLang at %s serves %s", self._settings.url, info.get("model_path"))
        except Exception as exc:  # the server may come up later: requests fail (and recover) on their own
            log.warning("SGLang at %s not answering yet (%s); replies fail until it does", self._settings.url, exc)

    async def aclose(self) -> None:
        await self._http.aclose()

    def _sampling(self, max_new_tokens: int) -> dict[str, Any]:
        s = self._settings
        return {
            "max_new_tokens": max_new_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "stop": ["<|im_end|>", "<|endoftext|>"],
        }

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncIterator[str]:
        body = {
            "text": self.final_prompt(request.messages),
            "rid": request.request_id,
            "priority": REPLY_PRIORITY,
            "sampling_params": self._sampling(min(request.max_tokens, self._settings.max_tokens)),
            "stream": True,
        }
        emitted = ""
        finished = False
        events = self._http.stream_events("generate", body, request.session_id)
        try:
            async for event in events:
                meta = event.get("meta_info") or {}
                usage.prompt_tokens = int(meta.get("prompt_tokens", usage.prompt_tokens))
                usage.cached_tokens = int(meta.get("cached_tokens", usage.cached_tokens))
                text = str(event.get("text", ""))
                # streamed `text` is cumulative: emit what is new
                if text.startswith(emitted) and len(text) > len(emitted):
                    delta, emitted = text[len(emitted) :], text
                    yield delta
                reason = meta.get("finish_reason")
                if isinstance(reason, dict) and reason.get("type") == "abort":
                    raise LLMUnavailable(f"SGLang aborted the request: {reason.get('message', '')}")
            finished = True
        finally:
            await events.aclose()
            if not finished:
                # closing the stream aborts it too (after a grace period on SGLang); the explicit
                # abort is immediate and covers a queued request. Nobody waits for it.
                self._http.fire_and_forget("abort_request", {"rid": request.request_id})

    def partial_prompt(self, history: list[Message], partial_user_text: str) -> str:
        return self.prompt.partial_user_prompt(history, partial_user_text)

    def final_prompt(self, messages: list[Message]) -> str:
        return self.prompt.full_prompt(messages)

    async def prefill(self, prompt: str, request_id: str, session_id: str) -> PrefillResult:
        body = {
            "text": prompt,
            "rid": request_id,
            "priority": SPECULATION_PRIORITY,
            "sampling_params": {"max_new_tokens": 0},
            "stream": False,
        }
        result = await self._http.post_json("generate", body, session_id)
        meta = result.get("meta_info", {}) if isinstance(result, dict) else {}
        return PrefillResult(int(meta.get("prompt_tokens", 0)), int(meta.get("cached_tokens", 0)))

    async def abort(self, request_id: str) -> None:
        self._http.fire_and_forget("abort_request", {"rid": request_id})
