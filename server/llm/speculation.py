"""The KV-cache double buffer: prefill what the user has surely said while they are still talking.

Per session, at most one prefill-only request is in flight (the second buffer; the first is the
conversation already cached). A newer stable prefix that extends it waits for it and goes next;
one that contradicts it (the conversation changed under it) aborts it. At the endpoint the final
prompt is compared with what was prefilled: a speculation that is not its prefix is aborted, so
the server does not spend the GPU on a prompt nobody will ask for.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ..metrics import Metrics
from .base import LLMUnavailable, Message, SpeculativeLLM, ToolChoice, ToolSpec, request_id
from .qwen_template import AUTO

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Inflight:
    task: asyncio.Task[None]
    request_id: str
    prompt: str


class Speculator:
    """Speculative prefill for one session, on an engine that can prefill without generating.

    The session creates one when the LLM engine is a `SpeculativeLLM` and speculation is on, and
    is its only user: `begin_turn` when a user turn starts, `offer` with each new stable prefix
    while the user speaks, `settle` with the final prompt at the endpoint (its counters then go
    into `response.done.metrics`), `close` when the session ends, which aborts what is in flight
    and waits for the aborts to be sent.
    """

    def __init__(self, engine: SpeculativeLLM, session_id: str, min_new_words: int, metrics: Metrics) -> None:
        self._engine = engine
        self._session_id = session_id
        self._min_new_words = max(1, min_new_words)
        self._metrics = metrics
        self._inflight: _Inflight | None = None
        self._aborts: set[asyncio.Task[None]] = set()
        self._next: tuple[str, int] | None = None  # (prompt, words) waiting for the in-flight one
        self._words_sent = 0
        self._turn = 0
        self._seq = 0
        self.turn_prefills = 0
        self.turn_aborted = 0

    def begin_turn(self) -> None:
        self._turn += 1
        self._seq = 0
        self._words_sent = 0
        self._next = None
        self.turn_prefills = 0
        self.turn_aborted = 0

    def offer(
        self,
        history: list[Message],
        stable_text: str,
        tools: tuple[ToolSpec, ...] = (),
        tool_choice: ToolChoice = AUTO,
    ) -> None:
        """Called with each new stable prefix of the user's turn; never blocks. `tools` and
        `tool_choice` must be the ones the reply's LLMRequest will carry: they are in the prefix."""
        words = len(stable_text.split())
        if words - self._words_sent < self._min_new_words:
            return
        prompt = self._engine.partial_prompt(history, stable_text, tools, tool_choice)
        current = self._inflight
        if current is not None and not current.task.done():
            if prompt.startswith(current.prompt):
                self._next = (prompt, words)  # the double buffer is busy: newest prefix goes next
                return
            self._abort(current, "diverged")
        self._send(prompt, words)

    def next_request_id(self) -> str:
        """A rid in this turn's scheme for another request on the speculated prompt (the turn
        detector's end-of-turn check), unique and prefix-free like the prefills'."""
        self._seq += 1
        return request_id(self._session_id, self._turn, self._seq)

    def _send(self, prompt: str, words: int) -> None:
        rid = self.next_request_id()
        self._words_sent = words
        self.turn_prefills += 1
        task = asyncio.create_task(self._run(prompt, rid), name=rid)
        self._inflight = _Inflight(task, rid, prompt)

    async def _run(self, prompt: str, rid: str) -> None:
        try:
            result = await self._engine.prefill(prompt, rid, self._session_id)
            self._metrics.speculation.labels("completed").inc()
            self._metrics.llm_tokens.labels("speculative_prompt").inc(result.prompt_tokens)
            self._metrics.llm_tokens.labels("speculative_cached").inc(result.cached_tokens)
        except LLMUnavailable as exc:
            self._metrics.speculation.labels("failed").inc()
            log.info("session %s: speculative prefill failed: %s", self._session_id, exc)
        # the buffer is free again (done or failed): the newest waiting prefix goes next
        if self._inflight is not None and self._inflight.request_id == rid:
            self._inflight = None
            if self._next is not None:
                prompt_next, words = self._next
                self._next = None
                self._send(prompt_next, words)

    def _abort(self, inflight: _Inflight, why: str) -> None:
        log.debug("session %s: aborting %s (%s)", self._session_id, inflight.request_id, why)
        inflight.task.cancel()
        self.turn_aborted += 1
        self._metrics.speculation.labels("aborted").inc()
        # the HTTP request may already be queued on the server: abort it there by rid (the engine
        # sends that in the background and keeps the task)
        self._aborts.add(asyncio.get_running_loop().create_task(self._engine.abort(inflight.request_id)))
        self._aborts = {t for t in self._aborts if not t.done()}
        if self._inflight is inflight:
            self._inflight = None

    def settle(self, final_prompt: str) -> None:
        """At the endpoint: drop queued work; abort a speculation the final prompt does not extend."""
        self._next = None
        current = self._inflight
        if current is not None and not current.task.done() and not final_prompt.startswith(current.prompt):
            self._abort(current, "the final transcript differs")

    async def close(self) -> None:
        self._next = None
        current = self._inflight
        if current is not None and not current.task.done():
            self._abort(current, "session closed")
            await asyncio.wait({current.task})
        if self._aborts:
            await asyncio.wait(self._aborts, timeout=3.0)
