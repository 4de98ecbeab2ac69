"""The speculator against the SGLang simulator, in-process: one prefill in flight, stale ones aborted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from hark.server.llm.base import LLMRequest, LLMUsage, Message, request_id
from hark.server.llm.http import LLMSettings
from hark.server.llm.prompt import ChatMLPrompt
from hark.server.llm.sglang import SGLangEngine
from hark.server.llm.speculation import Speculator
from hark.server.metrics import Metrics
from standins.sglang import SGLangSimulator, SimConfig

HISTORY = [Message("user", "hello"), Message("assistant", "Hi, how can I help?")]
SlowPrefill = tuple[SGLangSimulator, SGLangEngine]


@pytest.fixture
async def slow_prefill() -> AsyncIterator[SlowPrefill]:
    # 2 ms per uncached token: a ~100-token prefill takes ~0.2 s, long enough to overlap
    async with SGLangSimulator(SimConfig(prefill_ms_per_token=2.0, prefill_overhead_ms=50)) as sim:
        engine = SGLangEngine(LLMSettings(url=sim.url), ChatMLPrompt())
        await engine.start()
        yield sim, engine
        await engine.aclose()


def _turn_speculator(engine: SGLangEngine, min_new_words: int) -> Speculator:
    """A speculator for session "sess", its first turn begun."""
    spec = Speculator(engine, "sess", min_new_words=min_new_words, metrics=Metrics())
    spec.begin_turn()
    return spec


async def _until_idle(sim: SGLangSimulator) -> None:
    for _ in range(200):
        stats = sim.stats()
        if not stats["running"] and not stats["queued"] and stats["prefilling"] is None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("simulator still busy")


async def test_one_prefill_in_flight_newest_prefix_goes_next(slow_prefill: SlowPrefill) -> None:
    sim, engine = slow_prefill
    spec = _turn_speculator(engine, min_new_words=2)
    spec.offer(HISTORY, "go forward")
    spec.offer(HISTORY, "go forward ten meters")  # in flight: waits
    spec.offer(HISTORY, "go forward ten meters and then")  # replaces the waiting one
    assert spec.turn_prefills == 1
    await asyncio.sleep(0.05)
    stats = sim.stats()
    assert set(stats["running"]) | set(stats["queued"]) == {request_id("sess", 1, 1)}  # the double buffer
    await _until_idle(sim)
    await asyncio.sleep(0.05)
    await _until_idle(sim)
    records = sim.stats()["requests"]
    assert [r["finish_reason"] for r in records] == ["length", "length"]
    assert spec.turn_prefills == 2 and spec.turn_aborted == 0
    # the second prefill found the first one's tokens in the cache
    assert records[1]["cached_tokens"] >= records[0]["prompt_tokens"] - 1
    await spec.close()


async def test_changed_hypothesis_aborts_the_stale_speculation(slow_prefill: SlowPrefill) -> None:
    sim, engine = slow_prefill
    spec = _turn_speculator(engine, min_new_words=1)
    spec.offer(HISTORY, "go forward ten")
    await asyncio.sleep(0.02)
    final = [*HISTORY, Message("user", "go backward ten meters")]  # the recognizer changed its mind
    spec.settle(engine.final_prompt(final))
    assert spec.turn_aborted == 1
    await _until_idle(sim)
    (record,) = sim.stats()["requests"]
    assert record["rid"] == request_id("sess", 1, 1) and record["finish_reason"] == "abort"


async def test_final_request_hits_the_speculated_prefix(slow_prefill: SlowPrefill) -> None:
    _sim, engine = slow_prefill
    spec = _turn_speculator(engine, min_new_words=2)
    words = "could you book a table for two at eight tonight please".split()
    for i in range(2, len(words)):
        spec.offer(HISTORY, " ".join(words[:i]))
        await asyncio.sleep(0.25)
    messages = [*HISTORY, Message("user", " ".join(words))]
    spec.settle(engine.final_prompt(messages))
    usage = LLMUsage()
    reply = "".join([d async for d in engine.stream(LLMRequest(messages, request_id("sess", 1), "sess"), usage)])
    assert reply.startswith("You asked about could you book a table")
    assert usage.cached_tokens >= 0.9 * usage.prompt_tokens
    assert spec.turn_aborted == 0 and spec.turn_prefills >= 3
    await spec.close()


def test_request_ids_are_never_prefixes_of_each_other() -> None:
    ids = [request_id("s", t, a) for t in (1, 10, 100) for a in (0, 1, 10)]
    assert not any(a != b and b.startswith(a) for a in ids for b in ids)
