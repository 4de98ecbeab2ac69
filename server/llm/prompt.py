"""Prompts for chat models served by their raw completion API (SGLang `/generate`): Qwen ChatML.

The speculative prefill depends on one property, tested in tests/test_prompt.py: the prompt sent
while the user is still talking (`partial_user_prompt`) is a string prefix of the final prompt
(`full_prompt`) whenever the final transcript starts with the partial one. So the prefix is the
committed conversation followed by the opening of the user turn, and transcript clean-up only
looks at a word and what came before it, never after.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .base import Message, ToolChoice, ToolSpec
from .qwen_template import AUTO, assistant_content, forced_opening, offered_tools, system_content, tool_responses

DEFAULT_SYSTEM_PROMPT = (
    "You are a voice assistant. Everything you write is spoken aloud by a speech synthesizer.\n"
    "- Answer in one to three short sentences unless the user asks for more.\n"
    "- Plain spoken text only: no markdown, lists, emoji, code or URLs.\n"
    "- Write numbers, dates, times and units the way a person says them.\n"
    "- The user's words come from speech recognition and may contain errors. Never change numbers, "
    "names or dates from the transcript; if something seems misheard or you are unsure, say so and ask.\n"
    "- Reply in the language the user speaks."
)

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
# what Qwen3's chat template emits for enable_thinking=False: an empty reasoning block
EMPTY_THINK = "<think>\n\n</think>\n\n"

_ENGLISH_FILLERS = {"uh", "um", "uhm", "umm", "erm", "er", "ah", "hmm", "mm", "mhm"}
_CJK_FILLERS = "呃嗯"  # 啊 and 哦 are also sentence particles (好啊): only dropped where they open a clause
_CJK_OPENING_FILLERS = "啊哦"
_CLAUSE_START = r"(^|(?<=[\s，。！？,.!?、]))"  # noqa: RUF001 - CJK punctuation on purpose


def clean_transcript(text: str) -> str:
    """Drop filler words the recognizer wrote down; keep everything else exactly (numbers, names)."""
    text = re.sub(f"[{_CJK_FILLERS}]+", "", text)
    text = re.sub(f"{_CLAUSE_START}[{_CJK_OPENING_FILLERS}]+[，,]?", "", text)  # noqa: RUF001
    words = [w for w in text.split() if w.lower().strip(",.?!") not in _ENGLISH_FILLERS]
    return " ".join(words)


@functools.lru_cache(maxsize=8192)
def estimate_tokens(text: str) -> int:
    """Roughly what a BPE tokenizer makes of `text`: a token per CJK character, ~1.3 per word."""
    cjk = len(re.findall(r"[\u3400-\u9fff]", text))
    words = len(re.findall(r"[A-Za-z0-9']+", text))
    other = len(re.findall(r"[^\sA-Za-z0-9'\u3400-\u9fff]", text))
    return cjk + (words * 13 + 9) // 10 + other


@dataclass(frozen=True, slots=True)
class ChatMLPrompt:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    empty_think: bool = True
    history_token_budget: int = 6000

    def _turn(self, role: str, content: str) -> str:
        return f"{IM_START}{role}\n{content}{IM_END}\n"

    def _system(self, messages: Sequence[Message]) -> tuple[str, list[Message]]:
        system = [m.content for m in messages if m.role == "system"]
        return ("\n\n".join(system) if system else self.system_prompt), [m for m in messages if m.role != "system"]

    def trim(self, history: Sequence[Message]) -> list[Message]:
        """Keep the newest messages that fit the token budget, starting at a user turn (the newest
        message always stays), so a tool call is never kept without the turn that asked for it.
        One pass from the end: this runs on the event loop at every prefill."""
        total = 0
        start = len(history)
        for i in range(len(history) - 1, -1, -1):
            total += _message_tokens(history[i])
            if total > self.history_token_budget and i < len(history) - 1:
                break
            start = i
        while start < len(history) - 1 and history[start].role != "user":
            start += 1
        return list(history[start:])

    def _turns(self, history: Sequence[Message]) -> str:
        """The turns as Qwen's template renders them: tool calls inside the assistant turn, each run
        of consecutive tool results as one user turn of `<tool_response>`s."""
        out: list[str] = []
        results: list[str] = []
        for i, message in enumerate(history):
            if message.role == "tool":
                results.append(message.content)
                if i + 1 == len(history) or history[i + 1].role != "tool":
                    out.append(f"{IM_START}user{tool_responses(results)}{IM_END}\n")
                    results = []
            elif message.role == "assistant":
                out.append(self._turn("assistant", assistant_content(message.content, message.tool_calls)))
            else:
                out.append(self._turn(message.role, message.content))
        return "".join(out)

    def committed(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> str:
        """System prompt (with the tools block) and the finished turns: the part of every later
        prompt that never changes while the tools stay the same."""
        system, history = self._system(messages)
        return self._turn("system", system_content(system, tools)) + self._turns(self.trim(history))

    def partial_user_prompt(
        self,
        history: Sequence[Message],
        partial_text: str,
        tools: Sequence[ToolSpec] = (),
        tool_choice: ToolChoice = AUTO,
    ) -> str:
        """What to prefill while the user talks: conversation + the user turn so far (no end token)."""
        offered = offered_tools(tools, tool_choice)
        return self.committed(history, offered) + f"{IM_START}user\n{clean_transcript(partial_text)}"

    def full_prompt(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (), tool_choice: ToolChoice = AUTO
    ) -> str:
        """The whole request: the conversation, then the assistant's opening. The last message is
        the user's finished turn, or (the round after a tool call) the tool results."""
        *history, last = messages
        offered = offered_tools(tools, tool_choice)
        if last.role == "user":
            prompt = self.partial_user_prompt(history, last.content, offered) + f"{IM_END}\n"
        else:
            prompt = self.committed(messages, offered)
        opening = f"{IM_START}assistant\n" + (EMPTY_THINK if self.empty_think else "")
        return prompt + opening + forced_opening(offered, tool_choice)

    def chat_messages(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        """The same conversation for OpenAI-style chat APIs (the server applies its own template):
        assistant tool calls and tool results in OpenAI's shapes."""
        system, history = self._system(messages)
        *earlier, last = history
        if last.role == "user":
            last = Message(last.role, clean_transcript(last.content))
        turns = [*self.trim(earlier), last]
        return [{"role": "system", "content": system}] + [_chat_message(m) for m in turns]


def _message_tokens(message: Message) -> int:
    calls = sum(estimate_tokens(c.name) + estimate_tokens(c.arguments) + 8 for c in message.tool_calls)
    return estimate_tokens(message.content) + 4 + calls  # + role and turn markers


def _chat_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    if message.role == "assistant" and message.tool_calls:
        calls = [
            {"id": c.call_id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
        return {"role": "assistant", "content": message.content or None, "tool_calls": calls}
    return {"role": message.role, "content": message.content}
