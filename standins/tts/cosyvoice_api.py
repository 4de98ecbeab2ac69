"""Stand-in for CosyVoice's FastAPI server (runtime/python/fastapi/server.py; labelled: espeak-ng).

GET or POST with form fields: `/inference_sft` (`tts_text`, `spk_id`), `/inference_zero_shot`
(`tts_text`, `prompt_text`, file `prompt_wav`). A missing field is FastAPI's 422
`{"detail": [{"type": "missing", "loc": ["body", NAME], ...}]}`; the body is raw PCM16 mono at the
model's rate (22050 Hz for CosyVoice-300M, `--sample-rate 24000` for CosyVoice2), with no content
type. An unknown speaker fails inside the model's generator, after the 200: the stream is cut.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .common import StandinState, early_fault, model_error, stream_audio
from .voice import variant_for

SPEAKERS = ("中文女", "中文男", "日语男", "粤语女", "英文女", "英文男", "韩语女")


def error(status: int, message: str) -> web.Response:
    return web.json_response({"detail": message}, status=status)


def _missing(names: list[str]) -> web.Response:
    detail = [{"type": "missing", "loc": ["body", n], "msg": "Field required", "input": None} for n in names]
    return web.json_response({"detail": detail}, status=422)


def routes(state: StandinState, rate: int) -> list[web.RouteDef]:
    async def form_of(request: web.Request) -> dict[str, Any]:
        if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
            return dict(await request.post())
        return {}

    async def sft(request: web.Request) -> web.StreamResponse:
        form = await form_of(request)
        missing = [n for n in ("tts_text", "spk_id") if not isinstance(form.get(n), str)]
        if missing:
            return _missing(missing)
        rec = state.record("/inference_sft", {"tts_text": form["tts_text"], "spk_id": form["spk_id"]})
        if (refused := await early_fault(request, state, error)) is not None:
            rec.status = refused.status
            return refused
        speaker = str(form["spk_id"])
        voice = "en-us+" + ("f2" if "女" in speaker else "m3")

        async def pcm() -> Any:
            if speaker not in SPEAKERS:
                raise model_error()  # a KeyError in the real model's generator, after the 200
            return await state.synthesize(str(form["tts_text"]), voice, rate)

        return await stream_audio(request, state, rec, pcm, rate=rate, content_type=None)

    async def zero_shot(request: web.Request) -> web.StreamResponse:
        form = await form_of(request)
        wav = form.get("prompt_wav")
        missing = [n for n in ("tts_text", "prompt_text") if not isinstance(form.get(n), str)]
        if not isinstance(wav, web.FileField):
            missing.append("prompt_wav")
        if missing:
            return _missing(missing)
        assert isinstance(wav, web.FileField)
        audio = wav.file.read()
        rec = state.record("/inference_zero_shot", {"tts_text": form["tts_text"], "prompt_text": form["prompt_text"]})
        rec.reference(audio, str(form["prompt_text"]))
        if (refused := await early_fault(request, state, error)) is not None:
            rec.status = refused.status
            return refused

        async def pcm() -> Any:
            if audio[:4] != b"RIFF":
                raise model_error()  # torchaudio cannot load it: the real server fails mid-request
            return await state.synthesize(str(form["tts_text"]), variant_for(audio), rate)

        return await stream_audio(request, state, rec, pcm, rate=rate, content_type=None)

    return [
        web.get("/inference_sft", sft),
        web.post("/inference_sft", sft),
        web.get("/inference_zero_shot", zero_shot),
        web.post("/inference_zero_shot", zero_shot),
    ]
