"""CosyVoice's FastAPI server (runtime/python/fastapi/server.py, port 50000 by default).

Form fields, not JSON: `/inference_sft` takes `tts_text` and `spk_id` (a speaker of an SFT model),
`/inference_zero_shot` takes `tts_text`, `prompt_text` and the file `prompt_wav` (loaded at 16 kHz
there). The body that comes back is raw PCM16 mono, yielded model chunk by model chunk, at the
model's rate, which the response does not say: 22050 Hz for CosyVoice-300M, 24000 Hz for
CosyVoice2/3 (`--tts-model` names the model the server runs, as its `--model_dir` does). A failure
inside the model comes after the 200 status, as a stream cut short.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import aiohttp

from .http_stream import HttpTTSClient, HttpTTSEngine, Pcm16Assembler, TTSHttpSettings
from .streaming import PcmChunk, VoiceChoice
from .voices import VoiceStore

DEFAULT_SPEAKER = "英文女"  # the English female speaker of CosyVoice-300M-SFT


def model_sample_rate(model: str) -> int:
    """The server's output rate for the model it loaded (its own test: 'CosyVoice2' in the path)."""
    lowered = model.lower()
    return 24000 if "cosyvoice2" in lowered or "cosyvoice3" in lowered else 22050


class CosyVoiceEngine(HttpTTSEngine):
    name = "cosyvoice"

    def __init__(self, settings: TTSHttpSettings, voices: VoiceStore) -> None:
        self.sample_rate = model_sample_rate(settings.model)
        self.default_voice = DEFAULT_SPEAKER
        self.voices = voices
        self._voices = voices  # typed without the None of engines that cannot clone
        self._http = HttpTTSClient(settings)

    async def stream(self, text: str, voice: VoiceChoice) -> AsyncGenerator[PcmChunk, None]:
        form = aiohttp.FormData()
        form.add_field("tts_text", text)
        if voice.clip is not None:
            path = "inference_zero_shot"
            form.add_field("prompt_text", voice.clip.transcript)
            form.add_field("prompt_wav", voice.clip.wav, filename="prompt.wav", content_type="audio/wav")
        else:
            path = "inference_sft"
            form.add_field("spk_id", self.builtin_voice(voice.name))
        pcm = Pcm16Assembler()
        async with contextlib.aclosing(self._http.stream(path, data=form)) as pieces:
            async for data in pieces:
                samples = pcm.feed(data)
                if len(samples):
                    yield PcmChunk(samples, self.sample_rate)
