"""The one place that decides when a user's turn is over.

A session holds one `Endpointer` and tells it what the VAD heard: the turn's speech began
(`begin`), a pause of `pause_ms` silence began at a sample (`on_pause`), speech came back after a
pause that did not end the turn (`on_speech`), and how far the input clock has come on every frame
(`on_progress`). Each call may answer with a `TurnEnd`: why the turn ended, where the speech ended
and up to which sample the audio belongs to the turn; None keeps listening. `audio.commit` and
`session.close` end a turn at once (`commit`, `close`), and an utterance of `max_utterance_s` ends
it whatever the policy, so one person talking without a pause cannot hold the recognizer forever.

Today's policy is `SilenceEndpointer`: the turn ends once the VAD has heard `min_silence_ms` of
silence. A policy that asks a turn-completion model (issue 11) is another subclass: a shorter
`pause_ms`, `on_pause` answered by the model (None when the turn sounds unfinished), and
`on_progress` to ask again, or give up at a silence cap, as the silence grows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum

from hark.protocol import SessionConfig, SessionLimits

from ..vad import SAMPLE_RATE


class EndReason(StrEnum):
    SILENCE = "silence"  # the VAD heard the policy's silence after speech
    COMMIT = "commit"  # the client sent audio.commit
    CLOSE = "close"  # session.close arrived mid-utterance
    MAX_UTTERANCE = "max_utterance"  # the utterance reached limits.max_utterance_s


@dataclass(frozen=True, slots=True)
class TurnEnd:
    reason: EndReason
    speech_end: int  # input-clock sample where the user's speech ended (speech.stopped's audio_ms)
    audio_end: int  # the turn's audio ends here (>= speech_end): the recognizer hears up to it


class Endpointer(ABC):
    """Decides the end of each user turn of one session; owned by that `Session`, which calls it
    from its input task only (so no locking), for as long as the session lives."""

    def __init__(self, max_utterance_s: float) -> None:
        self._max_samples = round(max_utterance_s * SAMPLE_RATE) if max_utterance_s > 0 else None
        self._start = 0

    @property
    @abstractmethod
    def pause_ms(self) -> int:
        """The silence after which the VAD reports a pause (`on_pause`)."""

    @abstractmethod
    def reconfigure(self, config: SessionConfig) -> None:
        """Apply a session.update (also mid-utterance)."""

    @abstractmethod
    async def on_pause(self, silence_start: int) -> TurnEnd | None:
        """The VAD heard `pause_ms` of silence that began at `silence_start`."""

    def begin(self, start: int) -> None:
        """A user utterance began at input sample `start` (its pre-roll included)."""
        self._start = start

    def on_speech(self, sample: int) -> None:
        """Speech resumed at `sample` after a pause that did not end the turn."""

    async def on_progress(self, now: int) -> TurnEnd | None:
        """The input clock reached `now` while the utterance is open."""
        if self._max_samples is not None and now - self._start >= self._max_samples:
            return TurnEnd(EndReason.MAX_UTTERANCE, now, now)
        return None

    def commit(self, now: int) -> TurnEnd:
        return TurnEnd(EndReason.COMMIT, now, now)

    def close(self, now: int) -> TurnEnd:
        return TurnEnd(EndReason.CLOSE, now, now)


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
        # the VAD is sure at the end of the silence: the audio up to there is the turn's
        return TurnEnd(EndReason.SILENCE, silence_start, silence_start + self._silence_ms * SAMPLE_RATE // 1000)


def create_endpointer(config: SessionConfig, limits: SessionLimits) -> Endpointer:
    """The policy a session's configuration asks for."""
    return SilenceEndpointer(config.min_silence_ms, limits.max_utterance_s)
