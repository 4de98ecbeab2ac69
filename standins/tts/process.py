"""A TTS stand-in in its own process (`tts_standin`), controlled over its `/_standin/` routes: for tests
and bench/tts.py.

Its own process because espeak-ng's state is process-global: Hark's espeak engine in the test
process must not share it."""

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

from .cli import parse_ready_line

REPO = Path(__file__).resolve().parents[2]


class TTSStandin:
    def __init__(self, process: subprocess.Popen[str], url: str, api: str) -> None:
        self.process = process
        self.url = url
        self.api = api

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")

    def requests(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/_standin/requests")["requests"])

    def faults(self, mode: str, **kwargs: Any) -> None:
        self._call("POST", "/_standin/faults", {"mode": mode, **kwargs})

    def timing(self, **kwargs: Any) -> None:
        self._call("POST", "/_standin/timing", kwargs)

    def reset(self) -> None:
        self._call("POST", "/_standin/reset", {})

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The request log once `predicate(log)` holds (a disconnect is seen a moment after it happens)."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.requests()
            if predicate(log):
                return log
            if time.monotonic() > deadline:
                raise AssertionError(f"the stand-in's log never matched: {log}")
            time.sleep(0.05)


@contextmanager
def tts_standin(api: str, *args: str) -> Iterator[TTSStandin]:
    process = subprocess.Popen(
        [sys.executable, "-m", "standins.tts", api, "--port", "0", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    try:
        url = None
        while url is None:
            line = process.stdout.readline()
            if not line:
                raise AssertionError(f"the {api} stand-in exited before its ready line (rc {process.poll()})")
            url = parse_ready_line(line)
        yield TTSStandin(process, url, api)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
