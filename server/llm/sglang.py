"""SGLang's native API (`POST /generate`): streaming replies and prefill-only speculation.

Requests carry our own ChatML prompt text (the radix cache matches text-derived tokens, so the
prefix we prefill while the user talks is exactly the start of the final prompt), a `rid` to
abort by, and a `priority`: replies outrank speculation (`--enable-priority-scheduling`), and
speculative leaves are evicted first (`--radix-eviction-policy priority`).

Tools are rendered into the prompt as Qwen's template does (qwen_template.py) and the model's
`<tool_call>` markup is parsed out of the stream (tool_parser.py): ToolCalls come out, never the
markup. tool_choice "required"/a function is the forced opening of a call at the end of the prompt
(`forced_opening`: SGLang's OpenAI server uses a grammar instead, which this native path does not).

The model's own opinion on the end of a turn (`end_of_turn`) is one more request on the prompt the
speculation already cached: one decoded token (`max_new_tokens: 1`) with the top 20 next-token
logprobs; P(`<|im_end|>`) there is P(the user's turn is over).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from typing import Any

from .base import (
    LLMEngine,
    LLMRequest,
    LLMUnavailable,
    LLMUsage,
    Message,
    PrefillResult,
    SpeculativeLLM,
    ToolCall,
    ToolChoice,
    ToolSpec,
)
from .http import HttpLLMClient, LLMSettings
from .prompt import IM_END, ChatMLPrompt
from .qwen_template import AUTO, forced_opening, offered_tools
from .tool_parser import ToolCallParser

log = logging.getLogger(__name__)

REPLY_PRIORITY = 10
SPECULATION_PRIORITY = 0
END_OF_TURN_TOP_LOGPROBS = 20


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

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncIterator[str | ToolCall]:
        body = {
            "text": self.final_prompt(request.messages, request.tools, request.tool_choice),
            "rid": request.request_id,
            "priority": REPLY_PRIORITY,
            "sampling_params": self._sampling(min(request.max_tokens, self._settings.max_tokens)),
            "stream": True,
        }
        parser = ToolCallParser()
        # a forced call's opening ends the prompt: the parser starts inside it, as the model does
        parser.feed(forced_opening(offered_tools(request.tools, request.tool_choice), request.tool_choice))
        emitted = ""
        finished = False
        events = self._http.stream_events("generate", body, request.session_id)
        try:
            async for event in events:
                meta = event.get("meta_info") or {}
                usage.prompt_tokens = int(meta.get("prompt_tokens", usage.prompt_tokens))
                usage.cached_tokens = int(meta.get("cached_tokens", usage.cached_tokens))
                usage.completion_tokens = int(meta.get("completion_tokens", usage.completion_tokens))
                text = str(event.get("text", ""))
                # streamed `text` is cumulative: parse what is new
                if text.startswith(emitted) and len(text) > len(emitted):
                    delta, emitted = text[len(emitted) :], text
                    for item in parser.feed(delta):
                        yield item
                reason = meta.get("finish_reason")
                if isinstance(reason, dict) and reason.get("type") == "abort":
                    raise LLMUnavailable(f"SGLang aborted the request: {reason.get('message', '')}")
            for item in parser.finish():
                yield item
            finished = True
        finally:
            await events.aclose()
            if not finished:
                # closing the stream aborts it too (after a grace period on SGLang); the explicit
                # abort is immediate and covers a queued request. Nobody waits for it.
                self._http.fire_and_forget("abort_request", {"rid": request.request_id})

    def partial_prompt(
        self,
        history: list[Message],
        partial_user_text: str,
        tools: tuple[ToolSpec, ...] = (),
        tool_choice: ToolChoice = AUTO,
    ) -> str:
        return self.prompt.partial_user_prompt(history, partial_user_text, tools, tool_choice)

    def final_prompt(
        self, messages: list[Message], tools: tuple[ToolSpec, ...] = (), tool_choice: ToolChoice = AUTO
    ) -> str:
        return self.prompt.full_prompt(messages, tools, tool_choice)

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

    async def end_of_turn(self, prompt: str, request_id: str, session_id: str) -> float | None:
        body = {
            "text": prompt,
            "rid": request_id,
            # on the path to the reply: it outranks speculation like the reply itself
            "priority": REPLY_PRIORITY,
            "sampling_params": {"max_new_tokens": 1, "temperature": 0.0},
            # logprob_start_len stays at its default (-1, output tokens only): a small value would
            # also ask for input logprobs and cap the prefix the radix cache may reuse
            "return_logprob": True,
            "top_logprobs_num": END_OF_TURN_TOP_LOGPROBS,
            "return_text_in_logprobs": True,
            "stream": False,
        }
        result = await self._http.post_json("generate", body, session_id)
        meta = result.get("meta_info", {}) if isinstance(result, dict) else {}
        return im_end_probability(meta.get("output_top_logprobs"))


def im_end_probability(top_logprobs: object) -> float | None:
    """P(`<|im_end|>`) at the first output position of SGLang's `meta_info.output_top_logprobs`
    (one list per position of `[logprob, token_id, token_text]`); 0 when it is not among the top
    ones, None when the answer has no such list."""
    if not isinstance(top_logprobs, list) or not top_logprobs or not isinstance(top_logprobs[0], list):
        return None
    for entry in top_logprobs[0]:
        if isinstance(entry, list | tuple) and len(entry) >= 3 and entry[2] == IM_END:
            logprob = entry[0]
            if isinstance(logprob, int | float) and not isinstance(logprob, bool) and math.isfinite(logprob):
                return min(1.0, math.exp(min(0.0, float(logprob))))
    return 0.0
