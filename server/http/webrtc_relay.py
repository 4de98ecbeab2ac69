"""`--workers N`: a DELETE for a POSTed WebRTC session that runs in another worker process.

The kernel spreads connections over the workers (SO_REUSEPORT), so a WHIP client's DELETE often
reaches a process that never saw its session. Each worker therefore also serves its own DELETE
routes on a Unix socket in the directory the supervisor already shares with every worker (the
Prometheus multiprocess directory, private to this server: mkdtemp's 0700), and a worker that does
not hold the session asks the others there, passing the request's credentials along so the owner
applies the same ownership rule. Unix sockets only: nothing new listens on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp
from aiohttp import web

from ..metrics import MULTIPROC_ENV

log = logging.getLogger(__name__)

SOCKET_PREFIX = "webrtc-"
SOCKET_SUFFIX = ".sock"
RELAY_TIMEOUT_S = 8.0  # the owner waits up to 5 s for the session to stop (webrtc.TEARDOWN_TIMEOUT_S)

Handler = Callable[[web.Request], Awaitable[web.Response]]


def relay_dir(reuse_port: bool) -> Path | None:
    """Where the workers' sockets live, or None for a single server process."""
    shared = os.environ.get(MULTIPROC_ENV)
    return Path(shared) if reuse_port and shared else None


class WorkerRelay:
    """This worker's socket for the others' DELETEs, and the asking of the others."""

    def __init__(self, directory: Path, routes: Sequence[tuple[str, Handler]]) -> None:
        self._dir = directory
        self._routes = routes  # (path pattern, the local-only DELETE handler)
        self._own = directory / f"{SOCKET_PREFIX}{os.getpid()}{SOCKET_SUFFIX}"
        self._runner: web.AppRunner | None = None

    async def start(self, _: web.Application) -> None:
        app = web.Application()
        for pattern, handler in self._routes:
            app.router.add_delete(pattern, handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        with contextlib.suppress(FileNotFoundError):
            self._own.unlink()  # left by a worker with this pid that died
        await web.UnixSite(self._runner, str(self._own)).start()

    async def stop(self, _: web.Application) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            self._own.unlink()

    async def delete_elsewhere(self, request: web.Request) -> bool:
        """Whether another worker held the session and ended it (its 204)."""
        others = [p for p in self._dir.glob(f"{SOCKET_PREFIX}*{SOCKET_SUFFIX}") if p != self._own]
        if not others:
            return False
        headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        target = request.rel_url.path_qs
        results = await asyncio.gather(*(self._ask(path, target, headers) for path in others))
        return any(results)

    @staticmethod
    async def _ask(socket_path: Path, target: str, headers: dict[str, str]) -> bool:
        timeout = aiohttp.ClientTimeout(total=RELAY_TIMEOUT_S)
        try:
            connector = aiohttp.UnixConnector(path=str(socket_path))
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:
                async with client.delete(f"http://worker{target}", headers=headers) as resp:
                    return resp.status == 204
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:  # a worker restarting, a stale socket
            log.info("WebRTC DELETE relay to %s failed: %s", socket_path.name, exc)
            return False
