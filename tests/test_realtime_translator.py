"""The OpenAI Realtime translator, sans-IO: Realtime client events -> session ops, hark.v1 events -> Realtime.

The Session side is played by hand-written hark.v1 event sequences in the order the Session emits
them (protocol/PROTOCOL.md). Every server event the scenarios produce also goes through the OpenAI
SDKs' own pydantic types and openai-agents' event handler, in a venv of their own (realtime_sdk.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import realtime_sdk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hark.protocol as p
from hark.protocol.realtime import AudioFormat, Inbound, RealtimeErrorCode, RealtimeTranslator, encode, ops
from hark.protocol.realtime.events import CLIENT_EVENTS, UNSUPPORTED_EVENTS
from hark.protocol.realtime.g711 import G711Codec

Event = dict[str, Any]
RATE = 24000

# every server event of every scenario, per dialect, for the SDK validation at the end of the module
EMITTED: dict[str, list[Event]] = {"ga": [], "beta": []}


class Harness:
    """A translator plus a record of everything it said, with helpers that play the Session's part."""

    def __init__(self, dialect: str = "ga", **kwargs: Any) -> None:
        self.tr = RealtimeTranslator(dialect, model="hark-test", **kwargs)
        self.dialect = dialect
        self.events: list[Event] = []
        self.ops: list[ops.SessionOp] = []
        self.start()

    def _keep(self, events: list[Event] | tuple[Event, ...]) -> list[Event]:
        for event in events:
            json.loads(encode(event))  # every event is JSON-encodable as it stands
        self.events += events
        EMITTED[self.dialect].extend(events)
        return list(events)

    def start(self) -> list[Event]:
        created = p.SessionCreated(
            session_id="s1",
            protocol="hark.v1",
            config=p.SessionConfig().to_dict(),
            limits=p.SessionLimits().to_dict(),
            engines={"asr": "pocketsphinx", "llm": "echo", "tts": "espeak"},
        )
        self.ops += self.tr.setup_ops()
        return self._keep(self.tr.on_server_event(created))

    def send(self, event: Event | str) -> Inbound:
        inbound = self.tr.receive_text(event if isinstance(event, str) else json.dumps(event))
        self.ops += inbound.ops
        self._keep(inbound.events)
        return inbound

    def server(self, *events: Any) -> list[Event]:
        out: list[Event] = []
        for event in events:
            out += self._keep(self.tr.on_server_event(event))
        return out

    def audio(self, pcm: bytes) -> list[Event]:
        return self._keep(self.tr.on_reply_audio(pcm))

    def user_turn(self, turn: int = 1, text: str = "go forward ten meters") -> list[Event]:
        return self.server(
            p.SpeechStarted(turn, 300),
            p.TranscriptPartial(turn, "go for", ""),
            p.TranscriptPartial(turn, "go forward ten", "go forward"),
            p.SpeechStopped(turn, 2300),
            p.TranscriptFinal(turn, text),
        )

    def reply(self, rid: str = "resp_1", turn: int = 1, text: str = "You said: go.", frames: int = 3) -> list[Event]:
        out = self.server(p.ResponseStarted(turn, rid))
        words = text.split(" ")
        out += self.server(*(p.ResponseTextDelta(rid, (" " if i else "") + w) for i, w in enumerate(words)))
        out += self.server(p.ResponseAudioStarted(rid, RATE))
        for i in range(frames):
            out += self.audio(tone(100, RATE, 200 + 50 * i))
        out += self.server(p.ResponseAudioDone(rid, 100 * frames))
        out += self.server(p.ResponseDone(rid, "completed", text, METRICS))
        return out


METRICS = {"final_ms": 40, "first_token_ms": 60, "first_audio_ms": 90, "prompt_tokens": 30, "cached_tokens": 24}


def tone(ms: int, rate: int, hz: float = 440.0) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def types(events: list[Event]) -> list[str]:
    return [e["type"] for e in events]


def only(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e["type"] == kind]


def error_of(inbound: Inbound) -> dict[str, Any]:
    assert not inbound.ops, inbound.ops
    assert types(list(inbound.events)) == ["error"], inbound.events
    error: dict[str, Any] = inbound.events[0]["error"]
    return error


# ---------------------------------------------------------------- a full voice turn


VOICE_TURN_GA = [
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
]
REPLY_GA = [
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_audio_transcript.delta",
    "response.output_audio_transcript.delta",
    "response.output_audio_transcript.delta",
    "response.output_audio.delta",
    "response.output_audio.delta",
    "response.output_audio.delta",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
]


def test_session_created_echoes_the_realtime_defaults_and_setup_asks_for_24khz() -> None:
    h = Harness()
    assert h.ops == [ops.UpdateConfig({"input_sample_rate": 24000, "output_sample_rate": 24000})]
    p.validate_config_patch(h.ops[0].patch)  # type: ignore[union-attr]
    (created,) = h.events
    session = created["session"]
    assert created["type"] == "session.created" and session["type"] == "realtime"
    assert session["model"] == "hark-test"
    assert session["output_modalities"] == ["audio"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    td = session["audio"]["input"]["turn_detection"]
    defaults = p.SessionConfig()
    assert td["type"] == "server_vad" and td["create_response"] and td["interrupt_response"]
    assert (td["threshold"], td["prefix_padding_ms"], td["silence_duration_ms"]) == (
        defaults.vad_threshold,
        defaults.speech_pad_ms,
        defaults.min_silence_ms,
    )
    assert session["audio"]["input"]["transcription"] == {"model": "pocketsphinx"}


def test_full_voice_turn_events_ids_and_order() -> None:
    h = Harness()
    user = h.user_turn()
    assert types(user) == VOICE_TURN_GA
    item_id = user[0]["item_id"]
    assert all(e.get("item_id", item_id) == item_id for e in user)
    assert user[0]["audio_start_ms"] == 300 and user[1]["audio_end_ms"] == 2300
    assert user[2]["previous_item_id"] is None  # the first item of the conversation
    assert user[3]["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    # deltas carry only the stable prefix as it grew, then the rest at the final
    deltas = [e["delta"] for e in only(user, "conversation.item.input_audio_transcription.delta")]
    assert deltas == ["go forward", " ten meters"]
    completed = user[-1]
    assert completed["transcript"] == "go forward ten meters" and completed["content_index"] == 0
    assert completed["usage"] == {"type": "duration", "seconds": 2.0}

    reply = h.reply()
    assert types(reply) == REPLY_GA
    response_id = reply[0]["response"]["id"]
    assistant_id = reply[1]["item"]["id"]
    assert reply[2]["previous_item_id"] == item_id  # the chain: user item, then the reply
    for e in reply[3:-1]:
        if "response_id" in e:
            item = e["item_id"] if "item_id" in e else e["item"]["id"]
            assert (e["response_id"], item, e["output_index"]) == (response_id, assistant_id, 0)
        if "content_index" in e:
            assert e["content_index"] == 0
    audio = b"".join(base64.b64decode(e["delta"]) for e in only(reply, "response.output_audio.delta"))
    assert audio == b"".join(tone(100, RATE, 200 + 50 * i) for i in range(3))
    transcript = "".join(e["delta"] for e in only(reply, "response.output_audio_transcript.delta"))
    assert transcript == "You said: go."
    assert only(reply, "response.output_audio_transcript.done")[0]["transcript"] == "You said: go."
    done = reply[-1]["response"]
    assert done["id"] == response_id and done["status"] == "completed" and done["status_details"] is None
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": "You said: go."}]
    assert done["output"][0]["status"] == "completed"
    usage = done["usage"]
    assert usage["input_tokens"] == 30 and usage["input_token_details"]["cached_tokens"] == 24
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]

    ids = [e["event_id"] for e in h.events]
    assert len(ids) == len(set(ids)), "event ids must be unique"
    second = h.user_turn(turn=2, text="stop")
    assert second[2]["previous_item_id"] == assistant_id
    assert second[0]["item_id"] not in (item_id, assistant_id)


def test_event_ids_differ_between_connections() -> None:
    a, b = Harness(), Harness()
    assert a.events[0]["event_id"] != b.events[0]["event_id"]
    assert a.events[0]["session"]["id"] != b.events[0]["session"]["id"]


# ---------------------------------------------------------------- text, typed turns, manual turns


def test_text_only_session_and_response() -> None:
    h = Harness()
    inbound = h.send(
        {"type": "session.update", "event_id": "u1", "session": {"type": "realtime", "output_modalities": ["text"]}}
    )
    assert inbound.ops == (ops.UpdateConfig({"audio_output": False}, "u1"),)
    assert inbound.events[0]["type"] == "session.updated"
    assert inbound.events[0]["session"]["output_modalities"] == ["text"]
    h.user_turn()
    reply = h.server(
        p.ResponseStarted(1, "r1"),
        p.ResponseTextDelta("r1", "Hi"),
        p.ResponseTextDelta("r1", " there"),
        p.ResponseDone("r1", "completed", "Hi there", METRICS),
    )
    assert types(reply) == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    assert reply[3]["part"] == {"type": "text", "text": ""}
    assert only(reply, "response.output_text.done")[0]["text"] == "Hi there"
    assert reply[-1]["response"]["output_modalities"] == ["text"]
    assert reply[-1]["response"]["output"][0]["content"] == [{"type": "output_text", "text": "Hi there"}]
    assert h.audio(tone(100, RATE)) == [] and h.tr.dropped_audio_bytes == 4800


def test_typed_user_message_then_response_create_with_overrides() -> None:
    h = Harness()
    create = {
        "type": "conversation.item.create",
        "event_id": "c1",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "What time is it?"}]},
    }
    inbound = h.send(create)
    (op,) = inbound.ops
    assert isinstance(op, ops.AddUserText) and op.text == "What time is it?" and op.event_id == "c1"
    assert types(list(inbound.events)) == ["conversation.item.added", "conversation.item.done"]
    assert inbound.events[0]["item"]["id"] == op.item_id and inbound.events[0]["previous_item_id"] is None
    assert inbound.events[0]["item"]["content"] == [{"type": "input_text", "text": "What time is it?"}]

    inbound = h.send(
        {
            "type": "response.create",
            "event_id": "rc1",
            "response": {"instructions": "Be brief.", "output_modalities": ["text"], "metadata": {"topic": "time"}},
        }
    )
    assert inbound.ops == (ops.CreateResponse("Be brief.", False, None, "rc1"),) and inbound.events == ()
    reply = h.server(
        p.ResponseStarted(1, "r1"),
        p.ResponseTextDelta("r1", "Noon."),
        p.ResponseDone("r1", "completed", "Noon.", METRICS),
    )
    assert "response.output_text.delta" in types(reply)  # the request's modalities, not the session's
    assert reply[0]["response"]["metadata"] == {"topic": "time"}
    assert reply[2]["previous_item_id"] == op.item_id


def test_assistant_and_system_items_for_context() -> None:
    h = Harness()
    a = h.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello!"}]},
        }
    )
    s = h.send(
        {
            "type": "conversation.item.create",
            "item": {
                "id": "sys1",
                "type": "message",
                "role": "system",
                "content": [{"type": "input_text", "text": "Speak French."}],
            },
        }
    )
    assert isinstance(a.ops[0], ops.AddAssistantText) and a.ops[0].text == "Hello!"
    assert s.ops == (ops.AddSystemText("sys1", "Speak French."),)
    assert s.events[0]["previous_item_id"] == a.ops[0].item_id


def test_manual_turns_commit_then_response_create() -> None:
    h = Harness()
    inbound = h.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
    assert inbound.ops == (ops.SetTurnDetection(mode=None, policy=None),)
    assert inbound.events[0]["session"]["audio"]["input"]["turn_detection"] is None
    frames = h.send({"type": "input_audio_buffer.append", "audio": b64(tone(500, RATE))})
    assert [len(op.pcm) for op in frames.ops if isinstance(op, ops.AppendAudio)] == [24000]
    commit = h.send({"type": "input_audio_buffer.commit", "event_id": "k1"})
    (op,) = commit.ops
    assert isinstance(op, ops.CommitAudio) and not op.respond and op.event_id == "k1"
    # the Session reports the committed turn; manual mode has no speech_started/stopped on the wire
    user = h.server(p.SpeechStarted(1, 0), p.SpeechStopped(1, 500), p.TranscriptFinal(1, "hello"))
    assert types(user) == [
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ]
    assert user[0]["item_id"] == op.item_id
    inbound = h.send({"type": "response.create", "event_id": "rc"})
    assert inbound.ops == (ops.CreateResponse(event_id="rc"),)
    assert types(h.reply(rid="r1"))[-1] == "response.done"


def test_commit_needs_100ms_and_names_the_open_speech_item() -> None:
    h = Harness()
    h.send({"type": "input_audio_buffer.append", "audio": b64(tone(50, RATE))})
    error = error_of(h.send({"type": "input_audio_buffer.commit", "event_id": "k0"}))
    assert error["code"] == "input_audio_buffer_commit_empty" and error["event_id"] == "k0"
    h.send({"type": "input_audio_buffer.append", "audio": b64(tone(200, RATE))})
    started = h.server(p.SpeechStarted(1, 100))
    commit = h.send({"type": "input_audio_buffer.commit"})
    op = commit.ops[-1]
    assert isinstance(op, ops.CommitAudio) and op.item_id == started[0]["item_id"] and op.respond
    # a Session that found nothing to commit: its error names the client's commit
    late = h.server(p.Error("nothing_to_commit", "no speech in progress"))
    assert late[0]["error"]["code"] == "input_audio_buffer_commit_empty"


def test_clear_drops_the_buffer_and_acks() -> None:
    h = Harness()
    h.send({"type": "input_audio_buffer.append", "audio": b64(tone(205, RATE))})  # 5 ms tail held back
    inbound = h.send({"type": "input_audio_buffer.clear", "event_id": "x"})
    assert inbound.ops == (ops.ClearAudio("x"),) and types(list(inbound.events)) == ["input_audio_buffer.cleared"]
    assert error_of(h.send({"type": "input_audio_buffer.commit"}))["code"] == "input_audio_buffer_commit_empty"


def test_appends_become_valid_hark_frames() -> None:
    h = Harness()
    limits = p.SessionLimits()
    inbound = h.send({"type": "input_audio_buffer.append", "audio": b64(tone(1500, RATE))})
    sizes = [len(op.pcm) for op in inbound.ops if isinstance(op, ops.AppendAudio)]
    assert sizes == [48000, 24000]  # 1000 ms + 500 ms at 24 kHz
    tiny = h.send({"type": "input_audio_buffer.append", "audio": b64(tone(4, RATE))})
    assert tiny.ops == ()  # under 10 ms: held for the next append
    more = h.send({"type": "input_audio_buffer.append", "audio": b64(tone(8, RATE))})
    assert [len(op.pcm) for op in more.ops if isinstance(op, ops.AppendAudio)] == [12 * 48]
    h.send({"type": "input_audio_buffer.append", "audio": b64(tone(1003, RATE))})  # 1000 ms out, 3 ms held
    flushed = h.send({"type": "input_audio_buffer.commit"}).ops
    assert isinstance(flushed[0], ops.AppendAudio) and len(flushed[0].pcm) == limits.min_frame_ms * 48
    assert isinstance(flushed[-1], ops.CommitAudio)


# ---------------------------------------------------------------- barge-in, cancel, truncate


def test_barge_in_cancels_with_turn_detected_and_truncate_cuts_to_what_was_played() -> None:
    h = Harness()
    h.user_turn()
    h.server(
        p.ResponseStarted(1, "r1"),
        p.ResponseTextDelta("r1", "You said: go forward ten meters."),
        p.ResponseAudioStarted("r1", RATE),
    )
    for _ in range(5):
        h.audio(tone(100, RATE))
    barge = h.server(p.SpeechStarted(2, 2900))
    assert types(barge) == ["input_audio_buffer.speech_started"]
    done = h.server(p.ResponseDone("r1", "cancelled", "You said: go", METRICS))
    assert types(done)[0] == "response.output_audio.done"  # a cut reply still closes its parts
    response = done[-1]["response"]
    assert response["status"] == "cancelled"
    assert response["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
    assert response["output"][0]["status"] == "incomplete"
    assert response["output"][0]["content"][0]["transcript"] == "You said: go"
    item_id = response["output"][0]["id"]

    inbound = h.send(
        {
            "type": "conversation.item.truncate",
            "event_id": "t1",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 320,
        }
    )
    assert inbound.ops == (ops.TruncateItem(item_id, 320, "r1", "t1"),)
    assert inbound.events[0] == {
        **inbound.events[0],
        "type": "conversation.item.truncated",
        "item_id": item_id,
        "audio_end_ms": 320,
        "content_index": 0,
    }
    too_far = h.send(
        {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 900}
    )
    assert error_of(too_far)["code"] == "invalid_value" and error_of(too_far)["param"] == "audio_end_ms"
    h.tr.set_item_transcript(item_id, "You said")
    retrieved = h.send({"type": "conversation.item.retrieve", "item_id": item_id}).events[0]
    assert retrieved["type"] == "conversation.item.retrieved"
    assert retrieved["item"]["content"] == [{"type": "output_audio", "transcript": "You said"}]
    # the interrupting turn goes on as usual
    assert types(h.server(p.SpeechStopped(2, 3500)))[:2] == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]


def test_response_cancel_maps_ids_and_reports_client_cancelled() -> None:
    h = Harness()
    assert error_of(h.send({"type": "response.cancel", "event_id": "c0"})) == {
        "type": "invalid_request_error",
        "code": "response_cancel_not_active",
        "message": "response.cancel: no response in progress",
        "param": None,
        "event_id": "c0",
    }
    h.user_turn()
    created = h.server(p.ResponseStarted(1, "r1"))
    response_id = created[0]["response"]["id"]
    assert (
        error_of(h.send({"type": "response.create", "event_id": "dup"}))["code"]
        == "conversation_already_has_active_response"
    )
    assert (
        error_of(h.send({"type": "response.cancel", "response_id": "resp_other"}))["code"]
        == "response_cancel_not_active"
    )
    assert (
        error_of(h.send({"type": "conversation.item.delete", "item_id": created[1]["item"]["id"]}))["code"]
        == "invalid_value"
    )
    inbound = h.send({"type": "response.cancel", "event_id": "c1", "response_id": response_id})
    assert inbound.ops == (ops.CancelResponse("r1", "c1"),)
    done = h.server(p.ResponseDone("r1", "cancelled", "", METRICS))[-1]["response"]
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}


def test_failed_response_carries_the_sessions_error() -> None:
    h = Harness()
    h.user_turn()
    h.server(p.ResponseStarted(1, "r1"))
    error = h.server(p.Error("llm_unavailable", "the language model server is unreachable"))
    assert error[0]["error"]["type"] == "server_error" and error[0]["error"]["code"] == "llm_unavailable"
    done = h.server(p.ResponseDone("r1", "failed", "", METRICS))[-1]["response"]
    assert done["status"] == "failed"
    assert done["status_details"]["error"]["code"] == "llm_unavailable"


def test_retrieve_and_delete_items() -> None:
    h = Harness()
    h.user_turn()
    item_id = h.events[1]["item_id"]
    got = h.send({"type": "conversation.item.retrieve", "item_id": item_id}).events[0]
    assert got["item"]["content"] == [{"type": "input_audio", "transcript": "go forward ten meters"}]
    deleted = h.send({"type": "conversation.item.delete", "event_id": "d", "item_id": item_id})
    assert deleted.ops == (ops.DeleteItem(item_id, "d"),)
    assert deleted.events[0]["type"] == "conversation.item.deleted" and deleted.events[0]["item_id"] == item_id
    assert error_of(h.send({"type": "conversation.item.retrieve", "item_id": item_id}))["code"] == "item_not_found"


def test_transcription_off_sends_no_transcription_events() -> None:
    h = Harness()
    inbound = h.send({"type": "session.update", "session": {"audio": {"input": {"transcription": None}}}})
    assert inbound.ops == (ops.SetTranscription(enabled=False),)
    assert not [t for t in types(h.user_turn()) if "transcription" in t]


# ---------------------------------------------------------------- session.update mapping


def test_server_vad_maps_onto_hark_settings_and_a_silence_policy() -> None:
    h = Harness()
    update = {
        "type": "session.update",
        "event_id": "u",
        "session": {
            "type": "realtime",
            "instructions": "You are terse.",
            "audio": {
                "input": {
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.6,
                        "prefix_padding_ms": 250,
                        "silence_duration_ms": 700,
                        "create_response": False,
                        "interrupt_response": False,
                    },
                    "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                },
                "output": {"voice": "marin"},
            },
            "max_output_tokens": 300,
            "some_future_field": {"x": 1},
        },
    }
    inbound = h.send(update)
    config, turn, transcription, tokens = inbound.ops
    assert config == ops.UpdateConfig(
        {
            "instructions": "You are terse.",
            "voice": "marin",
            "vad_threshold": 0.6,
            "speech_pad_ms": 250,
            "min_silence_ms": 700,
        },
        "u",
    )
    assert turn == ops.SetTurnDetection("server_vad", {"type": "silence", "silence_ms": 700}, False, False, None, "u")
    assert transcription == ops.SetTranscription(True, "gpt-4o-mini-transcribe", "en", None, "u")
    assert tokens == ops.SetMaxOutputTokens(300, "u")
    session = inbound.events[0]["session"]
    td = session["audio"]["input"]["turn_detection"]
    assert (td["threshold"], td["prefix_padding_ms"], td["silence_duration_ms"]) == (0.6, 250, 700)
    assert (td["create_response"], td["interrupt_response"]) == (False, False)
    assert session["instructions"] == "You are terse." and session["audio"]["output"]["voice"] == "marin"
    assert session["max_output_tokens"] == 300


def test_values_inside_realtime_ranges_are_clamped_to_harks_and_echoed() -> None:
    h = Harness()
    td = {"type": "server_vad", "threshold": 0.99, "prefix_padding_ms": 5000, "silence_duration_ms": 20}
    inbound = h.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": td}}}})
    patch = inbound.ops[0].patch  # type: ignore[union-attr]
    assert patch == {"vad_threshold": 0.95, "speech_pad_ms": 1000, "min_silence_ms": 100}
    p.validate_config_patch(patch)
    echoed = inbound.events[0]["session"]["audio"]["input"]["turn_detection"]
    assert (echoed["threshold"], echoed["prefix_padding_ms"], echoed["silence_duration_ms"]) == (0.95, 1000, 100)


def test_semantic_vad_becomes_a_semantic_policy() -> None:
    h = Harness()
    td = {"type": "semantic_vad", "eagerness": "high", "interrupt_response": True}
    inbound = h.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": td}}}})
    assert inbound.ops == (ops.SetTurnDetection("semantic_vad", {"type": "semantic", "eagerness": "high"}),)
    echoed = inbound.events[0]["session"]["audio"]["input"]["turn_detection"]
    assert echoed == {"type": "semantic_vad", "eagerness": "high", "create_response": True, "interrupt_response": True}


def test_the_session_update_openai_agents_sends_is_accepted() -> None:
    # as agents 0.24 builds it (_get_session_config), then its tracing update
    h = Harness()
    session = {
        "type": "realtime",
        "model": "gpt-realtime-2.1",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "transcription": {"model": "gpt-4o-mini-transcribe"},
                "turn_detection": {"type": "semantic_vad", "interrupt_response": True},
            },
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "ash"},
        },
        "tools": [],
        "instructions": "You are a helpful assistant.",
    }
    inbound = h.send({"type": "session.update", "session": session})
    assert types(list(inbound.events)) == ["session.updated"]
    assert isinstance(inbound.ops[0], ops.UpdateConfig)
    assert inbound.ops[0].patch["input_sample_rate"] == 24000 and inbound.ops[0].patch["voice"] == "ash"
    tracing = h.send(
        {"type": "session.update", "session": {"type": "realtime", "model": "gpt-realtime-2.1", "tracing": "auto"}}
    )
    assert types(list(tracing.events)) == ["session.updated"] and tracing.ops == ()


def test_function_tools_apply_and_mcp_is_refused_while_the_rest_applies() -> None:
    h = Harness()
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    inbound = h.send({"type": "session.update", "event_id": "e", "session": {"instructions": "Hi", "tools": [tool]}})
    assert types(list(inbound.events)) == ["session.updated"]
    wire = {**tool, "description": ""}
    assert inbound.ops == (ops.UpdateConfig({"instructions": "Hi", "tools": [wire]}, "e"),)
    assert inbound.events[0]["session"]["tools"] == [wire]
    mcp = h.send({"type": "session.update", "session": {"tools": [{"type": "mcp", "server_label": "x"}, tool]}})
    assert mcp.events[0]["error"]["code"] == "mcp_not_supported"
    assert mcp.events[1]["session"]["tools"] == [wire]
    call = h.send(
        {"type": "conversation.item.create", "item": {"type": "function_call_output", "call_id": "c", "output": "{}"}}
    )
    assert error_of(call)["code"] == "unknown_call_id"  # no call of the model awaits it
    made = h.send({"type": "conversation.item.create", "item": {"type": "function_call", "call_id": "c", "name": "f"}})
    assert error_of(made)["code"] == "unsupported_feature"
    approval = h.send({"type": "conversation.item.create", "item": {"type": "mcp_approval_response", "approve": True}})
    assert error_of(approval)["code"] == "mcp_not_supported"


def test_an_invalid_value_refuses_the_whole_update() -> None:
    h = Harness()
    bad = {"instructions": "changed", "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 1.5}}}}
    error = error_of(h.send({"type": "session.update", "event_id": "b", "session": bad}))
    assert error["code"] == "invalid_value" and error["param"].endswith("threshold") and error["event_id"] == "b"
    assert h.tr.session.hark["instructions"] == ""  # nothing of it applied
    for session, param in [
        ({"output_modalities": ["video"]}, "session.output_modalities"),
        ({"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}}, "session.audio.input.format.rate"),
        ({"audio": {"output": {"format": "mp3"}}}, "session.audio.output.format"),
        ({"max_output_tokens": 0}, "session.max_output_tokens"),
        ({"instructions": "x" * 5000}, "session.instructions"),
        ({"audio": "loud"}, "session.audio"),
        (
            {"audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "wild"}}}},
            "session.audio.input.turn_detection.eagerness",
        ),
        ({"type": "transcription"}, "session.type"),
    ]:
        error = error_of(h.send({"type": "session.update", "session": session}))
        assert error["param"] == param, (session, error)


def test_beta_flat_session_update() -> None:
    h = Harness("beta")
    beta = {
        "modalities": ["text", "audio"],
        "voice": "alloy",
        "input_audio_format": "g711_ulaw",
        "output_audio_format": "g711_alaw",
        "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 800},
        "temperature": 0.7,
        "max_response_output_tokens": "inf",
    }
    inbound = h.send({"type": "session.update", "session": beta})
    assert inbound.ops[0] == ops.UpdateConfig(
        {
            "audio_output": True,
            "voice": "alloy",
            "input_sample_rate": 8000,
            "output_sample_rate": 8000,
            "min_silence_ms": 800,
        }
    )
    assert ops.SetMaxOutputTokens(None) in inbound.ops
    session = inbound.events[0]["session"]
    assert session["input_audio_format"] == "g711_ulaw" and session["output_audio_format"] == "g711_alaw"
    assert session["modalities"] == ["text", "audio"] and session["turn_detection"]["silence_duration_ms"] == 800
    assert session["max_response_output_tokens"] == "inf"
    assert "audio" not in session and "model" not in session


# ---------------------------------------------------------------- the beta dialect


def test_beta_dialect_names_a_full_turn_its_way() -> None:
    h = Harness("beta")
    user = h.user_turn()
    assert types(user) == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.created",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
    ]
    reply = h.reply()
    assert types(reply) == [
        "response.created",
        "response.output_item.added",
        "conversation.item.created",
        "response.content_part.added",
        "response.audio_transcript.delta",
        "response.audio_transcript.delta",
        "response.audio_transcript.delta",
        "response.audio.delta",
        "response.audio.delta",
        "response.audio.delta",
        "response.audio.done",
        "response.audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
    ]
    response = reply[-1]["response"]
    assert response["modalities"] == ["text", "audio"] and response["output_audio_format"] == "pcm16"
    assert response["output"][0]["content"] == [{"type": "audio", "transcript": "You said: go."}]
    text = h.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        }
    )
    assert types(list(text.events)) == ["conversation.item.created"]


# ---------------------------------------------------------------- G.711


@pytest.mark.parametrize("fmt", [AudioFormat.PCMU, AudioFormat.PCMA])
def test_g711_round_trip(fmt: AudioFormat) -> None:
    h = Harness()
    spec = {"type": fmt.value}
    inbound = h.send(
        {"type": "session.update", "session": {"audio": {"input": {"format": spec}, "output": {"format": spec}}}}
    )
    assert inbound.ops[0] == ops.UpdateConfig({"input_sample_rate": 8000, "output_sample_rate": 8000})
    assert inbound.events[0]["session"]["audio"]["input"]["format"] == spec
    original = tone(200, 8000)
    wire = G711Codec(fmt, "w").encode(original)
    assert len(wire) == 1600  # one byte a sample
    frames = h.send({"type": "input_audio_buffer.append", "audio": b64(wire)}).ops
    decoded = b"".join(op.pcm for op in frames if isinstance(op, ops.AppendAudio))
    assert _snr_db(original, decoded) > 30  # G.711 is ~38 dB on a loud tone
    h.user_turn()
    h.server(p.ResponseStarted(1, "r1"), p.ResponseAudioStarted("r1", 8000))
    (delta,) = h.audio(original)
    back = G711Codec(fmt, "r").decode(base64.b64decode(delta["delta"]))
    assert _snr_db(original, back) > 30
    h.server(p.ResponseDone("r1", "completed", "", METRICS))
    assert h.events[-1]["response"]["audio"]["output"]["format"] == spec


def test_reply_audio_at_another_rate_is_resampled_to_the_wire_rate() -> None:
    h = Harness()
    h.user_turn()
    h.server(p.ResponseStarted(1, "r1"), p.ResponseAudioStarted("r1", 16000))
    out = b"".join(base64.b64decode(e["delta"]) for _ in range(10) for e in h.audio(tone(100, 16000)))
    assert abs(len(out) // 2 - 24000) < 600  # one second at 24 kHz, less the resampler's delay


def _snr_db(reference: bytes, decoded: bytes) -> float:
    ref = np.frombuffer(reference, "<i2").astype(np.float64)
    got = np.frombuffer(decoded, "<i2").astype(np.float64)
    assert ref.shape == got.shape
    return float(10 * np.log10(np.sum(ref**2) / max(np.sum((ref - got) ** 2), 1e-9)))


# ---------------------------------------------------------------- bad input


BAD_INPUTS: list[tuple[str, str | Event, str]] = [
    ("malformed JSON", '{"type": "session.update", ', "invalid_json"),
    ("NaN is not JSON", '{"type": "input_audio_buffer.append", "audio": NaN}', "invalid_json"),
    ("not an object", "[1, 2]", "invalid_event"),
    (
        "lone surrogate",
        '{"type": "conversation.item.create", "item": {"type": "message", "role": "user", '
        '"content": [{"type": "input_text", "text": "\\ud800"}]}}',
        "invalid_json",
    ),
    ("no type", {"event_id": "x"}, "invalid_event"),
    ("unknown event", {"type": "session.frobnicate", "event_id": "ev1"}, "unknown_event"),
    ("hark.v1 event on the wrong endpoint", {"type": "input.text", "text": "hi", "event_id": "ev2"}, "unknown_event"),
    ("WebRTC-only event", {"type": "output_audio_buffer.clear", "event_id": "ev3"}, "unsupported_event"),
    ("bad base64", {"type": "input_audio_buffer.append", "event_id": "ev4", "audio": "not base64!!"}, "invalid_value"),
    ("audio missing", {"type": "input_audio_buffer.append", "event_id": "ev5"}, "missing_required_parameter"),
    ("audio not a string", {"type": "input_audio_buffer.append", "audio": 12}, "invalid_value"),
    (
        "odd PCM16 byte count",
        {"type": "input_audio_buffer.append", "event_id": "ev6", "audio": b64(b"\x00" * 4801)},
        "invalid_audio_format",
    ),
    (
        "a WAV file",
        {"type": "input_audio_buffer.append", "audio": b64(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(100))},
        "invalid_audio_format",
    ),
    (
        "an Ogg stream",
        {"type": "input_audio_buffer.append", "audio": b64(b"OggS" + bytes(100))},
        "invalid_audio_format",
    ),
    (
        "an MP3 file",
        {"type": "input_audio_buffer.append", "audio": b64(b"ID3\x04\x00" + bytes(99))},
        "invalid_audio_format",
    ),
    (
        "truncate unknown item",
        {"type": "conversation.item.truncate", "item_id": "nope", "content_index": 0, "audio_end_ms": 1},
        "item_not_found",
    ),
    ("truncate without audio_end_ms", {"type": "conversation.item.truncate", "item_id": "nope"}, "item_not_found"),
    (
        "empty user text",
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "  "}]},
        },
        "invalid_value",
    ),
    (
        "audio content in an item",
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_audio", "audio": "AAAA"}]},
        },
        "unsupported_feature",
    ),
    (
        "bad role",
        {"type": "conversation.item.create", "item": {"type": "message", "role": "robot", "content": []}},
        "invalid_value",
    ),
    (
        "insert mid-conversation",
        {
            "type": "conversation.item.create",
            "previous_item_id": "item_x",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        },
        "unsupported_feature",
    ),
    ("out-of-band response", {"type": "response.create", "response": {"conversation": "none"}}, "unsupported_feature"),
    (
        "response with its own input",
        {"type": "response.create", "response": {"input": [{"type": "message"}]}},
        "unsupported_feature",
    ),
    (
        "per-response format",
        {"type": "response.create", "response": {"audio": {"output": {"format": {"type": "audio/pcmu"}}}}},
        "unsupported_feature",
    ),
    ("session not an object", {"type": "session.update", "session": "all of it"}, "invalid_value"),
    ("session missing", {"type": "session.update"}, "missing_required_parameter"),
]


@pytest.mark.parametrize(("name", "message", "code"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_gets_an_error_and_the_session_goes_on(name: str, message: str | Event, code: str) -> None:
    h = Harness()
    h.user_turn()
    inbound = h.send(message)
    error = error_of(inbound)
    assert error["code"] == code, error
    assert error["code"] in {c.value for c in RealtimeErrorCode}
    assert error["message"] and error["type"] == "invalid_request_error"
    if isinstance(message, dict) and "event_id" in message:
        assert error["event_id"] == message["event_id"]
    # nothing else harmed: the next turn goes through as before
    assert types(h.reply(turn=1)) == REPLY_GA


def test_oversized_message_is_refused_before_parsing() -> None:
    h = Harness(max_message_bytes=10_000)
    big = json.dumps({"type": "input_audio_buffer.append", "event_id": "big", "audio": b64(bytes(9000))})
    error = error_of(h.send(big))
    assert error["code"] == "message_too_large" and "10000" in error["message"]
    text = {"type": "conversation.item.create", "item": {"type": "message", "role": "user", "content": []}}
    text["item"]["content"] = [{"type": "input_text", "text": "\u20ac" * 3000}]  # 3000 chars, 9000 bytes
    assert error_of(h.send(json.dumps(text, ensure_ascii=False) + " " * 1000))["code"] == "message_too_large"
    assert h.send({"type": "input_audio_buffer.append", "audio": b64(tone(100, RATE))}).ops


def test_binary_frames_are_refused() -> None:
    h = Harness()
    inbound = h.tr.receive_binary(b"\x00" * 320)
    assert error_of(inbound)["code"] == "binary_frame_not_supported"


def test_tools_in_response_create_are_refused_and_the_response_goes_ahead() -> None:
    h = Harness()
    inbound = h.send(
        {"type": "response.create", "event_id": "r", "response": {"tools": [{"type": "function", "name": "f"}]}}
    )
    assert inbound.ops == (ops.CreateResponse(event_id="r"),)
    assert inbound.events[0]["error"]["code"] == "tools_not_supported"


# ---------------------------------------------------------------- against the SDKs' own types

# the first of these builds the SDK venv (about 20 s here; more on a slow package index)
sdk_test = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def sdk() -> Iterator[None]:
    realtime_sdk.sdk_python()  # builds the venv once (fails with what to install if it cannot)
    yield


def _scenario_events(dialect: str) -> list[Event]:
    """A full voice turn, a barge-in and truncate, a typed turn, an error: every kind we emit."""
    h = Harness(dialect)
    h.send(
        {
            "type": "session.update",
            "session": {"instructions": "Be brief.", "tools": [{"type": "function", "name": "f"}]},
        }
    )
    h.user_turn()
    h.reply(text="You said: go forward ten meters.")
    h.user_turn(turn=2, text="and then")
    h.server(p.ResponseStarted(2, "r2"), p.ResponseTextDelta("r2", "Then"), p.ResponseAudioStarted("r2", RATE))
    h.audio(tone(100, RATE))
    h.server(p.SpeechStarted(3, 6000), p.ResponseDone("r2", "cancelled", "Then", METRICS))
    assistant = h.events[-1]["response"]["output"][0]["id"]
    h.send({"type": "conversation.item.truncate", "item_id": assistant, "content_index": 0, "audio_end_ms": 50})
    h.send({"type": "conversation.item.retrieve", "item_id": assistant})
    h.server(p.SpeechStopped(3, 6800), p.TranscriptFinal(3, ""))
    h.send(
        {
            "type": "conversation.item.create",
            "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        }
    )
    h.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    h.server(
        p.ResponseStarted(4, "r3"),
        p.ResponseTextDelta("r3", "Hello"),
        p.ResponseDone("r3", "completed", "Hello", METRICS),
    )
    h.server(
        p.ResponseStarted(5, "r4"),
        p.Error("response_failed", "TTS failed"),
        p.ResponseDone("r4", "failed", "", METRICS),
    )
    h.send({"type": "input_audio_buffer.clear"})
    h.send("{not json")
    h.send({"type": "conversation.item.delete", "item_id": assistant})
    return h.events


@sdk_test
@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_every_event_validates_against_the_sdk_types(sdk: None, dialect: str) -> None:
    events = _scenario_events(dialect)
    kinds = set(types(events))
    assert {"response.done", "conversation.item.truncated", "conversation.item.retrieved", "error"} <= kinds
    result = realtime_sdk.validate_server_events(events, dialect)
    assert not result.rejections, result.describe(events)


@sdk_test
def test_openai_agents_answers_a_barge_in_with_a_truncate_we_accept(sdk: None) -> None:
    """Agents' own handler, fed our events, sends conversation.item.truncate on speech_started mid-reply."""
    h = Harness()
    h.user_turn()
    h.server(
        p.ResponseStarted(1, "r1"), p.ResponseTextDelta("r1", "A long answer."), p.ResponseAudioStarted("r1", RATE)
    )
    for _ in range(10):
        h.audio(tone(100, RATE))
    h.server(p.SpeechStarted(2, 4000))
    result = realtime_sdk.validate_server_events(h.events, "ga")
    assert not result.rejections, result.describe(h.events)
    truncates = [m for _, m in result.sent if m.get("type") == "conversation.item.truncate"]
    assert truncates, f"agents sent no truncate; it sent {[m.get('type') for _, m in result.sent]}"
    inbound = h.send(truncates[-1])
    assert types(list(inbound.events)) == ["conversation.item.truncated"], inbound.events
    assert isinstance(inbound.ops[0], ops.TruncateItem) and inbound.ops[0].response_id == "r1"


@sdk_test
def test_all_scenario_events_of_this_module_validate(sdk: None) -> None:
    """Whatever the tests above made the translator say (when run in the same session) passes too."""
    for dialect, events in EMITTED.items():
        if events:
            result = realtime_sdk.validate_server_events(events, dialect)
            assert not result.rejections, result.describe(events)


@sdk_test
def test_the_sdk_checks_do_reject_what_is_wrong(sdk: None) -> None:
    """The validation above can fail: events an SDK cannot use are reported, each by the right check."""
    good = Harness().events[0]
    ga = [
        {
            "type": "response.output_audio.delta",
            "event_id": "e1",
            "response_id": "r",
            "output_index": 0,
            "content_index": 0,
            "delta": "",
        },
        {"type": "response.audio.delta", "event_id": "e2"},  # a beta name on a GA connection
        {**good, "session": {k: v for k, v in good["session"].items() if k != "type"}},
    ]
    rejected = {(r.index, r.check) for r in realtime_sdk.validate_server_events(ga, "ga").rejections}
    assert {(0, "ga"), (0, "ga-agents"), (1, "ga"), (2, "ga-session")} <= rejected, rejected
    beta = [{"type": "conversation.item.done", "event_id": "e3", "item": {}}]
    assert [r.index for r in realtime_sdk.validate_server_events(beta, "beta").rejections] == [0]


@sdk_test
def test_a_venv_that_cannot_be_built_fails_with_what_to_install(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realtime_sdk, "SDK_DIR", tmp_path / "sdk")
    monkeypatch.setattr(realtime_sdk, "_STAMP", tmp_path / "sdk" / ".installed")
    monkeypatch.setattr(realtime_sdk, "PINS", ("openai==0.0.0.dev999999",))
    with pytest.raises(pytest.fail.Exception) as failure:
        realtime_sdk.sdk_python()
    message = str(failure.value)
    assert "openai==0.0.0.dev999999" in message and "pip install" in message and str(tmp_path / "sdk") in message
    assert not (tmp_path / "sdk" / ".installed").exists()


def test_pcm_that_merely_starts_like_a_container_is_audio() -> None:
    h = Harness()
    for head in (b"RIFF" + bytes(4) + b"data", b"ID3\x7f\x01", b"OggS\x01"):
        inbound = h.send({"type": "input_audio_buffer.append", "audio": b64(head + bytes(4800 - len(head)))})
        assert [type(op) for op in inbound.ops] == [ops.AppendAudio], head


def test_g711_without_pyav_is_refused_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from hark.protocol.realtime import g711

    monkeypatch.setattr(g711, "available", lambda: False)
    h = Harness()
    error = error_of(
        h.send({"type": "session.update", "session": {"audio": {"input": {"format": {"type": "audio/pcmu"}}}}})
    )
    assert error["code"] == "unsupported_feature" and "hark[webrtc]" in error["message"]
    assert h.tr.session.input_format is AudioFormat.PCM  # PCM goes on


@sdk_test
def test_the_sdk_venv_is_built_once(sdk: None) -> None:
    stamp = realtime_sdk.SDK_DIR / ".installed"
    before = stamp.stat().st_mtime_ns
    realtime_sdk.sdk_python()
    assert stamp.stat().st_mtime_ns == before and stamp.read_text() == "\n".join(realtime_sdk.PINS)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _obj(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """An object with any subset of the named fields (well-typed or not), or any JSON value instead."""
    return st.fixed_dictionaries({}, optional=fields) | _JSON


_AUDIO_SIDE = _obj(
    format=_obj(type=_JSON, rate=_JSON),
    turn_detection=_obj(type=_JSON, threshold=_JSON, silence_duration_ms=_JSON, eagerness=_JSON, create_response=_JSON),
    transcription=_JSON,
    voice=_JSON,
)
_FIELDS = {
    "session": _obj(
        type=_JSON,
        audio=_obj(input=_AUDIO_SIDE, output=_AUDIO_SIDE),
        output_modalities=_JSON,
        modalities=_JSON,
        instructions=_JSON,
        tools=_JSON,
        turn_detection=_JSON,
        input_audio_format=_JSON,
        max_output_tokens=_JSON,
    ),
    "audio": st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()) | _JSON,
    "item": _obj(type=_JSON, role=_JSON, id=_JSON, content=st.lists(_obj(type=_JSON, text=_JSON), max_size=3) | _JSON),
    "response": _obj(
        conversation=_JSON,
        output_modalities=_JSON,
        instructions=_JSON,
        audio=_JSON,
        tools=_JSON,
        metadata=_JSON,
        input=_JSON,
        max_output_tokens=_JSON,
    ),
    **{
        key: _JSON
        for key in ("item_id", "content_index", "audio_end_ms", "response_id", "previous_item_id", "event_id")
    },
}
_FUZZ_EVENT = st.fixed_dictionaries(
    {"type": st.sampled_from([*CLIENT_EVENTS, *UNSUPPORTED_EVENTS, "x.y"])}, optional=_FIELDS
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_FUZZ_EVENT, min_size=1, max_size=6))
def test_fuzzed_client_events_never_raise_and_answer_in_json(events: list[Event]) -> None:
    tr = RealtimeTranslator("ga")
    tr.on_server_event(p.ResponseStarted(1, "r1"))  # with a response in progress too
    for event in events:
        inbound = tr.receive_text(json.dumps(event))
        for out in inbound.events:
            json.loads(encode(out))
        for op in inbound.ops:
            if isinstance(op, ops.UpdateConfig):
                p.validate_config_patch(op.patch)
            if isinstance(op, ops.AppendAudio):
                assert len(op.pcm) % 2 == 0 and 10 <= len(op.pcm) / 48 <= 1000
