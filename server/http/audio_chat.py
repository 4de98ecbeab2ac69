"""`POST /v1/chat/completions`: the seed's request (audio_base64 + prompt_template) answered as an
OpenAI `chat.completion`, and plain chat (messages only) proxied to the configured LLM; both also
as `stream: true` server-sent `chat.completion.chunk` events. HTTP.md documents the fields."""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from hark.protocol import ErrorCode

from ..context import ServerContext
from ..llm.base import LLMUsage, Message
from ..llm.prompt import estimate_tokens
from ..offline.errors import OfflineError
from ..offline.turn import TurnRequest, complete, hear, reply_deltas
from . import audio_formats as fmt
from .audio_bodies import JSON_TYPE, ChatCompletionBody, ChatMessage, audio_from_base64, decode_json, require_type
from .errors import HttpError

if TYPE_CHECKING:
    from .audio_routes import AudioRoutes

CHAT_COMPLETIONS_PATH = "/v1/chat/completions"


class ChatRoutes:
    """Borrows the audio routes' slots, decoding and voice turn."""

    def __init__(self, audio: AudioRoutes) -> None:
        self._audio = audio

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        ctx = self._audio.state.ready()
        where = CHAT_COMPLETIONS_PATH
        require_type(request, JSON_TYPE)
        body = decode_json(await request.read(), ChatCompletionBody, where)
        max_tokens = body.max_completion_tokens or body.max_tokens
        history = [_chat_message(m, i, where) for i, m in enumerate(body.messages)]
        extra: dict[str, Any] = {}
        if body.audio_base64 is not None:
            data = audio_from_base64(body.audio_base64)
            turn = self._audio.turn_request(ctx, body.prompt_template or "{asr_text}", max_tokens, None, False)
            if history:
                raise HttpError(
                    400,
                    ErrorCode.INVALID_FIELD,
                    f"{where}: send either audio_base64 (with prompt_template) or messages",
                )
            if body.stream:
                return await self._stream_chat(
                    request, ctx, body.model, turn.max_tokens, None, (data, body.sample_rate, turn)
                )
            result, decode_ms = await self._audio.run_turn(ctx, data, body.sample_rate, turn)
            reply, prompt_tokens = result.reply, result.usage.prompt_tokens
            extra = {
                "transcript": result.transcript,
                "cleaned_transcript": result.cleaned_transcript,
                "metrics": {"decode_ms": decode_ms, **result.metrics},
            }
        else:
            if body.prompt_template is not None or body.sample_rate is not None:
                raise HttpError(
                    400, ErrorCode.AUDIO_MISSING, f"{where}: prompt_template and sample_rate need audio_base64"
                )
            if not any(m.role == "user" for m in history):
                raise HttpError(
                    400, ErrorCode.INVALID_FIELD, f"{where}: messages need a user message (or send audio_base64)"
                )
            if body.stream:
                return await self._stream_chat(
                    request, ctx, body.model, max_tokens or ctx.config.llm_max_tokens, history, None
                )
            try:
                answer = await complete(ctx, history, max_tokens or ctx.config.llm_max_tokens, new_request_id("cc"))
            except OfflineError as exc:
                raise http_error(exc) from None
            reply, prompt_tokens = answer.text, answer.usage.prompt_tokens
            extra = {"metrics": {"llm_ms": answer.llm_ms, "first_token_ms": answer.first_token_ms}}
        completion_tokens = estimate_tokens(reply)
        return web.json_response(
            {
                "id": f"chatcmpl-{secrets.token_hex(12)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.model or ctx.llm.name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": reply},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
                **extra,
            }
        )

    async def _stream_chat(
        self,
        request: web.Request,
        ctx: ServerContext,
        model: str,
        max_tokens: int,
        history: list[Message] | None,
        voice: tuple[bytes, int | None, TurnRequest] | None,
    ) -> web.StreamResponse:
        """`stream: true`: OpenAI's `chat.completion.chunk` events, then `data: [DONE]`. Everything that
        can fail before the first token (the audio, the recognizer, the LLM's connection) is still a
        plain JSON error; a failure after it is the stream's last event before [DONE]."""
        session_id = new_request_id("cc")
        chunk_id, created, model = f"chatcmpl-{secrets.token_hex(12)}", int(time.time()), model or ctx.llm.name

        def chunk(delta: dict[str, str], finish: str | None, **extra: Any) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            event = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": model}
            return fmt.sse(event | {"choices": [choice], **extra})

        async with contextlib.AsyncExitStack() as held:
            heard: dict[str, Any] = {}
            if voice is not None:
                data, sample_rate, turn = voice
                await held.enter_async_context(self._audio.slot(ctx))
                audio, decode_ms = await self._audio.decode(ctx, data, sample_rate)
                try:
                    words = await hear(ctx, audio, turn.prompt_template, self._audio.executor, session_id)
                except OfflineError as exc:
                    raise http_error(exc) from None
                history = [Message("user", words.prompt)]
                heard = {
                    "transcript": words.transcript.text,
                    "cleaned_transcript": words.cleaned,
                    "metrics": {"decode_ms": decode_ms, "asr_ms": words.transcript.asr_ms},
                }
            assert history is not None
            deltas = await held.enter_async_context(
                contextlib.aclosing(reply_deltas(ctx, history, max_tokens, session_id, LLMUsage()))
            )
            try:
                first = await anext(deltas, None)
            except OfflineError as exc:
                raise http_error(exc) from None
            response = web.StreamResponse(headers={"Cache-Control": "no-store"})
            response.content_type = "text/event-stream"
            await response.prepare(request)
            await response.write(chunk({"role": "assistant", "content": ""}, None, **heard))
            try:
                if first is not None:
                    await response.write(chunk({"content": first}, None))
                    async for delta in deltas:
                        await response.write(chunk({"content": delta}, None))
                await response.write(chunk({}, "stop"))
            except OfflineError as exc:
                await response.write(fmt.sse({"error": {"code": exc.code.value, "message": exc.message}}))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response


def _chat_message(message: ChatMessage, index: int, where: str) -> Message:
    content = message.content
    if isinstance(content, list):
        texts = []
        for part in content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise HttpError(
                    400, ErrorCode.INVALID_FIELD, f"{where}: messages[{index}].content: only text parts are supported"
                )
            texts.append(part["text"])
        content = "".join(texts)
    role = "system" if message.role == "developer" else message.role
    return Message(role, content or "")


def new_request_id(kind: str) -> str:
    return f"http{kind}_{secrets.token_hex(6)}"


def http_error(exc: OfflineError) -> HttpError:
    return HttpError(exc.status, exc.code, exc.message)
