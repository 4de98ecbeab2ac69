"""OpenAI's transcription response shapes, from the transcribed segments: json, text, srt, vtt,
verbose_json, and the server-sent events of `stream=true`.

verbose_json segments carry OpenAI's fields with what this server knows, never made-up values:
`start`/`end` are the VAD segment's, in seconds; `seek` is its start in 10 ms frames; `tokens` is
empty (the engines' token ids mean nothing to a client); `temperature` is 0 (the decoders are
deterministic); `avg_logprob` is ln(the engine's confidence), 0.0 when it reports none;
`compression_ratio` is the text's own (bytes over zlib-compressed bytes, as Whisper computes it);
`no_speech_prob` is 1 - the VAD's mean speech probability over the segment.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from ..offline.transcribe import TranscribedSegment

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


def usage(duration_s: float) -> dict[str, Any]:
    return {"type": "duration", "seconds": round(duration_s, 3)}


def _compression_ratio(text: str) -> float:
    data = text.encode()
    return round(len(data) / len(zlib.compress(data)), 3) if data else 0.0


def verbose_segment(segment: TranscribedSegment, seg_id: int) -> dict[str, Any]:
    confidence = segment.confidence
    return {
        "id": seg_id,
        "seek": segment.start_ms // 10,
        "start": segment.start_ms / 1000.0,
        "end": segment.end_ms / 1000.0,
        "text": segment.text,
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": round(math.log(confidence), 4) if confidence else 0.0,
        "compression_ratio": _compression_ratio(segment.text),
        "no_speech_prob": round(1.0 - segment.speech_probability, 4),
    }


def verbose_json(
    text: str, segments: Sequence[TranscribedSegment], duration_s: float, language: str, model: str
) -> dict[str, Any]:
    return {
        "task": "transcribe",
        "language": language,
        "duration": round(duration_s, 3),
        "text": text,
        "segments": [verbose_segment(s, i) for i, s in enumerate(segments)],
        "usage": usage(duration_s),
        "model": model,
    }


def _clock(ms: int, separator: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def srt(segments: Sequence[TranscribedSegment]) -> str:
    cues = [
        f"{i + 1}\n{_clock(s.start_ms, ',')} --> {_clock(s.end_ms, ',')}\n{s.text}\n" for i, s in enumerate(segments)
    ]
    return "\n".join(cues)


def vtt(segments: Sequence[TranscribedSegment]) -> str:
    cues = [f"{_clock(s.start_ms, '.')} --> {_clock(s.end_ms, '.')}\n{s.text}\n" for s in segments]
    return "WEBVTT\n\n" + "\n".join(cues)


def sse(event: Mapping[str, Any]) -> bytes:
    """One server-sent event, as OpenAI sends them: a `data:` line of JSON, then a blank line."""
    return b"data: " + json.dumps(event, ensure_ascii=False).encode() + b"\n\n"
