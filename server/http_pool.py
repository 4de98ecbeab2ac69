"""What every HTTP-backed engine (LLM, TTS) shares: one pooled aiohttp session, and a circuit breaker
that fails fast while the server is down so a turn does not wait out a timeout per request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import aiohttp

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Where the server is and how long to wait for it; each engine's settings add their own."""

    url: str
    model: str = ""
    api_key: str = ""
    connect_timeout_s: float = 3.0
    first_byte_timeout_s: float = 10.0
    idle_timeout_s: float = 5.0  # between two chunks of a stream
    breaker_failures: int = 3
    breaker_reset_s: float = 10.0
    max_connections: int = 64


def open_pool(settings: HttpSettings) -> aiohttp.ClientSession:
    """A session on `settings.url` with a bearer token where there is a key and a bounded pool."""
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    return aiohttp.ClientSession(
        base_url=settings.url.rstrip("/") + "/",
        connector=aiohttp.TCPConnector(limit=settings.max_connections),
        # reads are timed per chunk by the engines: the first byte may take a cold start, the rest may not
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=settings.connect_timeout_s, sock_read=None),
        headers=headers,
    )


@dataclass(slots=True)
class CircuitBreaker:
    """After `threshold` failures in a row, fail fast for `reset_s`; then let one request probe.

    Only the server's faults count (transport errors, timeouts, 5xx, cut streams); a refused request
    (`refused`, a 4xx) or a cancelled one (barge-in, disconnect) says nothing about its health. While
    open, requests raise `unavailable` naming `service`.
    """

    threshold: int
    reset_s: float
    service: str
    unavailable: type[Exception]
    refused: type[Exception]
    _failures: int = field(default=0, init=False)
    _opened_at: float | None = field(default=None, init=False)
    _probing: bool = field(default=False, init=False)

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None and time.monotonic() - self._opened_at < self.reset_s

    @contextlib.contextmanager
    def attempt(self) -> Iterator[None]:
        """Wrap one request: refuse it while open, and record how it ended on every path."""
        if self._opened_at is not None:
            if self.is_open or self._probing:
                raise self.unavailable(f"the {self.service} failed repeatedly; not trying again for a few seconds")
            self._probing = True  # half-open: this request is the probe
        try:
            yield
        except (asyncio.CancelledError, GeneratorExit):
            self._probing = False  # neutral: the next request may probe
            raise
        except Exception as exc:
            self._probing = False
            if not isinstance(exc, self.refused):
                self._failure()
            raise
        else:
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def _failure(self) -> None:
        self._failures += 1
        if self._failures >= self.threshold:
            if not self.is_open:
                log.error("%s circuit open for %.0f s after %d failures", self.service, self.reset_s, self._failures)
            self._opened_at = time.monotonic()
