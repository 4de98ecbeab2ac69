"""hark.v1 codec: round trips, every rejection, and fuzzing (nothing but ProtocolError escapes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hark.protocol as p

CLIENT_SAMPLES: list[p.ClientEvent] = [
    p.SessionUpdate(config={"input_sample_rate": 48000, "min_silence_ms": 700, "voice": "en-gb"}),
    p.AudioCommit(),
    p.InputText(text="what time is it?"),
    p.ResponseCancel(),
    p.ResponseCancel(response_id="resp_3"),
    p.PlaybackPosition(response_id="resp_1", played_ms=1200),
    p.Ping(id="abc"),
    p.Ping(),
    p.SessionClose(),
    p.VoiceCreate(audio="UklGRg==", transcript="hello there", format="wav", id="v1"),
    p.FunctionCallOutput(call_id="call_1", output='{"temperature_c": 21}'),
]

SERVER_SAMPLES: list[p.ServerEvent] = [
    p.SessionCreated(session_id="s1", protocol="hark.v1", config=p.SessionConfig().to_dict(), limits={}),
    p.SessionUpdated(config=p.SessionConfig().to_dict()),
    p.SpeechStarted(turn_id=1, audio_ms=320),
    p.SpeechStopped(turn_id=1, audio_ms=2270),
    p.TranscriptPartial(turn_id=1, text="go forward ten", stable_text="go forward"),
    p.TranscriptFinal(turn_id=1, text="go forward ten meters"),
    p.ResponseStarted(turn_id=1, response_id="resp_1"),
    p.ResponseTextDelta(response_id="resp_1", delta=" said"),
    p.ResponseAudioStarted(response_id="resp_1", sample_rate=16000),
    p.ResponseAudioDone(response_id="resp_1", audio_ms=1800),
    p.ResponseDone(response_id="resp_1", status=p.ResponseStatus.COMPLETED, text="You said", metrics={"final_ms": 300}),
    p.ResponseFunctionCall(response_id="resp_1", call_id="call_1", name="weather", arguments='{"city": "Paris"}'),
    p.ResponseFunctionCallCancelled(call_id="call_1", reason="barge-in"),
    p.Error(code="invalid_json", message="bad", fatal=False),
    p.Pong(id="abc"),
    p.VoiceCreated(voice="clone-AAAAAAAAAAAAAAAAAAAAAA", duration_ms=7100, sample_rate=16000, id="v1"),
]


@pytest.mark.parametrize("event", CLIENT_SAMPLES, ids=lambda e: e.TYPE)
def test_client_events_round_trip(event: p.ClientEvent) -> None:
    assert p.decode_client(p.encode(event)) == event


@pytest.mark.parametrize("event", SERVER_SAMPLES, ids=lambda e: e.TYPE)
def test_server_events_round_trip(event: p.ServerEvent) -> None:
    assert p.decode_server(p.encode(event)) == event


def test_every_event_type_has_a_sample() -> None:
    assert {type(e) for e in CLIENT_SAMPLES} == set(p.events.CLIENT_EVENTS)
    assert {type(e) for e in SERVER_SAMPLES} == set(p.events.SERVER_EVENTS)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    assert p.decode_client('{"type":"ping","id":"x","future":1}') == p.Ping(id="x")


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{not json", p.ErrorCode.INVALID_JSON),
        (b"\xff\xfe\x00", p.ErrorCode.INVALID_JSON),
        ('{"type":"ping","x":NaN}', p.ErrorCode.INVALID_JSON),
        ("[1,2]", p.ErrorCode.INVALID_EVENT),
        ('"ping"', p.ErrorCode.INVALID_EVENT),
        ('{"no_type":1}', p.ErrorCode.INVALID_EVENT),
        ('{"type":5}', p.ErrorCode.INVALID_EVENT),
        ('{"type":"audio.explode"}', p.ErrorCode.UNKNOWN_EVENT),
        ('{"type":"speech.started","turn_id":1,"audio_ms":0}', p.ErrorCode.UNKNOWN_EVENT),  # server-only
        ('{"type":"input.text"}', p.ErrorCode.INVALID_FIELD),
        ('{"type":"input.text","text":7}', p.ErrorCode.INVALID_FIELD),
        ('{"type":"input.text","text":"   "}', p.ErrorCode.INVALID_FIELD),
        ('{"type":"playback.position","response_id":"r","played_ms":-1}', p.ErrorCode.INVALID_FIELD),
        ('{"type":"playback.position","response_id":"r","played_ms":true}', p.ErrorCode.INVALID_FIELD),
        ('{"type":"playback.position","response_id":"r","played_ms":1.5}', p.ErrorCode.INVALID_FIELD),
        ('{"type":"session.update","config":[]}', p.ErrorCode.INVALID_FIELD),
        ('{"type":"session.update","config":{"input_sample_rate":12345}}', p.ErrorCode.INVALID_FIELD),
        ('{"type":"session.update","config":{"vad_threshold":2}}', p.ErrorCode.INVALID_FIELD),
        ('{"type":"session.update","config":{"min_silence_ms":"500"}}', p.ErrorCode.INVALID_FIELD),
        ('{"type":"session.update","config":{"audio_output":1}}', p.ErrorCode.INVALID_FIELD),
        ('{"type":"session.update","config":{"silence":500}}', p.ErrorCode.INVALID_FIELD),
        ('{"type":"ping","id":' + json.dumps("x" * 200) + "}", p.ErrorCode.INVALID_FIELD),
        ('{"type":"input.text","text":"' + "a" * (p.MAX_MESSAGE_BYTES + 1) + '"}', p.ErrorCode.MESSAGE_TOO_LARGE),
    ],
)
def test_rejections_carry_stable_codes(message: str | bytes, code: p.ErrorCode) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_client(message)
    assert info.value.code == code
    assert info.value.message


def test_config_patch_applies_and_validates() -> None:
    cfg = p.SessionConfig().updated({"input_sample_rate": 8000, "vad_threshold": 0.6})
    assert cfg.input_sample_rate == 8000 and cfg.vad_threshold == 0.6
    with pytest.raises(p.ProtocolError, match="input_sample_rate"):
        cfg.updated({"input_sample_rate": 1})


@pytest.mark.parametrize(
    ("n_bytes", "code"),
    [
        (3201, p.ErrorCode.AUDIO_ODD_LENGTH),
        (100, p.ErrorCode.AUDIO_FRAME_TOO_SHORT),  # 3 ms at 16 kHz
        (32002, p.ErrorCode.AUDIO_FRAME_TOO_LONG),  # just over 1000 ms
        (p.MAX_MESSAGE_BYTES + 2, p.ErrorCode.MESSAGE_TOO_LARGE),
    ],
)
def test_bad_audio_frames(n_bytes: int, code: p.ErrorCode) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.validate_audio_frame(b"\0" * n_bytes, 16000)
    assert info.value.code == code


def test_good_audio_frames() -> None:
    assert p.validate_audio_frame(b"\0" * 3200, 16000) == 100.0
    assert p.validate_audio_frame(b"\0" * 320, 16000) == 10.0
    assert p.validate_audio_frame(b"\0" * 96000, 48000) == 1000.0


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_protocol_errors(data: bytes) -> None:
    for decode in (p.decode_client, p.decode_server):
        try:
            decode(data)
        except p.ProtocolError:
            pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
event_types = st.sampled_from(
    [cls.TYPE for cls in p.events.CLIENT_EVENTS + p.events.SERVER_EVENTS] + ["", "x", "ping.pong"]
)


@settings(max_examples=600, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "type",
                "config",
                "text",
                "response_id",
                "played_ms",
                "id",
                "turn_id",
                "audio_ms",
                "status",
                "metrics",
                "delta",
                "code",
                "message",
                "fatal",
                "session_id",
                "protocol",
                "limits",
                "sample_rate",
                "stable_text",
            ]
        ),
        json_values,
        max_size=6,
    ),
    event_types,
)
def test_random_json_objects_raise_only_protocol_errors(obj: dict[str, Any], kind: str) -> None:
    obj = {**obj, "type": kind} if "type" not in obj else obj
    text = json.dumps(obj)
    for decode in (p.decode_client, p.decode_server):
        try:
            event = decode(text)
        except p.ProtocolError:
            continue
        assert decode(p.encode(event)) == event  # whatever decodes re-encodes to the same event


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=200_000), st.sampled_from(p.SUPPORTED_SAMPLE_RATES))
def test_audio_validation_never_raises_anything_else(n_bytes: int, rate: int) -> None:
    try:
        duration = p.validate_audio_frame(b"\0" * n_bytes, rate)
    except p.ProtocolError:
        return
    assert 10 <= duration <= 1000 and n_bytes % 2 == 0
