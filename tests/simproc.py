"""The SGLang simulator in its own process, controlled over HTTP as a test would control SGLang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from standins.sglang.cli import parse_ready_line

REPO = Path(__file__).resolve().parents[1]


class SimProcess:
    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/sim/stats")
        return result

    def faults(self, mode: str, **kwargs: Any) -> None:
        self._call("POST", "/sim/faults", {"mode": mode, **kwargs})

    def reset(self) -> None:
        self._call("POST", "/sim/reset", {})

    def requests(self) -> list[dict[str, Any]]:
        return list(self.stats()["requests"])

    def wait_idle(self, timeout: float = 10.0) -> dict[str, Any]:
        """Until nothing runs or waits on the simulated GPU (requests finished or aborted)."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if not stats["running"] and not stats["queued"] and stats["prefilling"] is None:
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"simulator still busy: {stats['running']} {stats['queued']}")
            time.sleep(0.05)


@contextmanager
def sglang_simulator(*args: str) -> Iterator[SimProcess]:
    process = subprocess.Popen(
        [sys.executable, "-m", "standins.sglang", "--port", "0", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            url = parse_ready_line(line)
            if url is not None:
                yield SimProcess(process, url)
                return
        pytest.fail("the SGLang simulator did not start")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
