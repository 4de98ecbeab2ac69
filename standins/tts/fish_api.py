"""Stand-in for Fish Speech's `POST /v1/tts` (tools/api_server.py, `ServeTTSRequest`; labelled:
espeak-ng, not a neural TTS).

Accepts `application/msgpack` or `application/json` (base64 reference audio there); other content
types are 415. `streaming: true` needs `format: "wav"` (400 otherwise, as the real server says) and
streams a WAV header with zero sizes followed by PCM16 mono at 44.1 kHz. Errors are the server's
`{"statusCode", "message", "error"}`. A reference clip is "cloned" by an espeak variant picked from
its bytes; `reference_id`s the stand-in knows are given with `--reference-id`.
"""

from __future__ import annotations

import base64
import binascii
from http import HTTPStatus
from typing import Any

import msgspec
from aiohttp import web

from .common import StandinState, early_fault, model_error, stream_audio, streaming_wav_header
from .voice import variant_for

RATE = 44100


def error(status: int, message: str) -> web.Response:
    body = {"statusCode": status, "message": message, "error": HTTPStatus(status).phrase}
    return web.json_response(body, status=status)


def routes(state: StandinState, reference_ids: set[str], api_key: str | None) -> list[web.RouteDef]:
    async def tts(request: web.Request) -> web.StreamResponse:
        if api_key is not None and request.headers.get("Authorization") != f"Bearer {api_key}":
            return error(401, "Invalid token")
        raw = await request.read()
        try:
            if request.content_type == "application/msgpack":
                body: Any = msgspec.msgpack.decode(raw)
            elif request.content_type == "application/json":
                body = msgspec.json.decode(raw)
            else:
                resp = error(415, "Unsupported Media Type")
                resp.headers["Accept"] = "application/msgpack, application/json, multipart/form-data"
                return resp
        except msgspec.DecodeError as exc:
            return error(422, f"bad body: {exc}")
        if not isinstance(body, dict) or not isinstance(body.get("text"), str):
            return error(422, "text: field required (a string)")
        references = body.get("references") or []
        fields = {k: v for k, v in body.items() if k != "references"}
        fields["references"] = len(references)
        rec = state.record("/v1/tts", fields)
        if (refused := await early_fault(request, state, error)) is not None:
            rec.status = refused.status
            return refused
        fmt, streaming = body.get("format", "wav"), bool(body.get("streaming", False))
        if fmt not in ("wav", "pcm", "mp3", "opus"):
            return error(422, "format: must be one of wav, pcm, mp3, opus")
        if streaming and fmt != "wav":
            rec.status = 400
            return error(400, "Streaming only supports WAV format")
        chunk_length = body.get("chunk_length", 200)
        if not isinstance(chunk_length, int) or not 100 <= chunk_length <= 1000:
            return error(422, "chunk_length: must be an integer in [100, 1000]")
        voice = "en-us"
        for ref in references[:1]:
            audio, text = (
                ref.get("audio") if isinstance(ref, dict) else None,
                ref.get("text") if isinstance(ref, dict) else None,
            )
            if isinstance(audio, str) and len(audio) > 255:
                try:
                    audio = base64.b64decode(audio)
                except (binascii.Error, ValueError):
                    pass
            if not isinstance(audio, bytes) or not isinstance(text, str):
                return error(422, "references: each needs audio (bytes) and text (a string)")
            rec.reference(audio, text)
            voice = variant_for(audio)
        ref_id = body.get("reference_id")
        unknown_ref = not references and ref_id is not None and ref_id not in reference_ids
        if ref_id is not None and not references and not unknown_ref:
            voice = variant_for(str(ref_id).encode())

        async def pcm() -> Any:
            if unknown_ref:  # the real server finds out inside its generator, after the 200
                raise model_error()
            return await state.synthesize(body["text"], voice, RATE)

        if not streaming and fmt == "pcm":
            return await stream_audio(request, state, rec, pcm, rate=RATE, content_type="application/octet-stream")
        headers = {"Content-Disposition": f"attachment; filename=audio.{fmt}"}
        return await stream_audio(
            request,
            state,
            rec,
            pcm,
            rate=RATE,
            content_type="audio/wav",
            header=streaming_wav_header(RATE, 36, 0),  # the sizes Python's wave module writes for zero frames
            extra_headers=headers,
        )

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    return [web.post("/v1/tts", tts), web.get("/v1/health", health), web.post("/v1/health", health)]
