"""What the HTTP TTS engines share: settings, one pooled client that streams a response body with
timeouts per read, a circuit breaker, and the byte-stream decoders (raw PCM16, streamed WAV)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from .base import Pcm16
from .streaming import TTSRefused, TTSUnavailable

log = logging.getLogger(__name__)

READ_BYTES = 8192  # per read of a streamed body: ~170 ms of 24 kHz PCM16, small enough to start early


@dataclass(frozen=True, slots=True)
class TTSHttpSettings:
    url: str
    model: str = ""
    api_key: str = ""
    connect_timeout_s: float = 3.0
    first_byte_timeout_s: float = 10.0  # a cold model or a long reference clip to encode
    idle_timeout_s: float = 5.0  # between two pieces of one stream
    breaker_failures: int = 3
    breaker_reset_s: float = 10.0
    max_connections: int = 64


class TTSCircuitBreaker:
    """After `failures` failures in a row, fail fast for `reset_s`; then let one request probe.

    Only the server's faults count; a refused request (4xx) or a cancelled one (barge-in) says
    nothing about its health. Fast failures matter for a voice reply: each chunk would otherwise wait
    out a connect timeout while the text has long been shown.
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
        if self._opened_at is not None:
            if self.is_open or self._probing:
                raise TTSUnavailable("the TTS server failed repeatedly; not trying again for a few seconds")
            self._probing = True  # half-open: this request is the probe
        try:
            yield
        except TTSRefused:
            self._probing = False
            raise
        except (asyncio.CancelledError, GeneratorExit):
            self._probing = False
            raise
        except Exception:
            self._failures += 1
            self._probing = False
            if self._failures >= self._threshold:
                if not self.is_open:
                    log.error("TTS circuit open for %.0f s after %d failures", self._reset_s, self._failures)
                self._opened_at = time.monotonic()
            raise
        else:
            self._failures = 0
            self._opened_at = None
            self._probing = False


class HttpTTSClient:
    """One pooled aiohttp session per engine."""

    def __init__(self, settings: TTSHttpSettings) -> None:
        if not settings.url:
            raise ValueError("an HTTP TTS engine needs --tts-url (e.g. http://127.0.0.1:8880)")
        self.settings = settings
        self.breaker = TTSCircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        s = self.settings
        headers = {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}
        self._session = aiohttp.ClientSession(
            base_url=s.url.rstrip("/") + "/",
            connector=aiohttp.TCPConnector(limit=s.max_connections),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout_s, sock_read=None),
            headers=headers,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def stream(self, path: str, **request: Any) -> AsyncGenerator[bytes, None]:
        """POST and yield the response body as it arrives. Every failure is TTSUnavailable (TTSRefused
        for a 4xx); leaving early closes the connection, which is how these servers learn to stop."""
        session = self._session
        if session is None:
            raise RuntimeError("the TTS engine was not started")
        s = self.settings
        with self.breaker.attempt():
            try:
                resp = await asyncio.wait_for(session.post(path.lstrip("/"), **request), s.first_byte_timeout_s)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise TTSUnavailable(f"{path}: {_describe(exc)}") from exc
            try:
                if resp.status >= 400:
                    detail = _error_detail(await asyncio.wait_for(resp.read(), s.idle_timeout_s))
                    kind = TTSRefused if resp.status < 500 else TTSUnavailable
                    raise kind(f"{path}: HTTP {resp.status}: {detail}")
                timeout = s.first_byte_timeout_s
                while True:
                    data = await asyncio.wait_for(resp.content.read(READ_BYTES), timeout)
                    if not data:
                        return
                    timeout = s.idle_timeout_s
                    yield data
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise TTSUnavailable(f"{path}: {_describe(exc)}") from exc
            finally:
                resp.close()  # not release(): an unread body must drop the connection, not wait for it


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the audio stream was cut short"
    return f"{type(exc).__name__}: {exc}"


def _error_detail(body: bytes) -> str:
    """The message of the error shapes these servers answer with: OpenAI's {"error": {"message"}},
    Fish Speech's {"message"}, FastAPI's {"detail"}; else the start of the body."""
    text = body[:2000].decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(data, dict):
        inner = data.get("error")
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])[:200]
        for key in ("message", "detail"):
            if key in data:
                return str(data[key])[:200]
    return text[:200]


class Pcm16Assembler:
    """Bytes of a little-endian PCM16 stream, cut anywhere, to whole samples."""

    def __init__(self) -> None:
        self._odd = b""

    def feed(self, data: bytes) -> Pcm16:
        data = self._odd + data
        cut = len(data) - len(data) % 2
        self._odd = data[cut:]
        pcm: Pcm16 = np.frombuffer(data[:cut], dtype="<i2").astype(np.int16)
        return pcm


class WavStreamError(ValueError):
    """A streamed WAV the decoder cannot play: not RIFF/WAVE, or not PCM16 mono."""


class WavStreamDecoder:
    """A WAV arriving in pieces: the header (whose sizes a streaming server leaves 0 or 0xFFFFFFFF)
    is parsed once it is complete, then every byte of the data chunk is PCM16."""

    def __init__(self) -> None:
        self._head = b""
        self.sample_rate = 0
        self._pcm: Pcm16Assembler | None = None

    def feed(self, data: bytes) -> Pcm16:
        if self._pcm is not None:
            return self._pcm.feed(data)
        self._head += data
        start = self._data_start()
        if start is None:
            if len(self._head) > 4096:
                raise WavStreamError("no data chunk in the first 4 KiB of the WAV stream")
            return np.zeros(0, dtype=np.int16)
        self._pcm = Pcm16Assembler()
        rest, self._head = self._head[start:], b""
        return self._pcm.feed(rest)

    def _data_start(self) -> int | None:
        head = self._head
        if len(head) < 12:
            return None
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise WavStreamError(f"not a WAV stream (starts with {head[:12]!r})")
        pos = 12
        while len(head) >= pos + 8:
            chunk_id, size = head[pos : pos + 4], struct.unpack("<I", head[pos + 4 : pos + 8])[0]
            if chunk_id == b"data":
                if not self.sample_rate:
                    raise WavStreamError("WAV data before its fmt chunk")
                return pos + 8
            if len(head) < pos + 8 + size:
                return None
            if chunk_id == b"fmt ":
                fmt, channels, rate, _, _, bits = struct.unpack("<HHIIHH", head[pos + 8 : pos + 24])
                if fmt not in (1, 0xFFFE) or channels != 1 or bits != 16:
                    raise WavStreamError(f"WAV is format {fmt}, {channels} channels, {bits} bits: want PCM16 mono")
                self.sample_rate = rate
            pos += 8 + size + size % 2
        return None
