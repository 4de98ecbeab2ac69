"""Shared fixtures: the speech corpus, and real hark-server processes on free loopback ports."""

from __future__ import annotations

import json
import os
import time
import urllib.request
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hark.loadtest.spawn import ServerProcess, ServerStartError

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("HARK_CORPUS", REPO.parent / "shared" / "corpus"))
# The recognizer-lag admission guard (--overload-asr-lag-ms) reads how fast this machine recognizes: a
# loaded CI box makes it slow, and tests of other features must not meet server_busy for that.
# Every server the tests start inherits this; tests/test_overload.py turns the guard on where it is
# the subject.
os.environ.setdefault("HARK_OVERLOAD_ASR_LAG_MS", "0")


def corpus_path(name: str) -> Path:
    path = CORPUS / "audio" / f"{name}.wav"
    if not path.is_file():
        pytest.fail(
            f"corpus clip {path} is missing: the tests need ../shared/corpus beside the checkout "
            "(or HARK_CORPUS pointing at it)"
        )
    return path


def load_pcm(name: str) -> bytes:
    with wave.open(str(corpus_path(name))) as wav:
        assert wav.getframerate() == 16000 and wav.getnchannels() == 1 and wav.getsampwidth() == 2
        return wav.readframes(wav.getnframes())


def manifest() -> dict[str, dict[str, Any]]:
    with open(CORPUS / "manifest.json") as fh:
        return {item["name"]: item for item in json.load(fh)}


class RunningServer(ServerProcess):
    """A server started by the fixtures below (hark.loadtest.spawn, the one way anything starts one)."""

    @property
    def http(self) -> str:
        return self.http_url

    def assert_alive(self) -> None:
        assert self.process.poll() is None, f"hark-server died:\n{self.log()[-4000:]}"


def start_server(tmp_dir: Path, *args: str, env: dict[str, str] | None = None) -> RunningServer:
    """Start the real CLI on port 0 and wait for its ready line."""
    log_path = tmp_dir / f"server-{time.monotonic_ns()}.log"
    running = RunningServer(args, log_path=log_path, env=env, cwd=REPO, stop_timeout_s=20)
    try:
        running.start()
    except ServerStartError as exc:
        pytest.fail(f"hark-server did not start: {exc}")
    return running


def stop_server(server: RunningServer) -> None:
    server.stop()
    if server.killed:
        pytest.fail(f"hark-server did not stop on SIGTERM:\n{server.log()[-3000:]}")


@contextmanager
def serving(tmp_dir: Path, *args: str) -> Iterator[RunningServer]:
    """A server for a fixture's scope; its tests must leave it alive, and it must exit 0 on SIGTERM."""
    running = start_server(tmp_dir, *args)
    yield running
    running.assert_alive()
    stop_server(running)
    assert running.process.returncode == 0, running.log()[-3000:]


def metric(server: RunningServer, name: str) -> float:
    """The sum of a metric's samples on /metrics (all label sets, or one where `name` has its labels)."""
    body = urllib.request.urlopen(f"{server.http}/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie waiting to be reaped does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One default server for the whole run (engines load once); tests must leave it healthy."""
    with serving(tmp_path_factory.mktemp("server"), "--max-sessions", "64") as running:
        yield running


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[RunningServer] = []

    def factory(*args: str, env: dict[str, str] | None = None) -> RunningServer:
        running = start_server(tmp_path, *args, env=env)
        started.append(running)
        return running

    yield factory
    for running in started:
        stop_server(running)
