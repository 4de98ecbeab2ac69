"""The language model's opinion on whether the user's turn is over, where its engine can give one.

On SGLang the prompt that ends in the user's words is the speculative prefill's (`partial_prompt`),
already in the radix cache while the user talks, so asking for one decoded token with its top
logprobs costs a single decode step: P(`<|im_end|>`) is the model's P(the turn is over). The request
takes a rid from the session's `Speculator` (same scheme, prefix-free) and is aborted on the server
like a speculation when the person goes on speaking (the semantic endpointer cancels the check).
"""

from __future__ import annotations

import asyncio
import logging

from ..llm.base import LLMUnavailable, Message, SpeculativeLLM, ToolChoice, ToolSpec
from ..llm.speculation import Speculator

log = logging.getLogger(__name__)

_AUTO = ToolChoice()


class LLMTurnJudge:
    """One session's end-of-turn requests to its speculative LLM engine; owned by the `Session`."""

    def __init__(self, engine: SpeculativeLLM, speculator: Speculator, session_id: str) -> None:
        self._engine = engine
        self._speculator = speculator
        self._session_id = session_id
        self._aborts: set[asyncio.Task[None]] = set()

    async def probability(
        self,
        history: list[Message],
        user_text: str,
        tools: tuple[ToolSpec, ...] = (),
        tool_choice: ToolChoice = _AUTO,
    ) -> float | None:
        """P(end of turn) after the user's words so far; None when the engine cannot say or failed.
        `tools`/`tool_choice` as the reply will offer them: they are in the speculated prefix."""
        if not user_text.strip():
            return None
        prompt = self._engine.partial_prompt(history, user_text, tools, tool_choice)
        rid = self._speculator.next_request_id()
        try:
            return await self._engine.end_of_turn(prompt, rid, self._session_id)
        except LLMUnavailable as exc:
            log.info("session %s: end-of-turn check failed: %s", self._session_id, exc)
            return None
        except asyncio.CancelledError:
            # the person went on: the request may already be queued or decoding on the server
            task = asyncio.get_running_loop().create_task(self._engine.abort(rid))
            self._aborts.add(task)
            task.add_done_callback(self._aborts.discard)
            raise

    async def close(self) -> None:
        """Wait (briefly) for the aborts still being sent."""
        if self._aborts:
            await asyncio.wait(set(self._aborts), timeout=3.0)
