"""Speech segments through the server's ASR engine, one utterance per segment, in order.

The segment's audio goes in as a live session's would, in 100 ms frames, so a recording decodes as
the same words as the stream of it; the engines already run their inference off the loop (worker
processes or threads), so this only awaits them. One stream per request, closed however it ends.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

from ..asr.base import ASREngine
from ..metrics import Metrics
from ..vad import SAMPLE_RATE
from .segments import SpeechSegment

log = logging.getLogger(__name__)

FRAME_BYTES = 3200  # 100 ms at 16 kHz
PROGRESS_EVERY_S = 10.0  # of audio: a log line this often for a long file


@dataclass(frozen=True, slots=True)
class TranscribedSegment:
    index: int  # among the segments with words, from 0
    start_ms: int
    end_ms: int
    text: str
    confidence: float | None  # the engine's, None when it cannot say
    speech_probability: float  # the VAD's mean over the segment


def _is_cjk(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def join_text(before: str, after: str) -> str:
    """Segments' texts joined as the language writes them: no space between Chinese characters."""
    if not before or not after:
        return before or after
    glue = "" if _is_cjk(before[-1]) or _is_cjk(after[0]) else " "
    return before + glue + after


async def transcribe_segments(
    segments: AsyncIterator[SpeechSegment],
    asr: ASREngine,
    stream_id: str,
    metrics: Metrics,
    total_s: float,
) -> AsyncGenerator[TranscribedSegment, None]:
    """Raises ASRError when the engine fails (the request is lost; nothing else is)."""
    stream = asr.open_stream(stream_id)
    index = 0
    logged_at = 0.0
    try:
        async for segment in segments:
            started = time.monotonic()
            await stream.begin()
            for i in range(0, len(segment.pcm), FRAME_BYTES):
                await stream.accept(segment.pcm[i : i + FRAME_BYTES])
            text = (await stream.finalize()).strip()
            seconds = len(segment.pcm) / 2 / SAMPLE_RATE
            metrics.http_audio_segments.inc()
            metrics.http_audio_seconds.labels("speech").inc(seconds)
            log.debug(
                "%s: segment %d (%d-%d ms) in %.0f ms: %r",
                stream_id,
                segment.index,
                segment.start_ms,
                segment.end_ms,
                (time.monotonic() - started) * 1000,
                text[:80],
            )
            if segment.end_ms / 1000 - logged_at >= PROGRESS_EVERY_S:
                logged_at = segment.end_ms / 1000
                log.info(
                    "%s: transcribed %.0f of %.0f s (%d segments)", stream_id, logged_at, total_s, segment.index + 1
                )
            if not text:
                continue
            yield TranscribedSegment(
                index, segment.start_ms, segment.end_ms, text, stream.confidence, segment.speech_probability
            )
            index += 1
    finally:
        await stream.close()
