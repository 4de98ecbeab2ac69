"""Fault injection against a real server process (issue 12, item 5c): the language model down, slow
or cut mid-stream (the SGLang simulator's faults), an ASR worker killed mid-utterance, and SIGTERM
while several sessions are mid-turn. Each case checks the promises PROTOCOL.md makes: the error
codes (non-fatal where the session can go on), a reply that ends with `response.done`, the next
turn working, no slot, model request or worker process left behind, and no hang (every wait is
bounded; the server must stop on SIGTERM without being killed)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, load_pcm, metric, process_alive, stop_server
from simproc import SimProcess, sglang_simulator
from wsclient import Peer, silence

pytestmark = pytest.mark.timeout(180)

CLIP = "en_goforward_command"
LONG_REPLY = "a reply long enough to be cut in the middle of its audio " * 6
# the model's waits, short so a fault shows within a second or two of the request
FAST_LLM_TIMEOUTS = {"HARK_LLM_FIRST_BYTE_TIMEOUT_S": "1", "HARK_LLM_IDLE_TIMEOUT_S": "1"}


# ---------------------------------------------------------------------- helpers


@pytest.fixture
def sim() -> Iterator[SimProcess]:
    with sglang_simulator("--disconnect-abort-delay-s", "0.2") as running:
        yield running


async def _sessions_open_becomes(server: RunningServer, value: float, timeout: float = 15.0) -> float:
    deadline = time.monotonic() + timeout
    while (current := await asyncio.to_thread(metric, server, "hark_sessions_open")) != value:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    return current


def _closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker_pids(server_pid: int) -> list[int]:
    """The server's spawned inference workers (multiprocessing's spawn_main children)."""
    pids: list[int] = []
    for task in Path(f"/proc/{server_pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            try:
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    pids.append(child)
            except OSError:
                pass
    return sorted(pids)


def _outliving(pids: list[int], grace_s: float) -> list[int]:
    """Those of `pids` still running after up to `grace_s` seconds."""
    deadline = time.monotonic() + grace_s
    while (alive := [pid for pid in pids if process_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


async def _spoken_turn(peer: Peer, pcm: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Speak `pcm` (with the silence a live microphone sends after it); its final and its reply."""
    sent_at = time.monotonic()
    await peer.send_pcm(pcm + silence(3000))
    final = await peer.wait_for(lambda e: e["type"] == "transcript.final" and e["_t"] >= sent_at and e["text"])
    started = await peer.wait_for(lambda e: e["type"] == "response.started" and e["turn_id"] == final["turn_id"])
    done = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] == started["response_id"])
    return final, done


def _llm_errors(peer: Peer) -> list[dict[str, Any]]:
    return [e for e in peer.of("error") if e["code"] == "llm_unavailable"]


def _assert_failed_reply(peer: Peer, done: dict[str, Any]) -> None:
    assert done["status"] == "failed", done
    assert "Sorry" in done["text"], done  # the spoken apology: a voice user is not left in silence
    errors = _llm_errors(peer)
    assert errors and not any(e["fatal"] for e in errors), peer.of("error")
    assert not [e for e in peer.of("error") if e["code"] not in ("llm_unavailable",)], peer.of("error")


# ---------------------------------------------------------------------- the language model


async def test_llm_down_fails_each_turn_cleanly_and_the_session_goes_on(server_factory: Any) -> None:
    """Connection refused: a spoken and a typed turn each end `failed` with `llm_unavailable`
    (the breaker may fail the second one fast), the session answers on, and closes freeing its slot."""
    srv: RunningServer = server_factory(
        "--llm", "sglang", "--llm-url", f"http://127.0.0.1:{_closed_port()}", "--max-sessions", "2"
    )
    peer = await Peer.open(srv.url)
    final, done = await _spoken_turn(peer, load_pcm(CLIP))
    assert final["text"] == "go forward ten meters"
    _assert_failed_reply(peer, done)
    await peer.send_json({"type": "session.update", "config": {"audio_output": False}})
    await peer.send_json({"type": "input.text", "text": "are you there"})
    typed = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] != done["response_id"])
    _assert_failed_reply(peer, typed)
    await peer.send_json({"type": "ping", "id": "still-here"})
    await peer.wait_for(lambda e: e["type"] == "pong" and e["id"] == "still-here")
    # the other slot is free, and a session there is served the same way
    other = await Peer.open(srv.url)
    assert other.events[0]["type"] == "session.created", other.events
    await other.send_json({"type": "input.text", "text": "hello"})
    _assert_failed_reply(other, await other.wait_for(lambda e: e["type"] == "response.done"))
    for each in (peer, other):
        await each.send_json({"type": "session.close"})
        await each.wait_closed()
        assert each.conn.close_code == 1000
    assert await _sessions_open_becomes(srv, 0) == 0
    srv.assert_alive()


@pytest.mark.parametrize("fault", ["slow_first_byte", "drop_mid_stream"])
async def test_a_slow_or_cut_llm_fails_the_turn_keeps_its_words_and_frees_the_request(
    server_factory: Any, sim: SimProcess, fault: str
) -> None:
    """Every model request of the first turn (its speculative prefills too) meets the fault: no first
    byte within the 1 s timeout, or the stream cut after 3 tokens. The spoken turn's reply fails with
    `llm_unavailable`; the next turn is answered, asked with the failed turn's words as well; nothing
    is left running on the model server; the slot is freed."""
    # a breaker that does not open here: this test is about each request's own failure and clean-up
    env = {**FAST_LLM_TIMEOUTS, "HARK_LLM_BREAKER_FAILURES": "1000"}
    srv: RunningServer = server_factory("--llm", "sglang", "--llm-url", sim.url, env=env)
    if fault == "slow_first_byte":
        sim.faults(fault, delay_s=5.0)
    else:
        sim.faults(fault, after_tokens=3)
    peer = await Peer.open(srv.url)
    final, done = await _spoken_turn(peer, load_pcm(CLIP))
    assert final["text"] == "go forward ten meters"
    _assert_failed_reply(peer, done)
    if fault == "drop_mid_stream":  # what streamed before the cut reached the client, then the apology
        deltas = "".join(e["delta"] for e in peer.of("response.text.delta") if e["response_id"] == done["response_id"])
        assert not deltas.startswith("Sorry") and "Sorry" in deltas, deltas
        assert deltas.startswith(done["text"]), (deltas, done["text"])  # response.done.text: what was heard
    await asyncio.to_thread(sim.faults, "none")
    await peer.send_json({"type": "input.text", "text": "what now"})
    ok = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] != done["response_id"])
    assert ok["status"] == "completed", ok
    await peer.close()
    stats = await asyncio.to_thread(sim.wait_idle)  # the failed turn's requests were ended, not left running
    assert not stats["running"] and not stats["queued"]
    replies = {r["last_user_turn"]: r["finish_reason"] for r in stats["requests"] if r["stream"]}  # finish order
    assert replies["go forward ten meters what now"] == "stop", replies
    if fault == "slow_first_byte":  # given up on at the first-byte timeout: aborted on the model server
        assert replies["go forward ten meters"] == "abort", replies
    assert await _sessions_open_becomes(srv, 0) == 0
    srv.assert_alive()


# ---------------------------------------------------------------------- the speech recognizer


async def test_a_killed_asr_worker_fails_that_turn_and_the_next_turn_is_recognized(server_factory: Any) -> None:
    """SIGKILL the pocketsphinx worker while it holds an utterance: that turn reports a non-fatal
    `internal_error` and ends without a reply (nothing was recognized), the session goes on, the pool
    starts a new worker for the next utterance, and that turn is transcribed and answered."""
    srv: RunningServer = server_factory("--asr-workers", "1", "--max-sessions", "4")
    [worker] = _worker_pids(srv.process.pid)
    pcm = load_pcm(CLIP)
    peer = await Peer.open(srv.url)
    await peer.send_pcm(pcm[: len(pcm) // 2])
    await peer.wait_for(lambda e: e["type"] == "speech.started")
    os.kill(worker, signal.SIGKILL)
    await peer.send_pcm(pcm[len(pcm) // 2 :] + silence(3000))
    error = await peer.wait_for(lambda e: e["type"] == "error")
    assert error["code"] == "internal_error" and error["fatal"] is False, error
    first = await peer.wait_for(lambda e: e["type"] == "transcript.final")
    assert first["text"] == "", first  # the utterance went with the worker: no words, no reply, no guess
    final, done = await _spoken_turn(peer, pcm)
    assert final["text"] == "go forward ten meters"
    assert done["status"] == "completed" and done["text"] == "You said: go forward ten meters."
    assert [e["code"] for e in peer.of("error")] == ["internal_error"]
    assert [d["text"] for d in peer.of("response.done")] == [done["text"]]
    [replacement] = _worker_pids(srv.process.pid)
    assert replacement != worker and not process_alive(worker)
    await peer.send_json({"type": "session.close"})
    await peer.wait_closed()
    assert peer.conn.close_code == 1000
    assert await _sessions_open_becomes(srv, 0) == 0
    assert "restarting asr-pocketsphinx" in srv.log()


# ---------------------------------------------------------------------- shutdown


async def test_sigterm_with_sessions_mid_turn_closes_them_all_and_exits(server_factory: Any, sim: SimProcess) -> None:
    """Six sessions: two speaking (their utterances open on the ASR workers), two mid-reply with the
    model still generating (the simulator decodes slowly), two mid-reply with their audio flowing.
    SIGTERM: every client gets a 1001 close, the process exits 0 on its own, its ASR workers are gone
    and no request is left running on the model server."""
    srv: RunningServer = server_factory("--llm", "sglang", "--llm-url", sim.url, "--max-sessions", "8")
    workers = _worker_pids(srv.process.pid)
    assert workers, "no ASR worker processes under the server"
    pcm = load_pcm(CLIP)
    peers = [await Peer.open(srv.url) for _ in range(6)]
    speaking, generating, playing = peers[:2], peers[2:4], peers[4:]
    for peer in playing:
        await peer.send_json({"type": "input.text", "text": LONG_REPLY})
    await asyncio.gather(*(p.wait_for(lambda e: e["type"] == "response.audio.started") for p in playing))
    await asyncio.to_thread(sim.faults, "slow_first_byte", delay_s=30.0)  # generating until shut down
    for peer in generating:
        await peer.send_json({"type": "input.text", "text": "tell me a long story"})
    await asyncio.gather(*(p.wait_for(lambda e: e["type"] == "response.started") for p in generating))
    streams = [asyncio.create_task(p.send_pcm(pcm[: len(pcm) * 2 // 3])) for p in speaking]
    await asyncio.gather(*(p.wait_for(lambda e: e["type"] == "speech.started") for p in speaking))
    assert await _sessions_open_becomes(srv, 6) == 6

    started = time.monotonic()
    await asyncio.to_thread(stop_server, srv)  # SIGTERM; fails the test if it had to SIGKILL
    print(f"SIGTERM with 6 sessions mid-turn: exited in {time.monotonic() - started:.2f} s")
    assert srv.process.returncode == 0, srv.log()[-3000:]
    for peer in peers:
        await peer.wait_closed(timeout=10)
        assert peer.conn.close_code == 1001, (peer.conn.close_code, peer.conn.close_reason)
    await asyncio.gather(*streams, return_exceptions=True)  # their sends end with the connection
    for peer in peers:  # a shutdown is a close, not a failure
        assert not [e for e in peer.of("error") if e["fatal"]], peer.events
    assert not await asyncio.to_thread(_outliving, workers, 10.0), "ASR workers outlived the server"
    await asyncio.to_thread(sim.faults, "none")
    stats = await asyncio.to_thread(sim.wait_idle, 15.0)  # the generating requests were aborted
    assert not stats["running"] and not stats["queued"]
