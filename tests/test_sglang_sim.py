"""The SGLang simulator (standins/sglang/): SGLang's HTTP API, radix cache, scheduler, faults.

These run against the simulator, not SGLang (which needs a GPU), with small latencies so they are
fast; every timing check is relative (an order of events, or a lower bound set by a sleep).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from standins.sglang import (
    IM_END_ID,
    SIMULATOR_NAME,
    SGLangSimulator,
    SimConfig,
    StandInTokenizer,
    canned_reply,
    render_chatml,
)
from standins.sglang.cli import parse_ready_line

REPO = Path(__file__).resolve().parents[1]

FAST = {
    "prefill_overhead_ms": 1.0,
    "prefill_ms_per_token": 0.01,
    "decode_ms_per_token": 2.0,
    "disconnect_abort_delay_s": 0.05,
}


def fast_config(**overrides: Any) -> SimConfig:
    return SimConfig(port=0, **{**FAST, **overrides})


@pytest.fixture
async def sim() -> AsyncIterator[SGLangSimulator]:
    async with SGLangSimulator(fast_config()) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


async def read_sse(resp: aiohttp.ClientResponse) -> list[Any]:
    """Every `data:` event of a stream: parsed JSON, or the string "[DONE]"."""
    events: list[Any] = []
    async for raw in resp.content:
        line = raw.decode().strip()
        if not line:
            continue
        assert line.startswith("data: "), line
        data = line[len("data: ") :]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


async def stats(http: aiohttp.ClientSession, sim: SGLangSimulator) -> dict[str, Any]:
    async with http.get(f"{sim.url}/sim/stats") as resp:
        assert resp.status == 200
        result: dict[str, Any] = await resp.json()
        return result


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def record(st: dict[str, Any], rid: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [r for r in st["requests"] if r["rid"] == rid]
    assert len(found) == 1, (rid, st["requests"])
    return found[0]


async def generate(http: aiohttp.ClientSession, sim: SGLangSimulator, **body: Any) -> dict[str, Any]:
    async with http.post(f"{sim.url}/generate", json=body) as resp:
        assert resp.status == 200, await resp.text()
        result: dict[str, Any] = await resp.json()
        return result


def words(n: int, seed: str) -> str:
    """n one-token words, starting with `seed` so that prompts do not share a first token."""

    def letters(i: int) -> str:
        out = ""
        while True:
            i, r = divmod(i, 26)
            out += chr(ord("a") + r)
            if i == 0:
                return out

    return " ".join([seed] + [f"{seed}{letters(i)}" for i in range(n - 1)])


# --- tokenizer, template, replies ---------------------------------------------------------------


def test_tokenizer_is_lossless_and_keeps_special_tokens_whole() -> None:
    tok = StandInTokenizer()
    text = "Hello, world!  It's 2024.\n<|im_start|>user\nHi there<|im_end|>\n<think>\n\n</think>\n\n"
    pieces = tok.pieces(text)
    assert "".join(pieces) == text
    assert "<|im_start|>" in pieces and "<|im_end|>" in pieces and "<think>" in pieces
    assert " world" in pieces  # a word keeps its leading space, as in BPE pre-tokenization
    ids = tok.encode(text)
    assert ids == StandInTokenizer().encode(text)  # deterministic across instances
    assert tok.decode(ids) == text
    # A prefix cut at a word boundary tokenizes to a prefix of the whole.
    assert tok.encode("the weather will be")[:4] == tok.encode("the weather will be sunny")[:4]


def test_chatml_rendering_and_canned_reply() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "How far is the moon?"}]
    assert render_chatml(messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHow far is the moon?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert render_chatml(messages, enable_thinking=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    reply = canned_reply(render_chatml(messages))
    assert reply.startswith("You asked about How far is the moon. Here is a short spoken answer. ")
    assert reply == canned_reply(render_chatml(messages))


# --- native /generate -----------------------------------------------------------------------------


async def test_streaming_text_is_cumulative_and_ends_with_done(
    sim: SGLangSimulator, http: aiohttp.ClientSession
) -> None:
    prompt = "<|im_start|>user\nWhat should I cook tonight?<|im_end|>\n<|im_start|>assistant\n"
    async with http.post(f"{sim.url}/generate", json={"text": prompt, "stream": True, "rid": "s1"}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert "simulator" in resp.headers["Server"]
        events = await read_sse(resp)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) > 5
    for previous, current in itertools.pairwise(chunks):
        assert current["text"].startswith(previous["text"])
        assert current["output_ids"][: len(previous["output_ids"])] == previous["output_ids"]
        assert previous["meta_info"]["finish_reason"] is None
    last = chunks[-1]
    assert last["meta_info"]["finish_reason"] == {"type": "stop", "matched": IM_END_ID}
    assert last["meta_info"]["id"] == "s1"
    assert last["meta_info"]["completion_tokens"] == len(last["output_ids"])
    assert last["text"] == canned_reply(prompt)
    whole = await generate(http, sim, text=prompt)
    assert whole["text"] == last["text"]
    assert whole["meta_info"]["finish_reason"]["type"] == "stop"


async def test_max_new_tokens_and_stop_strings(sim: SGLangSimulator, http: aiohttp.ClientSession) -> None:
    short = await generate(http, sim, text="Tell me a joke", sampling_params={"max_new_tokens": 3})
    assert short["meta_info"]["finish_reason"] == {"type": "length", "length": 3}
    assert short["meta_info"]["completion_tokens"] == 3 and short["text"] == "You asked about"
    stopped = await generate(http, sim, text="Tell me a joke", sampling_params={"stop": ["short spoken"]})
    assert stopped["meta_info"]["finish_reason"] == {"type": "stop", "matched": "short spoken"}
    assert stopped["text"] == "You asked about Tell me a joke. Here is a "
    async with http.post(
        f"{sim.url}/generate", json={"text": "Tell me a joke", "stream": True, "sampling_params": {"stop": "spoken"}}
    ) as resp:
        events = await read_sse(resp)
    texts = [e["text"] for e in events[:-1]]
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))  # never shrinks
    assert texts[-1] == "You asked about Tell me a joke. Here is a short "


async def test_prefill_only_request_makes_the_full_prompt_mostly_cached(
    sim: SGLangSimulator, http: aiohttp.ClientSession
) -> None:
    committed = (
        f"<|im_start|>system\nYou are a helpful voice assistant. {words(250, 'ctx')}<|im_end|>\n"
        "<|im_start|>user\nWhat time is it?<|im_end|>\n<|im_start|>assistant\nIt is noon.<|im_end|>\n"
        "<|im_start|>user\n"
    )
    partial = "I would like to know how the"  # stable_text, cut at a word boundary
    spec = await generate(
        http, sim, text=committed + partial, rid="spec-1", priority=-10, sampling_params={"max_new_tokens": 0}
    )
    assert spec["text"] == "" and spec["output_ids"] == []
    assert spec["meta_info"]["finish_reason"] == {"type": "length", "length": 0}
    final = committed + partial + " weather will be tomorrow<|im_end|>\n<|im_start|>assistant\n"
    full = await generate(http, sim, text=final, rid="final-1", priority=10)
    meta = full["meta_info"]
    assert meta["cached_tokens"] >= 0.9 * meta["prompt_tokens"], meta
    assert meta["cached_tokens"] >= spec["meta_info"]["prompt_tokens"]
    st = await stats(http, sim)
    assert record(st, "spec-1")["max_new_tokens"] == 0
    assert record(st, "final-1")["cached_tokens"] == meta["cached_tokens"]


async def test_cached_tokens_never_exceed_prompt_minus_one(sim: SGLangSimulator, http: aiohttp.ClientSession) -> None:
    prompt = words(40, "repeat")
    first = await generate(http, sim, text=prompt, sampling_params={"max_new_tokens": 0})
    assert first["meta_info"]["cached_tokens"] == 0
    again = await generate(http, sim, text=prompt, sampling_params={"max_new_tokens": 2})
    n = again["meta_info"]["prompt_tokens"]
    assert again["meta_info"]["cached_tokens"] == n - 1
    ids = StandInTokenizer().encode(prompt)
    by_ids = await generate(http, sim, input_ids=ids, sampling_params={"max_new_tokens": 1})
    assert by_ids["meta_info"]["prompt_tokens"] == len(ids) == n
    assert by_ids["meta_info"]["cached_tokens"] == n - 1


async def test_cache_namespaces_and_logprob_start_len_limit_reuse(
    sim: SGLangSimulator, http: aiohttp.ClientSession
) -> None:
    prompt = words(50, "salted")
    await generate(http, sim, text=prompt, sampling_params={"max_new_tokens": 0})
    salted = await generate(http, sim, text=prompt, extra_key="tenant-b", sampling_params={"max_new_tokens": 0})
    assert salted["meta_info"]["cached_tokens"] == 0  # another namespace: no reuse
    salted_again = await generate(http, sim, text=prompt, extra_key="tenant-b", sampling_params={"max_new_tokens": 0})
    assert salted_again["meta_info"]["cached_tokens"] == 49
    capped = await generate(
        http, sim, text=prompt, return_logprob=True, logprob_start_len=10, sampling_params={"max_new_tokens": 1}
    )
    assert capped["meta_info"]["cached_tokens"] == 10


async def test_higher_priority_prefills_first_under_contention(http: aiohttp.ClientSession) -> None:
    # A long prefill holds the simulated GPU while a low- and then a high-priority request queue up.
    async with SGLangSimulator(fast_config(prefill_ms_per_token=0.05)) as sim:
        blocker = asyncio.create_task(
            generate(http, sim, text=words(8000, "block"), rid="blocker", sampling_params={"max_new_tokens": 1})
        )

        async def prefilling_blocker() -> bool:
            return bool((await stats(http, sim))["prefilling"] == "blocker")

        await wait_until(prefilling_blocker)
        low = asyncio.create_task(generate(http, sim, text="low priority question", rid="low", priority=0))

        async def low_queued() -> bool:
            return "low" in (await stats(http, sim))["queued"]

        await wait_until(low_queued)
        high = asyncio.create_task(generate(http, sim, text="high priority question", rid="high", priority=10))

        async def high_queued() -> bool:
            st = await stats(http, sim)
            return "high" in st["queued"] or record_exists(st, "high")

        await wait_until(high_queued)
        await asyncio.gather(blocker, low, high)
        st = await stats(http, sim)
        order = {rid: record(st, rid)["prefill_order"] for rid in ("blocker", "low", "high")}
        assert order["blocker"] < order["high"] < order["low"], order
        assert record(st, "high")["queue_ms"] < record(st, "low")["queue_ms"]


def record_exists(st: dict[str, Any], rid: str) -> bool:
    return any(r["rid"] == rid for r in st["requests"])


async def test_abort_by_rid_mid_stream(http: aiohttp.ClientSession) -> None:
    async with SGLangSimulator(fast_config(decode_ms_per_token=20.0)) as sim:
        async with http.post(
            f"{sim.url}/generate", json={"text": "Explain tides", "stream": True, "rid": "barge-1"}
        ) as resp:
            events: list[Any] = []
            async for raw in resp.content:
                line = raw.decode().strip()
                if not line:
                    continue
                data = line[len("data: ") :]
                events.append(data if data == "[DONE]" else json.loads(data))
                if len(events) == 3:
                    async with http.post(f"{sim.url}/abort_request", json={"rid": "barge-1"}) as abort:
                        assert abort.status == 200
        assert events[-1] == "[DONE]"
        final = events[-2]["meta_info"]
        assert final["finish_reason"]["type"] == "abort"
        full_length = len(StandInTokenizer().encode(canned_reply("Explain tides"))) + 1
        assert 3 <= final["completion_tokens"] < full_length
        st = await stats(http, sim)
        assert st["running"] == [] and st["queued"] == []
        assert record(st, "barge-1")["finish_reason"] == "abort"


async def test_abort_of_queued_and_prefilling_requests_inserts_nothing(http: aiohttp.ClientSession) -> None:
    async with SGLangSimulator(fast_config(prefill_ms_per_token=0.05)) as sim:
        blocker_prompt = words(6000, "blocking")
        blocker = asyncio.create_task(
            generate(http, sim, text=blocker_prompt, rid="blocker", sampling_params={"max_new_tokens": 0})
        )

        async def prefilling(rid: str) -> bool:
            return bool((await stats(http, sim))["prefilling"] == rid)

        await wait_until(lambda: prefilling("blocker"))
        queued_prompt = words(30, "queued")
        async with http.post(f"{sim.url}/generate", json={"text": queued_prompt, "rid": "q1", "stream": True}) as resp:

            async def q1_queued() -> bool:
                return "q1" in (await stats(http, sim))["queued"]

            await wait_until(q1_queued)
            async with http.post(f"{sim.url}/abort_request", json={"rid": "q1"}) as abort:
                assert abort.status == 200
            events = await read_sse(resp)
        assert events[-1] == "[DONE]"
        assert events[-2]["meta_info"]["finish_reason"]["type"] == "abort"
        assert events[-2]["output_ids"] == []
        # The blocker is still prefilling: abort it too, before its prefill finishes.
        async with http.post(f"{sim.url}/abort_request", json={"rid": "blocker"}) as abort:
            assert abort.status == 200
        aborted_blocker = await blocker
        assert aborted_blocker["meta_info"]["finish_reason"]["type"] == "abort"
        st = await stats(http, sim)
        assert record(st, "q1")["prefill_order"] is None
        assert st["cache"]["tokens"] == 0
        # Neither prompt was inserted into the cache.
        for prompt in (queued_prompt, blocker_prompt):
            again = await generate(http, sim, text=prompt, sampling_params={"max_new_tokens": 0})
            assert again["meta_info"]["cached_tokens"] == 0


async def test_abort_rid_is_a_prefix_match_and_abort_all(http: aiohttp.ClientSession) -> None:
    async with SGLangSimulator(fast_config(decode_ms_per_token=50.0)) as slow:
        tasks = [asyncio.create_task(generate(http, slow, text=f"question {rid}", rid=rid)) for rid in ("a", "ab", "b")]

        async def all_running() -> bool:
            st = await stats(http, slow)
            return len(st["running"]) == 3

        await wait_until(all_running)
        async with http.post(f"{slow.url}/abort_request", json={"rid": "nope"}) as resp:
            assert resp.status == 200  # unknown rid: nothing happens
        async with http.post(f"{slow.url}/abort_request", json={"rid": "a"}) as resp:
            assert resp.status == 200
        a, ab = await asyncio.gather(tasks[0], tasks[1])
        assert a["meta_info"]["finish_reason"]["type"] == "abort"
        assert ab["meta_info"]["finish_reason"]["type"] == "abort"  # "ab" starts with "a", as in SGLang
        assert (await stats(http, slow))["running"] == ["b"]
        async with http.post(f"{slow.url}/abort_request", json={"abort_all": True}) as resp:
            assert resp.status == 200
        b = await tasks[2]
        assert b["meta_info"]["finish_reason"]["type"] == "abort"


async def test_client_disconnect_aborts_the_request(http: aiohttp.ClientSession) -> None:
    async with SGLangSimulator(fast_config(decode_ms_per_token=20.0)) as sim:
        resp = await http.post(f"{sim.url}/generate", json={"text": "Long story", "stream": True, "rid": "gone-1"})
        seen = 0
        async for raw in resp.content:
            if raw.strip():
                seen += 1
            if seen == 2:
                break
        resp.close()  # the client goes away mid-stream

        async def aborted() -> bool:
            st = await stats(http, sim)
            return "gone-1" not in st["running"] and record_exists(st, "gone-1")

        await wait_until(aborted)
        rec = record(await stats(http, sim), "gone-1")
        assert rec["finish_reason"] == "abort"
        assert rec["completion_tokens"] < len(StandInTokenizer().encode(canned_reply("Long story"))) + 1


async def test_eviction_under_a_tiny_capacity_drops_low_priority_first(http: aiohttp.ClientSession) -> None:
    async with SGLangSimulator(fast_config(cache_capacity_tokens=100)) as sim:
        high, low_old, low_new = words(40, "alpha"), words(40, "bravo"), words(40, "charlie")
        for prompt, priority in ((high, 10), (low_old, 0), (low_new, 0)):
            await generate(http, sim, text=prompt, priority=priority, sampling_params={"max_new_tokens": 0})
        st = await stats(http, sim)
        assert st["cache"]["tokens"] <= 100
        assert st["cache"]["evicted_tokens"] >= 40
        # The high-priority prefix survived although it is the oldest; the older low one went.
        kept = await generate(http, sim, text=high, sampling_params={"max_new_tokens": 0})
        assert kept["meta_info"]["cached_tokens"] == kept["meta_info"]["prompt_tokens"] - 1
        evicted = await generate(http, sim, text=low_old, sampling_params={"max_new_tokens": 0})
        assert evicted["meta_info"]["cached_tokens"] == 0


# --- faults -------------------------------------------------------------------------------------


async def set_fault(http: aiohttp.ClientSession, sim: SGLangSimulator, **body: Any) -> None:
    async with http.post(f"{sim.url}/sim/faults", json=body) as resp:
        assert resp.status == 200, await resp.text()


async def test_fault_http_500_for_count_requests(sim: SGLangSimulator, http: aiohttp.ClientSession) -> None:
    await set_fault(http, sim, mode="http_500", count=1)
    async with http.post(f"{sim.url}/generate", json={"text": "hi"}) as resp:
        assert resp.status == 500
        body = await resp.json()
        assert body["code"] == 500 and body["object"] == "error"
    assert (await generate(http, sim, text="hi"))["meta_info"]["finish_reason"]["type"] == "stop"


async def test_fault_hang_never_answers(sim: SGLangSimulator, http: aiohttp.ClientSession) -> None:
    await set_fault(http, sim, mode="hang", count=1)
    with pytest.raises((asyncio.TimeoutError, aiohttp.ClientError)):
        async with http.post(
            f"{sim.url}/generate", json={"text": "hi"}, timeout=aiohttp.ClientTimeout(total=0.3)
        ) as resp:
            await resp.read()
    # A bounded hang closes the connection without an answer.
    await set_fault(http, sim, mode="hang", count=1, delay_s=0.1)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        async with http.post(f"{sim.url}/generate", json={"text": "hi"}) as resp:
            await resp.read()
    assert (await generate(http, sim, text="hi"))["text"]


async def test_fault_drop_mid_stream_closes_without_done(sim: SGLangSimulator, http: aiohttp.ClientSession) -> None:
    await set_fault(http, sim, mode="drop_mid_stream", count=1, after_tokens=2)
    events: list[Any] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(f"{sim.url}/generate", json={"text": "hi", "stream": True, "rid": "drop-1"}) as resp:
            assert resp.status == 200
            async for raw in resp.content:
                if raw.strip():
                    events.append(json.loads(raw.decode().strip()[len("data: ") :]))
    assert len(events) == 2 and all(e["meta_info"]["finish_reason"] is None for e in events)

    async def dropped_request_ended() -> bool:
        st = await stats(http, sim)
        return record_exists(st, "drop-1") and st["running"] == []

    await wait_until(dropped_request_ended)
    assert (await generate(http, sim, text="hi"))["text"]


async def test_fault_slow_first_byte(sim: SGLangSimulator, http: aiohttp.ClientSession) -> None:
    await set_fault(http, sim, mode="slow_first_byte", count=1, delay_s=0.3)
    started = time.monotonic()
    async with http.post(f"{sim.url}/generate", json={"text": "hi", "stream": True}) as resp:
        await resp.content.readline()
        first_byte = time.monotonic() - started
        events = await read_sse(resp)
    assert first_byte >= 0.3
    assert events[-1] == "[DONE]"
    async with http.get(f"{sim.url}/sim/stats") as resp:
        assert (await resp.json())["faults"]["mode"] == "none"  # count used up


# --- OpenAI chat ---------------------------------------------------------------------------------


async def test_chat_streaming_reports_cached_tokens_in_usage(sim: SGLangSimulator, http: aiohttp.ClientSession) -> None:
    system = {"role": "system", "content": f"You are a voice assistant. {words(120, 'sys')}"}
    turn1 = [system, {"role": "user", "content": "What is the weather like?"}]

    async def chat(messages: list[dict[str, str]]) -> list[Any]:
        body = {
            "model": "qwen3-4b",
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 200,
            "chat_template_kwargs": {"enable_thinking": False},
        }
        async with http.post(f"{sim.url}/v1/chat/completions", json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await read_sse(resp)

    events1 = await chat(turn1)
    assert events1[-1] == "[DONE]"
    assert events1[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(e["object"] == "chat.completion.chunk" and e["model"] == "qwen3-4b" for e in events1[:-1])
    reply1 = "".join(e["choices"][0]["delta"].get("content", "") for e in events1[:-1] if e["choices"])
    assert reply1.startswith("You asked about What is the weather like")
    finish = events1[-3]["choices"][0]
    assert finish["finish_reason"] == "stop" and finish["delta"] == {}
    usage1 = events1[-2]["usage"]
    assert events1[-2]["choices"] == []
    assert usage1["prompt_tokens_details"] is None  # nothing cached yet: null, as SGLang sends
    assert usage1["total_tokens"] == usage1["prompt_tokens"] + usage1["completion_tokens"]

    turn2 = [*turn1, {"role": "assistant", "content": reply1}, {"role": "user", "content": "And tomorrow?"}]
    events2 = await chat(turn2)
    usage2 = events2[-2]["usage"]
    # Qwen3's template drops the empty <think></think> block of enable_thinking=False from past
    # assistant turns, so reuse stops where turn 1's prompt opened the assistant turn.
    opened = len(StandInTokenizer().encode(render_chatml(turn1)))
    assert usage1["prompt_tokens"] == opened + 4
    assert usage2["prompt_tokens_details"]["cached_tokens"] == opened

    async with http.post(
        f"{sim.url}/v1/chat/completions", json={"model": "m", "messages": turn1, "max_completion_tokens": 4}
    ) as resp:
        whole = await resp.json()
    assert whole["object"] == "chat.completion"
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["choices"][0]["message"]["content"] == "You asked about What"
    assert whole["usage"]["prompt_tokens_details"]["cached_tokens"] == whole["usage"]["prompt_tokens"] - 1


# --- bookkeeping, errors, metadata ------------------------------------------------------------------


async def test_stats_record_the_routing_key_header(sim: SGLangSimulator, http: aiohttp.ClientSession) -> None:
    async with http.post(
        f"{sim.url}/generate",
        json={"text": "hello", "rid": "routed-1", "priority": 3, "routing_key": "sess-42"},
        headers={"X-SMG-Routing-Key": "sess-42"},
    ) as resp:
        assert resp.status == 200
    rec = record(await stats(http, sim), "routed-1")
    assert rec["headers"] == {"X-SMG-Routing-Key": "sess-42"}
    assert rec["routing_key"] == "sess-42"
    assert rec["priority"] == 3 and rec["finish_reason"] == "stop" and rec["max_new_tokens"] == 128


async def test_bad_requests_get_sglang_errors(sim: SGLangSimulator, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{sim.url}/generate", json={"sampling_params": {}}) as resp:
        assert resp.status == 400
        assert "text, input_ids" in (await resp.json())["error"]["message"]
    async with http.post(f"{sim.url}/generate", json={"text": 42}) as resp:
        assert resp.status == 400
        body = await resp.json()
        assert body["object"] == "error" and body["code"] == 400
    bad_bodies: list[dict[str, Any]] = [
        {"input_ids": []},
        {"input_ids": ["a"]},
        {"text": "x", "sampling_params": {"max_new_tokens": -1}},
        {"text": "x", "priority": "high"},
        {"text": "x", "stream": "yes"},
    ]
    for bad in bad_bodies:
        async with http.post(f"{sim.url}/generate", json=bad) as resp:
            assert resp.status == 400, bad
    async with http.post(f"{sim.url}/generate", data=b"{not json", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
    # Like SGLang, a streaming request that fails normalization gets an error event, not a 400.
    async with http.post(f"{sim.url}/generate", json={"stream": True}) as resp:
        assert resp.status == 200
        events = await read_sse(resp)
    assert "error" in events[0] and events[-1] == "[DONE]"
    async with http.post(f"{sim.url}/v1/chat/completions", json={"messages": "hi"}) as resp:
        assert resp.status == 400
    async with http.post(f"{sim.url}/v1/chat/completions", data=b"{}", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 400
    async with http.post(f"{sim.url}/sim/faults", json={"mode": "explode"}) as resp:
        assert resp.status == 400
    assert (await stats(http, sim))["running"] == []


async def test_health_model_info_metrics_and_reset(sim: SGLangSimulator, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{sim.url}/health") as resp:
        assert resp.status == 200
    async with http.get(f"{sim.url}/get_model_info") as resp:
        info = await resp.json()
    assert info["model_path"] == SIMULATOR_NAME and info["tokenizer_path"] is None and info["is_generation"]
    prompt = words(30, "metric")
    await generate(http, sim, text=prompt, sampling_params={"max_new_tokens": 0})
    await generate(http, sim, text=prompt, sampling_params={"max_new_tokens": 1})
    async with http.get(f"{sim.url}/metrics") as resp:
        text = await resp.text()
    values = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if not line.startswith("#")
    }
    n = len(StandInTokenizer().encode(prompt))
    assert values["sglang:prompt_tokens_total"] == 2 * n
    assert values["sglang:cached_tokens_total"] == n - 1
    assert values["sglang:cache_hit_rate"] == pytest.approx((n - 1) / (2 * n))
    async with http.post(f"{sim.url}/sim/reset") as resp:
        assert resp.status == 200
    st = await stats(http, sim)
    assert st["requests"] == [] and st["cache"]["tokens"] == 0 and st["totals"]["prompt_tokens"] == 0
    again = await generate(http, sim, text=prompt, sampling_params={"max_new_tokens": 0})
    assert again["meta_info"]["cached_tokens"] == 0


async def test_cli_prints_ready_line_and_serves(http: aiohttp.ClientSession) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "standins.sglang",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--decode-ms-per-token",
        "1",
        "--prefill-ms-per-token",
        "0.01",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), timeout=30)).decode().strip()
        assert line.startswith("sglang simulator ready on http://127.0.0.1:"), line
        url = parse_ready_line(line)
        assert url == line.rsplit(" ", 1)[1], line  # what the starters (simproc, capacity_suite) read
        async with http.get(f"{url}/health") as resp:
            assert resp.status == 200
            assert "simulator" in resp.headers["Server"]
        async with http.post(f"{url}/generate", json={"text": "ping", "sampling_params": {"max_new_tokens": 2}}) as r:
            assert (await r.json())["meta_info"]["completion_tokens"] == 2
    finally:
        if proc.returncode is None:
            proc.terminate()
        code = await asyncio.wait_for(proc.wait(), timeout=30)
    assert code == 0


# --- tools (standins/sglang/tools.py) -----------------------------------------------------------

SIM_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "kelvin"]}},
                "required": ["city", "unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "set_timer",
            "description": "Start a timer",
            "parameters": {
                "type": "object",
                "properties": {"minutes": {"type": "integer"}, "label": {"type": "string", "default": "timer"}},
                "required": ["minutes"],
            },
        },
    },
]


def tool_prompt(user: str) -> str:
    return render_chatml([{"role": "user", "content": user}], tools=SIM_TOOLS, enable_thinking=False)


async def test_a_tool_named_by_the_user_gets_a_streamed_qwen_call(
    sim: SGLangSimulator, http: aiohttp.ClientSession
) -> None:
    prompt = tool_prompt("what is the weather like in New York in kelvin")
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in prompt
    async with http.post(f"{sim.url}/generate", json={"text": prompt, "stream": True}) as resp:
        events = await read_sse(resp)
    texts = [e["text"] for e in events if e != "[DONE]"]
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "New York", "unit": "kelvin"}}\n</tool_call>'
    assert texts[-1] == call
    assert texts[0] == "<tool_call>"  # one token, as in Qwen's vocabulary; the JSON comes in pieces
    assert len(texts) > 10
    # no tool asked for: the usual canned reply; two asked for: two calls, in the tools' order
    plain = await generate(http, sim, text=tool_prompt("tell me a story"))
    assert plain["text"].startswith("You asked about tell me a story")
    both = await generate(http, sim, text=tool_prompt("set a timer for 3 minutes and the weather in Oslo"))
    assert both["text"].count("<tool_call>") == 2 and both["text"].index("get_weather") < both["text"].index("timer")
    assert '{"minutes": 3, "label": "timer"}' in both["text"]


async def test_tool_results_get_an_answer_in_words(sim: SGLangSimulator, http: aiohttp.ClientSession) -> None:
    messages = [
        {"role": "user", "content": "weather in Oslo"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "snow"},
        {"role": "tool", "tool_call_id": "c2", "content": "-3 C"},
    ]
    prompt = render_chatml(messages, tools=SIM_TOOLS)
    assert prompt.endswith(
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
        "<|im_end|>\n<|im_start|>user\n<tool_response>\nsnow\n</tool_response>\n<tool_response>\n-3 C\n"
        "</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    answer = await generate(http, sim, text=prompt)
    assert answer["text"] == "Here is what I found: snow; -3 C."


async def test_a_forced_call_opening_is_continued(sim: SGLangSimulator, http: aiohttp.ClientSession) -> None:
    base = tool_prompt("good morning, 7 please")
    named = await generate(http, sim, text=base + '<tool_call>\n{"name": "set_timer", "arguments": ')
    assert named["text"] == '{"minutes": 7, "label": "timer"}}\n</tool_call>'
    picked = await generate(http, sim, text=base + '<tool_call>\n{"name": "')
    assert picked["text"].startswith('get_weather", "arguments": {') and picked["text"].endswith("}}\n</tool_call>")


async def test_chat_route_streams_tool_calls_deltas(sim: SGLangSimulator, http: aiohttp.ClientSession) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "what's the weather in Paris"}],
        "tools": SIM_TOOLS,
        "stream": True,
    }
    async with http.post(f"{sim.url}/v1/chat/completions", json=body) as resp:
        events = [e for e in await read_sse(resp) if e != "[DONE]"]
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert not any("<tool" in (d.get("content") or "") for d in deltas)
    entries = [entry for d in deltas for entry in d.get("tool_calls") or []]
    assert entries[0]["id"].startswith("call_") and entries[0]["function"] == {"name": "get_weather", "arguments": ""}
    arguments = "".join(e["function"].get("arguments", "") for e in entries)
    assert json.loads(arguments) == {"city": "Paris", "unit": "celsius"}
    assert len(entries) > 3 and {e["index"] for e in entries} == {0}
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"

    whole = {**body, "stream": False, "tool_choice": {"type": "function", "function": {"name": "set_timer"}}}
    async with http.post(f"{sim.url}/v1/chat/completions", json=whole) as resp:
        choice = (await resp.json())["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "set_timer" and json.loads(call["function"]["arguments"])["minutes"] == 1

    none = {**body, "stream": False, "tool_choice": "none"}
    async with http.post(f"{sim.url}/v1/chat/completions", json=none) as resp:
        message = (await resp.json())["choices"][0]["message"]
    assert message["tool_calls"] is None and message["content"].startswith("You asked about")

    for bad in ({"tools": "x"}, {"tools": [{"type": "function"}]}, {"tool_choice": {"type": "function"}}):
        async with http.post(f"{sim.url}/v1/chat/completions", json={**body, **bad}) as resp:
            assert resp.status == 400, bad
    unknown = {**body, "tool_choice": {"type": "function", "function": {"name": "nope"}}}
    async with http.post(f"{sim.url}/v1/chat/completions", json=unknown) as resp:
        assert resp.status == 400 and "nope" in (await resp.json())["message"]


async def test_an_unknown_tool_and_broken_arguments_on_request(
    sim: SGLangSimulator, http: aiohttp.ClientSession
) -> None:
    unknown = await generate(http, sim, text=tool_prompt("please book_flight to Rome"))
    assert unknown["text"] == '<tool_call>\n{"name": "book_flight", "arguments": {}}\n</tool_call>'
    broken = await generate(http, sim, text=tool_prompt("weather in Rome with broken arguments"))
    body = broken["text"].removeprefix("<tool_call>\n").removesuffix("\n</tool_call>")
    assert body == '{"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}'
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
