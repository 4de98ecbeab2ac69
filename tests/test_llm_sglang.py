"""Hark against SGLang's HTTP API (the simulator: no GPU here): speculation, aborts, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import RunningServer, load_pcm
from simproc import SimProcess, sglang_simulator
from wsclient import Peer, silence


@pytest.fixture
def sim() -> Iterator[SimProcess]:
    with sglang_simulator("--disconnect-abort-delay-s", "0.2") as running:
        yield running


def _hark(server_factory: Any, sim: SimProcess, *args: str, env: dict[str, str] | None = None) -> RunningServer:
    return server_factory("--llm", "sglang", "--llm-url", sim.url, *args, env=env)  # type: ignore[no-any-return]


async def test_spoken_turn_is_prefilled_while_speaking(server_factory: Any, sim: SimProcess) -> None:
    hark = _hark(server_factory, sim)
    peer = await Peer.open(hark.url)
    session_id = peer.events[0]["session_id"]
    # a microphone goes on sending silence: enough for the semantic cap (2.5 s), whatever the scores
    await peer.send_pcm(load_pcm("en_librivox_sense_0870") + silence(3000), speed=1.0)
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    final = peer.of("transcript.final")[0]["text"]
    await peer.close()

    assert done["status"] == "completed"
    assert done["text"].startswith("You asked about")  # the simulator's canned reply
    metrics = done["metrics"]
    assert metrics["speculative_prefills"] >= 2
    assert metrics["cached_tokens"] >= 0.9 * metrics["prompt_tokens"], metrics
    records = sim.requests()
    prefills = [r for r in records if r["max_new_tokens"] == 0]
    replies = [r for r in records if r["max_new_tokens"] > 0 and r["stream"]]
    # the rest: the turn detector's end-of-turn checks at pauses (one token, its logprobs)
    checks = [r for r in records if r["max_new_tokens"] == 1 and not r["stream"]]
    assert len(prefills) + len(replies) + len(checks) == len(records)
    assert len(prefills) == metrics["speculative_prefills"]
    assert len(replies) == 1 and replies[0]["stream"]
    assert all(r["priority"] < replies[0]["priority"] for r in prefills)  # speculation yields to replies
    assert {r["routing_key"] or r["headers"].get("X-SMG-Routing-Key") for r in records} == {session_id}
    assert replies[0]["cached_tokens"] == metrics["cached_tokens"]
    print(f"final {final!r}: {metrics}")


async def test_second_turn_reuses_the_conversation(server_factory: Any, sim: SimProcess) -> None:
    hark = _hark(server_factory, sim, "--no-llm-speculation")
    peer = await Peer.open(hark.url)
    await peer.send_json({"type": "session.update", "config": {"audio_output": False}})
    for text in ("what is the weather like today", "and what about tomorrow morning"):
        await peer.send_json({"type": "input.text", "text": text})
        await peer.wait_for(
            lambda e, n=text: (
                e["type"] == "response.done" and len(peer.of("response.done")) == (1 if n.startswith("what") else 2)
            )
        )
    await peer.close()
    first, second = peer.of("response.done")
    assert first["metrics"]["speculative_prefills"] == 0
    # the first turn's prompt and reply are in the radix cache when the second comes
    assert second["metrics"]["cached_tokens"] > first["metrics"]["prompt_tokens"] * 0.8


async def test_barge_in_and_disconnect_abort_the_generation(server_factory: Any) -> None:
    # slow decoding so the reply is still generating when the user interrupts
    with sglang_simulator("--decode-ms-per-token", "400", "--disconnect-abort-delay-s", "30") as slow:
        hark = _hark(server_factory, slow)
        peer = await Peer.open(hark.url)
        await peer.send_json({"type": "input.text", "text": "tell me everything about the harbour"})
        await peer.wait_for(lambda e: e["type"] == "response.audio.started", timeout=30)
        await peer.send_pcm(load_pcm("en_goforward_command") + silence(600))
        cancelled = await peer.wait_for(lambda e: e["type"] == "response.done")
        assert cancelled["status"] == "cancelled"
        # aborted by rid at once (the simulator would only notice the closed stream after 30 s)
        await asyncio.sleep(0.5)
        first = next(r for r in slow.requests() if r["max_new_tokens"] > 0)
        assert first["finish_reason"] == "abort"

        await peer.wait_for(lambda e: e["type"] == "response.started" and e["response_id"] == "resp_2")
        peer.conn.transport.abort()  # the client vanishes mid-reply
        stats = await asyncio.get_running_loop().run_in_executor(None, slow.wait_idle, 10.0)
        assert all(r["finish_reason"] in ("abort", "length", "stop") for r in stats["requests"])
        assert stats["requests"][-1]["finish_reason"] == "abort"


@pytest.mark.parametrize("mode", ["http_500", "hang", "drop_mid_stream", "unreachable"])
async def test_llm_failures_fail_the_reply_and_the_session_goes_on(
    server_factory: Any, sim: SimProcess, mode: str
) -> None:
    env = {"HARK_LLM_FIRST_BYTE_TIMEOUT_S": "1", "HARK_LLM_IDLE_TIMEOUT_S": "1"}
    if mode == "unreachable":
        hark = server_factory("--llm", "sglang", "--llm-url", "http://127.0.0.1:9", env=env)
    else:
        hark = _hark(server_factory, sim, env=env)
        sim.faults(mode, count=1, after_tokens=3)
    peer = await Peer.open(hark.url)
    await peer.send_json({"type": "input.text", "text": "what time is it"})
    failed = await peer.wait_for(lambda e: e["type"] == "response.done", timeout=30)
    assert failed["status"] == "failed"
    assert "llm_unavailable" in peer.errors()
    error = next(e for e in peer.of("error") if e["code"] == "llm_unavailable")
    assert error["fatal"] is False
    assert "Sorry" in failed["text"] and peer.audio_bytes > 0  # the apology was spoken
    if mode != "unreachable":
        await peer.send_json({"type": "input.text", "text": "what time is it now"})
        ok = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] == "resp_2", timeout=30)
        assert ok["status"] == "completed"
        # the unanswered words were kept and asked again with the next turn
        assert sim.requests()[-1]["last_user_turn"] == "what time is it what time is it now"
    await peer.close()


async def test_circuit_breaker_fails_fast_then_probes(server_factory: Any, sim: SimProcess) -> None:
    env = {"HARK_LLM_BREAKER_FAILURES": "2", "HARK_LLM_BREAKER_RESET_S": "1.5"}
    hark = _hark(server_factory, sim, "--no-llm-speculation", env=env)
    sim.faults("http_500", count=2)
    peer = await Peer.open(hark.url)
    # text only: a spoken apology would take longer than the breaker's reset time
    await peer.send_json({"type": "session.update", "config": {"audio_output": False}})
    for i in range(3):
        await peer.send_json({"type": "input.text", "text": f"question number {i}"})
        await peer.wait_for(lambda e, n=i: e["type"] == "response.done" and e["response_id"] == f"resp_{n + 1}")
    # two real failures, then the third failed fast without reaching the server
    assert [d["status"] for d in peer.of("response.done")] == ["failed"] * 3
    faults = sim.stats()["faults"]
    assert faults["remaining"] == 0  # both injected failures were met by real requests
    assert sim.requests() == []  # and the third never reached the server
    await asyncio.sleep(1.6)
    await peer.send_json({"type": "input.text", "text": "are you back"})
    done = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] == "resp_4")
    assert done["status"] == "completed"
    await peer.close()


async def test_openai_engine_streams_and_cancels(server_factory: Any) -> None:
    # 60 ms a token: a reply takes about 2 s, long enough to cancel in the middle
    with sglang_simulator("--decode-ms-per-token", "60", "--disconnect-abort-delay-s", "0.2") as sim:
        await _openai_round_trip(server_factory, sim)


async def _openai_round_trip(server_factory: Any, sim: SimProcess) -> None:
    hark = server_factory("--llm", "openai", "--llm-url", sim.url, "--llm-model", "hark-sglang-simulator")
    peer = await Peer.open(hark.url)
    await peer.send_json({"type": "input.text", "text": "say something nice"})
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    assert done["status"] == "completed" and done["text"].startswith("You asked about")
    assert len(peer.of("response.text.delta")) > 3
    assert done["metrics"]["prompt_tokens"] > 0
    await peer.send_json({"type": "input.text", "text": "say it again"})
    await peer.wait_for(lambda e: e["type"] == "response.started" and e["response_id"] == "resp_2")
    await peer.send_json({"type": "response.cancel"})
    cancelled = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] == "resp_2")
    assert cancelled["status"] == "cancelled"
    await peer.close()
    stats = await asyncio.get_running_loop().run_in_executor(None, sim.wait_idle, 10.0)
    last = stats["requests"][-1]
    # closing the stream is how an OpenAI-style server learns of the cancel
    assert last["endpoint"] == "chat" and last["finish_reason"] == "abort"
