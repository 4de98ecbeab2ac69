"""The SGLang simulator in its own process, controlled over HTTP as a test would control SGLang."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from standins.process import StandinClient, launched
from standins.sglang.cli import parse_ready_line


class SimProcess(StandinClient):
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
    with launched("standins.sglang", ["--port", "0", *args], parse_ready_line) as (process, url):
        yield SimProcess(process, url)
