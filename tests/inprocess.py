"""A Session in this process, with the real Silero VAD and stand-ins where a test must see inside.

`RecordingASR` is a labelled stand-in recognizer: it keeps every byte each utterance receives
and "recognizes" its length, so a test can check exactly what audio reached the ASR engine.
`StalledLLM` never answers (until cancelled), so every reply is cut before any of it is heard.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from hark.protocol import ServerEvent, SessionConfig, SessionLimits, encode
from hark.server.asr.base import ASREngine, ASRStream
from hark.server.config import ServerConfig
from hark.server.context import ServerContext
from hark.server.llm.base import LLMEngine, LLMRequest, LLMUsage
from hark.server.llm.echo import EchoEngine
from hark.server.metrics import Metrics
from hark.server.session import Session
from hark.server.tts.base import Pcm16, TTSEngine
from hark.server.vad import SileroVad
from hark.server.vad_batch import VadBatcher

FRAME_BYTES = 3200  # 100 ms at 16 kHz
# the bucket would hold a test that feeds audio as fast as it can: these tests are about the audio
FAST_FEED = SessionLimits(max_audio_rate=1000.0, audio_burst_ms=10_000_000)


class RecordingStream(ASRStream):
    def __init__(self) -> None:
        self.utterances: list[bytearray] = []

    async def begin(self) -> None:
        self.utterances.append(bytearray())

    async def accept(self, pcm: bytes) -> str:
        self.utterances[-1] += pcm
        return f"samples {len(self.utterances[-1]) // 2}"

    async def finalize(self) -> str:
        return f"utterance of {len(self.utterances[-1]) // 2} samples"

    async def close(self) -> None:
        pass


class RecordingASR(ASREngine):
    name = "recording-standin"

    def __init__(self) -> None:
        self.streams: list[RecordingStream] = []

    def open_stream(self, session_id: str) -> ASRStream:
        stream = RecordingStream()
        self.streams.append(stream)
        return stream


class StalledLLM(LLMEngine):
    name = "stalled-standin"

    def __init__(self) -> None:
        self.requests: list[LLMRequest] = []
        self._changed = asyncio.Event()

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncIterator[str]:
        self.requests.append(request)
        self._changed.set()
        await asyncio.Event().wait()  # until the reply is cancelled
        yield ""

    async def wait_for(self, predicate: Callable[[list[LLMRequest]], bool], timeout: float = 30.0) -> None:
        """Until the requests so far satisfy `predicate`."""
        async with asyncio.timeout(timeout):
            while not predicate(self.requests):
                self._changed.clear()
                await self._changed.wait()


class NoTTS(TTSEngine):
    name = "no-tts-standin"

    async def synthesize(self, text: str, voice: str) -> Pcm16:
        raise AssertionError("this test expects no speech synthesis")


@dataclass
class RecordingOutbox:
    events: list[dict[str, Any]] = field(default_factory=list)
    audio_bytes: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def send_event(self, event: ServerEvent) -> None:
        self.events.append(json.loads(encode(event)))  # through the codec, as the wire would
        self._changed.set()

    def send_audio(self, pcm: bytes) -> None:
        self.audio_bytes += len(pcm)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()


@dataclass
class InProcess:
    session: Session
    outbox: RecordingOutbox
    ctx: ServerContext
    task: asyncio.Task[None]

    async def send_pcm(self, pcm: bytes) -> None:
        for i in range(0, len(pcm), FRAME_BYTES):
            await self.session.on_binary(pcm[i : i + FRAME_BYTES])

    async def send_json(self, event: dict[str, Any]) -> None:
        await self.session.on_text(json.dumps(event))

    async def close(self) -> None:
        """session.close, and wait until the session has finished."""
        await self.send_json({"type": "session.close"})
        await asyncio.wait_for(self.task, 60)


_VAD: SileroVad | None = None


def silero() -> SileroVad:
    global _VAD
    if _VAD is None:
        _VAD = SileroVad()
    return _VAD


@asynccontextmanager
async def in_process_session(
    *,
    asr: ASREngine | None = None,
    llm: LLMEngine | None = None,
    defaults: SessionConfig | None = None,
    limits: SessionLimits = FAST_FEED,
    batched_vad: bool = True,
    **server_settings: Any,
) -> AsyncIterator[InProcess]:
    config = ServerConfig(
        session_defaults=defaults or SessionConfig(audio_output=False), limits=limits, **server_settings
    )
    metrics = Metrics()
    with ThreadPoolExecutor(2) as pool:
        batcher = VadBatcher(silero(), pool, metrics) if batched_vad else None
        engines = (asr or RecordingASR(), llm or EchoEngine(), NoTTS())
        ctx = ServerContext(config, metrics, silero(), *engines, pool, batcher)
        if batcher is not None:
            batcher.start()
        outbox = RecordingOutbox()
        session = Session(ctx, outbox, "sess_test")
        task = asyncio.create_task(session.run())
        try:
            yield InProcess(session, outbox, ctx, task)
        finally:
            task.cancel()
            await asyncio.wait({task})
            if batcher is not None:
                await batcher.stop()
