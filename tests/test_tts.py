from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from hark.server.config import ServerConfig
from hark.server.tts import SentenceChunker
from hark.server.tts.base import Pcm16
from hark.server.tts.espeak import EspeakEngine
from hark.server.tts.registry import TTS_ENGINES

HELLO = "Hello world. This is Hark."


@pytest.fixture
async def engine() -> AsyncIterator[EspeakEngine]:
    eng = EspeakEngine()
    await eng.start()
    try:
        yield eng
    finally:
        await eng.aclose()


def rms(audio: Pcm16) -> float:
    return float(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))


def assert_speech(audio: Pcm16, sample_rate: int, min_seconds: float = 0.5) -> None:
    assert audio.dtype == np.int16
    assert audio.ndim == 1
    assert audio.size / sample_rate > min_seconds
    assert rms(audio) > 300  # int16 full scale is 32767; silence would be ~0


# --- espeak engine ---------------------------------------------------------------------------


async def test_synthesizes_speech(engine: EspeakEngine) -> None:
    assert engine.sample_rate == 22050
    audio = await engine.synthesize(HELLO, "en-us")
    assert_speech(audio, engine.sample_rate)


async def test_concurrent_calls_both_succeed(engine: EspeakEngine) -> None:
    a, b = await asyncio.gather(
        engine.synthesize(HELLO, "en-us"),
        engine.synthesize("Good morning to you.", "en-us"),
    )
    assert_speech(a, engine.sample_rate)
    assert_speech(b, engine.sample_rate)


async def test_more_requests_than_pending_slots_all_complete() -> None:
    eng = EspeakEngine(max_pending=2)
    await eng.start()
    try:
        results = await asyncio.gather(*(eng.synthesize(f"Sentence number {i}.", "en-us") for i in range(10)))
    finally:
        await eng.aclose()
    for audio in results:
        assert_speech(audio, eng.sample_rate, min_seconds=0.3)


async def test_unknown_voice_falls_back_and_warns_once(engine: EspeakEngine, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="server.tts.espeak"):
        first = await engine.synthesize(HELLO, "no-such-voice")
        second = await engine.synthesize(HELLO, "no-such-voice")
    assert_speech(first, engine.sample_rate)
    assert_speech(second, engine.sample_rate)
    warnings = [r for r in caplog.records if "no-such-voice" in r.getMessage()]
    assert len(warnings) == 1
    # The fallback voice is usable afterwards, and a real voice still switches.
    assert_speech(await engine.synthesize("Hallo Welt, wie geht es dir?", "de"), engine.sample_rate)


@pytest.mark.parametrize("text", ["", "   \n\t ", "...", "?!", " , . ; ", "\0"])
async def test_nothing_to_speak_gives_empty_audio(engine: EspeakEngine, text: str) -> None:
    audio = await engine.synthesize(text, "en-us")
    assert audio.dtype == np.int16
    assert audio.size == 0


async def test_synthesize_before_start_raises() -> None:
    with pytest.raises(RuntimeError, match="start"):
        await EspeakEngine().synthesize(HELLO, "en-us")


async def test_engines_share_espeak_and_survive_each_others_close() -> None:
    a, b = EspeakEngine(), EspeakEngine()
    await a.start()
    await b.start()
    try:
        await a.aclose()
        assert_speech(await b.synthesize(HELLO, "en-us"), b.sample_rate)
    finally:
        await b.aclose()
    # After the last close espeak is terminated; a new engine initializes it again.
    c = EspeakEngine()
    await c.start()
    try:
        assert_speech(await c.synthesize(HELLO, "en-us"), c.sample_rate)
    finally:
        await c.aclose()


async def test_cancelled_synthesis_leaves_engine_usable(engine: EspeakEngine) -> None:
    task = asyncio.create_task(engine.synthesize("The quick brown fox jumps over the lazy dog. " * 200, "en-us"))
    await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_speech(await engine.synthesize(HELLO, "en-us"), engine.sample_rate)


async def test_event_loop_not_blocked_during_synthesis(engine: EspeakEngine) -> None:
    text = "The quick brown fox jumps over the lazy dog, and then it runs away. " * 300
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    tick_task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)  # let the ticker settle
    started = time.perf_counter()
    audio = await engine.synthesize(text, "en-us")
    synth_time = time.perf_counter() - started
    stop.set()
    await tick_task

    assert audio.size / engine.sample_rate > 60
    assert synth_time > 0.1, "text too short for the comparison to mean anything"
    assert len(gaps) > 5
    # Had synthesis run on the loop, one gap would span all of it.
    assert max(gaps) < synth_time / 4, (max(gaps), synth_time)


async def test_factory() -> None:
    eng = TTS_ENGINES.create("espeak", ServerConfig())
    assert isinstance(eng, EspeakEngine)
    known = "espeak, openai, fish, cosyvoice"
    with pytest.raises(ValueError, match=f"--tts 'nope': unknown speech synthesizer \\(known: {known}\\)"):
        TTS_ENGINES.create("nope", ServerConfig())


# --- sentence chunker ------------------------------------------------------------------------


def chunk_stream(deltas: list[str], max_chars: int = 200) -> list[str]:
    chunker = SentenceChunker(max_chars=max_chars)
    out: list[str] = []
    for delta in deltas:
        out += chunker.push(delta)
    return out + chunker.flush()


def test_sentence_split_across_tiny_deltas() -> None:
    text = "Hi there. How are you? I am fine! Thanks"
    chunker = SentenceChunker()
    emitted: list[list[str]] = [chunker.push(ch) for ch in text]
    assert [c for batch in emitted for c in batch] == ["Hi there.", "How are you?", "I am fine!"]
    # A sentence is released as soon as the whitespace after its punctuation arrives.
    assert emitted[text.index("How") - 1] == ["Hi there."]
    assert chunker.flush() == ["Thanks"]


def test_same_chunks_whatever_the_delta_sizes() -> None:
    text = "One two three. It costs 3.5 dollars; Dr. Smith said so: yes. Mr. Lee, e.g. here, agreed. End"
    whole = chunk_stream([text])
    assert chunk_stream(list(text)) == whole
    assert chunk_stream([text[i : i + 7] for i in range(0, len(text), 7)]) == whole
    assert whole == [
        "One two three.",
        "It costs 3.5 dollars;",
        "Dr. Smith said so:",
        "yes.",
        "Mr. Lee, e.g. here, agreed.",
        "End",
    ]


def test_decimals_do_not_split() -> None:
    assert chunk_stream(["Pi is about 3.", "14159 and e is 2.718. Next"]) == [
        "Pi is about 3.14159 and e is 2.718.",
        "Next",
    ]


def test_abbreviations_do_not_split() -> None:
    text = "Ask Mr. Brown or Dr. Green (e.g. tomorrow). Or Mrs. White, i.e. her."
    assert chunk_stream([text]) == ["Ask Mr. Brown or Dr. Green (e.g. tomorrow).", "Or Mrs. White, i.e. her."]


def test_first_chunk_splits_at_comma_after_four_words() -> None:
    text = "Well, I think that, in most cases, it works, mostly."
    assert chunk_stream(list(text)) == ["Well, I think that,", "in most cases, it works, mostly."]


def test_first_chunk_comma_needs_whitespace() -> None:
    assert chunk_stream(["There are exactly 1,000 apples here, you see."]) == [
        "There are exactly 1,000 apples here,",
        "you see.",
    ]


def test_comma_rule_applies_again_after_flush() -> None:
    chunker = SentenceChunker()
    first = chunker.push("One two three four, five. Six seven eight nine, ten. ")
    assert first == ["One two three four,", "five.", "Six seven eight nine, ten."]
    assert chunker.flush() == []
    assert chunker.push("Alpha beta gamma delta, epsilon.") == ["Alpha beta gamma delta,"]
    assert chunker.flush() == ["epsilon."]


def test_max_chars_splits_at_last_whitespace() -> None:
    words = " ".join(f"word{i}" for i in range(40))  # no punctuation at all
    chunks = chunk_stream(list(words), max_chars=30)
    assert all(len(c) <= 30 for c in chunks)
    assert " ".join(chunks) == words
    assert all(not c.startswith(" ") and not c.endswith(" ") for c in chunks)
    assert len(chunks) > 1


def test_max_chars_without_whitespace_cuts_hard() -> None:
    assert chunk_stream(["x" * 25], max_chars=10) == ["x" * 10, "x" * 10, "x" * 5]


def test_cjk_punctuation_splits_without_space() -> None:
    text = "你好。今天天气很好！你呢？我很好"  # noqa: RUF001
    assert chunk_stream(list(text)) == ["你好。", "今天天气很好！", "你呢？", "我很好"]  # noqa: RUF001
    # The fullwidth colon is not a boundary; the closing bracket stays with its sentence.
    assert chunk_stream(["他说：「好。」然后走了。"]) == ["他说：「好。」", "然后走了。"]  # noqa: RUF001


def test_closing_quotes_stay_with_sentence() -> None:
    assert chunk_stream(['He said "stop." Then he left. Really?! Yes... ok']) == [
        'He said "stop."',
        "Then he left.",
        "Really?!",
        "Yes...",
        "ok",
    ]


def test_flush_returns_remainder_and_never_empty_chunks() -> None:
    chunker = SentenceChunker()
    assert chunker.push("   ") == []
    assert chunker.push("Almost done") == []
    assert chunker.flush() == ["Almost done"]
    assert chunker.flush() == []
    assert chunker.push("Ends with a period.") == []  # the next delta could still make it "period.5"
    assert chunker.flush() == ["Ends with a period."]
    assert chunk_stream(["", " \n ", ""]) == []


def test_list_numbers_do_not_split() -> None:
    assert chunk_stream(["Steps:\n1. Open the door.\n2. Walk in."]) == ["Steps:", "1. Open the door.", "2. Walk in."]
