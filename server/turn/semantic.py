"""Semantic endpointing: the turn ends when the words sound finished, not after a fixed silence.

How one turn ends under `SemanticEndpointer` (the numbers per eagerness are in `EAGERNESS`):

1. The VAD reports that a pause may be beginning after `QUIET_MS` of silence (`on_quiet`). That
   starts **one check** of the pause (never more: a Smart Turn check costs ~100 ms of CPU here),
   early, so that the model's time overlaps the silence the turn must last anyway (`pause_ms`)
   instead of adding to it; speech that goes on before `pause_ms` drops it (`on_resumed`), and a
   check not yet begun by then is never computed. The turn detector scores the
   utterance's audio from its start (at most the last 8 s) **up to the speech end**, the first
   silent sample. The pause itself is not scored, deliberately: the model's score of an unfinished
   sentence climbs with the digital silence after it (en_librivox_sense_0870 cut at 2.0 s: 0.05
   with no silence, 0.38 with 0.2 s, 0.79 with 0.5 s; cut at 2.22 s: 0.24, 0.44, then 0.80 at 0.3 s),
   while ending at the speech end it separates finished from unfinished speech far better (finished
   clips 0.83-0.98, cuts at word boundaries 0.01-0.24, one cut after a comma 0.82). The same audio
   always gets the same score, so re-running the model as the pause grows would add cost, not
   information. The VAD finds the speech end on a grid of 32 ms windows and often a window or two
   late, so the scored audio would end in some of the pause after all; its quiet tail (10 ms
   frames 40 dB under the loudest, at most `MAX_TRIM_MS`) is trimmed first (`trim_trailing_quiet`):
   with it the paused-sentence cut scored up to 0.60 depending on where the VAD's grid fell, without
   it at most 0.36.
2. The audio probability is combined with the text evidence (module `text_signal`), where enabled:
   if the transcript so far ends on an article, preposition, conjunction or a Mandarin measure word
   or conjunction, it is multiplied by `text_signal.UNFINISHED_FACTOR`. Where the LLM engine can
   give its own P(`<|im_end|>`) after the user's words (SGLang), the two are averaged with weight
   `LLM_WEIGHT` on the LLM: p = (1 - w) * p_audio + w * p_llm. The LLM is asked once the audio
   score is in, not beside it: the check starts 32 ms after the speech end, before the recognizer
   has the last word, and the LLM judges words (asked at once, the prefill test's "... to do for
   them" was read as "... for the", whose P(end) in the SGLang simulator is 0.03, and a finished
   turn was held); an answer later than `LLM_TIMEOUT_S` is not waited for.
3. From `pause_ms` of silence on, the turn ends (`semantic`) as soon as p >= the eagerness'
   `threshold` lowered as the silence grows: threshold * (1 - x**DECAY_POWER), x the silence's
   share of the way from `pause_ms` to `max_silence_ms`. So a clearly finished turn ends at
   `pause_ms` (or when its check is in, if later) and a doubtful one only after a long pause (the
   threshold hardly moves at first: medium, p = 0.375 waits ~1.9 s), and the decision is
   re-made on every frame of the growing silence from the one probability, at no model cost.
   At `max_silence_ms` the turn ends whatever the score (`max_silence`).
   Why not linear: the score of one pause moves by ±0.15 with where the VAD put the speech end
   (the 1 s pause of the paused-sentence test scored 0.06-0.38 across offsets of one session), so
   a doubtful score must not end the turn at a pause people make inside sentences.
4. Speech that resumes before the decision discards the pending check (its task is cancelled, an
   LLM request aborted); a score that arrives after that is never used. A detector that is busy
   (its bounded queue is full) or fails leaves the pause to the silence rule: the turn ends after
   `min_silence_ms` (`silence`), as the silence policy would.

The check runs off the session's input task: `on_pause` starts it and returns at once, so frames
keep flowing through the VAD and the recognizer while the detector works; when the score is in,
the endpointer calls `wake` and the session asks `on_progress` for the decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from hark.protocol import SessionConfig
from hark.protocol.turn_detection import Eagerness, SemanticTurnDetection

from ..vad import SAMPLE_RATE
from .batch import TurnDetectorBusy
from .endpoint import Endpointer, EndReason, TurnEnd
from .features import N_SAMPLES, AudioArray
from .text_signal import text_factor

log = logging.getLogger(__name__)

# silence before the check starts: one VAD window. Its answer is the same whenever it runs (the
# audio up to the speech end), so only cost and latency depend on this: at 64 ms the check began a
# frame later in most turns (semantic-medium dead air p50 332 ms against 254 at 32, the same checks
# started: a one-window dip inside speech is rare under Silero's hysteresis; make bench-turns)
QUIET_MS: Final = 32
LLM_WEIGHT: Final = 0.5
LLM_TIMEOUT_S: Final = 0.3
DECAY_POWER: Final = 3
MAX_TRIM_MS: Final = 200
_QUIET_FRAME: Final = SAMPLE_RATE // 100  # 10 ms
_QUIET_RATIO: Final = 0.01  # -40 dB under the loudest frame


@dataclass(frozen=True, slots=True)
class EagernessSetting:
    pause_ms: int  # silence before the turn may end (the check began at QUIET_MS)
    threshold: float  # P(complete) that ends the turn at pause_ms; falls to 0 at max_silence_ms


# From `make bench-turns` (docs/performance.md, "Turn taking"). The check runs from QUIET_MS and takes
# ~65 ms alone, ~95 ms p50 with 6 sessions on 2 cores (hark_turn_check_seconds), so a pause_ms above
# ~100 only holds back turns the model has already judged (medium at 200: dead air p50 353 ms; at
# 100: 254); below it, the pause (which also ends the VAD's speech segment) lets more through: at 96
# (three windows, not four) 7 cut-offs of 28 against 6 and the same dead air. The thresholds do the
# work: finished endings scored 0.71-0.99 at their first check, and 0.7 drops the cut-offs the model
# scored 0.62-0.66 ("go forward" | "ten meters") that 0.6 let through.
EAGERNESS: Final[dict[Eagerness, EagernessSetting]] = {
    "high": EagernessSetting(pause_ms=100, threshold=0.5),
    "medium": EagernessSetting(pause_ms=100, threshold=0.7),
    "low": EagernessSetting(pause_ms=200, threshold=0.8),
    "auto": EagernessSetting(pause_ms=100, threshold=0.7),  # OpenAI's "auto" is its medium
}


class TurnScorer(Protocol):
    """The turn detector engine (`SmartTurnDetector`): P(turn complete) from 16 kHz mono audio."""

    async def score(self, audio: AudioArray) -> float: ...


@dataclass(slots=True)
class TurnSignals:
    """What a session lends its semantic endpointer: the detector, and where to read the evidence."""

    detector: TurnScorer
    audio: Callable[[int, int], bytes]  # PCM16 of input samples [start, end) (Listener.audio_between)
    text: Callable[[], str]  # the transcript of the turn so far
    wake: Callable[[], None]  # a check finished: ask on_progress now, not at the next frame
    llm: Callable[[], Awaitable[float | None]] | None = None  # the LLM's P(end) for the words so far


@dataclass(slots=True)
class _Pause:
    start: int  # first silent sample: the speech end
    task: asyncio.Task[None] | None = None
    done: bool = False
    probability: float | None = None  # None when done: the detector could not answer


def required_probability(threshold: float, silence_ms: float, pause_ms: int, max_silence_ms: int) -> float:
    """The probability that ends the turn after `silence_ms` of silence (point 3 of the module doc)."""
    span = max(1, max_silence_ms - pause_ms)
    share = min(1.0, max(0.0, (silence_ms - pause_ms) / span))
    return threshold * (1.0 - share**DECAY_POWER)


def trim_trailing_quiet(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """`pcm` without the quiet at its end (see point 1 of the module doc); one quiet frame is kept,
    so the last sound's fade stays."""
    frames = len(pcm) // _QUIET_FRAME
    if frames < 2:
        return pcm
    tail = pcm[len(pcm) - frames * _QUIET_FRAME :].astype(np.float32).reshape(frames, _QUIET_FRAME)
    rms = np.sqrt(np.mean(tail * tail, axis=1))
    quiet = rms < rms.max() * _QUIET_RATIO
    limit = min(frames - 1, MAX_TRIM_MS * SAMPLE_RATE // 1000 // _QUIET_FRAME)
    n = 0
    while n < limit and quiet[frames - 1 - n]:
        n += 1
    return pcm[: len(pcm) - (n - 1) * _QUIET_FRAME] if n > 1 else pcm


def combine(p_audio: float, unfinished_factor: float, p_llm: float | None) -> float:
    """Point 2 of the module doc: the text factor on the audio score, then the mean with the LLM's."""
    p = p_audio * unfinished_factor
    return p if p_llm is None else (1.0 - LLM_WEIGHT) * p + LLM_WEIGHT * p_llm


class SemanticEndpointer(Endpointer):
    """The semantic policy for one session (see the module doc); owned by its `Session`."""

    def __init__(
        self, policy: SemanticTurnDetection, fallback_silence_ms: int, max_utterance_s: float, signals: TurnSignals
    ) -> None:
        super().__init__(max_utterance_s)
        self._signals = signals
        self._policy = policy
        self._fallback_ms = fallback_silence_ms
        self._check: _Pause | None = None
        self.checks = 0  # checks started in this session (at a quiet, or at a pause without one)

    @property
    def pause_ms(self) -> int:
        return EAGERNESS[self._policy.eagerness].pause_ms

    @property
    def quiet_ms(self) -> int:
        return QUIET_MS

    def reconfigure(self, config: SessionConfig) -> None:
        if isinstance(config.turn_detection, SemanticTurnDetection):
            self._policy = config.turn_detection
        self._fallback_ms = config.min_silence_ms

    def begin(self, start: int, audio_from: int | None = None) -> None:
        self._drop_check()
        super().begin(start, audio_from)

    def on_speech(self, sample: int) -> None:
        self._drop_check()  # whatever it says now is about speech that was not the end
        super().on_speech(sample)

    def release(self) -> None:
        self._drop_check()

    def commit(self, now: int) -> TurnEnd:
        self._drop_check()
        return super().commit(now)

    def close(self, now: int) -> TurnEnd:
        self._drop_check()
        return super().close(now)

    def on_quiet(self, silence_start: int) -> None:
        if self._pause is None:
            self._start_check(silence_start)

    def on_resumed(self) -> None:
        if self._pause is None:  # the early check was of speech that was not the end
            self._drop_check()

    async def on_pause(self, silence_start: int) -> TurnEnd | None:
        self._pause = silence_start
        if self._check is None or self._check.start != silence_start:  # no early check of this silence
            self._start_check(silence_start)
        return None  # never waits here: the input task goes on while the detector works

    def _start_check(self, silence_start: int) -> None:
        self._drop_check()
        check = _Pause(silence_start)
        check.task = asyncio.get_running_loop().create_task(self._judge(check), name="turn-check")
        self._check = check
        self.checks += 1

    async def on_progress(self, now: int) -> TurnEnd | None:
        capped = await super().on_progress(now)
        if capped is not None or self._pause is None:
            return capped
        silence_ms = (now - self._pause) * 1000 / SAMPLE_RATE
        check = self._check if self._check is not None and self._check.start == self._pause else None
        probability = check.probability if check is not None else None
        if silence_ms >= self._policy.max_silence_ms:
            return self._end(EndReason.MAX_SILENCE, now, probability)
        if check is None or not check.done:
            return None
        if probability is None:  # the detector could not answer: the silence rule decides
            if silence_ms >= self._fallback_ms:
                return self._end(EndReason.SILENCE, now, None)
            return None
        setting = EAGERNESS[self._policy.eagerness]
        needed = required_probability(setting.threshold, silence_ms, setting.pause_ms, self._policy.max_silence_ms)
        if probability >= needed:
            return self._end(EndReason.SEMANTIC, now, probability)
        return None

    def _end(self, reason: EndReason, now: int, probability: float | None) -> TurnEnd:
        assert self._pause is not None
        end = TurnEnd(reason, self._pause, max(now, self._pause), probability)
        self._drop_check()
        self._pause = None
        return end

    def _drop_check(self) -> None:
        check, self._check = self._check, None
        if check is not None and check.task is not None and not check.task.done():
            check.task.cancel()

    async def _judge(self, check: _Pause) -> None:
        """One check of a pause: the audio score, the text factor, the LLM's opinion; then wake the session."""
        signals = self._signals
        started = time.monotonic()
        llm_task: asyncio.Task[float | None] | None = None
        try:
            p_audio = await self._audio_probability(check.start)
            if p_audio is not None and signals.llm is not None and self._policy.llm:
                llm_task = asyncio.get_running_loop().create_task(_optional(signals.llm()), name="turn-check-llm")
            p_llm = await _within(llm_task, time.monotonic() + LLM_TIMEOUT_S)
        finally:
            if llm_task is not None and not llm_task.done():
                llm_task.cancel()  # the LLM side aborts its request on the server
        if p_audio is None:
            check.probability = None
        else:
            text = signals.text() if self._policy.text_signal else ""
            factor = text_factor(text) if self._policy.text_signal else 1.0
            check.probability = combine(p_audio, factor, p_llm)
            log.debug(
                "turn check: audio %.3f, text factor %.2f (%r), llm %s -> %.3f in %.0f ms",
                p_audio,
                factor,
                text[-40:],
                "-" if p_llm is None else f"{p_llm:.3f}",
                check.probability,
                (time.monotonic() - started) * 1000.0,
            )
        check.done = True
        if self._check is check:
            signals.wake()

    async def _audio_probability(self, speech_end: int) -> float | None:
        first = max(self._audio_from, speech_end - N_SAMPLES)
        pcm = trim_trailing_quiet(np.frombuffer(self._signals.audio(first, speech_end), dtype=np.int16))
        if not len(pcm):
            return None
        try:
            return await self._signals.detector.score(pcm)
        except asyncio.CancelledError:
            raise
        except TurnDetectorBusy as exc:  # expected under load, many a second: counted as silence turns
            log.debug("turn detector busy (%s); using the silence rule", exc)
            return None
        except Exception as exc:  # broken: this pause falls back to silence
            log.warning("turn detector could not answer (%s: %s); using the silence rule", type(exc).__name__, exc)
            return None


async def _optional(judgement: Awaitable[float | None]) -> float | None:
    """The LLM's answer, or None when it failed (the audio decides alone then)."""
    try:
        return await judgement
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.info("the LLM's end-of-turn check failed: %s", exc)
        return None


async def _within(task: asyncio.Task[float | None] | None, deadline: float) -> float | None:
    if task is None:
        return None
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), max(0.0, deadline - time.monotonic()))
    return task.result() if task.done() and not task.cancelled() else None
