"""The audio routes of the HTTP API: OpenAI's transcriptions, the seed's voice turn, and the seed's
chat-completions request (plus plain chat completions, proxied to the configured LLM).

- `POST /v1/audio/transcriptions`: multipart `file` (+ model, language, prompt, response_format,
  temperature, timestamp_granularities[], stream) -> OpenAI's json | text | srt | vtt | verbose_json,
  or with `stream=true` server-sent `transcript.text.delta` / `transcript.text.done` events.
- `POST /v1/voice/turn`: JSON `{"audio_base64", "prompt_template", "max_tokens", "voice",
  "return_audio", "sample_rate"}` or the same as multipart with a `file` -> `{"transcript",
  "cleaned_transcript", "reply", "audio_base64", "metrics"}`.
- `POST /v1/chat/completions` (server/http/audio_chat.py): with `audio_base64` it is the voice
  turn, answered as an OpenAI `chat.completion` (the reply is the message content; `transcript`,
  `cleaned_transcript` and `metrics` sit beside `choices`); without audio, the `messages` go to the
  LLM as a plain chat; either as `stream: true` chunks.

A request that runs the recognizer holds an admission slot while it runs (503 server_busy when the
server is full, as a new session is refused). Decoding and the VAD run on this module's own thread,
so a long upload never delays the live sessions' VAD batches; the ASR runs in the engine's workers.
HTTP.md documents every field and error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

from hark.protocol import ErrorCode

from ..context import ServerContext
from ..offline.decode import DecodedAudio, decode_audio
from ..offline.errors import OfflineError
from ..offline.transcribe import join_text
from ..offline.turn import (
    TurnRequest,
    TurnResult,
    check_template,
    ms_since,
    segments_of,
    transcribe,
    voice_turn,
)
from . import audio_formats as fmt
from .audio_bodies import (
    FORM_TYPE,
    JSON_TYPE,
    VoiceTurnFields,
    audio_from_base64,
    convert_form,
    decode_json,
    read_form,
    require_type,
    single_values,
)
from .audio_chat import CHAT_COMPLETIONS_PATH, ChatRoutes, http_error, new_request_id
from .errors import HttpError
from .state import HttpState

log = logging.getLogger(__name__)

TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
VOICE_TURN_PATH = "/v1/voice/turn"
BUSY_RETRY_AFTER_S = "2"
ADMISSION_WAIT_S = 5.0  # the recognizer's load window (asr/inference_pool.py LOAD_WINDOW_S)
ADMISSION_POLL_S = 0.5  # each refused claim counts in hark_errors_total{code="server_busy"}
MAX_WAITING = 4
# what the transcription form may carry (OpenAI's field names; lists as `name[]`)
_TRANSCRIPTION_FIELDS = frozenset(
    {"model", "language", "prompt", "response_format", "temperature", "stream", "chunking_strategy"}
)
_LIST_FIELDS = {"timestamp_granularities": "timestamp_granularities[]", "include": "include[]"}
# the language a recognizer hears when the request names none (verbose_json's `language`)
_ENGINE_LANGUAGE = {"pocketsphinx": "english", "funasr-paraformer-streaming": "chinese"}


def add_routes(app: web.Application, state: HttpState) -> None:
    routes = AudioRoutes(state)
    app.router.add_post(TRANSCRIPTIONS_PATH, routes.transcriptions)
    app.router.add_post(VOICE_TURN_PATH, routes.voice_turn)
    app.router.add_post(CHAT_COMPLETIONS_PATH, ChatRoutes(routes).chat_completions)
    app.on_cleanup.append(routes.close)


class AudioRoutes:
    def __init__(self, state: HttpState) -> None:
        self.state = state
        # decoding and the VAD of uploads, one at a time: bounded by the admission slots in use, and
        # apart from the inference pool the live sessions' VAD runs in
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="http-audio")
        self._waiting = 0  # requests waiting for an admission slot

    async def close(self, app: web.Application) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ shared steps

    @contextlib.asynccontextmanager
    async def slot(self, ctx: ServerContext) -> AsyncIterator[None]:
        """An admission slot for the request's run, waiting up to ADMISSION_WAIT_S for one.

        A file decodes faster than real time, so the recognizer's busy signal (what admission
        refuses on) stays up for a few seconds after a long transcription ends; a short, bounded
        wait lets the next request in then instead of answering 503 at once. At most
        MAX_WAITING requests wait (each holds its body); past that, or after the wait, 503."""
        admission = self.state.admission
        if admission is not None:
            busy = admission.claim()
            if busy is not None and self._waiting < MAX_WAITING:
                self._waiting += 1
                try:
                    deadline = time.monotonic() + ADMISSION_WAIT_S
                    while busy is not None and time.monotonic() < deadline:
                        await asyncio.sleep(ADMISSION_POLL_S)
                        busy = admission.claim()
                finally:
                    self._waiting -= 1
            if busy is not None:
                raise HttpError(503, ErrorCode.SERVER_BUSY, busy, {"Retry-After": BUSY_RETRY_AFTER_S})
        ctx.metrics.http_audio_running.inc()
        try:
            yield
        finally:
            ctx.metrics.http_audio_running.dec()
            if admission is not None:
                admission.release()

    async def decode(self, ctx: ServerContext, data: bytes, sample_rate: int | None) -> tuple[DecodedAudio, float]:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        cap = self.state.config.http_max_audio_s
        try:
            audio = await loop.run_in_executor(
                self.executor, lambda: decode_audio(data, max_seconds=cap, sample_rate=sample_rate)
            )
        except OfflineError as exc:
            raise http_error(exc) from None
        ctx.metrics.http_audio_seconds.labels("decoded").inc(audio.duration_s)
        return audio, ms_since(started)

    async def _read_upload(self, upload: web.FileField) -> bytes:
        loop = asyncio.get_running_loop()
        data: bytes = await loop.run_in_executor(self.executor, upload.file.read)
        return data

    # ------------------------------------------------------------------ /v1/audio/transcriptions

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        ctx = self.state.ready()
        where = TRANSCRIPTIONS_PATH
        require_type(request, FORM_TYPE)
        fields, upload = await read_form(request, where)
        options = _transcription_options(fields, where)
        if upload is None:
            raise HttpError(400, ErrorCode.AUDIO_MISSING, f"{where}: send the audio as the `file` part")
        data = await self._read_upload(upload)
        stream_id = new_request_id("tr")
        headers = {"X-Hark-Model": options.model, "X-Hark-ASR": ctx.asr.name}
        async with self.slot(ctx):
            audio, _ = await self.decode(ctx, data, None)
            del data
            log.info("%s: transcribing %.1f s of %s (%s)", stream_id, audio.duration_s, audio.source_format, where)
            if options.stream:
                return await self._stream_transcript(request, ctx, audio, stream_id, headers)
            try:
                heard = await transcribe(ctx, audio, self.executor, stream_id)
            except OfflineError as exc:
                raise http_error(exc) from None
        language = options.language or _ENGINE_LANGUAGE.get(ctx.asr.name, ctx.config.asr_language)
        match options.response_format:
            case "text":
                return web.Response(text=heard.text + "\n", content_type="text/plain", headers=headers)
            case "srt":
                return web.Response(text=fmt.srt(heard.segments), content_type="application/x-subrip", headers=headers)
            case "vtt":
                return web.Response(text=fmt.vtt(heard.segments), content_type="text/vtt", headers=headers)
            case "verbose_json":
                body = fmt.verbose_json(heard.text, heard.segments, audio.duration_s, language, options.model)
                return web.json_response(body, headers=headers)
            case _:
                return web.json_response({"text": heard.text, "usage": fmt.usage(audio.duration_s)}, headers=headers)

    async def _stream_transcript(
        self, request: web.Request, ctx: ServerContext, audio: DecodedAudio, stream_id: str, headers: dict[str, str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={**headers, "Cache-Control": "no-store"})
        response.content_type = "text/event-stream"
        await response.prepare(request)
        text = ""
        try:
            # closed however the stream ends (a client gone mid-stream): the ASR stream goes with it
            async with contextlib.aclosing(segments_of(ctx, audio, self.executor, stream_id)) as found:
                async for segment in found:
                    joined = join_text(text, segment.text)
                    delta, text = joined[len(text) :], joined
                    await response.write(fmt.sse({"type": "transcript.text.delta", "delta": delta}))
            await response.write(fmt.sse({"type": "transcript.text.done", "text": text}))
        except OfflineError as exc:  # the status is sent already: the error is the stream's last event
            await response.write(fmt.sse({"type": "error", "error": {"code": exc.code.value, "message": exc.message}}))
        await response.write_eof()
        return response

    # ------------------------------------------------------------------ /v1/voice/turn

    async def voice_turn(self, request: web.Request) -> web.Response:
        ctx = self.state.ready()
        where = VOICE_TURN_PATH
        if require_type(request, JSON_TYPE, FORM_TYPE) == JSON_TYPE:
            body = decode_json(await request.read(), VoiceTurnFields, where)
            if body.audio_base64 is None:
                raise HttpError(
                    400, ErrorCode.AUDIO_MISSING, f"{where}: audio_base64 is required (or post a multipart `file`)"
                )
            data = audio_from_base64(body.audio_base64)
        else:
            fields, upload = await read_form(request, where)
            body = convert_form(single_values(fields, where), VoiceTurnFields, where)
            if body.audio_base64 is not None and upload is not None:
                raise HttpError(400, ErrorCode.INVALID_FIELD, f"{where}: send either a `file` part or audio_base64")
            if body.audio_base64 is not None:
                data = audio_from_base64(body.audio_base64)
            elif upload is not None:
                data = await self._read_upload(upload)
            else:
                raise HttpError(400, ErrorCode.AUDIO_MISSING, f"{where}: send the audio as the `file` part")
        turn = self.turn_request(ctx, body.prompt_template, body.max_tokens, body.voice, body.return_audio)
        result, decode_ms = await self.run_turn(ctx, data, body.sample_rate, turn)
        return web.json_response(
            {
                "transcript": result.transcript,
                "cleaned_transcript": result.cleaned_transcript,
                "reply": result.reply,
                "audio_base64": base64.b64encode(result.audio_wav).decode() if result.audio_wav else None,
                **({"audio_format": "wav"} if result.audio_wav else {}),
                **({"audio_error": result.audio_error} if result.audio_error else {}),
                "metrics": {"decode_ms": decode_ms, **result.metrics},
            }
        )

    def turn_request(
        self, ctx: ServerContext, template: str, max_tokens: int | None, voice: str | None, return_audio: bool
    ) -> TurnRequest:
        try:
            check_template(template)  # before any audio work
        except OfflineError as exc:
            raise http_error(exc) from None
        cfg = ctx.config
        return TurnRequest(
            template, max_tokens or cfg.llm_max_tokens, voice or cfg.session_defaults.voice, return_audio
        )

    async def run_turn(
        self, ctx: ServerContext, data: bytes, sample_rate: int | None, turn: TurnRequest
    ) -> tuple[TurnResult, float]:
        session_id = new_request_id("vt")
        async with self.slot(ctx):
            audio, decode_ms = await self.decode(ctx, data, sample_rate)
            del data
            try:
                result = await voice_turn(ctx, audio, turn, self.executor, session_id)
            except OfflineError as exc:
                raise http_error(exc) from None
        log.info("%s: voice turn of %.1f s answered in %s ms", session_id, audio.duration_s, result.metrics["total_ms"])
        return result, decode_ms


class _TranscriptionOptions:
    def __init__(self, model: str, language: str, response_format: str, stream: bool) -> None:
        self.model = model
        self.language = language
        self.response_format = response_format
        self.stream = stream


def _transcription_options(fields: dict[str, list[str]], where: str) -> _TranscriptionOptions:
    lists: dict[str, list[str]] = {}
    for name, alias in _LIST_FIELDS.items():
        lists[name] = fields.pop(name, []) + fields.pop(alias, [])
    unknown = sorted(set(fields) - _TRANSCRIPTION_FIELDS)
    if unknown:
        raise HttpError(400, ErrorCode.INVALID_FIELD, f"{where}: unknown field {unknown[0]!r}")
    values = single_values(fields, where)
    response_format = values.get("response_format", "json")
    if response_format not in fmt.RESPONSE_FORMATS:
        raise HttpError(
            400, ErrorCode.INVALID_FIELD, f"{where}: response_format must be one of {', '.join(fmt.RESPONSE_FORMATS)}"
        )
    stream = _form_bool(values.get("stream", "false"), "stream", where)
    if stream and response_format not in ("json", "text"):
        raise HttpError(
            400,
            ErrorCode.INVALID_FIELD,
            f"{where}: stream=true answers events; response_format {response_format} cannot stream",
        )
    for granularity in lists["timestamp_granularities"]:
        if granularity == "word":
            raise HttpError(
                400,
                ErrorCode.INVALID_FIELD,
                f"{where}: word timestamps are not available from this server's recognizers; ask for segment",
            )
        if granularity != "segment":
            raise HttpError(400, ErrorCode.INVALID_FIELD, f"{where}: timestamp_granularities takes segment")
    if lists["timestamp_granularities"] and response_format != "verbose_json":
        raise HttpError(
            400, ErrorCode.INVALID_FIELD, f"{where}: timestamp_granularities needs response_format verbose_json"
        )
    if lists["include"]:
        raise HttpError(
            400, ErrorCode.INVALID_FIELD, f"{where}: include[] ({lists['include'][0]}) is not available here"
        )
    if values.get("chunking_strategy", "auto") != "auto":
        raise HttpError(
            400, ErrorCode.INVALID_FIELD, f"{where}: chunking_strategy takes auto (the server's VAD cuts the audio)"
        )
    if "temperature" in values:
        try:
            temperature = float(values["temperature"])
        except ValueError:
            temperature = -1.0
        if not 0.0 <= temperature <= 1.0:
            raise HttpError(400, ErrorCode.INVALID_FIELD, f"{where}: temperature must be a number in 0..1")
    language = values.get("language", "")
    if len(language) > 32:
        raise HttpError(400, ErrorCode.INVALID_FIELD, f"{where}: language is at most 32 characters")
    return _TranscriptionOptions(values.get("model", "")[:200], language, response_format, stream)


def _form_bool(value: str, name: str, where: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0", ""):
        return False
    raise HttpError(400, ErrorCode.INVALID_FIELD, f"{where}: {name} must be true or false")
