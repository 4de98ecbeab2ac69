"""The offline demo engine: replies "You said: ..." word by word. No model, no network."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from .base import LLMEngine, LLMRequest, LLMUsage

log = logging.getLogger(__name__)


class EchoEngine(LLMEngine):
    name = "echo"

    async def start(self) -> None:
        log.warning("LLM engine 'echo': OFFLINE DEMO MODE, replies repeat the user's words (use --llm for a model)")

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncIterator[str]:
        user_turns = [m.content for m in request.messages if m.role == "user"]
        text = user_turns[-1].strip() if user_turns else ""
        usage.prompt_tokens = sum(len(m.content.split()) + 4 for m in request.messages)
        words = f"You said: {text}.".split(" ") if text else ["I", "heard", "nothing."]
        for i, word in enumerate(words[: request.max_tokens]):
            yield word if i == 0 else " " + word
            await asyncio.sleep(0)  # a real engine yields to the loop between tokens too
