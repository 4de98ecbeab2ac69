"""Overload sheds (issue 12): a server behind real time refuses new sessions within seconds, and the
default --max-sessions is what the ASR workers carry.

Before: the frame-wait signal was reset to zero whenever no frame had been taken for a second, so
a hung ASR (every inbox stopped) read as a punctual server and new sessions kept being admitted; and
both signals were averaged per sample, so a loop running one late tick a second took ~40 s to count
as late. The default was a flat 100 sessions, four times what this 2-core machine carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path
from typing import Any, cast

import pytest
from conftest import REPO, RunningServer, load_pcm, metric
from wsclient import Peer

from hark.server.admission import (
    PARAFORMER_SESSIONS_PER_WORKER,
    SESSIONS_PER_ASR_WORKER,
    default_max_sessions,
    session_limit,
)
from hark.server.config import ServerConfig, load_config
from hark.server.context import LagMeter, ServerContext
from hark.server.metrics import Metrics
from hark.server.transport.ws import Admission

FAULTS = Path(__file__).resolve().parent / "overload_faults"
REFUSAL_DEADLINE_S = 10.0  # "within a few seconds"; before the fix it never came
RECOVERY_DEADLINE_S = 30.0


def _context(config: ServerConfig | None = None) -> ServerContext:
    none = cast(Any, None)  # the signals need no engines
    return ServerContext(config or ServerConfig(), Metrics(), none, none, none, none, none)


# ---------------------------------------------------------------------- the signals alone


def test_loop_lag_counts_as_late_within_seconds_when_ticks_are_sparse() -> None:
    """A loop blocked ~1 s at a time runs one tick a second: three such ticks pass the 250 ms guard."""
    ctx = _context()
    for _ in range(3):
        ctx.note_loop_lag(1.0, 1.05)
    assert ctx.loop_lag_s * 1000.0 > ctx.config.overload_loop_lag_ms, ctx.loop_lag_s
    for _ in range(20 * 10):  # ten seconds of punctual 50 ms ticks bring it back
        ctx.note_loop_lag(0.0, 0.05)
    assert ctx.loop_lag_s * 1000.0 < 10.0, ctx.loop_lag_s


def test_frame_wait_follows_time_not_the_number_of_frames() -> None:
    """The same second of 1 s waits moves the average alike whether 1 or 50 frames reported it."""
    few, many = _context(), _context()
    few.note_frame_wait(0.0, 100.0)
    many.note_frame_wait(0.0, 100.0)
    few.note_frame_wait(1.0, 101.0)
    for i in range(1, 51):
        many.note_frame_wait(1.0, 100.0 + i / 50)
    assert abs(few.frame_wait_s - many.frame_wait_s) < 0.05, (few.frame_wait_s, many.frame_wait_s)


def test_queued_audio_not_taken_reads_as_waiting_and_no_session_as_none() -> None:
    ctx = _context()
    ctx.note_frame_wait(0.01, 100.0)
    ctx.metrics.sessions_open.inc()
    ctx.metrics.audio_frames.inc(3)
    ctx.metrics.audio_frames_processed.inc(1)
    ctx.refresh_frame_wait(103.0)  # two frames queued, none taken for 3 s
    assert ctx.frame_wait_s >= 3.0, ctx.frame_wait_s
    ctx.metrics.sessions_open.dec()  # no session: a miscounted frame must not read as a stall forever
    ctx.refresh_frame_wait(110.0)
    assert ctx.frame_wait_s == 0.0


def test_recognizer_lag_is_the_mean_of_its_window_and_needs_a_few_samples() -> None:
    meter = LagMeter(window_s=5.0, min_samples=3)
    meter.record(2.0, now=100.0)
    meter.record(2.0, now=101.0)
    assert meter.mean_s(now=103.0) == 0.0  # one or two slow turns say nothing
    meter.record(0.5, now=103.0)
    assert meter.mean_s(now=103.0) == 1.5
    assert meter.mean_s(now=115.0) == 0.0  # the window moved past them all
    meter.record(-1.0, now=200.0)  # a clock step never reads as negative lag
    for _ in range(3):
        meter.record(0.2, now=200.0)
    assert abs(meter.mean_s(now=200.0) - 0.15) < 1e-9


def test_a_recognizer_found_behind_must_catch_up_to_half_the_threshold_before_admitting() -> None:
    ctx = _context(load_config(["--max-sessions", "50"], environ={}))
    ctx.asr = cast(Any, type("Idle", (), {"overload_reason": lambda self: None})())
    admission = Admission(ctx)

    def lagging(seconds: float) -> LagMeter:
        meter = LagMeter(window_s=5.0, min_samples=3)
        for _ in range(3):
            meter.record(seconds)
        return meter

    assert admission.claim() is None
    ctx.asr_lag = lagging(0.4)  # over the 300 ms guard
    assert "trails the speech by 400 ms" in (admission.claim() or "")
    ctx.asr_lag = lagging(0.2)  # under the guard, but not yet under half of it
    assert "trails the speech by 200 ms" in (admission.claim() or "")
    ctx.asr_lag = lagging(0.1)
    assert admission.claim() is None
    ctx.asr_lag = lagging(0.2)  # caught up: the guard is back at 300 ms
    assert admission.claim() is None
    ctx.final_lag = lagging(0.5)
    assert "ended turns wait 500 ms" in (admission.claim() or "")
    assert admission.open_sessions == 3


# ---------------------------------------------------------------------- the default limit


def test_default_max_sessions_comes_from_the_asr_workers_and_is_overridable() -> None:
    cfg = load_config([], environ={})
    assert cfg.max_sessions == 0
    cpus = os.cpu_count() or 1
    assert session_limit(cfg) == SESSIONS_PER_ASR_WORKER["pocketsphinx"] * min(4, cpus)
    assert session_limit(load_config(["--asr-workers", "2"], environ={})) == 2 * SESSIONS_PER_ASR_WORKER["pocketsphinx"]
    assert session_limit(load_config(["--max-sessions", "7", "--asr-workers", "2"], environ={})) == 7
    assert session_limit(load_config([], environ={"HARK_MAX_SESSIONS": "9"})) == 9
    assert default_max_sessions(load_config(["--asr", "none"], environ={})) >= 200


def test_default_max_sessions_follows_the_paraformer_runtime(tmp_path: Path) -> None:
    for name in ("config.yaml", "model.pt", "tokens.json"):  # what resolve() checks; nothing loads here
        (tmp_path / name).write_text("{}")
    argv = ["--asr", "funasr-paraformer-streaming", "--asr-model", str(tmp_path), "--asr-workers", "2"]
    for runtime in ("torch", "onnx", "onnx-int8"):
        config = load_config([*argv, "--asr-runtime", runtime], environ={})
        assert default_max_sessions(config) == 2 * PARAFORMER_SESSIONS_PER_WORKER[runtime], runtime
    # auto with no ONNX export beside the model: the engine runs torch, and admission counts torch
    assert default_max_sessions(load_config(argv, environ={})) == 2 * PARAFORMER_SESSIONS_PER_WORKER["torch"]


# ---------------------------------------------------------------------- a real server, ASR hung


async def _talk(peer: Peer, pcm: bytes) -> None:
    """Real speech at real time, again and again, as a live microphone would."""
    with contextlib.suppress(Exception):
        while True:
            await peer.send_pcm(pcm, speed=1.0)


async def _admitted(url: str) -> tuple[bool, dict[str, Any]]:
    peer = await Peer.open(url)
    first = peer.events[0]
    if first["type"] == "session.created":
        await peer.close()
        return True, first
    await peer.wait_closed(timeout=10)
    assert peer.conn.close_code == 1013, peer.conn.close_code
    return False, first


async def test_a_hung_asr_refuses_new_sessions_within_seconds_and_recovers(server_factory: Any, tmp_path: Path) -> None:
    hang = tmp_path / "hang-asr"
    env = {"PYTHONPATH": os.pathsep.join((str(FAULTS), str(REPO))), "HARK_FAULT_HANG_ASR_FILE": str(hang)}
    srv: RunningServer = server_factory("--max-sessions", "10", env=env)
    speaker = await Peer.open(srv.url)
    talking = asyncio.create_task(_talk(speaker, load_pcm("en_librivox_sense_0870")))
    try:
        await speaker.wait_for(lambda e: e["type"] == "transcript.partial", timeout=30)  # the ASR works
        admitted, first = await _admitted(srv.url)
        assert admitted, first

        hang.touch()
        hung_at = time.monotonic()
        refusal: dict[str, Any] | None = None
        while refusal is None and time.monotonic() - hung_at < REFUSAL_DEADLINE_S:
            admitted, first = await _admitted(srv.url)
            if not admitted:
                refusal = first
            else:
                await asyncio.sleep(0.5)
        assert refusal is not None, f"still admitting {REFUSAL_DEADLINE_S:g} s after the ASR hung:\n{srv.log()[-2000:]}"
        assert refusal["code"] == "server_busy" and "behind real time" in refusal["message"], refusal

        hang.unlink()  # the ASR answers again: the inboxes drain and the server admits again
        recovered_at = time.monotonic()
        while not admitted:
            assert time.monotonic() - recovered_at < RECOVERY_DEADLINE_S, f"still refusing:\n{srv.log()[-2000:]}"
            await asyncio.sleep(1.0)
            admitted, first = await _admitted(srv.url)
        srv.assert_alive()
    finally:
        hang.unlink(missing_ok=True)
        talking.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await talking
        await speaker.close()


@pytest.mark.parametrize("fault", ["HARK_FAULT_SLOW_FINAL_S=0.8", "HARK_FAULT_SLOW_ACCEPT_S=0.13"])
async def test_a_recognizer_behind_the_speech_refuses_new_sessions_and_admits_again_after(
    server_factory: Any, fault: str
) -> None:
    """A recognizer that keeps up with the audio but is late with every final (the quiet-machine
    1.5x run: 16 admitted sessions, first audio p50 2.6 s, nothing refused for it): three speakers'
    turns wait 0.8 s each for their transcript, and new sessions are refused for it. Before, the
    frame wait (diluted by the listening sessions; off here) and the pool's busy time missed it.
    Also with each 100 ms of speech taking 130 ms to recognize (behind real time while people
    speak, the finals on time)."""
    name, value = fault.split("=")
    env = {"PYTHONPATH": os.pathsep.join((str(FAULTS), str(REPO))), name: value}
    srv: RunningServer = server_factory(
        *("--max-sessions", "10", "--turn-detection", "silence", "--overload-asr-lag-ms", "300"),
        *("--overload-frame-wait-ms", "0"),
        env=env,
    )
    command = load_pcm("en_goforward_command") + bytes(2 * 16000)  # then a second of silence
    speakers = [await Peer.open(srv.url) for _ in range(3)]
    talking = [asyncio.create_task(_talk(peer, command)) for peer in speakers]
    try:
        refusal: dict[str, Any] | None = None
        started = time.monotonic()
        while refusal is None and time.monotonic() - started < 60.0:
            admitted, first = await _admitted(srv.url)
            if not admitted:
                refusal = first
            else:
                await asyncio.sleep(0.5)
        finals = sum(e["type"] == "transcript.final" for peer in speakers for e in peer.events)
        assert refusal is not None, f"still admitting after {finals} finals:\n{srv.log()[-2000:]}"
        assert refusal["code"] == "server_busy" and "speech recognition is behind" in refusal["message"], refusal
        # what the guard read is on /metrics too (sampled once a second)
        seen = 0.0
        for _ in range(20):
            seen = metric(srv, "hark_asr_lag_seconds")
            if seen > 0.1:
                break
            await asyncio.sleep(0.25)
        assert seen > 0.1, seen
    finally:
        for task in talking:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    # the speakers stop: no turn ends, the window empties, and sessions are admitted again
    recovered_at = time.monotonic()
    admitted = False
    while not admitted:
        assert time.monotonic() - recovered_at < RECOVERY_DEADLINE_S, f"still refusing:\n{srv.log()[-2000:]}"
        await asyncio.sleep(1.0)
        admitted, first = await _admitted(srv.url)
    for peer in speakers:
        await peer.close()
    srv.assert_alive()


def test_the_default_follows_the_cpus_the_server_may_use_not_the_machine() -> None:
    """A server pinned to one CPU (taskset, a container's cpuset) starts one pocketsphinx worker and
    admits what one carries, where os.cpu_count() would have sized it to the whole machine."""
    import subprocess
    import sys

    code = (
        "import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]});"
        "from hark.server.admission import session_limit, asr_worker_count;"
        "from hark.server.config import load_config;"
        "c = load_config([], environ={}); print(asr_worker_count(c), session_limit(c))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", str(SESSIONS_PER_ASR_WORKER["pocketsphinx"])], out.stdout
