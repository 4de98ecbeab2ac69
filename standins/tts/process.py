"""A TTS stand-in in its own process (`tts_standin`), controlled over its `/_standin/` routes: for tests
and bench/tts.py.

Its own process because espeak-ng's state is process-global: Hark's espeak engine in the test
process must not share it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..process import StandinClient, launched
from .cli import parse_ready_line


class TTSStandin(StandinClient):
    def __init__(self, process: subprocess.Popen[str], url: str, api: str) -> None:
        super().__init__(process, url)
        self.api = api

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
    with launched("standins.tts", [api, "--port", "0", *args], parse_ready_line) as (process, url):
        yield TTSStandin(process, url, api)
