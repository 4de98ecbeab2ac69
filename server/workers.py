"""`--workers N`: N server processes accepting on one port (SO_REUSEPORT), one supervisor.

Why processes: one asyncio loop runs on one core, and the work per session that stays in the
server process (VAD, framing, pacing, the protocol) is Python. The kernel spreads new connections
over the workers' listening sockets; a session lives in one worker for its whole life. Each worker
is the ordinary single-process server started with `--reuse-port`; the supervisor only starts them,
prints the ready line once all are ready, restarts one that dies, and stops them on SIGINT/SIGTERM.
Metrics: every worker writes to a shared PROMETHEUS_MULTIPROC_DIR, and /metrics on any worker
merges them (server/metrics.py).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

from prometheus_client import multiprocess

from hark.protocol.ready import format_ready_line, parse_ready_line, stream_url

from .config import ServerConfig
from .metrics import MULTIPROC_ENV
from .proctree import usable_cpus

log = logging.getLogger("hark.workers")

START_TIMEOUT_S = 300.0  # model loading (a large FunASR model) can take minutes
MAX_RESTARTS_PER_MINUTE = 5


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def worker_args(config: ServerConfig, argv: Sequence[str], port: int) -> list[str]:
    """The user's arguments, then what each worker must differ in (argparse: the last one wins)."""
    n = config.workers
    cpus = usable_cpus()
    extra = ["--workers", "1", "--port", str(port), "--reuse-port"]
    # shares of the whole machine, so N workers do not each size themselves to all of it
    if config.asr_workers == 0:
        extra += ["--asr-workers", str(max(1, min(4, cpus) // n))]
    extra += ["--max-sessions", str(math.ceil(config.max_sessions / n))]
    return [*argv, *extra]


class _Worker:
    def __init__(self, index: int, args: list[str], env: dict[str, str]) -> None:
        self.index = index
        self._args = args
        self._env = env
        self.process: subprocess.Popen[str] | None = None
        self.ready = threading.Event()

    def start(self) -> None:
        self.ready.clear()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hark.server.app", *self._args],
            stdout=subprocess.PIPE,
            text=True,
            env=self._env,
        )
        threading.Thread(target=self._read_stdout, name=f"worker-{self.index}-stdout", daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:  # drained to the end so the worker never blocks on a full pipe
            if parse_ready_line(line) is not None:
                self.ready.set()


def serve_workers(config: ServerConfig, argv: Sequence[str]) -> int:
    """Run the supervisor until SIGINT/SIGTERM; returns the exit status."""
    port = config.port or _free_port(config.host)
    metrics_dir = tempfile.mkdtemp(prefix="hark-metrics-")
    env = {**os.environ, MULTIPROC_ENV: metrics_dir, "PYTHONUNBUFFERED": "1"}
    args = worker_args(config, argv, port)
    workers = [_Worker(i, args, env) for i in range(config.workers)]
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        for worker in workers:
            while not worker.ready.wait(0.2):
                assert worker.process is not None
                if stopping.is_set() or worker.process.poll() is not None or time.monotonic() > deadline:
                    print(f"hark-server: worker {worker.index} did not start", file=sys.stderr)
                    return 1
        print(format_ready_line(stream_url(config.host, port)), flush=True)
        print(f"  {config.workers} worker processes; the page: http://{config.host}:{port}/", flush=True)
        _supervise(workers, stopping)
        return 0
    finally:
        _stop_all(workers)
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(workers: list[_Worker], stopping: threading.Event) -> None:
    restarts: list[float] = []
    while not stopping.wait(0.5):
        for worker in workers:
            assert worker.process is not None
            code = worker.process.poll()
            if code is None:
                continue
            multiprocess.mark_process_dead(worker.process.pid)  # type: ignore[no-untyped-call]  # its gauges leave the sums
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60.0]
            if len(restarts) >= MAX_RESTARTS_PER_MINUTE:
                log.error("workers keep dying (%d restarts in a minute): giving up", len(restarts))
                stopping.set()
                return
            log.error("worker %d exited with %s; restarting it", worker.index, code)
            restarts.append(now)
            worker.start()


def _stop_all(workers: list[_Worker]) -> None:
    for worker in workers:
        if worker.process is not None and worker.process.poll() is None:
            worker.process.terminate()
    for worker in workers:
        if worker.process is None:
            continue
        try:
            worker.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.process.kill()
