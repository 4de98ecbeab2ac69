"""Sans-IO encode/decode of hark.v1 text frames (msgspec). Decoding raises only ProtocolError.

Decoding takes one msgspec pass into the tagged union of the side's events, which checks the JSON,
the `type` and every field against its declaration (bounds included). Only when that pass refuses a
message does a second, slower pass work out which stable code and which field to blame: a hostile
client can make the server take it, but it is bounded by the message size like the first.

A lone UTF-16 surrogate escape (`"\\ud800"`, what a browser's JSON.stringify makes of text cut
inside an emoji) is not a character and cannot be sent on as UTF-8: a client frame carrying one is
refused as `invalid_json`. Strings the server makes itself can still hold one (a model's output
decoded by a lenient JSON parser); `encode` sends U+FFFD in its place rather than fail.
"""

from __future__ import annotations

import functools
import json
import numbers
from typing import Any, TypeVar

import msgspec

from .config import SessionLimits, validate_config_patch
from .errors import ErrorCode, ProtocolError
from .events import (
    CLIENT_EVENTS,
    MAX_TEXT_CHARS,
    SERVER_EVENTS,
    ClientEvent,
    Event,
    InputText,
    ServerEvent,
    SessionUpdate,
)
from .schema import FieldSchema, Mismatch

__all__ = ["MAX_MESSAGE_BYTES", "MAX_TEXT_CHARS", "decode_client", "decode_server", "encode", "utf8_length"]

MAX_MESSAGE_BYTES = SessionLimits().max_message_bytes
_UTF8_MAX_BYTES_PER_CHAR = 4


def _enc_hook(obj: Any) -> Any:
    # numpy scalars and other registered numbers, which the standard json module took as well
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    raise TypeError(f"{type(obj).__name__} is not a JSON value")


_ENCODER = msgspec.json.Encoder(enc_hook=_enc_hook)
_E = TypeVar("_E")
_CLIENT_DECODER = msgspec.json.Decoder(ClientEvent)
_SERVER_DECODER = msgspec.json.Decoder(ServerEvent)
_CLIENT_BY_TYPE: dict[str, type] = {cls.TYPE: cls for cls in CLIENT_EVENTS}
_SERVER_BY_TYPE: dict[str, type] = {cls.TYPE: cls for cls in SERVER_EVENTS}


def encode(event: Event) -> str:
    """Serialize an event to a JSON text frame (compact UTF-8; non-finite numbers become null).

    Never fails on a string: a lone surrogate, which UTF-8 cannot carry, is sent as U+FFFD.
    """
    try:
        return _ENCODER.encode(event).decode()
    except UnicodeEncodeError:
        return _ENCODER.encode(_scrub(msgspec.to_builtins(event, enc_hook=_enc_hook))).decode()


def decode_client(data: str | bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> ClientEvent:
    """Parse one client text frame into a client event (server side)."""
    event = _decode(data, max_bytes, _CLIENT_DECODER, _CLIENT_BY_TYPE, "client")
    if isinstance(event, SessionUpdate):
        return SessionUpdate(config=validate_config_patch(event.config))
    if isinstance(event, InputText) and event.text.isspace():
        raise ProtocolError(ErrorCode.INVALID_FIELD, "input.text: field 'text' must not be only whitespace")
    return event


def decode_server(data: str | bytes, max_bytes: int = MAX_MESSAGE_BYTES) -> ServerEvent:
    """Parse one server text frame into a server event (client side)."""
    return _decode(data, max_bytes, _SERVER_DECODER, _SERVER_BY_TYPE, "server")


def _decode(
    data: str | bytes, max_bytes: int, decoder: msgspec.json.Decoder[_E], by_type: dict[str, type], side: str
) -> _E:
    _check_size(data, max_bytes)
    try:
        return decoder.decode(data)
    except Exception:
        raise _explain(data, by_type, side) from None


def utf8_length(data: str | bytes, limit: int) -> int:
    """The UTF-8 size of `data` where that matters for `limit`, else a bound on the same side of it.

    Exact for bytes and ASCII text; other text is counted only when it could be either side of the
    limit (each character is 1 to 4 bytes), so the common small message costs no extra pass.
    """
    n = len(data)
    if isinstance(data, (bytes, bytearray)) or n > limit or data.isascii() or n * _UTF8_MAX_BYTES_PER_CHAR <= limit:
        return n
    return len(data.encode("utf-8", "surrogatepass"))


def _check_size(data: str | bytes, max_bytes: int) -> None:
    size = utf8_length(data, max_bytes)
    if size > max_bytes:
        raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"message of {size} bytes or more exceeds {max_bytes}")


def _scrub(obj: Any) -> Any:
    """Builtins with every lone surrogate replaced by U+FFFD (pairs stored as two halves are joined)."""
    if isinstance(obj, str):
        return obj.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(obj, dict):
        return {_scrub(k): _scrub(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    return obj


# ---------------------------------------------------------------- why a frame was refused


def _explain(data: str | bytes, registry: dict[str, type], side: str) -> ProtocolError:
    """The ProtocolError for a frame the fast pass refused: the first rule it breaks, in contract order."""
    try:
        return _blame(data, registry, side)
    except Exception as exc:  # a gap in the explaining must not break the promise of ProtocolError only
        return ProtocolError(ErrorCode.INVALID_EVENT, f"frame refused ({type(exc).__name__} while explaining why)")


def _blame(data: str | bytes, registry: dict[str, type], side: str) -> ProtocolError:
    try:
        obj = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeError, RecursionError, ValueError) as exc:
        return ProtocolError(ErrorCode.INVALID_JSON, _json_problem(data, exc))
    if not isinstance(obj, dict):
        return ProtocolError(ErrorCode.INVALID_EVENT, "a text frame must be a JSON object with a 'type'")
    kind = obj.get("type")
    if not isinstance(kind, str):
        return ProtocolError(ErrorCode.INVALID_EVENT, "missing string field 'type'")
    cls = registry.get(kind)
    if cls is None:
        known = ", ".join(sorted(registry))
        return ProtocolError(ErrorCode.UNKNOWN_EVENT, f"unknown {side} event type {kind[:64]!r}; known: {known}")
    schema = _schema(cls)
    for name, required in _required(cls):
        if name not in obj:
            if required:
                return ProtocolError(ErrorCode.INVALID_FIELD, f"{kind}: missing field '{name}'")
            continue
        try:
            schema.fields[name].convert(name, obj[name])
        except Mismatch as exc:
            return ProtocolError(ErrorCode.INVALID_FIELD, f"{kind}: field '{name}' must be {exc.expected}")
    # every field fits on its own, so the frame itself is odd (a repeated "type" key, say)
    return ProtocolError(ErrorCode.INVALID_EVENT, f"{kind}: not a valid {kind} event")


@functools.cache
def _required(cls: type) -> tuple[tuple[str, bool], ...]:
    return tuple((f.name, f.required) for f in msgspec.structs.fields(cls))  # slow: resolves annotations


@functools.cache
def _schema(cls: type) -> FieldSchema:
    return FieldSchema(cls)


_LONE_SURROGATE = (
    "not valid JSON text: a lone surrogate escape (\\ud800-\\udfff without its other half: text cut inside "
    "a character such as an emoji); send whole characters"
)


def _json_problem(data: str | bytes, exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "not valid JSON: nested too deeply"
    if isinstance(exc, UnicodeEncodeError):
        return _LONE_SURROGATE  # a str holding half a pair itself (websockets never hands one over)
    if isinstance(data, str):
        escaped = "\\ud" in data or "\\uD" in data
    else:
        escaped = b"\\ud" in data or b"\\uD" in data
    if escaped:
        # the standard parser takes lone surrogates: if it reads the frame and finds one, that was it
        try:
            lax = json.loads(data, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            pass
        else:
            if _has_lone_surrogate(lax):
                return _LONE_SURROGATE
    return f"not valid UTF-8 JSON: {exc}"


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _has_lone_surrogate(obj: Any) -> bool:
    if isinstance(obj, str):
        return not obj.isascii() and any("\ud800" <= c <= "\udfff" for c in obj)
    if isinstance(obj, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(_has_lone_surrogate(v) for v in obj)
    return False
