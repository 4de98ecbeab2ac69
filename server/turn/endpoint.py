"""The one place that decides when a user's turn is over.

A session holds one `Endpointer` and tells it what the VAD heard: the turn's speech began
(`begin`), a pause of `pause_ms` silence began at a sample (`on_pause`), speech came back after a
pause that did not end the turn (`on_speech`), for a policy that asks for it (`quiet_ms`) that a
shorter silence began or was broken (`on_quiet`, `on_resumed`), and how far the input clock has
come on every frame (`on_progress`). Each call may answer with a `TurnEnd`: why the turn ended, where the speech ended
and up to which sample the audio belongs to the turn; None keeps listening. `audio.commit` and
`session.close` end a turn at once (`commit`, `close`), and an utterance of `max_utterance_s` ends
it whatever the policy, so one person talking without a pause cannot hold the recognizer forever.

Two policies, as `turn_detection` in the session config selects (`create_endpointer`):
`SilenceEndpointer` ends the turn once the VAD has heard `min_silence_ms` of silence;
`SemanticEndpointer` (semantic.py) asks a turn-completion model at a shorter pause and decides from
its answer as the silence grows, up to a silence cap. A session.update that changes the policy
replaces the endpointer mid-utterance; the new one `adopt`s the utterance and any pause under way.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from hark.protocol import SessionConfig, SessionLimits
from hark.protocol.turn_detection import SemanticTurnDetection

from ..vad import SAMPLE_RATE

log = logging.getLogger(__name__)


class EndReason(StrEnum):
    """speech.stopped's `reason` (hark.protocol.TURN_END_REASONS)."""

    SEMANTIC = "semantic"  # the turn detector found the words finished
    SILENCE = "silence"  # the VAD heard the policy's silence after speech
    MAX_SILENCE = "max_silence"  # the semantic policy's silence cap
    COMMIT = "commit"  # the client sent audio.commit
    CLOSE = "close"  # session.close arrived mid-utterance
    MAX_UTTERANCE = "max_utterance"  # the utterance reached limits.max_utterance_s


@dataclass(frozen=True, slots=True)
class TurnEnd:
    reason: EndReason
    speech_end: int  # input-clock sample where the user's speech ended (speech.stopped's audio_ms)
    audio_end: int  # the turn's audio ends here (>= speech_end): the recognizer hears up to it
    probability: float | None = None  # the turn detector's P(complete) behind the decision, if any


class Endpointer(ABC):
    """Decides the end of each user turn of one session; owned by that `Session`, which calls it
    from its input task only (so no locking), for as long as the session lives."""

    def __init__(self, max_utterance_s: float) -> None:
        self._max_samples = round(max_utterance_s * SAMPLE_RATE) if max_utterance_s > 0 else None
        self._start = 0
        self._audio_from = 0  # where the turn's audio starts (before `_start` for a joined turn)
        self._pause: int | None = None  # first silent sample of the pause the VAD reported, while it lasts

    @property
    @abstractmethod
    def pause_ms(self) -> int:
        """The silence after which the VAD reports a pause (`on_pause`)."""

    @property
    def quiet_ms(self) -> int | None:
        """The silence after which the VAD reports that a pause may be beginning (`on_quiet`), or
        None: this policy has no use for it."""
        return None

    @abstractmethod
    def reconfigure(self, config: SessionConfig) -> None:
        """Apply a session.update (also mid-utterance)."""

    @abstractmethod
    async def on_pause(self, silence_start: int) -> TurnEnd | None:
        """The VAD heard `pause_ms` of silence that began at `silence_start`."""

    def begin(self, start: int, audio_from: int | None = None) -> None:
        """A user utterance began at input sample `start` (its pre-roll included). `audio_from`: an
        utterance that continues the turn before it (a joined turn) has that turn's audio from there."""
        self._start = start
        self._audio_from = start if audio_from is None else min(audio_from, start)
        self._pause = None

    def adopt(self, previous: Endpointer) -> None:
        """Take over the open utterance and the pause under way from the policy this one replaces."""
        self._start, self._audio_from, self._pause = previous._start, previous._audio_from, previous._pause
        previous.release()

    def release(self) -> None:
        """Drop pending work (a check in flight); the session is done with this endpointer."""

    def on_speech(self, sample: int) -> None:
        """Speech resumed at `sample` after a pause that did not end the turn."""
        self._pause = None

    def on_quiet(self, silence_start: int) -> None:
        """The VAD heard `quiet_ms` of silence from `silence_start`: a pause may be beginning."""

    def on_resumed(self) -> None:
        """The speech went on after `on_quiet` before its silence became a pause."""

    async def on_progress(self, now: int) -> TurnEnd | None:
        """The input clock reached `now` while the utterance is open."""
        if self._max_samples is not None and now - self._start >= self._max_samples:
            return TurnEnd(EndReason.MAX_UTTERANCE, now, now)
        return None

    def commit(self, now: int) -> TurnEnd:
        return TurnEnd(EndReason.COMMIT, self._speech_end(now), now)

    def close(self, now: int) -> TurnEnd:
        return TurnEnd(EndReason.CLOSE, self._speech_end(now), now)

    def _speech_end(self, now: int) -> int:
        # in a pause the VAD reported, the speech ended where it began; else it runs up to now
        return self._pause if self._pause is not None and self._pause <= now else now


class SilenceEndpointer(Endpointer):
    """The turn ends after `min_silence_ms` of VAD silence, whatever was said."""

    def __init__(self, min_silence_ms: int, max_utterance_s: float) -> None:
        super().__init__(max_utterance_s)
        self._silence_ms = min_silence_ms

    @property
    def pause_ms(self) -> int:
        return self._silence_ms

    def reconfigure(self, config: SessionConfig) -> None:
        self._silence_ms = config.min_silence_ms

    async def on_pause(self, silence_start: int) -> TurnEnd | None:
        return self._end(silence_start)

    async def on_progress(self, now: int) -> TurnEnd | None:
        capped = await super().on_progress(now)
        # a pause the VAD reported with a shorter pause_ms (before a switch of policy or of
        # min_silence_ms) ends the turn once it is long enough
        if capped is None and self._pause is not None and now - self._pause >= self._silence_ms * SAMPLE_RATE // 1000:
            return self._end(self._pause)
        return capped

    def _end(self, silence_start: int) -> TurnEnd:
        self._pause = None
        # the VAD is sure at the end of the silence: the audio up to there is the turn's
        return TurnEnd(EndReason.SILENCE, silence_start, silence_start + self._silence_ms * SAMPLE_RATE // 1000)


# (policy, fallback silence ms, max_utterance_s) -> the semantic endpointer, wired to a session's
# turn detector (semantic.SemanticEndpointer with its signals)
SemanticFactory = Callable[[SemanticTurnDetection, int, float], Endpointer]


def create_endpointer(
    config: SessionConfig, limits: SessionLimits, semantic: SemanticFactory | None = None
) -> Endpointer:
    """The policy a session's configuration asks for. Semantic needs a turn detector (`semantic`);
    without one (no model on this server) the session keeps the silence rule."""
    policy = config.turn_detection
    if isinstance(policy, SemanticTurnDetection):
        if semantic is not None:
            return semantic(policy, config.min_silence_ms, limits.max_utterance_s)
        log.warning(
            "semantic turn detection asked for without a turn detector: using %d ms of silence", config.min_silence_ms
        )
    return SilenceEndpointer(config.min_silence_ms, limits.max_utterance_s)
