"""Limits that hold a session's memory and work (issue 12): carried-over user text, the history,
the length of one utterance."""

from __future__ import annotations

from conftest import load_pcm
from inprocess import FAST_FEED, RecordingASR, StalledLLM, in_process_session

from hark.protocol import SessionConfig, SessionLimits
from hark.server.history import History, keep_newest
from hark.server.llm.base import Message


async def test_carried_over_text_is_capped_oldest_dropped() -> None:
    """Typed turns each cancelled (by the next) before any reply was heard are folded into the next
    turn; at 7,990 characters a message that fold used to grow without end (issue 12, D3)."""
    llm = StalledLLM()
    limits = SessionLimits(**{**FAST_FEED.to_dict(), "max_carried_text_chars": 8000})
    messages = [" ".join(f"m{i}w{j}" for j in range(1200))[:7990] for i in range(12)]
    async with in_process_session(llm=llm, limits=limits, defaults=SessionConfig(audio_output=True)) as s:
        for n, text in enumerate(messages, 1):
            await s.send_json({"type": "input.text", "text": text})
            await llm.wait_for(lambda requests, n=n: len(requests) == n)  # the reply started: the LLM has it
        cancelled = [e for e in s.outbox.of("response.done") if e["status"] == "cancelled"]
        assert len(cancelled) == len(messages) - 1 and not any(e["text"] for e in cancelled), "nothing was heard"
        prompts = [r.messages[-1].content for r in llm.requests]
    # each prompt carries the earlier unanswered words, but at most 8000 characters of them
    assert all(p.endswith(text) for p, text in zip(prompts, messages, strict=True))
    assert max(len(p) for p in prompts) <= 8000 + 1 + 7990
    last = prompts[-1]
    carried = last[: -len(messages[-1])].strip()
    assert 7900 <= len(carried) <= 8000
    # the oldest went first: what is carried is the newest words (all of the message before, and
    # the end of the one before that), cut at a word boundary
    assert carried.endswith(messages[-2]) and carried.startswith("m9w")
    assert "m8w" not in last and "m0w" not in last


async def test_history_keeps_only_what_the_prompt_uses() -> None:
    async with in_process_session(max_history_messages=4) as s:
        for i in range(10):
            await s.send_json({"type": "input.text", "text": f"question {i}"})
            await s.outbox.wait_for(lambda e, n=i: e["type"] == "response.done" and e["response_id"] == f"resp_{n + 1}")
        kept = s.session.history.messages
    assert [m.content for m in kept] == [
        "question 8",
        "You said: question 8.",
        "question 9",
        "You said: question 9.",
    ]


async def test_an_utterance_of_max_utterance_s_ends_the_turn() -> None:
    # min_silence_ms at its maximum so the VAD does not end the turn at the clip's pauses
    asr = RecordingASR()
    limits = SessionLimits(**{**FAST_FEED.to_dict(), "max_utterance_s": 2.0})
    defaults = SessionConfig(audio_output=False, min_silence_ms=5000)
    sent = load_pcm("en_librivox_sense_0920")  # 6 s of speech
    async with in_process_session(asr=asr, limits=limits, defaults=defaults) as s:
        await s.send_pcm(sent)
        await s.close()
        events = s.outbox.events
        turns = s.ctx.metrics.registry.get_sample_value("hark_turns_total", {"source": "max_utterance"})
    [stream] = asr.streams
    started = [e for e in events if e["type"] == "speech.started"]
    stopped = [e for e in events if e["type"] == "speech.stopped"]
    assert len(started) >= 3 and turns is not None and turns >= 2, [e["type"] for e in events]
    first_len_ms = (stopped[0]["audio_ms"] - started[0]["audio_ms"], len(stream.utterances[0]) / 32)
    assert all(2000 <= ms < 2100 for ms in first_len_ms), first_len_ms  # capped, to the next 100 ms frame
    # the speech that goes on after the cap is the next turn, answered too
    assert stopped[0]["audio_ms"] <= started[1]["audio_ms"]
    assert len([e for e in events if e["type"] == "response.started"]) == len(started)


async def test_back_to_back_typed_turns_each_get_response_done() -> None:
    """A typed turn right behind another cancels its reply before that reply's task ever ran: it
    still ends with response.done (cancelled), and its words go with the next turn."""
    llm = StalledLLM()
    async with in_process_session(llm=llm, defaults=SessionConfig(audio_output=True)) as s:
        await s.session.on_text('{"type": "input.text", "text": "first"}')
        await s.session.on_text('{"type": "input.text", "text": "second"}')
        await s.session.on_text('{"type": "input.text", "text": "third"}')
        await s.outbox.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] == "resp_2")
        await llm.wait_for(lambda requests: bool(requests) and requests[-1].messages[-1].content.endswith("third"))
        done = s.outbox.of("response.done")
        started = s.outbox.of("response.started")
    assert [e["response_id"] for e in started] == ["resp_1", "resp_2", "resp_3"]
    assert [(e["response_id"], e["status"]) for e in done] == [("resp_1", "cancelled"), ("resp_2", "cancelled")]
    assert llm.requests[-1].messages[-1].content == "first second third"


def test_keep_newest_cuts_at_a_word_boundary() -> None:
    assert keep_newest("one two three four", 9) == "four"  # "hree four" would start inside a word
    assert keep_newest("one two three four", 10) == "three four"
    assert keep_newest("short", 100) == "short"
    assert keep_newest("一二三四五", 3) == "三四五"  # no spaces: a cut at a character
    assert keep_newest("anything", 0) == ""


def test_history_bounds_and_carries() -> None:
    history = History(max_messages=2, max_carried_chars=12)
    history.add_exchange("a", "b")
    history.add_exchange("c", "d")
    assert history.messages == [Message("user", "c"), Message("assistant", "d")]
    assert history.conversation("be brief")[0] == Message("system", "be brief")
    history.carry("first words then more")
    assert history.carried == "then more"
    assert history.take_user_text("now") == "then more now" and history.carried == ""
