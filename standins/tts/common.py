"""What the three TTS stand-ins share: the request log, injected faults, the latency model and the
paced, chunked streaming of synthesized audio (labelled stand-in: espeak-ng audio)."""

from __future__ import annotations

import asyncio
import hashlib
import struct
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from aiohttp import web

from .voice import EspeakVoice

SERVER_HEADER = "hark-tts-standin (espeak-ng, not a neural TTS)"


@dataclass
class Timing:
    first_byte_ms: float = 100.0  # the model's time to first audio
    speed: float = 4.0  # audio produced this many times faster than real time
    chunk_ms: int = 200  # audio per streamed piece


@dataclass
class Faults:
    mode: str = "none"  # none | refuse (drop the connection) | error (HTTP status) | slow | cut
    status: int = 503
    delay_s: float = 0.0  # slow: before the first byte
    after_bytes: int = 0  # cut: body bytes sent before the connection is dropped
    count: int = -1  # requests the fault applies to (-1: all)

    def take(self) -> Faults | None:
        if self.mode == "none" or self.count == 0:
            return None
        if self.count > 0:
            self.count -= 1
        return Faults(self.mode, self.status, self.delay_s, self.after_bytes)


@dataclass
class RequestRecord:
    route: str
    fields: dict[str, Any]
    reference_sha256: str | None = None
    reference_bytes: int = 0
    reference_text: str | None = None
    started: float = field(default_factory=time.time)
    first_byte: float | None = None
    finished: float | None = None  # the last byte written
    disconnected: bool = False  # the client closed the connection before the end
    bytes_sent: int = 0
    status: int = 200

    def reference(self, audio: bytes, text: str) -> None:
        self.reference_sha256 = hashlib.sha256(audio).hexdigest()
        self.reference_bytes = len(audio)
        self.reference_text = text


class StandinState:
    def __init__(self, api: str, timing: Timing) -> None:
        self.api = api
        self.timing = timing
        self.faults = Faults()
        self.requests: list[RequestRecord] = []
        self.voice = EspeakVoice()

    def record(self, route: str, fields: dict[str, Any]) -> RequestRecord:
        rec = RequestRecord(route, fields)
        self.requests.append(rec)
        del self.requests[:-1000]  # bounded: a benchmark sends many
        return rec

    async def synthesize(self, text: str, voice: str, rate: int) -> npt.NDArray[np.int16]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.voice.executor, self.voice.synthesize_sync, text, voice, rate)


async def stream_audio(
    request: web.Request,
    state: StandinState,
    rec: RequestRecord,
    body: Callable[[], Any],
    *,
    rate: int,
    content_type: str | None,
    header: bytes = b"",
    extra_headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Send `header` then the PCM16 of `await body()` in pieces paced by the latency model, chunked
    (no Content-Length), honouring the injected fault. `body` runs after the 200 is sent, like the
    real servers' generators: its failure cuts the stream."""
    fault = state.faults.take()
    timing = state.timing
    if fault is not None and fault.mode == "slow":
        await asyncio.sleep(fault.delay_s)
    resp = web.StreamResponse(headers={"Server": SERVER_HEADER, **(extra_headers or {})})
    if content_type:
        resp.content_type = content_type
    resp.enable_chunked_encoding()
    started = time.monotonic()
    await resp.prepare(request)
    limit = fault.after_bytes if fault is not None and fault.mode == "cut" else None
    try:
        pcm = await body()
        data = header + np.ascontiguousarray(pcm, dtype="<i2").tobytes()
        piece = max(2, rate * timing.chunk_ms // 1000 * 2)
        await asyncio.sleep(max(0.0, timing.first_byte_ms / 1000.0 - (time.monotonic() - started)))
        first = len(header) + piece  # the header goes with the first piece of audio
        offsets = [0, *range(first, len(data), piece)]
        for i, start in enumerate(offsets):
            end = offsets[i + 1] if i + 1 < len(offsets) else len(data)
            if i > 0:
                await asyncio.sleep((end - start) / 2 / rate / timing.speed)
            chunk = data[start:end]
            if limit is not None and rec.bytes_sent + len(chunk) >= limit:
                await resp.write(chunk[: max(0, limit - rec.bytes_sent)])
                raise _Cut
            if request.transport is None or request.transport.is_closing():
                raise ConnectionResetError
            await resp.write(chunk)
            rec.bytes_sent += len(chunk)
            if rec.first_byte is None:
                rec.first_byte = time.time()
        await resp.write_eof()
        rec.finished = time.time()
    except (ConnectionResetError, ConnectionError):
        rec.disconnected = True
    except (_Cut, _ModelError):
        rec.status = 0  # the stream was cut on purpose (a fault, or the model "failed" mid-stream)
        if request.transport is not None:
            request.transport.close()
    return resp


class _Cut(Exception):
    pass


class _ModelError(Exception):
    """What a real server's generator raises after the 200: the stand-ins cut the stream for it."""


def model_error() -> BaseException:
    return _ModelError()


def admin_routes(state: StandinState) -> list[web.RouteDef]:
    async def get_requests(_: web.Request) -> web.Response:
        return web.json_response({"api": state.api, "requests": [asdict(r) for r in state.requests]})

    async def set_faults(request: web.Request) -> web.Response:
        body = await request.json()
        state.faults = Faults(**body)
        return web.json_response(asdict(state.faults))

    async def set_timing(request: web.Request) -> web.Response:
        state.timing = Timing(**{**asdict(state.timing), **await request.json()})
        return web.json_response(asdict(state.timing))

    async def reset(_: web.Request) -> web.Response:
        state.requests.clear()
        state.faults = Faults()
        return web.json_response({})

    return [
        web.get("/_standin/requests", get_requests),
        web.post("/_standin/faults", set_faults),
        web.post("/_standin/timing", set_timing),
        web.post("/_standin/reset", reset),
    ]


async def early_fault(
    request: web.Request, state: StandinState, error: Callable[[int, str], web.Response]
) -> web.Response | None:
    """The faults that hit before any audio: a dropped connection, or an HTTP error in the API's shape.
    Peeks without consuming when the fault is one for `stream_audio`."""
    fault = state.faults
    if fault.mode not in ("refuse", "error") or fault.count == 0:
        return None
    taken = fault.take()
    assert taken is not None
    if taken.mode == "refuse":
        if request.transport is not None:
            request.transport.close()
        raise ConnectionResetError
    return error(taken.status, "injected fault: the stand-in refuses this request")


def streaming_wav_header(rate: int, riff_size: int, data_size: int) -> bytes:
    """A PCM16 mono WAV header whose sizes the server cannot know when it starts streaming: each API's
    stand-in writes the placeholders its real server does."""
    return (
        b"RIFF"
        + struct.pack("<I", riff_size)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_size)
    )
