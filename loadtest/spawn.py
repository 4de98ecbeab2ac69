"""`--spawn-server`: run hark-server as a child process on a free loopback port, optionally pinned to CPUs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

READY = re.compile(r"hark-server ready on (ws://(\S+?):(\d+)/v1/stream)")
START_TIMEOUT_S = 180.0  # model loading on a busy 2-core box
STOP_TIMEOUT_S = 30.0


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


@dataclass(slots=True)
class SpawnedServer:
    process: asyncio.subprocess.Process
    url: str
    log_path: Path
    _drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, args: str, log_path: Path, cpus: set[int] | None = None) -> SpawnedServer:
        def pin() -> None:  # runs in the child before exec: the ASR worker processes inherit it
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log_file:  # noqa: ASYNC230 (once, before the run)
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hark.server.app",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                *shlex.split(args),
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=pin,
            )
        server = cls(process, "", log_path)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                server.url = await server._ready_line()
        except BaseException:
            await server.stop()
            raise
        server._drain = asyncio.create_task(server._drain_stdout(), name="server-stdout")
        return server

    async def _ready_line(self) -> str:
        assert self.process.stdout is not None
        while True:
            line = await self.process.stdout.readline()
            if not line:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"hark-server exited before it was ready:\n{tail}")
            match = READY.search(line.decode(errors="replace"))
            if match:
                return match.group(1)

    async def _drain_stdout(self) -> None:
        """Keep reading stdout so the child never blocks on a full pipe."""
        assert self.process.stdout is not None
        while await self.process.stdout.readline():
            pass

    async def stop(self) -> int | None:
        """SIGTERM (a graceful shutdown), SIGKILL if it does not exit in time; returns the exit code."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self._drain is not None:
            self._drain.cancel()
            await asyncio.gather(self._drain, return_exceptions=True)
        return self.process.returncode
