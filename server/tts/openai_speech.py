"""OpenAI's `POST /v1/audio/speech`, as Kokoro-FastAPI, openedai-speech, LocalAI and OpenAI serve it.

The body is JSON (`model`, `input`, `voice`, `response_format`, `speed`, and `instructions` for the
models that take it); `response_format: "pcm"` is raw 24 kHz PCM16 mono with no header, streamed as
it is synthesized by the servers that stream (Kokoro-FastAPI does by default). The API has no
reference clips, so this engine speaks only the server's own voices (`voice` passed through).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from .http_stream import HttpTTSClient, HttpTTSEngine, Pcm16Assembler, TTSHttpSettings
from .streaming import PcmChunk, TTSRefused, VoiceChoice

PCM_RATE = 24000  # what the API defines for response_format "pcm"
MAX_INPUT_CHARS = 4096  # the API's limit on `input`
DEFAULT_MODEL = "tts-1"  # Kokoro-FastAPI maps it to its model; set --tts-model for others (kokoro, ...)
DEFAULT_VOICE = "alloy"  # one of OpenAI's voices; Kokoro-FastAPI maps it to one of its own


class OpenAISpeechEngine(HttpTTSEngine):
    name = "openai"

    def __init__(self, settings: TTSHttpSettings, *, speed: float = 1.0, instructions: str = "") -> None:
        if not 0.25 <= speed <= 4.0:
            raise ValueError("speed must be in [0.25, 4.0] (the API's range)")
        self.sample_rate = PCM_RATE
        self.default_voice = DEFAULT_VOICE
        self._http = HttpTTSClient(settings)
        self._model = settings.model or DEFAULT_MODEL
        self._speed = speed
        self._instructions = instructions

    async def stream(self, text: str, voice: VoiceChoice) -> AsyncGenerator[PcmChunk, None]:
        if voice.clip is not None:
            raise TTSRefused("the OpenAI speech API takes no reference clips: choose one of the server's voices")
        body: dict[str, Any] = {
            "model": self._model,
            "input": text[:MAX_INPUT_CHARS],
            "voice": self.builtin_voice(voice.name),
            "response_format": "pcm",
            "speed": self._speed,
        }
        if self._instructions:
            body["instructions"] = self._instructions
        pcm = Pcm16Assembler()
        async with contextlib.aclosing(self._http.stream("v1/audio/speech", json=body)) as pieces:
            async for data in pieces:
                samples = pcm.feed(data)
                if len(samples):
                    yield PcmChunk(samples, PCM_RATE)
