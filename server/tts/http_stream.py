"""What the HTTP TTS engines share: settings, one pooled client that streams a response body with
timeouts per read, a circuit breaker (both server/http_pool.py's), and the byte-stream decoders
(raw PCM16, streamed WAV)."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp
import numpy as np

from .. import http_pool
from .base import Pcm16
from .streaming import StreamingTTSEngine, TTSRefused, TTSUnavailable

READ_BYTES = 8192  # per read of a streamed body: ~170 ms of 24 kHz PCM16, small enough to start early


# the defaults fit: a cold model or a long reference clip to encode within the first-byte timeout
TTSHttpSettings = http_pool.HttpSettings


class HttpTTSClient:
    """One pooled aiohttp session per engine."""

    def __init__(self, settings: TTSHttpSettings) -> None:
        if not settings.url:
            raise ValueError("an HTTP TTS engine needs --tts-url (e.g. http://127.0.0.1:8880)")
        self.settings = settings
        # fast failures matter for a voice reply: each chunk would otherwise wait out a connect timeout
        # while the text has long been shown
        self.breaker = http_pool.CircuitBreaker(
            settings.breaker_failures,
            settings.breaker_reset_s,
            service="TTS server",
            unavailable=TTSUnavailable,
            refused=TTSRefused,
        )
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = http_pool.open_pool(self.settings)

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


class HttpTTSEngine(StreamingTTSEngine):
    """A streaming engine behind one HTTP server (`_http`): on start its cloned-voice store, where it
    has one, loads and its pooled client opens; the client closes with the engine."""

    _http: HttpTTSClient

    async def start(self) -> None:
        if self.voices is not None:
            await self.voices.load()
        await self._http.start()

    async def aclose(self) -> None:
        await self._http.aclose()


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
