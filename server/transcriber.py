"""One session's speech recognition, utterance by utterance: the listener's audio into the ASR
stream, partial transcripts with the prefix that is safe to act on, the final text."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from hark.protocol import TranscriptPartial

from .asr.base import ASRError, ASRStream
from .asr.stability import LocalAgreement
from .listener import Listener, samples_of_ms
from .metrics import Metrics

log = logging.getLogger(__name__)

PARTIAL_EVERY_SAMPLES = samples_of_ms(300)


class Transcriber:
    """Owned by a `Session`, around the ASR stream opened for it (closed with the session).

    An ASR failure loses the utterance, not the session: `on_failure` is told once, and the rest of
    the utterance is skipped until the next `begin`.
    """

    def __init__(
        self, stream: ASRStream, listener: Listener, metrics: Metrics, on_failure: Callable[[ASRError], None]
    ) -> None:
        self._stream = stream
        self._listener = listener
        self._metrics = metrics
        self._on_failure = on_failure
        self._stability = LocalAgreement()
        self._turn_id = 0
        self._cursor = 0  # input sample the recognizer has heard up to
        self._last_partial_at = 0
        self._failed = False
        self.hypothesis = ""  # the recognizer's newest text for this utterance (partials are sent less often)

    @property
    def metadata(self) -> dict[str, Any]:
        return self._stream.metadata

    @property
    def confidence(self) -> float | None:
        """The engine's confidence in the last final; None when it cannot say or the ASR failed."""
        return None if self._failed else self._stream.confidence

    async def begin(self, turn_id: int, start: int) -> None:
        self._turn_id = turn_id
        self._cursor = self._last_partial_at = start
        self._stability.reset()
        self._failed = False
        self.hypothesis = ""
        try:
            await self._stream.begin()
        except ASRError as exc:
            self._fail(exc)

    async def hear(self, until: int) -> TranscriptPartial | None:
        """Feed the utterance's audio up to input sample `until`; a partial when one is due."""
        if self._failed or until <= self._cursor:
            return None
        pcm = self._listener.audio_between(self._cursor, until)
        self._cursor = until
        started = time.monotonic()
        try:
            hypothesis = await self._stream.accept(pcm)
        except ASRError as exc:
            self._fail(exc)
            return None
        self._metrics.observe("asr", time.monotonic() - started)
        if hypothesis:
            self.hypothesis = hypothesis
        if self._cursor - self._last_partial_at < PARTIAL_EVERY_SAMPLES or not hypothesis:
            return None
        self._last_partial_at = self._cursor
        stable = self._stream.stable_text  # engines that know their stable prefix say so
        if stable is None:
            stable = self._stability.update(hypothesis)
        return TranscriptPartial(self._turn_id, hypothesis, stable, self._stream.metadata)

    async def finalize(self) -> str:
        """End the utterance; its text ("" when nothing was recognized or the ASR failed)."""
        started = time.monotonic()
        text = ""
        if not self._failed:
            try:
                text = (await self._stream.finalize()).strip()
            except ASRError as exc:
                self._fail(exc)
        self._metrics.observe("asr_final", time.monotonic() - started)
        return text

    def _fail(self, exc: ASRError) -> None:
        self._failed = True
        self._on_failure(exc)

    async def close(self) -> None:
        await self._stream.close()
