"""A recording cut into speech segments by the Silero VAD, found a stretch at a time.

The same model and hysteresis as a live session's listener (vad.VadStream): speech starts above the
threshold and ends after `min_silence_ms` below it. Each segment keeps `speech_pad_ms` of audio on
either side (never reaching into the previous one), blips shorter than `min_speech_ms` are dropped,
and speech that runs on past `max_segment_s` is cut there, so no utterance grows without bound in
a recognizer. The VAD scores `SCAN_S` of audio per call on the given executor and the segments found
so far are yielded at once: a long file's first words reach the recognizer while the VAD is still
working through the rest, and only the PCM itself is held, never a list of all its segments.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from concurrent.futures import Executor
from dataclasses import dataclass, field

from hark.protocol import SessionConfig

from ..audio import pcm16_to_float
from ..vad import SAMPLE_RATE, WINDOW, SileroVad, VadEventKind, VadStream

SCAN_S = 2.0  # audio per VAD call off the loop: ~60 windows, a few ms of model time


@dataclass(frozen=True, slots=True)
class SegmentSettings:
    threshold: float = 0.5
    min_silence_ms: int = 500
    speech_pad_ms: int = 200
    min_speech_ms: int = 250
    max_segment_s: float = 30.0

    @classmethod
    def of_session(cls, config: SessionConfig) -> SegmentSettings:
        """The server's session defaults, so a file is cut where a live session would end a turn."""
        return cls(config.vad_threshold, config.min_silence_ms, config.speech_pad_ms)


@dataclass(frozen=True, slots=True)
class SpeechSegment:
    index: int
    start: int  # first sample (16 kHz), padded
    end: int  # one past the last sample, padded
    pcm: bytes = field(repr=False)
    speech_probability: float  # the VAD's mean over the segment's speech windows

    @property
    def start_ms(self) -> int:
        return self.start * 1000 // SAMPLE_RATE

    @property
    def end_ms(self) -> int:
        return self.end * 1000 // SAMPLE_RATE


@dataclass(slots=True)
class _Speech:
    start: int
    probability_sum: float = 0.0
    windows: int = 0


class _Scanner:
    """The VAD state across calls; `scan` runs off the loop, one call at a time."""

    def __init__(self, vad: SileroVad, settings: SegmentSettings) -> None:
        self._stream = VadStream(vad, settings.threshold, settings.min_silence_ms)
        self._model = vad
        self._max = int(settings.max_segment_s * SAMPLE_RATE)
        self._speech: _Speech | None = None
        self.position = 0  # samples scored so far

    def scan(self, pcm: bytes, final: bool) -> list[tuple[int, int, float]]:
        """Score `pcm` (the next stretch); the raw (start, end, mean probability) of speech that ended."""
        ended: list[tuple[int, int, float]] = []
        stream = self._stream
        windows = stream.take_windows(pcm16_to_float(pcm))
        for window in windows:
            probability, stream.state = self._model.run(window[None, :], stream.state)
            for event in stream.apply(probability):
                if event.kind is VadEventKind.START:
                    self._speech = _Speech(event.sample)
                elif event.kind is VadEventKind.STOP and self._speech is not None:
                    ended.append(self._close(event.sample))
            self.position += WINDOW
            speech = self._speech
            if speech is not None:
                speech.probability_sum += float(probability[0])
                speech.windows += 1
                if self.position - speech.start >= self._max:  # cut, and go on in the same speech
                    ended.append(self._close(self.position))
                    self._speech = _Speech(self.position)
        if final and self._speech is not None:
            ended.append(self._close(self.position + len(pcm) // 2 % WINDOW))
        return ended

    def _close(self, end: int) -> tuple[int, int, float]:
        speech = self._speech
        assert speech is not None
        self._speech = None
        return speech.start, end, speech.probability_sum / max(1, speech.windows)


async def speech_segments(
    pcm: bytes, vad: SileroVad, executor: Executor, settings: SegmentSettings = SegmentSettings()
) -> AsyncGenerator[SpeechSegment, None]:
    """The speech in `pcm` (16 kHz mono PCM16), in order."""
    loop = asyncio.get_running_loop()
    scanner = _Scanner(vad, settings)
    total = len(pcm) // 2
    step = int(SCAN_S * SAMPLE_RATE)
    pad = settings.speech_pad_ms * SAMPLE_RATE // 1000
    shortest = settings.min_speech_ms * SAMPLE_RATE // 1000
    index = 0
    previous_end = 0
    for first in range(0, max(total, 1), step):
        last = min(total, first + step)
        ended = await loop.run_in_executor(executor, scanner.scan, pcm[2 * first : 2 * last], last >= total)
        for start, end, probability in ended:
            if end - start < shortest:
                continue
            start = max(0, start - pad, previous_end)
            end = min(total, end + pad)
            previous_end = end
            yield SpeechSegment(index, start, end, pcm[2 * start : 2 * end], probability)
            index += 1
