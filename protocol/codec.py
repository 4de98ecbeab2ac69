"""Sans-IO encode/decode of hark.v1 text frames. Decoding validates and raises only ProtocolError."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any, Union

from .config import SessionLimits, validate_config_patch
from .errors import ErrorCode, ProtocolError
from .events import CLIENT_EVENTS, SERVER_EVENTS, ClientEvent, Event, ResponseStatus, ServerEvent

MAX_MESSAGE_BYTES = SessionLimits().max_message_bytes
MAX_TEXT_CHARS = 8000  # input.text and other free text from clients


def encode(event: Event) -> str:
    """Serialize an event to a JSON text frame (compact, UTF-8 safe)."""
    payload: dict[str, Any] = {"type": event.TYPE}
    for f in dataclasses.fields(event):
        payload[f.name] = getattr(event, f.name)
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def decode_client(data: str | bytes) -> ClientEvent:
    """Parse one client text frame into a client event (server side)."""
    event = _decode(data, _CLIENT_BY_TYPE, "client")
    return typing.cast(ClientEvent, event)


def decode_server(data: str | bytes) -> ServerEvent:
    """Parse one server text frame into a server event (client side)."""
    event = _decode(data, _SERVER_BY_TYPE, "server")
    return typing.cast(ServerEvent, event)


_CLIENT_BY_TYPE: dict[str, type] = {cls.TYPE: cls for cls in CLIENT_EVENTS}  # type: ignore[attr-defined]
_SERVER_BY_TYPE: dict[str, type] = {cls.TYPE: cls for cls in SERVER_EVENTS}  # type: ignore[attr-defined]


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _decode(data: str | bytes, registry: dict[str, type], side: str) -> object:
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(ErrorCode.MESSAGE_TOO_LARGE, f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        obj = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ProtocolError(ErrorCode.INVALID_JSON, f"not valid UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(ErrorCode.INVALID_EVENT, "a text frame must be a JSON object with a 'type'")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.INVALID_EVENT, "missing string field 'type'")
    cls = registry.get(kind)
    if cls is None:
        known = ", ".join(sorted(registry))
        raise ProtocolError(ErrorCode.UNKNOWN_EVENT, f"unknown {side} event type {kind[:64]!r}; known: {known}")
    kwargs = {
        f.name: _field_value(kind, f, obj) for f in dataclasses.fields(cls) if f.name in obj or not _has_default(f)
    }
    _check_semantics(kind, kwargs)
    return cls(**kwargs)


def _has_default(f: dataclasses.Field[Any]) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _field_value(kind: str, f: dataclasses.Field[Any], obj: dict[str, Any]) -> Any:
    if f.name not in obj:
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"{kind}: missing field '{f.name}'")
    value = obj[f.name]
    expected = _FIELD_TYPES[f.type] if isinstance(f.type, str) else f.type
    if not _matches(value, expected):
        raise ProtocolError(ErrorCode.INVALID_FIELD, f"{kind}: field '{f.name}' must be {_describe(expected)}")
    return value


# dataclass annotations are strings under `from __future__ import annotations`; these are all we use
_FIELD_TYPES: dict[str, Any] = {
    "str": str,
    "int": int,
    "bool": bool,
    "float": float,
    "str | None": str | None,
    "dict[str, Any]": dict,
}


def _matches(value: Any, expected: Any) -> bool:
    if typing.get_origin(expected) in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, expected)


def _describe(expected: Any) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", float: "a number", dict: "an object"}
    if typing.get_origin(expected) in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else names[a] for a in typing.get_args(expected))
    return names[expected]


def _check_semantics(kind: str, kwargs: dict[str, Any]) -> None:
    """Value rules beyond JSON types."""
    if kind == "session.update":
        kwargs["config"] = validate_config_patch(kwargs["config"])
    elif kind == "input.text":
        text = kwargs["text"]
        if not text.strip() or len(text) > MAX_TEXT_CHARS:
            raise ProtocolError(ErrorCode.INVALID_FIELD, f"input.text: 'text' must be 1 to {MAX_TEXT_CHARS} chars")
    elif kind == "playback.position":
        if kwargs["played_ms"] < 0:
            raise ProtocolError(ErrorCode.INVALID_FIELD, "playback.position: 'played_ms' must be >= 0")
    elif kind == "ping":
        ping_id = kwargs.get("id")
        if ping_id is not None and len(ping_id) > 128:
            raise ProtocolError(ErrorCode.INVALID_FIELD, "ping: 'id' must be at most 128 chars")
    elif kind == "response.done":
        if kwargs["status"] not in {s.value for s in ResponseStatus}:
            raise ProtocolError(ErrorCode.INVALID_FIELD, "response.done: unknown 'status'")
