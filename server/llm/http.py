"""What the HTTP-backed LLM engines share: settings, one pooled client, SSE lines, a circuit breaker."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator
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
    """After `failures` failures in a row, fail fast for `reset_s`; then let one request probe."""

    def __init__(self, failures: int, reset_s: float) -> None:
        self._threshold = failures
        self._reset_s = reset_s
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None and time.monotonic() - self._opened_at < self._reset_s

    def check(self) -> None:
        if self._opened_at is None:
            return
        if self.is_open or self._probing:
            raise LLMUnavailable("the language model failed repeatedly; not trying again for a few seconds")
        self._probing = True  # half-open: this request is the probe

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def failure(self) -> None:
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

    async def start(self) -> None:
        s = self.settings
        headers = {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}
        self._session = aiohttp.ClientSession(
            base_url=s.url.rstrip("/") + "/",
            connector=aiohttp.TCPConnector(limit=s.max_connections),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout_s, sock_read=s.idle_timeout_s),
            headers=headers,
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "engine not started"
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post_json(self, path: str, body: dict[str, Any], routing_key: str) -> Any:
        """A non-streaming POST; raises LLMUnavailable on any transport or server failure."""
        try:
            async with self.session.post(path.lstrip("/"), json=body, headers=_routing(routing_key)) as resp:
                if resp.status >= 500:
                    raise LLMUnavailable(f"{path}: HTTP {resp.status}")
                resp.raise_for_status()
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LLMUnavailable(f"{path}: {type(exc).__name__}: {exc}") from exc

    async def stream_events(self, path: str, body: dict[str, Any], routing_key: str) -> AsyncGenerator[Any, None]:
        """POST and yield each `data:` JSON of a server-sent-event stream until `[DONE]`.

        Leaving the iterator early closes the response, which tells the server to abort.
        """
        self.breaker.check()
        s = self.settings
        ok = False
        try:
            request = self.session.post(path.lstrip("/"), json=body, headers=_routing(routing_key))
            resp = await asyncio.wait_for(request, s.first_byte_timeout_s)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.breaker.failure()
            raise LLMUnavailable(f"{path}: {type(exc).__name__}: {exc}") from exc
        try:
            if resp.status >= 500:
                raise LLMUnavailable(f"{path}: HTTP {resp.status}: {(await resp.text())[:200]}")
            if resp.status >= 400:
                raise LLMUnavailable(f"{path}: request refused, HTTP {resp.status}: {(await resp.text())[:200]}")
            async for raw in resp.content:
                line = raw.decode("utf-8", "replace").strip()
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    ok = True
                    return
                try:
                    yield json.loads(data)
                except json.JSONDecodeError as exc:
                    raise LLMUnavailable(f"{path}: bad stream chunk {data[:80]!r}") from exc
            raise LLMUnavailable(f"{path}: the stream ended before [DONE]")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise LLMUnavailable(f"{path}: {type(exc).__name__}: {exc}") from exc
        except LLMUnavailable:
            raise
        except BaseException:  # cancelled (barge-in, disconnect): not the server's fault
            ok = True
            raise
        finally:
            resp.close()
            if ok:
                self.breaker.success()
            else:
                self.breaker.failure()


def _routing(session_id: str) -> dict[str, str]:
    # pins a conversation to one SGLang worker behind the model gateway, so its prefix cache is there
    return {"X-SMG-Routing-Key": session_id}
