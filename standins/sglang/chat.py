"""Qwen's ChatML chat template and the simulator's canned, deterministic replies."""

from __future__ import annotations

import hashlib
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


def render_chatml(messages: Sequence[dict[str, Any]], *, enable_thinking: bool = True) -> str:
    """Render messages the way Qwen3's chat template does, with the generation prompt.

    `<|im_start|>{role}\\n{content}<|im_end|>\\n` per message, then `<|im_start|>assistant\\n`; with
    `enable_thinking=False` (passed as `chat_template_kwargs`) Qwen3's template also appends an empty
    `<think>\\n\\n</think>\\n\\n`. A past assistant turn keeps only what follows its `</think>`.
    """
    out: list[str] = []
    for message in messages:
        role = message["role"]
        content = _content_text(message.get("content"))
        if role == "assistant" and "</think>" in content:
            content = content.rsplit("</think>", 1)[1].lstrip("\n")
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
