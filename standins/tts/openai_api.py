"""Stand-in for OpenAI's `POST /v1/audio/speech` as Kokoro-FastAPI serves it (labelled: espeak-ng).

JSON body: `model`, `input` (<= 4096 chars), `voice`, `response_format` (`pcm`: raw 24 kHz PCM16
mono; `wav`), `speed` (0.25-4), `instructions`. Errors are OpenAI's shape
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from .common import StandinState, early_fault, stream_audio, streaming_wav_header

RATE = 24000
VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse"}
# Kokoro voices look like af_bella, am_adam, bf_emma ...; accepted besides OpenAI's names
_KOKORO_PREFIXES = ("af_", "am_", "bf_", "bm_", "jf_", "jm_", "zf_", "zm_", "ef_", "em_", "ff_", "hf_", "hm_", "if_")
_VARIANTS = ("m1", "m2", "m3", "f1", "f2", "f3")


def error(status: int, message: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}
    return web.json_response(body, status=status)


def routes(state: StandinState) -> list[web.RouteDef]:
    async def speech(request: web.Request) -> web.StreamResponse:
        try:
            body: Any = await request.json()
        except ValueError:
            return error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object")
        rec = state.record("/v1/audio/speech", {k: v for k, v in body.items()})
        if (refused := await early_fault(request, state, error)) is not None:
            rec.status = refused.status
            return refused
        text, voice, fmt = body.get("input"), body.get("voice"), body.get("response_format", "mp3")
        speed = body.get("speed", 1.0)
        problem = None
        if not isinstance(body.get("model"), str):
            problem = ("you must provide a model parameter", "model")
        elif not isinstance(text, str) or not text or len(text) > 4096:
            problem = ("input must be a string of 1-4096 characters", "input")
        elif not isinstance(voice, str) or not (voice in VOICES or voice.startswith(_KOKORO_PREFIXES)):
            problem = (f"voice {voice!r} is not one of {sorted(VOICES)} or a Kokoro voice", "voice")
        elif fmt not in ("pcm", "wav"):
            problem = (f"response_format {fmt!r}: this stand-in streams pcm and wav only", "response_format")
        elif not isinstance(speed, int | float) or not 0.25 <= speed <= 4.0:
            problem = ("speed must be between 0.25 and 4.0", "speed")
        if problem is not None:
            rec.status = 400
            return error(400, *problem)
        variant = _VARIANTS[hashlib.sha256(str(voice).encode()).digest()[0] % len(_VARIANTS)]

        async def pcm() -> Any:
            return await state.synthesize(str(text), f"en-us+{variant}", RATE)

        content_type = "audio/pcm" if fmt == "pcm" else "audio/wav"
        # a streamed WAV's sizes are unknown: left at the maximum
        header = streaming_wav_header(RATE, 0xFFFFFFFF, 0xFFFFFFFF) if fmt == "wav" else b""
        return await stream_audio(request, state, rec, pcm, rate=RATE, content_type=content_type, header=header)

    return [web.post("/v1/audio/speech", speech)]
