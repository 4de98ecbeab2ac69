"""What the HTTP-backed LLM engines share: settings, one pooled client, SSE lines, a circuit breaker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from .base import LLMUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LLMSettings:
    url: str
    model: str = ""
    api_key: str = ""
    max_tokens: int = 200
    temperature: float = 0.7
    top_p: float = 0.8
    connect_timeout_s: float = 3.0
    first_byte_timeout_s: float = 15.0  # a cold prefill of a long history can take seconds
    idle_timeout_s: float = 10.0  # between two chunks of a stream
    breaker_failures: int = 3
    breaker_reset_s: float = 10.0
    max_connections: int = 256


class CircuitBreaker:
    """After `failures` failures in a row, fail fast for `reset_s`; then let one request probe.

    Only the model server's faults count (transport errors, timeouts, 5xx, cut streams); a refused
    request (4xx) or a cancelled one (barge-in, disconnect) says nothing about its health.
    """

    def __init__(self, failures: int, reset_s: float) -> None:
        self._threshold = failures
        self._reset_s = reset_s
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None and time.monotonic() - self._opened_at < self._reset_s

    @contextlib.contextmanager
    def attempt(self) -> Iterator[None]:
        """Wrap one request: refuse it while open, and record how it ended on every path."""
        if self._opened_at is not None:
            if self.is_open or self._probing:
                raise LLMUnavailable("the language model failed repeatedly; not trying again for a few seconds")
            self._probing = True  # half-open: this request is the probe
        try:
            yield
        except LLMRefused:
            self._probing = False
            raise
        except LLMUnavailable:
            self._failure()
            raise
        except (asyncio.CancelledError, GeneratorExit):
            self._probing = False  # neutral: the next request may probe
            raise
        except Exception:
            self._failure()
            raise
        else:
            self._failures = 0
            self._opened_at = None
            self._probing = False

    def _failure(self) -> None:
        self._failures += 1
        self._probing = False
        if self._failures >= self._threshold:
            if self._opened_at is None or not self.is_open:
                log.error("LLM circuit open for %.0f s after %d failures", self._reset_s, self._failures)
            self._opened_at = time.monotonic()


class HttpLLMClient:
    """One pooled aiohttp session per engine; every request carries the session's routing key."""

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        self.breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)
        self._session: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        s = self.settings
        headers = {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}
        self._session = aiohttp.ClientSession(
            base_url=s.url.rstrip("/") + "/",
            connector=aiohttp.TCPConnector(limit=s.max_connections),
            # reads are timed per chunk below: the first byte may take a cold prefill, the rest may not
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout_s, sock_read=None),
            headers=headers,
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "engine not started"
        return self._session

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def fire_and_forget(self, path: str, body: dict[str, Any], timeout_s: float = 2.0) -> None:
        """A best-effort POST (an abort) that nobody waits for, with a short timeout."""

        async def send() -> None:
            try:
                async with asyncio.timeout(timeout_s):
                    async with self.session.post(path.lstrip("/"), json=body) as resp:
                        await resp.read()
            except Exception as exc:  # the request may be gone, or the server down
                log.debug("%s %s failed: %s", path, body, exc)

        task = asyncio.get_running_loop().create_task(send())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def post_json(self, path: str, body: dict[str, Any], routing_key: str) -> Any:
        """A non-streaming POST; raises LLMUnavailable on any transport or server failure."""
        s = self.settings
        with self.breaker.attempt():
            try:
                async with asyncio.timeout(s.first_byte_timeout_s):
                    async with self.session.post(path.lstrip("/"), json=body, headers=_routing(routing_key)) as resp:
                        _check_status(path, resp.status, await resp.text() if resp.status >= 400 else "")
                        return await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise LLMUnavailable(f"{path}: {type(exc).__name__}: {exc}") from exc

    async def stream_events(self, path: str, body: dict[str, Any], routing_key: str) -> AsyncGenerator[Any, None]:
        """POST and yield each `data:` JSON of a server-sent-event stream until `[DONE]`.

        Leaving the iterator early closes the response, which tells the server to abort.
        """
        s = self.settings
        with self.breaker.attempt():
            try:
                request = self.session.post(path.lstrip("/"), json=body, headers=_routing(routing_key))
                resp = await asyncio.wait_for(request, s.first_byte_timeout_s)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise LLMUnavailable(f"{path}: {type(exc).__name__}: {exc}") from exc
            try:
                _check_status(path, resp.status, await resp.text() if resp.status >= 400 else "")
                timeout = s.first_byte_timeout_s  # until the first event: the prefill
                while True:
                    raw = await asyncio.wait_for(resp.content.readline(), timeout)
                    if not raw:
                        raise LLMUnavailable(f"{path}: the stream ended before [DONE]")
                    line = raw.decode("utf-8", "replace").strip()
                    if not line.startswith("data:"):
                        continue
                    timeout = s.idle_timeout_s
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        event = json.loads(data)
                    except json.JSONDecodeError as exc:
                        raise LLMUnavailable(f"{path}: bad stream chunk {data[:80]!r}") from exc
                    yield event
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                raise LLMUnavailable(f"{path}: {type(exc).__name__}: {exc}") from exc
            finally:
                resp.close()


class LLMRefused(LLMUnavailable):
    """The server turned the request down (4xx): our request's fault, not the server's health."""


def _check_status(path: str, status: int, text: str) -> None:
    if status >= 500:
        raise LLMUnavailable(f"{path}: HTTP {status}: {text[:200]}")
    if status >= 400:
        raise LLMRefused(f"{path}: request refused, HTTP {status}: {text[:200]}")


def _routing(session_id: str) -> dict[str, str]:
    # pins a conversation to one SGLang worker behind the model gateway, so its prefix cache is there
    return {"X-SMG-Routing-Key": session_id}
