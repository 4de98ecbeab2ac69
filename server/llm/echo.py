"""The offline demo engine: replies "You said: ..." word by word. No model, no network.

With tools offered it behaves as a small, deterministic tool-calling model, so the tool loop can be
tested end to end without a model server (the SGLang simulator covers Qwen's tool-call format):

- Which tools it calls, in the first round of a reply: every offered tool whose name is a word of
  the user's message (case-insensitive, in the order they appear); `tool_choice` of one function
  calls that one; `required` with no tool named calls the first tool; `none` calls nothing.
- The arguments: the user's text from its first `{` to its last `}` exactly as written (so a test
  can make it write invalid JSON), else `{"text": <the user's message>}`.
- The word "please" in the message makes it say "Sure." before calling.
- After tool results: a call whose result reports `invalid_arguments` is made once more, with `{}`;
  otherwise it answers with the last round's results: "<name> returned <output>." for each.
- The word "forever" makes it repeat its first calls in every round, even when told `tool_choice`
  "none": a model that does not stop, for the round limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence

from .base import LLMEngine, LLMRequest, LLMUsage, Message, ToolCall, ToolSpec

log = logging.getLogger(__name__)

_WORD = re.compile(r"[A-Za-z0-9_-]+")
_INVALID_ARGUMENTS = "Error (invalid_arguments)"  # tool_round.tool_error's text for that case


class EchoEngine(LLMEngine):
    name = "echo"

    async def start(self) -> None:
        log.warning("LLM engine 'echo': OFFLINE DEMO MODE, replies repeat the user's words (use --llm for a model)")

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncIterator[str | ToolCall]:
        messages = request.messages
        usage.prompt_tokens = sum(len(m.content.split()) + 4 for m in messages)
        last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
        text = messages[last_user].content.strip() if last_user >= 0 else ""
        since_user = messages[last_user + 1 :]
        words = [w.lower() for w in _WORD.findall(text)]
        if request.tools:
            calls = _tool_calls(request, text, words, since_user)
            if calls:
                if "please" in words and not since_user:
                    usage.completion_tokens += 1
                    yield "Sure."
                    await asyncio.sleep(0)
                for call in calls:
                    usage.completion_tokens += 1 + len(call.arguments.split())  # a word a token, as below
                    yield call
                    await asyncio.sleep(0)
                return
        last_calls = max((i for i, m in enumerate(since_user) if m.tool_calls), default=-1)
        results = [m for m in since_user[last_calls + 1 :] if m.role == "tool"]
        if results:
            reply = " ".join(f"{_name_of(m.tool_call_id, since_user)} returned {m.content}." for m in results).split(
                " "
            )
        else:
            reply = f"You said: {text}.".split(" ") if text else ["I", "heard", "nothing."]
        for i, word in enumerate(reply[: request.max_tokens]):
            usage.completion_tokens += 1  # one word, one token
            yield word if i == 0 else " " + word
            await asyncio.sleep(0)  # a real engine yields to the loop between tokens too


def _tool_calls(request: LLMRequest, text: str, words: list[str], since_user: Sequence[Message]) -> list[ToolCall]:
    rounds = [m for m in since_user if m.role == "assistant" and m.tool_calls]
    prefix = f"call_{request.request_id}_{len(rounds)}"
    if rounds and "forever" in words:
        return [ToolCall(f"{prefix}_{i}", c.name, c.arguments) for i, c in enumerate(rounds[0].tool_calls)]
    choice = request.tool_choice
    if choice.mode == "none":
        return []
    if rounds:  # after results: only the calls whose arguments were refused go again, with {}
        refused = {m.tool_call_id for m in since_user if m.role == "tool" and m.content.startswith(_INVALID_ARGUMENTS)}
        retry = [call for call in rounds[-1].tool_calls if call.call_id in refused]
        return [ToolCall(f"{prefix}_{i}", call.name, "{}") for i, call in enumerate(retry)]
    names = _named(request.tools, words)
    if choice.mode == "function":
        names = [choice.name]
    elif choice.mode == "required" and not names:
        names = [request.tools[0].name]
    start, end = text.find("{"), text.rfind("}")
    arguments = text[start : end + 1] if 0 <= start < end else json.dumps({"text": text})
    return [ToolCall(f"{prefix}_{i}", name, arguments) for i, name in enumerate(names)]


def _named(tools: Sequence[ToolSpec], words: list[str]) -> list[str]:
    by_word = {tool.name.lower(): tool.name for tool in tools}
    named: list[str] = []
    for word in words:
        name = by_word.get(word)
        if name is not None and name not in named:
            named.append(name)
    return named


def _name_of(call_id: str, messages: Sequence[Message]) -> str:
    for message in messages:
        for call in message.tool_calls:
            if call.call_id == call_id:
                return call.name
    return "a tool"
