"""What every stand-in shares as a process: serving until SIGINT/SIGTERM, and (for tests and benchmarks)
starting one in a child process, reading its ready line and calling its JSON control routes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


async def wait_for_stop_signal() -> None:
    """Return on the first SIGINT or SIGTERM: a stand-in's `main` then stops its server cleanly."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()


class StandinClient:
    """The control side of a running stand-in: JSON over its HTTP routes, answered within 10 s."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read() or b"null")


@contextlib.contextmanager
def launched(
    module: str, args: Sequence[str], parse_ready_line: Callable[[str], str | None]
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python -m module args...` from the checkout, its URL from its ready line; terminated
    (killed after 10 s) on leaving."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args],
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
                raise AssertionError(f"{module} exited before its ready line (rc {process.poll()})")
            url = parse_ready_line(line)
        yield process, url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
