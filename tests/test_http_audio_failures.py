"""The audio routes when an engine fails or the server is not ready or full, in this process: the
real aiohttp app (server/http/app.py build_app) around a real ServerContext with the real Silero VAD,
and labelled stand-in engines that fail on purpose (a recognizer whose worker dies, a language
model that cannot be reached, a speech server that is down)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import corpus_path
from inprocess import RecordingASR, RecordingStream, silero

from hark.server.asr.base import ASREngine, ASRError, ASRStream
from hark.server.config import ServerConfig
from hark.server.context import ServerContext
from hark.server.http import audio_routes
from hark.server.http.app import build_app
from hark.server.http.state import HttpState
from hark.server.llm.base import LLMEngine, LLMRequest, LLMUnavailable, LLMUsage, ToolCall
from hark.server.llm.echo import EchoEngine
from hark.server.metrics import Metrics
from hark.server.transport.ws import Admission
from hark.server.tts.base import Pcm16, TTSEngine
from hark.server.tts.espeak import EspeakEngine
from hark.server.tts.streaming import TTSUnavailable

WAV = corpus_path("en_goforward_command").read_bytes()
TURN = {"audio_base64": base64.b64encode(WAV).decode(), "prompt_template": "{asr_text}"}


class DyingStream(RecordingStream):
    """Its worker dies at the first audio; counts its closes."""

    def __init__(self, engine: DyingASR) -> None:
        super().__init__()
        self._engine = engine

    async def accept(self, pcm: bytes) -> str:
        raise ASRError("asr worker 0 died")

    async def close(self) -> None:
        self._engine.closed += 1


class DyingASR(ASREngine):
    name = "dying-standin"

    def __init__(self) -> None:
        self.closed = 0

    def open_stream(self, session_id: str) -> ASRStream:
        return DyingStream(self)


class UnreachableLLM(LLMEngine):
    name = "unreachable-standin"

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncIterator[str | ToolCall]:
        raise LLMUnavailable("connection refused")
        yield ""


class DownTTS(TTSEngine):
    name = "down-standin"

    async def synthesize(self, text: str, voice: str) -> Pcm16:
        raise TTSUnavailable("speech server answered 503")


@asynccontextmanager
async def app_client(
    asr: ASREngine | None = None,
    llm: LLMEngine | None = None,
    tts: TTSEngine | None = None,
    ready: bool = True,
    **settings: Any,
) -> AsyncIterator[tuple[TestClient[Any, Any], HttpState]]:
    config = ServerConfig(http_rate_limit=0, **settings)
    metrics = Metrics()
    with ThreadPoolExecutor(2) as pool:
        ctx = ServerContext(
            config, metrics, silero(), asr or RecordingASR(), llm or EchoEngine(), tts or EspeakEngine(), pool
        )
        state = HttpState(config, metrics, ctx if ready else None, Admission(ctx))
        async with TestClient(TestServer(build_app(state))) as client:
            yield client, state
        await ctx.tts.aclose()


async def answer(client: TestClient[Any, Any], path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    async with client.post(path, **kwargs) as response:
        return response.status, await response.json()


def no_slot_held(state: HttpState) -> None:
    assert state.admission is not None and state.admission.open_sessions == 0
    assert sum(s.value for m in state.metrics.http_audio_running.collect() for s in m.samples) == 0


async def test_recognizer_failure_is_503_and_frees_everything() -> None:
    asr = DyingASR()
    async with app_client(asr=asr) as (client, state):
        status, body = await answer(client, "/v1/voice/turn", json=TURN)
        assert (status, body["error"]["code"]) == (503, "internal_error") and "died" in body["error"]["message"]
        no_slot_held(state)
    assert asr.closed == 1  # the request's ASR stream was closed


async def test_recognizer_failure_mid_stream_is_the_last_event() -> None:
    asr = DyingASR()
    async with app_client(asr=asr) as (client, state):
        form = aiohttp.FormData()
        form.add_field("file", WAV, filename="clip.wav")
        form.add_field("stream", "true")
        async with client.post("/v1/audio/transcriptions", data=form) as response:
            assert response.status == 200 and response.content_type == "text/event-stream"
            text = await response.text()
        assert text.startswith('data: {"type": "error"') and '"code": "internal_error"' in text, text
        no_slot_held(state)
    assert asr.closed == 1


async def test_unreachable_llm_is_503_llm_unavailable() -> None:
    async with app_client(llm=UnreachableLLM()) as (client, state):
        status, body = await answer(client, "/v1/voice/turn", json=TURN)
        assert (status, body["error"]["code"]) == (503, "llm_unavailable")
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        status, body = await answer(client, "/v1/chat/completions", json=chat)
        assert (status, body["error"]["code"]) == (503, "llm_unavailable")
        no_slot_held(state)


async def test_speech_failure_keeps_the_reply_as_text() -> None:
    async with app_client(tts=DownTTS()) as (client, _):
        status, body = await answer(client, "/v1/voice/turn", json=TURN | {"return_audio": True})
        assert status == 200, body
        assert body["reply"].startswith("You said: utterance of") and body["audio_base64"] is None
        assert body["audio_error"].startswith("tts_unavailable")


async def test_while_models_load_it_is_503_not_ready() -> None:
    async with app_client(ready=False) as (client, _):
        for path in ("/v1/voice/turn", "/v1/chat/completions"):
            status, body = await answer(client, path, json=TURN)
            assert (status, body["error"]["code"]) == (503, "server_not_ready")


async def test_a_request_waits_briefly_for_a_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio_routes, "ADMISSION_POLL_S", 0.05)
    async with app_client() as (client, state):
        admission = state.admission
        assert admission is not None
        admission.limit = 0  # full
        waiting = asyncio.create_task(answer(client, "/v1/voice/turn", json=TURN))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        admission.limit = 1  # a slot frees up within the wait
        status, body = await waiting
        assert status == 200 and body["transcript"].startswith("utterance of"), body
        no_slot_held(state)


async def test_full_for_the_whole_wait_is_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio_routes, "ADMISSION_WAIT_S", 0.3)
    monkeypatch.setattr(audio_routes, "ADMISSION_POLL_S", 0.05)
    async with app_client() as (client, state):
        assert state.admission is not None
        state.admission.limit = 0
        async with client.post("/v1/voice/turn", json=TURN) as response:
            assert response.status == 503 and response.headers["Retry-After"] == audio_routes.BUSY_RETRY_AFTER_S
            assert (await response.json())["error"]["code"] == "server_busy"
        no_slot_held(state)


class CutLLM(LLMEngine):
    """Says one word, then its server goes away."""

    name = "cut-standin"

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncIterator[str | ToolCall]:
        yield "Hello"
        raise LLMUnavailable("stream cut short")


async def test_streamed_chat_failures() -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with app_client(llm=UnreachableLLM()) as (client, _):  # before the first token: a JSON error
        status, body = await answer(client, "/v1/chat/completions", json=chat)
        assert (status, body["error"]["code"]) == (503, "llm_unavailable")
    async with app_client(llm=CutLLM()) as (client, state):  # after it: the stream's last event
        async with client.post("/v1/chat/completions", json=TURN | {"stream": True}) as response:
            assert response.status == 200
            events = [line for line in (await response.text()).split("\n\n") if line]
        assert '"content": "Hello"' in events[1]
        assert events[-2].startswith('data: {"error": {"code": "llm_unavailable"') and events[-1] == "data: [DONE]"
        no_slot_held(state)


async def test_api_keys_and_origins_guard_the_audio_routes() -> None:
    async with app_client(api_keys=["k1"], allowed_origins=["https://app.example"]) as (client, state):
        for path in ("/v1/audio/transcriptions", "/v1/voice/turn", "/v1/chat/completions"):
            status, body = await answer(client, path, json=TURN)
            assert (status, body["error"]["code"]) == (401, "unauthorized"), path
        bearer = {"Authorization": "Bearer k1"}
        status, body = await answer(client, "/v1/voice/turn", json=TURN, headers=bearer | {"Origin": "https://evil"})
        assert (status, body["error"]["code"]) == (403, "origin_not_allowed")
        status, body = await answer(client, "/v1/voice/turn", json=TURN, headers=bearer)
        assert status == 200 and body["transcript"].startswith("utterance of")
        no_slot_held(state)


async def test_multipart_voice_turn_takes_one_audio() -> None:
    async with app_client() as (client, _):
        form = aiohttp.FormData()
        form.add_field("file", WAV, filename="clip.wav")
        form.add_field("audio_base64", TURN["audio_base64"])
        status, body = await answer(client, "/v1/voice/turn", data=form)
        assert (status, body["error"]["code"]) == (400, "invalid_field") and "either" in body["error"]["message"]
