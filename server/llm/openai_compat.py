"""Any OpenAI-compatible chat server: vLLM, llama.cpp's server, Ollama, SGLang's /v1 endpoint.

No speculation here: a chat API applies its own template and appends the end of the user turn,
so a prefix computed mid-sentence would not be the start of the final prompt (see
shared/notes/sglang.md). Servers with a prefix cache still reuse the conversation so far.

Tools go as OpenAI's `tools`/`tool_choice`; the server's own parser turns the model's markup into
streamed `tool_calls` deltas, which come out of `stream` as ToolCalls.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from .base import LLMEngine, LLMRequest, LLMUsage, ToolCall, ToolChoice
from .http import HttpLLMClient, LLMSettings
from .prompt import ChatMLPrompt
from .qwen_template import openai_tool
from .tool_parser import new_call_id

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

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncIterator[str | ToolCall]:
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
        if request.tools:
            body["tools"] = [openai_tool(tool) for tool in request.tools]
            body["tool_choice"] = openai_tool_choice(request.tool_choice)
        calls = ToolCallDeltas()
        events = self._http.stream_events("v1/chat/completions", body, request.session_id)
        try:
            async for event in events:
                for choice in event.get("choices") or []:
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    if content:
                        yield str(content)
                    for finished in calls.add(delta.get("tool_calls")):
                        yield finished
                    if choice.get("finish_reason"):
                        for finished in calls.finish():
                            yield finished
                stats = event.get("usage")
                if stats:
                    usage.prompt_tokens = int(stats.get("prompt_tokens") or 0)
                    details = stats.get("prompt_tokens_details") or {}
                    usage.cached_tokens = int(details.get("cached_tokens") or 0)
                    usage.completion_tokens = int(stats.get("completion_tokens") or 0)
            for finished in calls.finish():  # a server that never said finish_reason
                yield finished
        finally:
            await events.aclose()  # closing the response is how an OpenAI-style server is told to stop


def openai_tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.mode == "function":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


@dataclass
class _PartialCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallDeltas:
    """OpenAI's streamed `delta.tool_calls` assembled into ToolCalls: entries keyed by `index`, the
    id and name in the first one, the arguments in pieces. A call is complete when a later index
    starts (calls stream one after another) or the choice finishes."""

    def __init__(self) -> None:
        self._open: dict[int, _PartialCall] = {}

    def add(self, entries: Any) -> list[ToolCall]:
        done: list[ToolCall] = []
        if not isinstance(entries, list):
            return done
        for position, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            index = entry.get("index", position)
            if not isinstance(index, int):
                continue
            if index not in self._open:
                done += self.finish()  # the calls before it are complete
                self._open[index] = _PartialCall()
            call = self._open[index]
            if isinstance(entry.get("id"), str) and entry["id"]:
                call.call_id = entry["id"]
            function = entry.get("function") or {}
            if isinstance(function.get("name"), str) and function["name"] and not call.name:
                call.name = function["name"]
            if isinstance(function.get("arguments"), str):
                call.arguments.append(function["arguments"])
        return done

    def finish(self) -> list[ToolCall]:
        """The calls still open, complete now."""
        out = [
            ToolCall(call.call_id or new_call_id(), call.name, "".join(call.arguments))
            for _, call in sorted(self._open.items())
        ]
        self._open.clear()
        return out
