"""What the HTTP-backed LLM engines share: settings, one pooled client, SSE lines, a circuit breaker
(the pool and the breaker are server/http_pool.py's)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import aiohttp

from .. import http_pool
from .base import LLMUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LLMSettings(http_pool.HttpSettings):
    max_tokens: int = 200
    temperature: float = 0.7
    top_p: float = 0.8
    first_byte_timeout_s: float = 15.0  # a cold prefill of a long history can take seconds
    idle_timeout_s: float = 10.0
    max_connections: int = 256


def llm_breaker(failures: int, reset_s: float) -> http_pool.CircuitBreaker:
    """The LLM's breaker: a 4xx (LLMRefused) is our request's fault and does not count."""
    return http_pool.CircuitBreaker(
        failures, reset_s, service="language model", unavailable=LLMUnavailable, refused=LLMRefused
    )


class HttpLLMClient:
    """One pooled aiohttp session per engine; every request carries the session's routing key."""

    def __init__(self, settings: LLMSettings) -> None:
        self.settings = settings
        self.breaker = llm_breaker(settings.breaker_failures, settings.breaker_reset_s)
        self._session: aiohttp.ClientSession | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._session = http_pool.open_pool(self.settings)

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
