"""Fish Speech's `POST /v1/tts` (tools/api_server.py, fish_speech/utils/schema.py `ServeTTSRequest`).

The body goes as msgpack (`application/msgpack`, which carries a reference clip as raw bytes; the
server also reads JSON, where bytes would have to be base64). A cloned voice is sent as
`references: [{audio, text}]` on every request (`use_memory_cache: "on"` lets the server keep its
encoding of the clip); a built-in voice name is a `reference_id` of the server's `references/`
folder; the session default sends neither (the model's own voice). The server streams only WAV
(`streaming: true` with `format: "pcm"` is a 400 there): a WAV header with zero sizes, then PCM16
mono at the decoder's rate (44.1 kHz for OpenAudio S1 and Fish Speech 1.5), read from the header.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import msgspec

from .http_stream import HttpTTSClient, HttpTTSEngine, TTSHttpSettings, WavStreamDecoder, WavStreamError
from .streaming import PcmChunk, TTSUnavailable, VoiceChoice
from .voices import VoiceStore

CHUNK_LENGTH = 200  # the server's default text batch (it takes 100-1000)
DEFAULT_RATE = 44100


class FishSpeechEngine(HttpTTSEngine):
    name = "fish"

    def __init__(self, settings: TTSHttpSettings, voices: VoiceStore, *, normalize: bool = True) -> None:
        self.sample_rate = DEFAULT_RATE
        self.voices = voices
        self._voices = voices  # typed without the None of engines that cannot clone
        self._http = HttpTTSClient(settings)
        self._normalize = normalize
        # the model header names a server-side model for servers that serve several (api.fish.audio)
        self._headers = {"model": settings.model} if settings.model else {}

    def request_body(self, text: str, voice: VoiceChoice) -> dict[str, Any]:
        body: dict[str, Any] = {
            "text": text,
            "format": "wav",
            "streaming": True,
            "chunk_length": CHUNK_LENGTH,
            "normalize": self._normalize,
            "references": [],
            "reference_id": None,
            "use_memory_cache": "off",
        }
        if voice.clip is not None:
            body["references"] = [{"audio": voice.clip.wav, "text": voice.clip.transcript}]
            body["use_memory_cache"] = "on"
        elif name := self.builtin_voice(voice.name):
            body["reference_id"] = name
        return body

    async def stream(self, text: str, voice: VoiceChoice) -> AsyncGenerator[PcmChunk, None]:
        data = msgspec.msgpack.encode(self.request_body(text, voice))
        headers = {"Content-Type": "application/msgpack", **self._headers}
        wav = WavStreamDecoder()
        async with contextlib.aclosing(self._http.stream("v1/tts", data=data, headers=headers)) as pieces:
            async for piece in pieces:
                try:
                    samples = wav.feed(piece)
                except WavStreamError as exc:
                    raise TTSUnavailable(f"v1/tts: {exc}") from exc
                if len(samples):
                    self.sample_rate = wav.sample_rate
                    yield PcmChunk(samples, wav.sample_rate)
