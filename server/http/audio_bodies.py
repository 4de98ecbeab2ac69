"""The request bodies of the audio routes: msgspec Structs (unknown fields refused) and the
multipart forms, turned into HttpErrors with stable codes the client can act on."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from aiohttp import web
from msgspec import Meta

from hark.protocol import ErrorCode

from .errors import HttpError

T = TypeVar("T")

MaxTokens = Annotated[int, Meta(ge=1, le=8192)]
SampleRate = Annotated[int, Meta(ge=8000, le=192000)]
Voice = Annotated[str, Meta(max_length=128)]
Template = Annotated[str, Meta(max_length=20_000)]
JSON_TYPE = "application/json"
FORM_TYPE = "multipart/form-data"


class VoiceTurnFields(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/voice/turn, the seed's body; as multipart the audio is the `file` part instead."""

    audio_base64: str | None = None
    prompt_template: Template = "{asr_text}"
    max_tokens: MaxTokens | None = None
    voice: Voice | None = None
    return_audio: bool = False
    sample_rate: SampleRate | None = None  # raw PCM16 only: a container says its own rate


class ChatMessage(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None


class ChatCompletionBody(msgspec.Struct, forbid_unknown_fields=True):
    """POST /v1/chat/completions: OpenAI's fields this server honours, plus the seed's audio fields."""

    model: str = ""
    messages: list[ChatMessage] = []
    audio_base64: str | None = None
    prompt_template: Template | None = None
    sample_rate: SampleRate | None = None
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
    # accepted for OpenAI clients that always send them; the server's --llm sampling settings apply
    temperature: Annotated[float, Meta(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    n: Annotated[int, Meta(ge=1, le=1)] = 1
    stream: bool = False
    user: str | None = None


def _invalid(exc: msgspec.ValidationError, where: str) -> HttpError:
    message = str(exc).replace("Object contains unknown field", "unknown field").replace("$.", "")
    return HttpError(400, ErrorCode.INVALID_FIELD, f"{where}: {message}")


def decode_json(body: bytes, kind: type[T], where: str) -> T:
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, where) from None
    except msgspec.DecodeError as exc:
        raise HttpError(400, ErrorCode.INVALID_JSON, f"{where}: the body is not JSON ({exc})") from None


def convert_form(fields: Mapping[str, str], kind: type[T], where: str) -> T:
    """Form fields are text: "true", "512" become the Struct's bool and int."""
    try:
        return msgspec.convert(dict(fields), kind, strict=False)
    except msgspec.ValidationError as exc:
        raise _invalid(exc, where) from None


def require_type(request: web.Request, *allowed: str) -> str:
    if request.content_type not in allowed:
        got = request.content_type or "no Content-Type"
        raise HttpError(
            415, ErrorCode.UNSUPPORTED_MEDIA_TYPE, f"{request.path} takes {' or '.join(allowed)}, not {got}"
        )
    return request.content_type


def audio_from_base64(text: str) -> bytes:
    """Plain base64, or a data URL (`data:audio/wav;base64,...`)."""
    if text.startswith("data:") and "," in text[:200]:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise HttpError(400, ErrorCode.AUDIO_INVALID_BASE64, "audio_base64 is not valid base64") from None


async def read_form(request: web.Request, where: str) -> tuple[dict[str, list[str]], web.FileField | None]:
    """A multipart form: its text fields (every value of a repeated name) and the `file` part.
    aiohttp spools the file to a temporary file and enforces the body cap while reading."""
    try:
        form = await request.post()
    except ValueError as exc:  # a malformed multipart body
        raise HttpError(400, ErrorCode.BAD_REQUEST, f"{where}: the multipart body could not be read ({exc})") from None
    fields: dict[str, list[str]] = {}
    upload: web.FileField | None = None
    for name, value in form.items():
        if name == "file":
            if not isinstance(value, web.FileField):
                raise HttpError(
                    400,
                    ErrorCode.AUDIO_MISSING,
                    f"{where}: `file` must be a file part with a filename (curl -F file=@clip.wav)",
                )
            if upload is not None:
                raise HttpError(400, ErrorCode.INVALID_FIELD, f"{where}: one `file` per request")
            upload = value
        elif isinstance(value, web.FileField):
            raise HttpError(400, ErrorCode.INVALID_FIELD, f"{where}: unexpected file part {name!r}")
        else:
            fields.setdefault(name, []).append(value if isinstance(value, str) else value.decode("utf-8", "replace"))
    return fields, upload


def single_values(fields: dict[str, list[str]], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, values in fields.items():
        if len(values) > 1:
            raise HttpError(400, ErrorCode.INVALID_FIELD, f"{where}: {name!r} is given {len(values)} times")
        out[name] = values[0]
    return out
