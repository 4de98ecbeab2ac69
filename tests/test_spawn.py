"""hark.loadtest.spawn: the one helper that starts a hark-server for tests, benchmarks and the harness.

Real server processes (`--asr none`: no ASR model to load, so each starts in a few seconds).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO

from hark.loadtest.spawn import ServerProcess, ServerStartError

QUICK = ("--asr", "none")


def _healthz(server: ServerProcess) -> int:
    with urllib.request.urlopen(f"{server.http_url}/healthz", timeout=10) as resp:
        status: int = resp.status
        return status


def test_sync_form_waits_for_ready_exposes_the_url_and_stops_gracefully(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "server.log"  # a folder that does not exist yet
    with ServerProcess(QUICK, log_path=log_path, cwd=REPO) as server:
        assert server.url == f"ws://127.0.0.1:{server.port}/v1/stream"
        assert server.http_url == f"http://127.0.0.1:{server.port}"
        assert _healthz(server) == 200  # the ready line comes after the models loaded
        assert server.process.poll() is None
    assert server.process.returncode == 0 and not server.killed, server.log_tail()
    assert "shutting down" in server.log()  # stderr went to the log file


async def test_async_form_pins_the_server_to_the_cpus_asked(tmp_path: Path) -> None:
    cpus = {min(os.sched_getaffinity(0))}
    server = ServerProcess(QUICK, log_path=tmp_path / "server.log", cpus=cpus)
    async with server:
        assert os.sched_getaffinity(server.process.pid) == cpus
        assert server.port > 0
    assert server.process.returncode == 0 and not server.killed


def test_a_server_that_cannot_start_raises_with_its_log(tmp_path: Path) -> None:
    server = ServerProcess(("--asr", "no-such-engine"), log_path=tmp_path / "server.log")
    with pytest.raises(ServerStartError) as info:
        server.start()
    assert info.value.returncode == 2  # argparse's refusal
    assert "no-such-engine" in info.value.log_tail and "no-such-engine" in str(info.value)
    with pytest.raises(RuntimeError, match="not ready"):
        _ = server.url


def test_a_server_not_ready_in_time_is_stopped(tmp_path: Path) -> None:
    server = ServerProcess(QUICK, log_path=tmp_path / "server.log", start_timeout_s=0.01)
    with pytest.raises(ServerStartError, match=r"was not ready within 0 s"):
        server.start()
    assert server.process.poll() is not None  # start() does not leave it behind


def test_a_server_that_does_not_stop_on_sigterm_is_killed(tmp_path: Path) -> None:
    server = ServerProcess(QUICK, log_path=tmp_path / "server.log", stop_timeout_s=0.5).start()
    os.kill(server.process.pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    try:
        assert server.stop() == -signal.SIGKILL
    finally:
        if server.process.poll() is None:
            server.process.kill()
    assert server.killed


def test_stop_is_safe_before_launch_and_after_exit(tmp_path: Path) -> None:
    server = ServerProcess(QUICK, log_path=tmp_path / "server.log")
    assert server.stop() is None
    server.start()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    assert server.stop() == 0 and not server.killed


def test_loadtest_spawn_server_runs_and_stops_its_server(tmp_path: Path) -> None:
    report = tmp_path / "report"
    cmd = [sys.executable, "-m", "hark.loadtest.cli", "--spawn-server", "--asr none --max-sessions 8"]
    cmd += ["--sessions", "1", "--ramp", "0", "--duration", "2", "--report", str(report)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]  # 1: an SLO verdict, not a crash
    assert "hark-loadtest: server ready on ws://127.0.0.1:" in proc.stdout, proc.stdout[-3000:]
    meta = json.loads((report / "report.json").read_text())["meta"]
    assert meta["server_exit_code"] == 0 and meta["spawned_server_args"] == "--asr none --max-sessions 8"
    assert meta["url"].startswith("ws://127.0.0.1:") and "shutting down" in (report / "server.log").read_text()


def test_loadtest_says_why_a_spawned_server_did_not_start(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "hark.loadtest.cli", "--spawn-server", "--asr no-such-engine"]
    cmd += ["--sessions", "1", "--duration", "1", "--report", str(tmp_path / "report")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 2
    assert "could not start the server: hark-server exited before it was ready" in proc.stderr, proc.stderr
    assert "no-such-engine" in proc.stderr
