"""The sans-IO conversation tracker (hark.protocol.conversation): event sequences in, state or violations out."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest

from hark.protocol import (
    ConversationError,
    ConversationTracker,
    ErrorCode,
    ProtocolError,
    Violation,
    decode_server,
    encode,
)
from hark.protocol import events as ev

FRAME = 3200  # 100 ms at 16 kHz
AUDIO = object()  # in a script: one reply-audio frame of FRAME bytes


def play(tracker: ConversationTracker, script: Sequence[Any], start: float = 100.0, step: float = 0.1) -> float:
    """Feed `script` through the wire codec (events as a client decodes them), one `step` apart; returns the clock."""
    at = start
    for item in script:
        if item is AUDIO:
            tracker.audio(FRAME, at)
        else:
            tracker.feed(decode_server(encode(item)), at)
        at += step
    return at


def spoken_turn(turn: int, rid: str, words: str = "go forward", frames: int = 3) -> list[Any]:
    """One spoken turn in contract order, answered with `frames` frames of audio."""
    return [
        ev.SpeechStarted(turn, 1000 * turn),
        ev.TranscriptPartial(turn, "go", ""),
        ev.TranscriptPartial(turn, words, "go"),
        ev.SpeechStopped(turn, 1000 * turn + 800),
        ev.TranscriptFinal(turn, words),
        ev.ResponseStarted(turn, rid),
        ev.ResponseTextDelta(rid, "You said: "),
        ev.ResponseTextDelta(rid, words),
        ev.ResponseAudioStarted(rid, 16000),
        *[AUDIO] * frames,
        ev.ResponseAudioDone(rid, 100 * frames),
        ev.ResponseDone(rid, "completed", f"You said: {words}", {"final_ms": 12, "first_audio_ms": 80, "spoken": True}),
    ]


# ---------------------------------------------------------------- sequences the contract allows


def test_a_spoken_turn_in_contract_order() -> None:
    tracker = ConversationTracker()
    play(tracker, spoken_turn(1, "resp_1"), start=100.0, step=0.1)
    turn = tracker.turns[1]
    u, r = turn.utterance, turn.response
    assert u is not None and r is not None
    assert (u.start_audio_ms, u.stop_audio_ms, u.started_at) == (1000, 1800, 100.0)
    assert u.stopped_at == pytest.approx(100.3) and u.final_at == pytest.approx(100.4)
    assert [p.text for p in u.partials] == ["go", "go forward"] and u.partials[-1].stable_text == "go"
    assert u.text == "go forward"
    assert r.turn_id == 1 and r.started_at == pytest.approx(100.5) and r.first_delta_at == pytest.approx(100.6)
    assert r.deltas == ["You said: ", "go forward"] and r.text == "You said: go forward"
    assert r.sample_rate == 16000 and r.audio_started_at == pytest.approx(100.8)
    assert r.first_audio_at == pytest.approx(100.9) and len(r.arrivals) == 3
    assert r.audio_bytes == 3 * FRAME and r.audio_ms == pytest.approx(300.0)
    assert r.audio_done is not None and r.audio_done.audio_ms == 300
    assert r.status == "completed" and r.done_at == pytest.approx(101.3)
    assert r.metrics["final_ms"] == 12 and r.metric("first_audio_ms") == 80.0
    assert r.metric("spoken") is None and r.metric("missing") is None  # a bool is not a number
    assert turn.settled
    assert tracker.current is None and tracker.audio_owner is None and tracker.open_utterance is None
    assert tracker.event_count == 11 and tracker.audio_frames == 3 and tracker.audio_bytes == 3 * FRAME
    assert tracker.response("resp_1") is r and tracker.turn(1) is turn and tracker.last_turn_id == 1


def test_state_while_a_turn_is_in_progress() -> None:
    tracker = ConversationTracker()
    script = spoken_turn(1, "resp_1")
    play(tracker, script[:3])  # speaking
    turn = tracker.turns[1]
    assert tracker.open_utterance is turn.utterance and not turn.settled
    play(tracker, script[3:5])  # transcribed, not answered yet
    assert tracker.open_utterance is None and not turn.settled
    play(tracker, script[5:10])  # the reply is playing
    r = tracker.current
    assert r is not None and tracker.audio_owner is r and r.status is None and r.metrics == {}
    assert r.text == "You said: go forward" and r.audio_ms == pytest.approx(100.0)
    assert not turn.settled


def test_empty_final_settles_without_a_response() -> None:
    tracker = ConversationTracker()
    play(tracker, [ev.SpeechStarted(1, 0), ev.SpeechStopped(1, 400), ev.TranscriptFinal(1, "")])
    turn = tracker.turns[1]
    assert turn.settled and turn.response is None and turn.utterance is not None and turn.utterance.text == ""


def test_typed_turns_take_new_ids_even_while_the_user_speaks() -> None:
    tracker = ConversationTracker()
    play(
        tracker,
        [
            ev.ResponseStarted(1, "resp_1"),  # input.text: no transcript events
            ev.ResponseTextDelta("resp_1", "hi"),
            ev.ResponseDone("resp_1", "completed", "hi", {"final_ms": None}),
            ev.SpeechStarted(2, 500),
            ev.ResponseStarted(3, "resp_2"),  # typed while turn 2 is still being spoken
            ev.SpeechStopped(2, 900),
            ev.TranscriptFinal(2, "hello"),
            ev.ResponseDone("resp_2", "cancelled", "", {}),  # the spoken turn's reply replaces it
            ev.ResponseStarted(2, "resp_3"),
            ev.ResponseDone("resp_3", "completed", "hello", {}),
        ],
    )
    assert [t.turn_id for t in tracker.turns.values()] == [1, 2, 3]
    typed = tracker.turns[1]
    assert typed.utterance is None and typed.settled and typed.response is not None
    assert typed.response.metric("final_ms") is None
    assert tracker.turns[3].response is not None and tracker.turns[3].response.status == "cancelled"
    spoken = tracker.turns[2].response
    assert spoken is not None and spoken.response_id == "resp_3" and spoken.status == "completed"
    assert list(tracker.responses) == ["resp_1", "resp_2", "resp_3"] and tracker.last_turn_id == 3


def test_barge_in_cancels_the_reply_and_the_next_turn_is_answered() -> None:
    tracker = ConversationTracker()
    play(
        tracker,
        [
            *spoken_turn(1, "resp_1")[:11],  # two audio frames of resp_1 so far
            ev.SpeechStarted(2, 3000),  # the user talks over the reply ...
            AUDIO,  # ... which keeps playing until it is cancelled
            ev.TranscriptPartial(2, "stop", ""),
            ev.ResponseDone("resp_1", "cancelled", "You said:", {"audio_ms": 300}),  # no response.audio.done
            ev.SpeechStopped(2, 3600),
            ev.TranscriptFinal(2, "stop"),
            ev.ResponseStarted(2, "resp_2"),
            ev.ResponseAudioStarted("resp_2", 24000),
            AUDIO,
        ],
    )
    first, second = tracker.responses["resp_1"], tracker.responses["resp_2"]
    assert first.status == "cancelled" and first.audio_done is None and first.text == "You said:"
    assert first.audio_bytes == 3 * FRAME and len(first.arrivals) == 3
    assert second.audio_bytes == FRAME and second.audio_ms == pytest.approx(FRAME / 2 / 24000 * 1000)
    assert tracker.turns[1].settled and not tracker.turns[2].settled
    assert tracker.audio_owner is second and tracker.current is second
    # a cancelled reply is over: a frame after its response.done has no owner
    done = ConversationTracker()
    play(done, [*spoken_turn(1, "resp_1")[:10], ev.ResponseDone("resp_1", "cancelled", "", {})])
    with pytest.raises(ConversationError) as late:
        done.audio(FRAME, 200.0)
    assert late.value.violation is Violation.AUDIO_WITHOUT_RESPONSE


def test_errors_go_to_the_current_response() -> None:
    tracker = ConversationTracker()
    play(
        tracker,
        [
            ev.Error("no_active_response", "nothing is playing"),
            ev.ResponseStarted(1, "resp_1"),
            ev.Error("llm_unavailable", "the model did not answer"),
            ev.ResponseDone("resp_1", "failed", "", {}),
            ev.Pong("7"),  # not part of the conversation: counted, nothing else
            ev.SessionUpdated({"voice": "en-us"}),
        ],
    )
    assert [e.code for e in tracker.errors] == ["no_active_response", "llm_unavailable"]
    assert [e.code for e in tracker.responses["resp_1"].errors] == ["llm_unavailable"]
    assert tracker.event_count == 6


def test_feed_returns_the_response_an_event_concerns() -> None:
    tracker = ConversationTracker()
    assert tracker.feed(ev.SpeechStarted(1, 0), 1.0) is None
    assert tracker.feed(ev.Error("internal_error", "asr"), 1.1) is None  # no response yet
    tracker.feed(ev.SpeechStopped(1, 500), 1.2)
    tracker.feed(ev.TranscriptFinal(1, "hi"), 1.3)
    r = tracker.feed(ev.ResponseStarted(1, "resp_1"), 1.4)
    assert r is not None and r.response_id == "resp_1"
    assert tracker.feed(ev.ResponseTextDelta("resp_1", "x"), 1.5) is r
    assert tracker.feed(ev.Error("response_failed", "tts"), 1.6) is r
    assert tracker.feed(ev.ResponseAudioStarted("resp_1", 16000), 1.7) is r
    assert tracker.audio(FRAME, 1.8) is r
    assert tracker.feed(ev.ResponseAudioDone("resp_1", 100), 1.9) is r
    assert tracker.feed(ev.ResponseDone("resp_1", "completed", "x", {}), 2.0) is r
    assert r.chunk_seconds() == [(1.8, pytest.approx(0.1))]


def test_the_tracker_reads_no_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_clock() -> float:
        raise AssertionError("the tracker read a clock")

    tracker = ConversationTracker()
    with monkeypatch.context() as patched:
        for name in ("monotonic", "time", "perf_counter", "monotonic_ns", "time_ns"):
            patched.setattr(time, name, no_clock)
        at = play(tracker, spoken_turn(1, "resp_1") + spoken_turn(2, "resp_2"), start=-5.0, step=0.25)
    assert at == pytest.approx(-5.0 + 0.25 * 28)
    second = tracker.turns[2].utterance
    assert second is not None and second.started_at == pytest.approx(-1.5)


# ---------------------------------------------------------------- violations

ANSWERED = spoken_turn(1, "resp_1")
PLAYING = ANSWERED[:11]  # resp_1 is current, two frames of its audio have arrived
SPEAKING = ANSWERED[:3]  # turn 1's utterance is open

VIOLATIONS: list[tuple[str, list[Any], Any, Violation]] = [
    ("audio before any response", [], AUDIO, Violation.AUDIO_WITHOUT_RESPONSE),
    ("audio before audio.started", ANSWERED[:8], AUDIO, Violation.AUDIO_WITHOUT_RESPONSE),
    ("audio after audio.done", ANSWERED[:13], AUDIO, Violation.AUDIO_WITHOUT_RESPONSE),
    ("audio after response.done", ANSWERED, AUDIO, Violation.AUDIO_WITHOUT_RESPONSE),
    ("delta for an unknown response", PLAYING, ev.ResponseTextDelta("resp_9", "x"), Violation.UNKNOWN_RESPONSE),
    (
        "done for an unknown response",
        PLAYING,
        ev.ResponseDone("resp_9", "completed", "", {}),
        Violation.UNKNOWN_RESPONSE,
    ),
    ("audio.started unknown", [], ev.ResponseAudioStarted("resp_9", 16000), Violation.UNKNOWN_RESPONSE),
    ("audio.done unknown", [], ev.ResponseAudioDone("resp_9", 100), Violation.UNKNOWN_RESPONSE),
    ("a second response.done", ANSWERED, ev.ResponseDone("resp_1", "completed", "", {}), Violation.RESPONSE_ENDED),
    ("a delta after done", ANSWERED, ev.ResponseTextDelta("resp_1", "x"), Violation.RESPONSE_ENDED),
    ("audio.started after done", ANSWERED, ev.ResponseAudioStarted("resp_1", 16000), Violation.RESPONSE_ENDED),
    (
        "a reused response id",
        [*ANSWERED, ev.SpeechStarted(2, 0)],
        ev.ResponseStarted(3, "resp_1"),
        Violation.DUPLICATE_RESPONSE,
    ),
    ("two responses at once", PLAYING, ev.ResponseStarted(2, "resp_2"), Violation.OVERLAPPING_RESPONSE),
    ("a second response for a turn", ANSWERED, ev.ResponseStarted(1, "resp_2"), Violation.TURN_ANSWERED),
    ("a response before the final", ANSWERED[:4], ev.ResponseStarted(1, "resp_1"), Violation.UTTERANCE_OPEN),
    (
        "a response for an old turn id",
        [*ANSWERED, *spoken_turn(3, "resp_3")],
        ev.ResponseStarted(2, "r"),
        Violation.TURN_OUT_OF_ORDER,
    ),
    ("audio.done without audio.started", ANSWERED[:8], ev.ResponseAudioDone("resp_1", 0), Violation.AUDIO_NOT_STARTED),
    ("a second audio.started", PLAYING, ev.ResponseAudioStarted("resp_1", 16000), Violation.AUDIO_ALREADY_STARTED),
    ("a second audio.done", ANSWERED[:13], ev.ResponseAudioDone("resp_1", 300), Violation.AUDIO_ENDED),
    ("a partial for an unknown turn", [], ev.TranscriptPartial(4, "x", ""), Violation.UNKNOWN_TURN),
    ("a final for an unknown turn", SPEAKING, ev.TranscriptFinal(2, "x"), Violation.UNKNOWN_TURN),
    ("a stop for a typed turn", [ev.ResponseStarted(1, "r")], ev.SpeechStopped(1, 0), Violation.UNKNOWN_TURN),
    ("a turn id reused", ANSWERED, ev.SpeechStarted(1, 0), Violation.TURN_OUT_OF_ORDER),
    ("a turn id going back", [*ANSWERED, *spoken_turn(5, "r5")], ev.SpeechStarted(3, 0), Violation.TURN_OUT_OF_ORDER),
    ("two utterances open", SPEAKING, ev.SpeechStarted(2, 0), Violation.UTTERANCE_OPEN),
    ("a final before speech.stopped", SPEAKING, ev.TranscriptFinal(1, "x"), Violation.UTTERANCE_OPEN),
    ("a partial after speech.stopped", ANSWERED[:4], ev.TranscriptPartial(1, "x", ""), Violation.UTTERANCE_STOPPED),
    ("a second speech.stopped", ANSWERED[:4], ev.SpeechStopped(1, 900), Violation.UTTERANCE_STOPPED),
    ("a second final", ANSWERED[:5], ev.TranscriptFinal(1, "again"), Violation.DUPLICATE_FINAL),
]


def _snapshot(tracker: ConversationTracker) -> Any:
    """Everything observable, deep enough to see a half-applied event."""

    def response(r: Any) -> Any:
        return (r.response_id, list(r.deltas), r.sample_rate, r.audio_bytes, len(r.arrivals), r.audio_done, r.done)

    def turn(t: Any) -> Any:
        u = t.utterance
        utt = None if u is None else (u.stop_audio_ms, len(u.partials), u.final)
        return (t.turn_id, utt, None if t.response is None else t.response.response_id)

    return (
        [turn(t) for t in tracker.turns.values()],
        [response(r) for r in tracker.responses.values()],
        tracker.current and tracker.current.response_id,
        tracker.open_utterance and tracker.open_utterance.turn_id,
        tracker.audio_owner and tracker.audio_owner.response_id,
        tracker.last_turn_id,
        tracker.event_count,
        tracker.audio_frames,
        tracker.audio_bytes,
    )


@pytest.mark.parametrize(("before", "bad", "violation"), [v[1:] for v in VIOLATIONS], ids=[v[0] for v in VIOLATIONS])
def test_violations_raise_and_leave_the_tracker_as_it_was(before: list[Any], bad: Any, violation: Violation) -> None:
    tracker = ConversationTracker()
    at = play(tracker, before)
    state = _snapshot(tracker)
    with pytest.raises(ConversationError) as caught:
        play(tracker, [bad], start=at)
    assert caught.value.violation is violation
    assert _snapshot(tracker) == state


def test_every_violation_has_a_case() -> None:
    assert {v[3] for v in VIOLATIONS} | {Violation.BAD_AUDIO_FRAME} == set(Violation)


@pytest.mark.parametrize("n_bytes", [0, 3, -2])
def test_odd_or_empty_audio_frames_are_violations(n_bytes: int) -> None:
    tracker = ConversationTracker()
    play(tracker, PLAYING)
    with pytest.raises(ConversationError) as caught:
        tracker.audio(n_bytes, 9.0)
    assert caught.value.violation is Violation.BAD_AUDIO_FRAME
    assert tracker.audio_bytes == 2 * FRAME


def test_a_violation_is_a_protocol_error_with_a_stable_code() -> None:
    tracker = ConversationTracker()
    with pytest.raises(ProtocolError) as caught:
        tracker.audio(FRAME, 0.0)
    assert isinstance(caught.value, ConversationError)
    assert caught.value.code is ErrorCode.INVALID_EVENT
    assert str(caught.value).startswith("invalid_event: audio_without_response: ")


def test_the_tracker_goes_on_after_a_reported_violation() -> None:
    tracker = ConversationTracker()
    play(tracker, PLAYING)
    with pytest.raises(ConversationError):
        tracker.feed(ev.ResponseStarted(2, "resp_2"), 5.0)
    play(tracker, ANSWERED[11:] + spoken_turn(2, "resp_2"))
    assert [r.status for r in tracker.responses.values()] == ["completed", "completed"]


def test_scripts_are_valid_server_events() -> None:
    # the fixtures above are real wire events: each survives the codec unchanged
    events: list[ev.ServerEvent] = [e for e in ANSWERED if e is not AUDIO]
    assert [decode_server(encode(e)) for e in events] == events


def test_history_bounds_what_a_long_session_keeps() -> None:
    tracker = ConversationTracker(history=2)
    script: list[Any] = []
    for n in range(1, 6):
        script += spoken_turn(n, f"resp_{n}")
        script.append(ev.Error("rate_limited", f"e{n}"))
    script += [ev.SpeechStarted(6, 9000), ev.SpeechStopped(6, 9500)]  # transcribing: not settled, kept
    play(tracker, script)
    assert list(tracker.turns) == [4, 5, 6] and list(tracker.responses) == ["resp_4", "resp_5"]
    assert [e.message for e in tracker.errors] == ["e4", "e5"]
    # what was forgotten still counts for the rules
    for late, violation in (
        (ev.ResponseTextDelta("resp_1", "x"), Violation.RESPONSE_ENDED),
        (ev.ResponseDone("resp_9", "completed", "", {}), Violation.UNKNOWN_RESPONSE),
        (ev.ResponseStarted(7, "resp_2"), Violation.DUPLICATE_RESPONSE),
        (ev.ResponseStarted(2, "resp_7"), Violation.TURN_OUT_OF_ORDER),
    ):
        with pytest.raises(ConversationError) as caught:
            tracker.feed(late, 50.0)
        assert caught.value.violation is violation
    play(tracker, [ev.TranscriptFinal(6, "")])  # settles turn 6: the oldest beyond the history goes
    assert list(tracker.turns) == [5, 6] and tracker.audio_bytes == 5 * 3 * FRAME
    with pytest.raises(ValueError):
        ConversationTracker(history=0)
