"""Turn-taking by meaning (issue 11): semantic endpointing, its config, a premature end undone, the LLM's P(end).

Real corpus audio through the real Silero VAD and the real Smart Turn model (`make install` fetches
it; without it these tests fail with the ModelFileError saying so). The policy's own logic is also
checked alone with `ScriptedScorer`, a labelled stand-in detector that answers preset probabilities.
"""

from __future__ import annotations

import asyncio
import functools
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import REPO, RunningServer, load_pcm, metric, start_server, stop_server
from inprocess import NoTTS, RecordingASR, RecordingOutbox, StalledLLM, silero
from simproc import sglang_simulator
from wsclient import Peer, silence

from hark.protocol import (
    ConversationError,
    ConversationTracker,
    ProtocolError,
    SessionConfig,
    SessionLimits,
    decode_server,
)
from hark.protocol.events import ResponseDone, ResponseStarted, SpeechStarted, SpeechStopped, TranscriptFinal
from hark.protocol.turn_detection import SemanticTurnDetection, SilenceTurnDetection, parse_turn_detection_option
from hark.server.config import ServerConfig
from hark.server.context import ServerContext
from hark.server.llm.http import LLMSettings
from hark.server.llm.prompt import ChatMLPrompt
from hark.server.llm.sglang import SGLangEngine
from hark.server.llm.speculation import Speculator
from hark.server.metrics import Metrics
from hark.server.session import Session
from hark.server.turn.batch import TurnDetectorBusy
from hark.server.turn.endpoint import EndReason, SilenceEndpointer, TurnEnd, create_endpointer
from hark.server.turn.features import AudioArray
from hark.server.turn.llm_signal import LLMTurnJudge
from hark.server.turn.semantic import (
    EAGERNESS,
    MAX_TRIM_MS,
    QUIET_MS,
    SemanticEndpointer,
    TurnSignals,
    combine,
    required_probability,
    trim_trailing_quiet,
)
from hark.server.turn.smart_turn import SmartTurnDetector, load_smart_turn
from hark.server.turn.text_signal import UNFINISHED_FACTOR, text_factor, unfinished_word
from hark.server.vad import SAMPLE_RATE, VadEventKind, VadStream
from standins.sglang import SGLangSimulator, SimConfig

FRAME = 3200  # 100 ms at 16 kHz
# en_librivox_sense_0870 ("and mister john dashwood | had then leisure ..."): the quietest 20 ms
# near 2 s is at 2.20-2.24 s (RMS ~210 against ~3000 in the words around it), a word boundary
PAUSE_AT_S = 2.22


# these tests are about turns, not admission: a busy shared CI box must not refuse their sessions
NO_OVERLOAD_GUARD = ("--overload-loop-lag-ms", "0", "--overload-frame-wait-ms", "0")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A default server (the turn model installed: semantic by default) for this module."""
    running = start_server(tmp_path_factory.mktemp("turns"), *NO_OVERLOAD_GUARD)
    yield running
    running.assert_alive()
    stop_server(running)


def _paused_sentence() -> bytes:
    pcm = load_pcm("en_librivox_sense_0870")
    cut = int(PAUSE_AT_S * SAMPLE_RATE) * 2
    return pcm[:cut] + silence(1000) + pcm[cut:]


def _speech_segments(pcm: bytes, min_silence_ms: int) -> list[tuple[float, float | None]]:
    """(start, stop) in seconds of the speech the VAD finds, pausing after `min_silence_ms`."""
    vad = VadStream(silero(), 0.5, min_silence_ms)
    audio = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    segments: list[tuple[float, float | None]] = []
    for i in range(0, len(audio), 1600):
        for event in vad.process(audio[i : i + 1600]):
            if event.kind is VadEventKind.START:
                segments.append((event.sample / SAMPLE_RATE, None))
            else:
                segments[-1] = (segments[-1][0], event.sample / SAMPLE_RATE)
    return segments


def test_the_pause_is_inserted_at_a_word_boundary() -> None:
    # the clip alone has no pause there; with the inserted second, the VAD hears speech stop right
    # at the cut and start again right after it: no word was cut in two
    whole = _speech_segments(load_pcm("en_librivox_sense_0870"), 200)
    assert len(whole) == 1
    paused = _speech_segments(_paused_sentence(), 200)
    assert len(paused) == 2, paused
    stop, restart = paused[0][1], paused[1][0]
    assert stop is not None and abs(stop - PAUSE_AT_S) < 0.12, paused
    assert abs(restart - (PAUSE_AT_S + 1.0)) < 0.12, paused


# ---------------------------------------------------------------- the policy alone


class ScriptedScorer:
    """A labelled stand-in turn detector: answers the next preset probability, after `gate` opens;
    an exception in the script is raised instead."""

    def __init__(self, *script: float | Exception) -> None:
        self.script = list(script)
        self.calls: list[int] = []  # samples scored per call
        self.gate = asyncio.Event()
        self.gate.set()

    async def score(self, audio: AudioArray) -> float:
        self.calls.append(len(audio))
        await self.gate.wait()
        answer = self.script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _policy(
    scorer: ScriptedScorer, text: str = "", **settings: Any
) -> tuple[SemanticEndpointer, list[int], list[tuple[int, int]]]:
    wakes: list[int] = []
    asked: list[tuple[int, int]] = []

    def audio(start: int, end: int) -> bytes:
        asked.append((start, end))
        return b"\1\0" * (end - start)

    signals = TurnSignals(scorer, audio, lambda: text, lambda: wakes.append(1))
    config = SessionConfig(turn_detection=SemanticTurnDetection(**settings))
    endpointer = create_endpointer(config, SessionLimits(), functools.partial(SemanticEndpointer, signals=signals))
    assert isinstance(endpointer, SemanticEndpointer)
    return endpointer, wakes, asked


def ms(value: float) -> int:
    return round(value * SAMPLE_RATE / 1000)


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_finished_turn_ends_at_the_first_check_on_audio_up_to_the_speech_end() -> None:
    scorer = ScriptedScorer(0.9)
    endpointer, wakes, asked = _policy(scorer)
    assert endpointer.pause_ms == EAGERNESS["medium"].pause_ms == 100
    endpointer.begin(ms(100))
    speech_end = ms(9_500)
    assert await endpointer.on_pause(speech_end) is None  # never waits for the detector
    await _settle()
    assert wakes == [1]  # the session is told at once, not at the next frame
    # the last 8 s up to the speech end: the pause itself is not scored
    assert asked == [(speech_end - 8 * SAMPLE_RATE, speech_end)] and scorer.calls == [8 * SAMPLE_RATE]
    end = await endpointer.on_progress(speech_end + ms(230))
    assert end == TurnEnd(EndReason.SEMANTIC, speech_end, speech_end + ms(230), 0.9)


async def test_the_check_starts_at_the_first_quiet_and_the_turn_ends_no_sooner_than_pause_ms() -> None:
    # the model's ~100 ms overlap the silence the turn must last anyway: one check, begun at QUIET_MS
    scorer = ScriptedScorer(0.9)
    endpointer, wakes, asked = _policy(scorer)
    assert endpointer.quiet_ms == QUIET_MS < endpointer.pause_ms
    endpointer.begin(0)
    speech_end = ms(3000)
    endpointer.on_quiet(speech_end)
    await _settle()
    assert wakes == [1] and asked == [(0, speech_end)]
    assert await endpointer.on_progress(speech_end + ms(150)) is None  # scored, but no pause yet
    assert await endpointer.on_pause(speech_end) is None  # the VAD's pause: the same silence, no new check
    await _settle()
    assert len(scorer.calls) == 1 and endpointer.checks == 1
    end = await endpointer.on_progress(speech_end + ms(210))
    assert end == TurnEnd(EndReason.SEMANTIC, speech_end, speech_end + ms(210), 0.9)


async def test_speech_that_goes_on_drops_the_early_check_before_it_is_computed() -> None:
    scorer = ScriptedScorer(0.9, 0.1)
    scorer.gate.clear()
    endpointer, wakes, _ = _policy(scorer)
    endpointer.begin(0)
    endpointer.on_quiet(ms(1000))
    await _settle()
    endpointer.on_resumed()  # a dip inside the sentence: its check is cancelled
    scorer.gate.set()
    await _settle()
    assert wakes == [] and scorer.script == [0.9, 0.1]  # cancelled while it waited: it took no answer
    # the real pause later is checked afresh, and its own score decides
    await endpointer.on_pause(ms(2000))
    await _settle()
    assert wakes == [1] and endpointer.checks == 2 and scorer.script == [0.1]
    end = await endpointer.on_progress(ms(2210))
    assert end is not None and end.speech_end == ms(2000) and end.probability == 0.9


def test_the_vad_reports_a_quiet_then_either_the_pause_or_the_speech_going_on() -> None:
    vad = VadStream(silero(), 0.5, min_silence_ms=200, quiet_ms=64)
    speech, quiet = [0.9] * 5, [0.05] * 2
    events = vad.apply(np.array(speech + quiet + speech + quiet + [0.05] * 5, dtype=np.float32))
    kinds = [(e.kind, e.sample // 512) for e in events]
    assert kinds == [
        (VadEventKind.START, 0),
        (VadEventKind.QUIET, 5),
        (VadEventKind.RESUMED, 7),
        (VadEventKind.QUIET, 12),
        (VadEventKind.STOP, 12),  # the same silence: its first sample
    ], kinds
    plain = VadStream(silero(), 0.5, min_silence_ms=200)  # no quiet_ms: START and STOP only, as before
    events = plain.apply(np.array(speech + quiet + speech + [0.05] * 7, dtype=np.float32))
    assert [e.kind for e in events] == [VadEventKind.START, VadEventKind.STOP]


def test_the_quiet_the_vad_let_in_is_trimmed_before_scoring() -> None:
    speech = (np.sin(np.arange(16000) / 3.0) * 8000).astype(np.int16)
    fade = np.full(160, 50, dtype=np.int16)  # -44 dB: quiet, but the word's tail: one frame stays
    ended = np.concatenate([speech, fade, fade, np.zeros(800, dtype=np.int16)])
    assert len(trim_trailing_quiet(ended)) == len(speech) + 160
    assert len(trim_trailing_quiet(speech)) == len(speech)
    # at most MAX_TRIM_MS go: a long quiet stretch is not the VAD's doing
    long_quiet = np.concatenate([speech, np.zeros(16000, dtype=np.int16)])
    assert len(trim_trailing_quiet(long_quiet)) == len(long_quiet) - (MAX_TRIM_MS // 10 - 1) * 160


async def test_a_doubtful_turn_waits_longer_the_less_finished_it_sounds() -> None:
    # medium: 0.7 needed at 100 ms of silence, then less, slowly at first, down to 0 at max_silence_ms
    assert (EAGERNESS["medium"].threshold, EAGERNESS["medium"].pause_ms) == (0.7, 100)
    assert required_probability(0.7, 100, 100, 2500) == 0.7
    assert required_probability(0.7, 1300, 100, 2500) == pytest.approx(0.7 * (1 - 0.5**3))
    assert required_probability(0.7, 2500, 100, 2500) == 0.0
    for probability, ends_after_ms in ((0.45, 1803), (0.3, 2092)):
        endpointer, _, _ = _policy(ScriptedScorer(probability))
        endpointer.begin(0)
        await endpointer.on_pause(ms(3000))
        await _settle()
        # decided afresh on every frame of the growing silence, from the one score
        assert await endpointer.on_progress(ms(3000 + ends_after_ms - 30)) is None
        end = await endpointer.on_progress(ms(3000 + ends_after_ms + 30))
        assert end is not None and end.reason is EndReason.SEMANTIC and end.probability == probability


async def test_the_cap_ends_an_unfinished_turn_and_a_late_score_is_never_used() -> None:
    scorer = ScriptedScorer(0.0, 0.99)
    endpointer, wakes, _ = _policy(scorer, max_silence_ms=1000)
    endpointer.begin(0)
    await endpointer.on_pause(ms(2000))
    await _settle()
    assert await endpointer.on_progress(ms(2000 + 990)) is None
    end = await endpointer.on_progress(ms(3000))
    assert end == TurnEnd(EndReason.MAX_SILENCE, ms(2000), ms(3000), 0.0)
    # the next pause: speech resumes before the detector answers; its answer is thrown away
    endpointer.begin(ms(4000))
    scorer.gate.clear()
    await endpointer.on_pause(ms(5000))
    await _settle()
    endpointer.on_speech(ms(5300))
    scorer.gate.set()
    await _settle()
    assert wakes == [1]  # only the first check woke the session
    assert await endpointer.on_progress(ms(5400)) is None


async def test_a_busy_detector_leaves_the_pause_to_min_silence_ms() -> None:
    endpointer, _, _ = _policy(ScriptedScorer(TurnDetectorBusy("32 turn checks already waiting")))
    endpointer.reconfigure(SessionConfig(min_silence_ms=700, turn_detection=SemanticTurnDetection()))
    endpointer.begin(0)
    await endpointer.on_pause(ms(1000))
    await _settle()
    assert await endpointer.on_progress(ms(1690)) is None
    assert await endpointer.on_progress(ms(1710)) == TurnEnd(EndReason.SILENCE, ms(1000), ms(1710), None)


async def test_the_text_signal_lowers_the_audio_score_and_the_llm_is_averaged_in() -> None:
    assert unfinished_word("turn left at the") == "the" and unfinished_word("coffee and,") == "and"
    assert unfinished_word("我想问我在") == "在" and unfinished_word("给我一个") == "一个"
    for finished in ("go forward ten meters", "I think so", "what is it for?", "好的", ""):
        assert unfinished_word(finished) is None, finished
    assert text_factor("turn left at the") == UNFINISHED_FACTOR and text_factor("turn left") == 1.0
    assert combine(0.8, UNFINISHED_FACTOR, None) == pytest.approx(0.24)
    assert combine(0.8, 1.0, 0.2) == pytest.approx(0.5)
    # a turn the audio finds finished (0.8) but whose words stop on "the" waits
    on, _, _ = _policy(ScriptedScorer(0.8), text="turn left at the", text_signal=True)
    off, _, _ = _policy(ScriptedScorer(0.8), text="turn left at the", text_signal=False)
    for endpointer, ends_now in ((on, False), (off, True)):
        endpointer.begin(0)
        await endpointer.on_pause(ms(1000))
        await _settle()
        end = await endpointer.on_progress(ms(1250))
        assert (end is not None) is ends_now


async def test_a_policy_switched_mid_pause_takes_the_pause_over() -> None:
    endpointer, _, _ = _policy(ScriptedScorer(0.0))
    endpointer.begin(ms(500))
    await endpointer.on_pause(ms(3000))  # the VAD reported the pause at the semantic pause_ms
    silence_policy = create_endpointer(SessionConfig(min_silence_ms=500), SessionLimits())
    assert isinstance(silence_policy, SilenceEndpointer)
    silence_policy.adopt(endpointer)
    assert await silence_policy.on_progress(ms(3400)) is None
    assert await silence_policy.on_progress(ms(3500)) == TurnEnd(EndReason.SILENCE, ms(3000), ms(3500))


# ---------------------------------------------------------------- the configuration


def test_turn_detection_config_and_the_min_silence_ms_alias() -> None:
    config = SessionConfig()
    assert config.to_dict()["turn_detection"] == {"type": "silence", "silence_ms": 500}
    semantic = config.updated({"turn_detection": {"type": "semantic", "eagerness": "high"}})
    assert semantic.to_dict()["turn_detection"] == {
        "type": "semantic",
        "eagerness": "high",
        "max_silence_ms": 2500,
        "text_signal": False,
        "llm": True,
    }
    # an old client's min_silence_ms selects the silence policy with it; turn_detection's silence_ms is it
    old = semantic.updated({"min_silence_ms": 800})
    assert old.turn_detection == SilenceTurnDetection() and old.to_dict()["turn_detection"]["silence_ms"] == 800
    new = semantic.updated({"turn_detection": {"type": "silence", "silence_ms": 300}})
    assert new.min_silence_ms == 300
    # with turn_detection in the same patch, that one decides (min_silence_ms stays the fallback)
    both = config.updated({"turn_detection": {"type": "semantic"}, "min_silence_ms": 900})
    assert isinstance(both.turn_detection, SemanticTurnDetection) and both.min_silence_ms == 900
    # what a client reads back from session.created builds the same config
    assert SessionConfig(**semantic.to_dict()) == semantic and semantic.updated(semantic.to_dict()) == semantic
    assert parse_turn_detection_option("semantic") == SemanticTurnDetection()
    assert parse_turn_detection_option('{"type":"silence","silence_ms":700}') == SilenceTurnDetection(700)
    with pytest.raises(ProtocolError, match="type must be one of"):
        parse_turn_detection_option("smart")


BAD_TURN_DETECTION: list[tuple[Any, str]] = [
    ({"type": "vibes"}, 'config.turn_detection.type must be one of "silence", "semantic"'),
    ({"eagerness": "high"}, 'config.turn_detection.type must be one of "silence", "semantic"'),
    ("semantic", 'config.turn_detection must be an object with a "type"'),
    ({"type": "semantic", "eagerness": "wild"}, "config.turn_detection.eagerness must be one of"),
    (
        {"type": "semantic", "max_silence_ms": 100},
        "config.turn_detection.max_silence_ms must be an integer in [500, 10000]",
    ),
    ({"type": "semantic", "max_silence_ms": 10**400}, "config.turn_detection.max_silence_ms must be an integer"),
    ({"type": "semantic", "text_signal": "yes"}, "config.turn_detection.text_signal must be true or false"),
    ({"type": "silence", "silence_ms": 50}, "config.turn_detection.silence_ms must be an integer in [100, 5000]"),
    ({"type": "silence", "eagerness": "high"}, "config.turn_detection.eagerness is not a setting of silence"),
]


async def test_bad_turn_detection_values_are_refused_and_change_nothing(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    before = peer.events[0]["config"]
    for n, (value, message) in enumerate(BAD_TURN_DETECTION, 1):
        # a good setting beside the bad one is not applied either
        await peer.send_json({"type": "session.update", "config": {"voice": "en-gb", "turn_detection": value}})
        await peer.wait_for(lambda e, n=n: e["type"] == "error" and len(peer.of("error")) == n)
        error = peer.of("error")[-1]
        assert error["code"] == "invalid_field" and message in error["message"], (value, error)
        await asyncio.sleep(1.05)  # the error throttle reports one of a code per second
    await peer.send_json({"type": "session.update", "config": {"speech_pad_ms": 150}})
    updated = await peer.wait_for(lambda e: e["type"] == "session.updated")
    await peer.close()
    assert len(peer.of("error")) == len(BAD_TURN_DETECTION) and len(peer.of("session.updated")) == 1
    assert updated["config"] == {**before, "speech_pad_ms": 150}


# ---------------------------------------------------------------- a real server, real audio


class Speaker:
    """Sends clips into one session and keeps its input clock, to find each clip's turns."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.clock_ms = 0

    async def say(self, pcm: bytes, tail_ms: int = 3000) -> list[dict[str, Any]]:
        """Send a clip and `tail_ms` of silence at 1.8x real time; the speech.stopped events of its
        turns, once the turn holding its last word has its transcript.final."""
        peer, since, start_ms = self.peer, len(self.peer.events), self.clock_ms
        self.clock_ms += len(pcm) // 32 + tail_ms
        await peer.send_pcm(pcm + silence(tail_ms))
        clip_end_ms = start_ms + len(pcm) // 32

        def last_turn_final(event: dict[str, Any]) -> bool:
            stops = [e for e in peer.events[since:] if e["type"] == "speech.stopped"]
            return (
                event["type"] == "transcript.final"
                and bool(stops)
                and stops[-1]["audio_ms"] >= clip_end_ms - 1000
                and event["turn_id"] == stops[-1]["turn_id"]
            )

        await peer.wait_for(last_turn_final, timeout=30)
        return [e for e in peer.events[since:] if e["type"] == "speech.stopped"]


async def test_semantic_keeps_a_paused_sentence_whole_silence_splits_it_and_update_switches(
    server: RunningServer,
) -> None:
    checks_before = metric(server, "hark_turn_check_seconds_count")
    peer = await Peer.open(server.url)
    created = peer.events[0]["config"]["turn_detection"]
    assert created["type"] == "semantic", "the default server has the turn model: semantic by default"
    await peer.send_json({"type": "session.update", "config": {"audio_output": False}})
    await peer.wait_for(lambda e: e["type"] == "session.updated")

    speaker = Speaker(peer)
    # a complete command ends by the model's judgement, long before the 2.5 s silence cap
    (stopped,) = await speaker.say(load_pcm("en_goforward_command"))
    assert stopped["reason"] == "semantic" and stopped["probability"] >= EAGERNESS["medium"].threshold, stopped
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    assert isinstance(done["metrics"]["endpoint_ms"], int) and done["metrics"]["endpoint_ms"] >= 0

    # a 1 s pause mid-sentence: one turn under semantic ...
    (stopped,) = await speaker.say(_paused_sentence())
    assert stopped["reason"] == "semantic", stopped

    # ... and two under silence 500, switched to mid-session
    await peer.send_json(
        {"type": "session.update", "config": {"turn_detection": {"type": "silence", "silence_ms": 500}}}
    )
    updated = await peer.wait_for(lambda e: e["type"] == "session.updated" and len(peer.of("session.updated")) == 2)
    assert updated["config"]["turn_detection"] == {"type": "silence", "silence_ms": 500}
    split = await speaker.say(_paused_sentence())
    assert [e["reason"] for e in split] == ["silence", "silence"] and all(e["probability"] is None for e in split)

    # back to semantic: whole again
    await peer.send_json({"type": "session.update", "config": {"turn_detection": {"type": "semantic"}}})
    await peer.wait_for(lambda e: e["type"] == "session.updated" and len(peer.of("session.updated")) == 3)
    rejoined = await speaker.say(_paused_sentence())
    assert [e["reason"] for e in rejoined] == ["semantic"], [(e["audio_ms"], e["probability"]) for e in rejoined]
    await peer.close()
    assert peer.errors() == []
    finals = [e["text"] for e in peer.of("transcript.final")]
    print("finals:", finals)
    assert len(finals) == 5 and all(finals)
    # each of the three semantic turns was scored at least once, and /metrics saw how long that took
    assert metric(server, "hark_turn_check_seconds_count") - checks_before >= 3


# ---------------------------------------------------------------- a premature end undone


@asynccontextmanager
async def _semantic_session(
    llm: StalledLLM, asr: RecordingASR, detector: SmartTurnDetector | None = None, semantic: bool = True
) -> AsyncIterator[tuple[Session, RecordingOutbox]]:
    """A Session in this process with the real VAD and turn model, fed by the test."""
    policy = SemanticTurnDetection() if semantic else SilenceTurnDetection()
    config = ServerConfig(
        session_defaults=SessionConfig(audio_output=False, turn_detection=policy), limits=SessionLimits()
    )
    detector = detector or SmartTurnDetector(load_smart_turn())
    await detector.start()
    with ThreadPoolExecutor(2) as pool:
        ctx = ServerContext(config, Metrics(), silero(), asr, llm, NoTTS(), pool, turn_detector=detector)
        outbox = RecordingOutbox()
        session = Session(ctx, outbox, "sess_join")
        task = asyncio.create_task(session.run())
        try:
            yield session, outbox
        finally:
            task.cancel()
            await asyncio.wait({task})
            await detector.stop()


async def _feed_real_time(session: Session, pcm: bytes) -> None:
    start = time.monotonic()
    for n, i in enumerate(range(0, len(pcm), FRAME)):
        await session.on_binary(pcm[i : i + FRAME].ljust(FRAME, b"\0"))
        await asyncio.sleep(max(0.0, start + (n + 1) * 0.1 - time.monotonic()))


class _MeasuringDetector(SmartTurnDetector):
    """The real detector, keeping how many samples each check scored."""

    def __init__(self) -> None:
        super().__init__(load_smart_turn())
        self.scored: list[int] = []

    async def score(self, audio: AudioArray) -> float:
        self.scored.append(len(audio))
        return await super().score(audio)


async def test_switched_to_semantic_the_detector_hears_the_whole_utterance() -> None:
    # the audio kept for the detector follows the new policy: a session that began under silence
    # keeps only the pre-roll, and once switched its checks must not see just the last second
    detector = _MeasuringDetector()
    sentence = load_pcm("en_librivox_sense_0870")
    async with _semantic_session(StalledLLM(), RecordingASR(), detector, semantic=False) as (session, outbox):
        update = {"type": "session.update", "config": {"turn_detection": {"type": "semantic"}}}
        await session.on_text(json.dumps(update))
        await outbox.wait_for(lambda e: e["type"] == "session.updated")
        await _feed_real_time(session, sentence + silence(1500))
        await outbox.wait_for(lambda e: e["type"] == "speech.stopped")
    assert detector.scored and max(detector.scored) >= len(sentence) // 2 - 2 * SAMPLE_RATE, detector.scored


async def test_resumed_speech_joins_the_turn_its_reply_is_asked_again() -> None:
    """ "And so my fellow Americans," ends by semantic (a pause after a comma scores ~0.8); "ask not"
    follows 1 s later, before anything of the reply was heard (the LLM stand-in never answers):
    the reply is cancelled and the turn goes on, then ends with the whole turn's words."""
    llm, asr = StalledLLM(), RecordingASR()
    jfk = load_pcm("en_whisper_jfk")[: int(3.95 * SAMPLE_RATE) * 2]  # up to after "ask not"
    async with _semantic_session(llm, asr) as (session, outbox):
        await _feed_real_time(session, jfk + silence(3000))
        await outbox.wait_for(lambda e: e["type"] == "response.started" and e["response_id"] == "resp_2")
    events = [e for e in outbox.events if e["type"] != "transcript.partial"]
    kinds = [(e["type"], e.get("turn_id"), e.get("response_id"), e.get("status")) for e in events]
    assert kinds == [
        ("speech.started", 1, None, None),
        ("speech.stopped", 1, None, None),
        ("transcript.final", 1, None, None),
        ("response.started", 1, "resp_1", None),
        ("speech.started", 1, None, None),  # the same turn again
        ("response.done", None, "resp_1", "cancelled"),
        ("speech.stopped", 1, None, None),
        ("transcript.final", 1, None, None),
        ("response.started", 1, "resp_2", None),
        ("response.done", None, "resp_2", "cancelled"),  # the session ended under it (the stand-in never answers)
    ], kinds
    first_stop, joined_stop = (e for e in events if e["type"] == "speech.stopped")
    assert first_stop["reason"] == "semantic" and first_stop["probability"] >= EAGERNESS["medium"].threshold
    assert joined_stop["reason"] in ("semantic", "max_silence")
    first_final, joined_final = (e["text"] for e in events if e["type"] == "transcript.final")
    part_a, part_b = (f"utterance of {len(u) // 2} samples" for u in asr.streams[0].utterances)
    assert first_final == part_a and joined_final == f"{part_a} {part_b}"
    assert next(e for e in events if e["type"] == "response.done")["text"] == ""  # nothing of it was heard
    # the LLM is asked again with the whole turn's words, and the cancelled reply is not in the history
    assert [r.messages[-1].content for r in llm.requests] == [part_a, joined_final]
    assert [m.role for m in llm.requests[1].messages] == ["user"]
    # the wire order follows the contract, as the client-side tracker reads it
    tracker = ConversationTracker()
    for n, event in enumerate(outbox.events):
        tracker.feed(decode_server(json.dumps(event)), float(n))
    turn = tracker.turns[1]
    assert turn.utterance is not None and turn.utterance.joins is not None
    assert turn.utterance.text == joined_final and turn.response is not None and turn.response.response_id == "resp_2"


def test_the_tracker_takes_a_joined_turn_and_only_that() -> None:
    opened = [
        SpeechStarted(1, 0),
        SpeechStopped(1, 900, "semantic", 0.8),
        TranscriptFinal(1, "turn left at"),
        ResponseStarted(1, "resp_1"),
    ]
    tracker = ConversationTracker(history=1)
    for event in opened:
        tracker.feed(event, 0.0)
    for event in (
        SpeechStarted(1, 1200),
        ResponseDone("resp_1", "cancelled", "", {}),
        SpeechStopped(1, 2000),
        TranscriptFinal(1, "turn left at the light"),
        ResponseStarted(1, "resp_2"),
    ):
        tracker.feed(event, 1.0)
    assert tracker.turns[1].response is not None and tracker.turns[1].response.response_id == "resp_2"
    assert "resp_1" not in tracker.responses  # the replaced reply is forgotten with history=1
    # a turn whose reply completed is over: its id cannot open speech again
    done = ConversationTracker()
    for event in [*opened, ResponseDone("resp_1", "completed", "ok", {})]:
        done.feed(event, 0.0)
    with pytest.raises(ConversationError, match="turn_out_of_order"):
        done.feed(SpeechStarted(1, 1200), 1.0)


# ---------------------------------------------------------------- the LLM's opinion (SGLang simulator)


async def test_sglang_end_of_turn_reads_p_im_end_and_aborts_when_cancelled() -> None:
    prompt = ChatMLPrompt()
    async with SGLangSimulator(SimConfig(port=0)) as sim:
        engine = SGLangEngine(LLMSettings(url=sim.url), prompt)
        await engine.start()
        try:
            finished = await engine.end_of_turn(prompt.partial_user_prompt([], "what time is it?"), "s_t1_r1", "s")
            open_ended = await engine.end_of_turn(prompt.partial_user_prompt([], "turn left at the"), "s_t1_r2", "s")
            plain = await engine.end_of_turn(prompt.partial_user_prompt([], "go forward ten meters"), "s_t1_r3", "s")
            # the simulator's probabilities are made up (standins/sglang/logprobs.py): the order is what counts
            assert finished == pytest.approx(0.9) and plain == pytest.approx(0.6) and open_ended == pytest.approx(0.03)
            records = sim.stats()["requests"]
            assert [r["max_new_tokens"] for r in records] == [1, 1, 1] and records[0]["priority"] == 10
            # cancelled while the simulated GPU is busy: aborted on the server by its rid
            sim.config.prefill_overhead_ms = 3000.0
            speculator = Speculator(engine, "sess", 1, Metrics())
            speculator.begin_turn()
            judge = LLMTurnJudge(engine, speculator, "sess")  # rids in the speculation's scheme
            task = asyncio.create_task(judge.probability([], "and so my fellow americans"))
            await asyncio.sleep(0.3)
            task.cancel()
            await asyncio.wait({task})
            await judge.close()
            await asyncio.sleep(0.2)
            aborted = [r for r in sim.stats()["requests"] if r["rid"] == "sess_t000001_r0001"]
            assert aborted and aborted[0]["finish_reason"] == "abort"
        finally:
            await engine.aclose()


async def test_a_spoken_turn_asks_the_llm_for_its_end_of_turn_probability(server_factory: Any) -> None:
    with sglang_simulator() as sim:
        hark: RunningServer = server_factory("--llm", "sglang", "--llm-url", sim.url, *NO_OVERLOAD_GUARD)
        peer = await Peer.open(hark.url)
        session_id = peer.events[0]["session_id"]
        await peer.send_json({"type": "session.update", "config": {"audio_output": False}})
        await peer.send_pcm(load_pcm("en_goforward_command") + silence(3000))
        done = await peer.wait_for(lambda e: e["type"] == "response.done")
        await peer.close()
        records = sim.requests()
    checks = [r for r in records if r["max_new_tokens"] == 1]
    replies = [r for r in records if r["stream"]]
    assert checks and all(r["rid"].startswith(f"{session_id}_t") for r in checks), records
    assert len(replies) == 1 and done["status"] == "completed"
    # the check runs on the speculated prompt: the radix cache already holds most of it
    assert all(r["cached_tokens"] > 0 for r in checks), checks
    stopped = peer.of("speech.stopped")[0]
    assert stopped["reason"] == "semantic", stopped


# ---------------------------------------------------------------- startup


def _start(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hark.server.app", "--port", "0", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize("kind", ["missing", "corrupt"])
def test_semantic_by_name_without_the_model_stops_the_server_with_the_fix(kind: str, tmp_path: Path) -> None:
    model = tmp_path / "smart-turn.onnx"
    if kind == "corrupt":
        model.write_bytes(b"not an onnx model")
    result = _start("--turn-detection", "semantic", "--turn-model", str(model))
    assert result.returncode == 2, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("hark-server: ") and "--turn-model" in message and "make install" in message, message
    assert "Traceback" not in result.stderr


def test_a_bad_turn_detection_option_stops_the_server() -> None:
    result = _start("--turn-detection", "smart")
    assert result.returncode == 2 and "--turn-detection.type must be one of" in result.stderr, result.stderr[-2000:]


async def test_without_the_model_the_default_is_silence_and_semantic_is_refused(
    server_factory: Any, tmp_path: Path
) -> None:
    hark: RunningServer = server_factory("--turn-model", str(tmp_path / "absent.onnx"), *NO_OVERLOAD_GUARD)
    peer = await Peer.open(hark.url)
    assert peer.events[0]["config"]["turn_detection"] == {"type": "silence", "silence_ms": 500}
    await peer.send_json({"type": "session.update", "config": {"turn_detection": {"type": "semantic"}}})
    error = await peer.wait_for(lambda e: e["type"] == "error")
    await peer.close()
    assert error["code"] == "invalid_field" and "make install" in error["message"]
    assert "turn detection: silence only" in hark.log()
