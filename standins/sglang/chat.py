"""Qwen's ChatML chat template and the simulator's canned, deterministic replies."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any, Final


def _content_text(content: Any) -> str:
    """OpenAI message content (a string, a list of text parts, or null) as plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise ValueError("only text content parts are supported by the simulator")
        return "".join(parts)
    raise ValueError("message content must be a string, a list of text parts, or null")


_TOOLS_INTRO: Final = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_OUTRO: Final = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)


def _tools_block(tools: Sequence[Any]) -> str:
    return _TOOLS_INTRO + "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools) + _TOOLS_OUTRO


def _tool_calls_text(content: str, calls: Any) -> str:
    """An assistant message's tool calls as Qwen3's template writes them after its content."""
    if not isinstance(calls, list):
        raise ValueError("tool_calls must be a list")
    out = ""
    for i, call in enumerate(calls):
        function = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValueError("each tool call needs a function with a string name")
        arguments = function.get("arguments", {})
        text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        out += ("\n" if (i == 0 and content) or i > 0 else "") + (
            f'<tool_call>\n{{"name": "{function["name"]}", "arguments": {text}}}\n</tool_call>'
        )
    return out


def render_chatml(
    messages: Sequence[dict[str, Any]], *, enable_thinking: bool = True, tools: Sequence[Any] | None = None
) -> str:
    """Render messages the way Qwen3's chat template does, with the generation prompt.

    `<|im_start|>{role}\\n{content}<|im_end|>\\n` per message, then `<|im_start|>assistant\\n`; with
    `enable_thinking=False` (passed as `chat_template_kwargs`) Qwen3's template also appends an empty
    `<think>\\n\\n</think>\\n\\n`. A past assistant turn keeps only what follows its `</think>`.
    With `tools`, the system turn gets Qwen's `# Tools` block; assistant `tool_calls` follow the
    content as `<tool_call>`s, and consecutive `tool` messages are one user turn of
    `<tool_response>`s.
    """
    out: list[str] = []
    rest = list(messages)
    if tools:
        system = ""
        if rest and rest[0]["role"] == "system":
            system = _content_text(rest.pop(0).get("content")) + "\n\n"
        out.append(f"<|im_start|>system\n{system}{_tools_block(tools)}<|im_end|>\n")
    for i, message in enumerate(rest):
        role = message["role"]
        content = _content_text(message.get("content"))
        if role == "tool":
            if i == 0 or rest[i - 1]["role"] != "tool":
                out.append("<|im_start|>user")
            out.append(f"\n<tool_response>\n{content}\n</tool_response>")
            if i + 1 == len(rest) or rest[i + 1]["role"] != "tool":
                out.append("<|im_end|>\n")
            continue
        if role == "assistant" and "</think>" in content:
            content = content.rsplit("</think>", 1)[1].lstrip("\n")
        if role == "assistant" and message.get("tool_calls"):
            content += _tool_calls_text(content, message["tool_calls"])
        out.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    if not enable_thinking:
        out.append("<think>\n\n</think>\n\n")
    return "".join(out)


_USER_TURN_RE: Final = re.compile(r"<\|im_start\|>user\n(.*?)(?:<\|im_end\|>|\Z)", re.DOTALL)
_SPECIAL_RE: Final = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>|</?think>")
_REPLY_SENTENCES: Final = (
    "The short version is that it depends on what matters most to you.",
    "A good first step is to start small and check the result.",
    "Most people find that a little planning saves a lot of time.",
    "If you want more detail, just ask and I will go deeper.",
    "The key idea is simple once you look at it from the right angle.",
    "It helps to compare a few options before you decide.",
    "That is a common question, and there is a clear answer.",
    "I would keep it simple and adjust as you learn more.",
)


def last_user_turn(prompt: str) -> str:
    """The last ChatML user turn of a prompt, or the prompt without special tokens if it has none."""
    turns = _USER_TURN_RE.findall(prompt)
    if turns:
        return str(turns[-1]).strip()
    return _SPECIAL_RE.sub(" ", prompt).strip()


def canned_reply(prompt: str) -> str:
    """A deterministic reply of a few sentences derived from the last user turn of `prompt`."""
    user = last_user_turn(prompt)
    words = user.split()
    topic = " ".join(words[:6]).rstrip(".,;:!?") or "nothing in particular"
    seed = int.from_bytes(hashlib.blake2b(user.encode("utf-8"), digest_size=8).digest(), "big")
    first = seed % len(_REPLY_SENTENCES)
    second = (first + 1 + (seed // len(_REPLY_SENTENCES)) % (len(_REPLY_SENTENCES) - 1)) % len(_REPLY_SENTENCES)
    return (
        f"You asked about {topic}. Here is a short spoken answer. {_REPLY_SENTENCES[first]} {_REPLY_SENTENCES[second]}"
    )
