"""hark.v1 codec against hostile input: numbers range-checked, lone surrogates, sizes in bytes, enums.

Issue 12 D1 (a 401-digit `played_ms` reached the session and raised OverflowError there), D4 (a lone
surrogate escape echoed back made `encode` fail and the connection abort with 1006), the 1 MiB limit
that counted characters, and issue 10's codec that raised KeyError for a field type it did not list.
"""

from __future__ import annotations

import json
import math
import typing
from typing import Annotated, Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hark.protocol as p
from hark.protocol import codec, schema
from hark.protocol.events import CLIENT_EVENTS, SERVER_EVENTS

LONE_HIGH = "\\ud800"  # JSON escapes, as they appear on the wire
LONE_LOW = "\\udc00"
EMOJI = "\\ud83d\\ude00"  # a proper pair: U+1F600


def _code(message: str | bytes) -> p.ErrorCode:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_client(message)
    assert info.value.message
    return info.value.code


# ---------------------------------------------------------------- D1: every client number is bounded


@pytest.mark.parametrize(
    "played_ms",
    ["1" + "0" * 400, str(p.MAX_PLAYED_MS + 1), "-1", "1e400", "1.0", "true", "null", '"5"'],
)
def test_played_ms_out_of_range_is_refused_by_the_codec(played_ms: str) -> None:
    message = '{"type":"playback.position","response_id":"resp_1","played_ms":' + played_ms + "}"
    assert _code(message) in {p.ErrorCode.INVALID_FIELD, p.ErrorCode.INVALID_JSON}


def test_401_digit_played_ms_names_the_field_and_the_range() -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_client('{"type":"playback.position","response_id":"r","played_ms":1' + "0" * 400 + "}")
    assert info.value.code == p.ErrorCode.INVALID_FIELD
    assert "played_ms" in info.value.message and str(p.MAX_PLAYED_MS) in info.value.message


def test_played_ms_at_the_bounds_is_accepted() -> None:
    for played in (0, p.MAX_PLAYED_MS):
        event = p.decode_client(json.dumps({"type": "playback.position", "response_id": "r", "played_ms": played}))
        assert event == p.PlaybackPosition(response_id="r", played_ms=played)
        assert math.isfinite(float(played))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("min_silence_ms", 10**400),
        ("min_silence_ms", -(10**400)),
        ("speech_pad_ms", 10**30),
        ("min_interrupt_ms", 2**63),
        ("input_sample_rate", 10**400),
        ("vad_threshold", 10**400),
        ("vad_threshold", 0.0),
        ("voice", "x" * 65),
        ("instructions", "x" * (p.events.MAX_TEXT_CHARS + 1)),
    ],
)
def test_config_numbers_and_strings_are_bounded(key: str, value: Any) -> None:
    message = json.dumps({"type": "session.update", "config": {key: value}})
    with pytest.raises(p.ProtocolError) as info:
        p.decode_client(message)
    assert info.value.code == p.ErrorCode.INVALID_FIELD and key in info.value.message


def test_vad_threshold_1e999_is_refused() -> None:
    # the standard json module reads 1e999 as inf; nothing non-finite may reach the session
    assert _code('{"type":"session.update","config":{"vad_threshold":1e999}}') in {
        p.ErrorCode.INVALID_FIELD,
        p.ErrorCode.INVALID_JSON,
    }


def _numeric_bounds(hint: Any) -> list[tuple[Any, Any]]:
    """(lower, upper) of every int/float a hint admits; None where it is unbounded."""
    info = msgspec.inspect.type_info(schema.runtime_type(hint))
    found: list[tuple[Any, Any]] = []

    def walk(t: msgspec.inspect.Type) -> None:
        if isinstance(t, msgspec.inspect.UnionType):
            for arg in t.types:
                walk(arg)
        elif isinstance(t, msgspec.inspect.IntType | msgspec.inspect.FloatType):
            found.append((t.ge if t.ge is not None else t.gt, t.le if t.le is not None else t.lt))
        elif isinstance(t, msgspec.inspect.LiteralType):
            found.append((min(t.values), max(t.values)) if all(isinstance(v, int) for v in t.values) else (0, 0))

    walk(info)
    return found


@pytest.mark.parametrize("cls", CLIENT_EVENTS, ids=lambda c: c.TYPE)
def test_every_client_number_field_declares_both_bounds(cls: type) -> None:
    # a field added later without bounds fails here, before a handler can be surprised by it
    for field in msgspec.structs.fields(cls):
        for low, high in _numeric_bounds(field.type):
            assert low is not None and high is not None, f"{cls.TYPE}.{field.name} needs ge= and le="


def test_every_session_config_number_declares_both_bounds() -> None:
    hints = typing.get_type_hints(p.SessionConfig, include_extras=True)
    numeric = 0
    for name, hint in hints.items():
        for low, high in _numeric_bounds(hint):
            numeric += 1
            assert low is not None and high is not None, f"config.{name} needs bounds"
    assert numeric >= 6  # the rates, vad_threshold and the three durations


def test_every_config_string_is_length_capped() -> None:
    for name, hint in typing.get_type_hints(p.SessionConfig, include_extras=True).items():
        info = msgspec.inspect.type_info(schema.runtime_type(hint))
        if isinstance(info, msgspec.inspect.StrType):
            assert info.max_length is not None, f"config.{name} needs max_length"


big_or_odd_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=10**18, max_value=10**400),
    st.integers(min_value=-(10**400), max_value=-1),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["played_ms", "min_silence_ms", "speech_pad_ms", "min_interrupt_ms", "vad_threshold"]),
    big_or_odd_numbers,
)
def test_whatever_number_decodes_is_in_range(field: str, number: int | float) -> None:
    if field == "played_ms":
        message = json.dumps({"type": "playback.position", "response_id": "r", "played_ms": number})
    else:
        message = json.dumps({"type": "session.update", "config": {field: number}})
    try:
        event = p.decode_client(message)
    except p.ProtocolError as exc:
        assert exc.code == p.ErrorCode.INVALID_FIELD
        return
    if isinstance(event, p.PlaybackPosition):
        assert 0 <= event.played_ms <= p.MAX_PLAYED_MS
    else:
        assert isinstance(event, p.SessionUpdate)
        value = event.config[field]
        assert math.isfinite(value) and -1 < value <= 5000
        p.SessionConfig().updated(event.config)  # and the session can apply it


# ---------------------------------------------------------------- a codec that raises only ProtocolError


class _Exotic(msgspec.Struct, frozen=True, tag_field="type", tag="x.exotic"):
    """Field types no hark.v1 event has today: the codec must refuse bad values with ProtocolError."""

    ratios: list[float]
    window: tuple[int, int]
    level: float | None
    tags: dict[str, str] = {}
    ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.5


@pytest.mark.parametrize(
    "payload",
    [
        {"ratios": "no", "window": [1, 2], "level": None},
        {"ratios": [1.5], "window": [1], "level": None},
        {"ratios": [], "window": [1, 2], "level": "high"},
        {"ratios": [], "window": [1, 2], "level": 1.0, "tags": {"a": 1}},
        {"ratios": [], "window": [1, 2], "level": 1.0, "ratio": 2},
        {"window": [1, 2], "level": 1.0},
    ],
)
def test_new_field_types_are_refused_with_protocol_error(payload: dict[str, Any]) -> None:
    message = json.dumps({"type": "x.exotic", **payload})
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(message, type=_Exotic)  # the fast pass refuses it ...
    error = codec._explain(message, {"x.exotic": _Exotic}, "test")  # ... and the slow pass names the field
    assert isinstance(error, p.ProtocolError) and error.code == p.ErrorCode.INVALID_FIELD
    assert error.message.startswith("x.exotic: ")


@pytest.mark.parametrize("cls", CLIENT_EVENTS + SERVER_EVENTS, ids=lambda c: c.TYPE)
def test_every_field_of_every_event_can_be_described_and_checked(cls: type) -> None:
    for field in msgspec.structs.fields(cls):
        assert schema.describe(field.type)  # no field type the messages cannot name
        with pytest.raises(schema.Mismatch):
            schema.convert(field.name, object(), field.type)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from([cls.TYPE for cls in CLIENT_EVENTS + SERVER_EVENTS]),
    st.dictionaries(
        st.sampled_from(["config", "text", "response_id", "played_ms", "id", "turn_id", "status", "sample_rate"]),
        st.recursive(
            st.none()
            | st.booleans()
            | big_or_odd_numbers
            | st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=8),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
            max_leaves=8,
        ),
        max_size=5,
    ),
)
def test_hostile_json_raises_only_protocol_errors(kind: str, fields: dict[str, Any]) -> None:
    message = json.dumps({"type": kind, **fields})  # ensure_ascii: lone surrogates go out as escapes
    for decode in (p.decode_client, p.decode_server):
        try:
            event = decode(message)
        except p.ProtocolError:
            continue
        text = p.encode(event)
        text.encode("utf-8")  # what the WebSocket layer does with it
        assert decode(text) == event


# ---------------------------------------------------------------- D4: lone surrogates


@pytest.mark.parametrize(
    "message",
    [
        '{"type":"ping","id":"' + LONE_HIGH + '"}',
        '{"type":"ping","id":"ab' + LONE_LOW + '"}',
        '{"type":"input.text","text":"cut inside an emoji ' + LONE_HIGH + '"}',
        '{"type":"input.text","text":"' + LONE_LOW + LONE_HIGH + '"}',  # halves in the wrong order
        '{"type":"session.update","config":{"voice":"' + LONE_HIGH + '"}}',
        '{"type":"session.update","config":{"instructions":"be brief ' + LONE_LOW + '"}}',
        '{"type":"session.update","config":{"' + LONE_HIGH + '":1}}',  # an unknown key is echoed too
        '{"type":"response.cancel","response_id":"' + LONE_HIGH + '"}',
        '{"type":"ping","id":"x","future":"' + LONE_HIGH + '"}',  # even in a field that is ignored
    ],
)
def test_lone_surrogate_escapes_are_refused_at_decode(message: str) -> None:
    for data in (message, message.encode()):
        with pytest.raises(p.ProtocolError) as info:
            p.decode_client(data)
        assert info.value.code == p.ErrorCode.INVALID_JSON
        assert "lone surrogate" in info.value.message


def test_surrogate_pairs_are_whole_characters_and_pass() -> None:
    event = p.decode_client('{"type":"input.text","text":"hi ' + EMOJI + '"}')
    assert event == p.InputText(text="hi \U0001f600")
    assert p.decode_client(p.encode(event)) == event
    ping = p.decode_client('{"type":"ping","id":"' + EMOJI + '"}')
    assert p.encode(p.Pong(id=ping.id if isinstance(ping, p.Ping) else None)) == '{"type":"pong","id":"\U0001f600"}'


def test_a_str_holding_a_surrogate_is_refused_not_raised() -> None:
    # not what websockets hands over (it decodes UTF-8 strictly), but a caller may
    with pytest.raises(p.ProtocolError) as info:
        p.decode_client('{"type":"ping","id":"\ud800"}')
    assert info.value.code == p.ErrorCode.INVALID_JSON


@pytest.mark.parametrize(
    "event",
    [
        p.Pong(id="\ud800"),
        p.ResponseTextDelta(response_id="resp_1", delta="model output cut \udc00 inside"),
        p.TranscriptFinal(turn_id=1, text="x", metadata={"\ud800key": ["\udfff"]}),
        p.Error(code="invalid_field", message="config.\ud800 is not a known setting"),
        p.SessionUpdated(config={"voice": "\ud83d"}),
    ],
    ids=lambda e: e.TYPE,
)
def test_encode_never_fails_on_a_lone_surrogate(event: p.ServerEvent) -> None:
    text = p.encode(event)
    text.encode("utf-8")  # sendable: the WebSocket layer would raise here before
    assert "\ufffd" in text
    decoded = p.decode_server(text)
    assert type(decoded) is type(event)


def test_encode_joins_a_pair_stored_as_two_halves() -> None:
    assert p.encode(p.Pong(id="\ud83d\ude00")) == '{"type":"pong","id":"\U0001f600"}'


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=40))
def test_encode_output_is_always_utf8(text: str) -> None:
    for event in (p.ResponseTextDelta(response_id="r", delta=text), p.Pong(id=text), p.Error(code=text, message=text)):
        wire = p.encode(event)
        wire.encode("utf-8")
        decoded = p.decode_server(wire)
        if not any("\ud800" <= c <= "\udfff" for c in text):
            assert decoded == event


def test_encode_does_not_raise_on_non_finite_or_numpy_numbers() -> None:
    event = p.ResponseDone(
        response_id="r",
        status=p.ResponseStatus.COMPLETED,
        text="",
        metrics={"a": math.nan, "b": math.inf, "c": np.float64(1.5), "d": np.int64(7), "e": np.float32(0.5)},
    )
    decoded = p.decode_server(p.encode(event))
    assert isinstance(decoded, p.ResponseDone)
    assert decoded.metrics == {"a": None, "b": None, "c": 1.5, "d": 7, "e": 0.5}


# ---------------------------------------------------------------- message size counts bytes


def test_multibyte_text_over_the_byte_limit_is_refused() -> None:
    # 3 bytes per character: far under the limit in characters, three times over it in bytes
    text = "语" * (p.MAX_MESSAGE_BYTES // 1 - 100)
    message = json.dumps({"type": "input.text", "text": text}, ensure_ascii=False)
    assert len(message) < p.MAX_MESSAGE_BYTES < len(message.encode())
    for data in (message, message.encode()):
        with pytest.raises(p.ProtocolError) as info:
            p.decode_client(data)
        assert info.value.code == p.ErrorCode.MESSAGE_TOO_LARGE


def test_size_limit_is_exact_in_bytes() -> None:
    head, tail = '{"type":"ping","id":"x","pad":"', '"}'
    fill = p.MAX_MESSAGE_BYTES - len(head) - len(tail)
    at_limit = head + "é" * (fill // 2) + "a" * (fill % 2) + tail  # é is 2 bytes
    assert len(at_limit.encode()) == p.MAX_MESSAGE_BYTES
    assert p.decode_client(at_limit) == p.Ping(id="x")
    over = head + "é" * (fill // 2) + "a" * (fill % 2 + 1) + tail
    with pytest.raises(p.ProtocolError) as info:
        p.decode_client(over)
    assert info.value.code == p.ErrorCode.MESSAGE_TOO_LARGE


def test_decode_takes_the_sessions_limit() -> None:
    message = json.dumps({"type": "input.text", "text": "x" * 200})
    assert p.decode_client(message) == p.InputText(text="x" * 200)
    with pytest.raises(p.ProtocolError) as info:
        p.decode_client(message, max_bytes=100)
    assert info.value.code == p.ErrorCode.MESSAGE_TOO_LARGE


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60), st.integers(min_value=0, max_value=250))
def test_utf8_length_is_exact_where_the_limit_cares(text: str, limit: int) -> None:
    exact = len(text.encode())
    measured = p.utf8_length(text, limit)
    assert (measured > limit) == (exact > limit)
    assert p.utf8_length(text.encode(), limit) == exact


# ---------------------------------------------------------------- closed sets are typed


def test_response_done_status_is_an_enum_after_decoding() -> None:
    text = '{"type":"response.done","response_id":"r","status":"cancelled","text":"","metrics":{}}'
    event = p.decode_server(text)
    assert isinstance(event, p.ResponseDone) and event.status is p.ResponseStatus.CANCELLED
    # a str status (call sites that pass status.value) still encodes and compares the same
    legacy = p.ResponseDone(response_id="r", status="cancelled", text="", metrics={})  # type: ignore[arg-type]
    assert p.encode(legacy) == text and legacy == event


@pytest.mark.parametrize(
    "message",
    [
        '{"type":"response.done","response_id":"r","status":"exploded","text":"","metrics":{}}',
        '{"type":"response.audio.started","response_id":"r","sample_rate":16000,"encoding":"opus"}',
        '{"type":"response.audio.started","response_id":"r","sample_rate":0}',
        '{"type":"session.created","session_id":"s","protocol":"hark.v9","config":{},"limits":{}}',
        '{"type":"speech.started","turn_id":-1,"audio_ms":0}',
    ],
)
def test_closed_sets_and_bounds_in_server_events(message: str) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_server(message)
    assert info.value.code == p.ErrorCode.INVALID_FIELD


def test_error_codes_stay_open_for_newer_servers() -> None:
    event = p.decode_server('{"type":"error","code":"some_future_code","message":"m","fatal":false}')
    assert event == p.Error(code="some_future_code", message="m")


@pytest.mark.parametrize("cls", CLIENT_EVENTS + SERVER_EVENTS, ids=lambda c: c.TYPE)
def test_events_are_documented_and_typed_by_their_tag(cls: type) -> None:
    assert cls.__doc__ and cls.__doc__.strip()
    assert cls.TYPE == cls.__struct_config__.tag  # type: ignore[attr-defined]


def _update(**config: Any) -> str:
    return json.dumps({"type": "session.update", "config": config})


def test_rejection_messages_say_what_the_field_takes() -> None:
    cases = {
        '{"type":"ping","id":5}': "ping: field 'id' must be a string of at most 128 chars or null",
        '{"type":"input.text","text":""}': "input.text: field 'text' must be a string of 1 to 8000 chars",
        '{"type":"input.text","text":"  "}': "input.text: field 'text' must not be only whitespace",
        _update(min_silence_ms=1): "config.min_silence_ms must be an integer in [100, 5000]",
        _update(vad_threshold=1): "config.vad_threshold must be a number in [0.05, 0.95]",
        _update(audio_output=1): "config.audio_output must be true or false",
        _update(
            input_sample_rate=1
        ): "config.input_sample_rate must be one of 8000, 16000, 22050, 24000, 32000, 44100, 48000",
    }
    for message, expected in cases.items():
        with pytest.raises(p.ProtocolError) as info:
            p.decode_client(message)
        assert info.value.message == expected
