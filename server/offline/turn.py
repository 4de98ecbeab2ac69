"""The seed's one-shot voice turn: a recording -> transcript -> the prompt template -> the configured
LLM -> (optionally) speech, with how long each stage took.

The same engines a live session uses (ctx.asr, ctx.llm, ctx.tts), each behind its own interface;
only the order of the stages lives here. Nothing is kept between requests.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from hark.protocol import ErrorCode

from ..asr.base import ASRError
from ..audio import wav_bytes
from ..context import ServerContext
from ..llm.base import LLMRequest, LLMUnavailable, LLMUsage, Message, request_id
from ..llm.prompt import clean_transcript
from ..tts.base import Pcm16, TTSEngine
from ..tts.chunker import SentenceChunker
from ..tts.streaming import StreamingTTSEngine, StreamResampler, TTSUnavailable, VoiceChoice
from ..tts.voice_ops import SessionVoices
from ..tts.voices import VoiceError
from .decode import DecodedAudio
from .errors import OfflineError
from .segments import SegmentSettings, speech_segments
from .transcribe import TranscribedSegment, join_text, transcribe_segments

log = logging.getLogger(__name__)

ASR_TEXT = "{asr_text}"


def ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000.0, 1)


def check_template(template: str) -> None:
    """A template the transcript has no place in is refused, never silently used as it is."""
    if ASR_TEXT not in template:
        raise OfflineError(
            400, ErrorCode.PROMPT_TEMPLATE_INVALID, "prompt_template must contain {asr_text}, where the transcript goes"
        )


def check_voice(tts: TTSEngine, voice: str) -> None:
    refusal = SessionVoices(tts).refusal(voice)
    if refusal is not None:
        raise OfflineError(400, ErrorCode.UNKNOWN_VOICE, refusal.replace("config.voice", "voice"))


@dataclass(slots=True)
class Transcript:
    text: str
    segments: list[TranscribedSegment]
    asr_ms: float  # VAD and ASR together: the VAD cuts the next segment while the ASR decodes this one


async def segments_of(
    ctx: ServerContext, audio: DecodedAudio, executor: Executor, stream_id: str
) -> AsyncGenerator[TranscribedSegment, None]:
    """The recording's transcribed segments as they are found; raises OfflineError when the ASR fails."""
    settings = SegmentSettings.of_session(ctx.config.session_defaults)
    found = speech_segments(audio.pcm, ctx.vad, executor, settings)
    transcribed = transcribe_segments(found, ctx.asr, stream_id, ctx.metrics, audio.duration_s)
    try:
        async with contextlib.aclosing(transcribed):
            async for segment in transcribed:
                yield segment
    except ASRError as exc:
        log.warning("%s: the recognizer failed: %s", stream_id, exc)
        raise OfflineError(503, ErrorCode.INTERNAL_ERROR, f"the speech recognizer failed ({exc}); retry") from None
    finally:
        await found.aclose()


async def transcribe(ctx: ServerContext, audio: DecodedAudio, executor: Executor, stream_id: str) -> Transcript:
    started = time.monotonic()
    async with contextlib.aclosing(segments_of(ctx, audio, executor, stream_id)) as found:
        segments = [s async for s in found]
    text = ""
    for segment in segments:
        text = join_text(text, segment.text)
    return Transcript(text, segments, ms_since(started))


@dataclass(slots=True)
class Reply:
    text: str
    llm_ms: float
    first_token_ms: float | None
    usage: LLMUsage


async def reply_deltas(
    ctx: ServerContext, messages: list[Message], max_tokens: int, session_id: str, usage: LLMUsage
) -> AsyncGenerator[str, None]:
    """The configured LLM's reply as it streams; tool calls (no tools are offered) are ignored.
    Raises OfflineError llm_unavailable; closing it early stops generation on the engine's side."""
    request = LLMRequest(messages, request_id(session_id, 0), session_id, max_tokens=max_tokens)
    deltas = ctx.llm.stream(request, usage)
    try:
        async for delta in deltas:
            if isinstance(delta, str) and delta:
                yield delta
    except LLMUnavailable as exc:
        ctx.metrics.errors.labels(ErrorCode.LLM_UNAVAILABLE.value).inc()
        raise OfflineError(503, ErrorCode.LLM_UNAVAILABLE, f"the language model could not answer: {exc}") from None
    finally:
        aclose = getattr(deltas, "aclose", None)  # an async generator: stop generation on the engine's side
        if aclose is not None:
            await aclose()


async def complete(ctx: ServerContext, messages: list[Message], max_tokens: int, session_id: str) -> Reply:
    """The whole reply of the configured LLM."""
    usage = LLMUsage()
    started = time.monotonic()
    first: float | None = None
    parts: list[str] = []
    async with contextlib.aclosing(reply_deltas(ctx, messages, max_tokens, session_id, usage)) as deltas:
        async for delta in deltas:
            if first is None:
                first = ms_since(started)
            parts.append(delta)
    return Reply("".join(parts).strip(), ms_since(started), first, usage)


@dataclass(slots=True)
class HeardTurn:
    transcript: Transcript
    cleaned: str  # fillers dropped
    prompt: str  # the template with the cleaned transcript in it


async def hear(
    ctx: ServerContext, audio: DecodedAudio, template: str, executor: Executor, session_id: str
) -> HeardTurn:
    """The turn's words and the prompt they make; raises OfflineError no_speech when there are none."""
    check_template(template)
    heard = await transcribe(ctx, audio, executor, session_id)
    if not heard.text:
        raise OfflineError(400, ErrorCode.NO_SPEECH, f"no speech was recognized in {audio.duration_s:.1f} s of audio")
    cleaned = clean_transcript(heard.text)
    return HeardTurn(heard, cleaned, template.replace(ASR_TEXT, cleaned))


async def speak(tts: TTSEngine, text: str, voice: str) -> Pcm16:
    """The reply's speech, sentence by sentence (as a session would send it), at tts.sample_rate."""
    chunker = SentenceChunker(first_clause=False)
    chunks = [*chunker.push(text), *chunker.flush()]
    pieces: list[Pcm16] = []
    if isinstance(tts, StreamingTTSEngine):
        choice = VoiceChoice(voice) if tts.voices is None else await tts.voices.resolve(voice)
        for chunk in chunks:
            resampler = StreamResampler(tts.sample_rate)
            async with contextlib.aclosing(tts.stream(chunk, choice)) as stream:
                pieces += [resampler.feed(piece) async for piece in stream]
            pieces.append(resampler.flush())
    else:
        pieces = [await tts.synthesize(chunk, voice) for chunk in chunks]
    return np.concatenate(pieces).astype("<i2") if pieces else np.zeros(0, dtype="<i2")


@dataclass(frozen=True, slots=True)
class TurnRequest:
    prompt_template: str
    max_tokens: int
    voice: str
    return_audio: bool


@dataclass(slots=True)
class TurnResult:
    transcript: str
    cleaned_transcript: str
    reply: str
    audio_wav: bytes | None
    audio_error: str | None  # why there is no audio although it was asked for (the reply stands)
    usage: LLMUsage
    metrics: dict[str, float | int | None] = field(default_factory=dict)


async def voice_turn(
    ctx: ServerContext, audio: DecodedAudio, request: TurnRequest, executor: Executor, session_id: str
) -> TurnResult:
    started = time.monotonic()
    if request.return_audio:
        check_voice(ctx.tts, request.voice)
    turn = await hear(ctx, audio, request.prompt_template, executor, session_id)
    reply = await complete(ctx, [Message("user", turn.prompt)], request.max_tokens, session_id)
    wav: bytes | None = None
    audio_error: str | None = None
    tts_ms: float | None = None
    if request.return_audio and reply.text:
        tts_started = time.monotonic()
        try:
            wav = wav_bytes(await speak(ctx.tts, reply.text, request.voice), ctx.tts.sample_rate)
        except (TTSUnavailable, VoiceError) as exc:
            ctx.metrics.errors.labels(ErrorCode.TTS_UNAVAILABLE.value).inc()
            audio_error = f"{ErrorCode.TTS_UNAVAILABLE.value}: {exc}"
            log.warning("%s: speech failed, the reply goes back as text: %s", session_id, exc)
        tts_ms = ms_since(tts_started)
    metrics: dict[str, float | int | None] = {
        "audio_ms": round(audio.duration_s * 1000.0, 1),
        "segments": len(turn.transcript.segments),
        "asr_ms": turn.transcript.asr_ms,
        "llm_ms": reply.llm_ms,
        "first_token_ms": reply.first_token_ms,
        "tts_ms": tts_ms,
        "prompt_tokens": reply.usage.prompt_tokens,
        "cached_tokens": reply.usage.cached_tokens,
        "total_ms": ms_since(started),
    }
    return TurnResult(turn.transcript.text, turn.cleaned, reply.text, wav, audio_error, reply.usage, metrics)
