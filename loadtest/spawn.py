"""Start a hark-server process on a free loopback port, wait until it is ready, and stop it.

The one way the tests, the benchmarks and `hark-loadtest --spawn-server` start a server:
`python -m hark.server.app --host 127.0.0.1 --port 0 ARGS`, exactly as a user starts it, with its
stderr in a log file and optionally pinned to CPUs (its ASR worker processes inherit the pinning).
Readiness and the bound port come from the ready line (`hark.protocol.ready`). Stopping sends
SIGTERM (a graceful shutdown) and SIGKILL if the server has not exited in time.

`ServerProcess` is a context manager in both worlds: `with ServerProcess(args, log_path=...)` for
tests and benchmarks, `async with` (or `start_async`/`stop_async`) for the harness, whose event
loop must not block while a server loads its models. Only the waiting differs between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

from hark.protocol.ready import parse_ready_line

START_TIMEOUT_S = 180.0  # model loading on a busy 2-core box
STOP_TIMEOUT_S = 30.0
_POLL_S = 0.05  # how often the async waits look at the process
_READER_JOIN_S = 5.0  # a worker process that outlived the server may still hold its stdout open


def parse_cpus(spec: str | None) -> set[int] | None:
    """'0', '0,1', '0-3' -> CPU set; None/'' -> no pinning."""
    if not spec:
        return None
    cpus: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if "-" in part:
            low, high = part.split("-", 1)
            cpus.update(range(int(low), int(high) + 1))
        elif part:
            cpus.add(int(part))
    if not cpus:
        raise ValueError(f"no CPUs in {spec!r}")
    return cpus


def server_command(args: Sequence[str]) -> list[str]:
    """The command line of a server on a free loopback port; the last of repeated options wins."""
    return [sys.executable, "-m", "hark.server.app", "--host", "127.0.0.1", "--port", "0", *args]


class ServerStartError(RuntimeError):
    """The server exited before its ready line, or did not print it in time. The message ends with its log."""

    def __init__(self, reason: str, log_tail: str, returncode: int | None) -> None:
        super().__init__(f"hark-server {reason}:\n{log_tail}")
        self.log_tail = log_tail
        self.returncode = returncode


class ServerProcess:
    """One hark-server child process: launch, wait for the ready line, URL and port, log, stop."""

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        log_path: Path,
        cpus: set[int] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
        stop_timeout_s: float = STOP_TIMEOUT_S,
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        self.cpus = cpus
        self.env = dict(env or {})  # on top of this process's environment
        self.cwd = cwd
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.killed = False  # stop() had to SIGKILL it: it did not shut down on SIGTERM in time
        self._process: subprocess.Popen[str] | None = None
        self._url: str | None = None
        self._news = threading.Event()  # the ready line arrived, or stdout closed
        self._stdout_closed = False
        self._reader: threading.Thread | None = None

    # --- what callers read ---------------------------------------------------------------

    @property
    def process(self) -> subprocess.Popen[str]:
        if self._process is None:
            raise RuntimeError("the server is not launched")
        return self._process

    @property
    def url(self) -> str:
        """The stream URL from the ready line, `ws://127.0.0.1:PORT/v1/stream`."""
        if self._url is None:
            raise RuntimeError("the server is not ready")
        return self._url

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None  # parse_ready_line accepts only URLs with a port
        return port

    @property
    def http_url(self) -> str:
        """The same server over HTTP (/healthz, /metrics, the page), `http://127.0.0.1:PORT`."""
        return f"http://{urlsplit(self.url).netloc}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = 3000) -> str:
        return self.log()[-chars:]

    # --- starting ------------------------------------------------------------------------

    def launch(self) -> None:
        """Start the process without waiting for it to be ready (see `wait_ready`)."""
        if self._process is not None:
            raise RuntimeError("the server is already launched")
        cpus = self.cpus

        def pin() -> None:  # in the child before exec, so every process it starts inherits it
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "w") as log_file:  # the child keeps its own descriptor
            self._process = subprocess.Popen(
                server_command(self.args),
                cwd=self.cwd,
                stdout=subprocess.PIPE,
                stderr=log_file,
                text=True,
                errors="replace",
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
                preexec_fn=pin if cpus is not None else None,
            )
        self._reader = threading.Thread(target=self._read_stdout, name="hark-server-stdout", daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        # to the end, so the server never blocks on a full pipe; only the first ready line matters
        stdout = self.process.stdout
        assert stdout is not None
        for line in stdout:
            if self._url is None and (url := parse_ready_line(line)) is not None:
                self._url = url
                self._news.set()
        self._stdout_closed = True
        self._news.set()

    def _ready_url(self) -> str | None:
        """The URL once ready; None while still loading; raises if the server will never be ready."""
        if self._url is not None:
            return self._url
        if self._stdout_closed:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=_READER_JOIN_S)
            raise ServerStartError("exited before it was ready", self.log_tail(), self.process.returncode)
        return None

    def _not_ready_in_time(self) -> ServerStartError:
        return ServerStartError(f"was not ready within {self.start_timeout_s:.0f} s", self.log_tail(), None)

    def wait_ready(self) -> str:
        """Block until the ready line (returns the URL); raises ServerStartError if it never comes."""
        self._news.wait(self.start_timeout_s)
        url = self._ready_url()
        if url is None:
            raise self._not_ready_in_time()
        return url

    async def wait_ready_async(self) -> str:
        deadline = time.monotonic() + self.start_timeout_s
        while (url := self._ready_url()) is None:
            if time.monotonic() > deadline:
                raise self._not_ready_in_time()
            await asyncio.sleep(_POLL_S)
        return url

    def start(self) -> ServerProcess:
        """Launch and wait until ready; a server that fails to start is stopped before the error."""
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    async def start_async(self) -> ServerProcess:
        self.launch()  # fork and exec: as quick as asyncio's own subprocess start
        try:
            await self.wait_ready_async()
        except BaseException:
            await self.stop_async()
            raise
        return self

    # --- stopping ------------------------------------------------------------------------

    def _terminate(self) -> bool:
        """SIGTERM if still running; False if there is nothing to stop."""
        if self._process is None or self._process.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            self._process.send_signal(signal.SIGTERM)
        return True

    def _kill(self) -> None:
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    def _finish(self) -> int | None:
        if self._reader is not None:
            self._reader.join(_READER_JOIN_S)
        return self._process.returncode if self._process is not None else None

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after `stop_timeout_s`; returns the exit code (None if never launched)."""
        if self._terminate():
            try:
                self.process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self._kill()
                self.process.wait()
        return self._finish()

    async def stop_async(self) -> int | None:
        if self._terminate():
            deadline = time.monotonic() + self.stop_timeout_s
            while self.process.poll() is None:
                if time.monotonic() > deadline and not self.killed:
                    self._kill()
                await asyncio.sleep(_POLL_S)
        return await asyncio.to_thread(self._finish)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> ServerProcess:
        return await self.start_async()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_async()
