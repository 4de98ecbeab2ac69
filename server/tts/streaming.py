"""Engines that stream a TTS server's audio as it arrives, and the voice they are asked to speak in.

An HTTP engine yields `PcmChunk`s while the server is still synthesizing, so the first audio of a
reply goes out long before its chunk is finished. A failure of the server (unreachable, 5xx, a
timeout, a cut stream, the circuit breaker open) is `TTSUnavailable`: the reply goes on as text.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import soxr

from hark.protocol import SessionConfig

from .base import Pcm16, TTSEngine

if TYPE_CHECKING:
    from .voices import VoiceStore

# the session's default voice is an espeak-ng name; an engine with other voices speaks its own default
SESSION_DEFAULT_VOICE = SessionConfig().voice


class TTSUnavailable(Exception):
    """The TTS server could not speak this chunk: unreachable, 5xx, timed out, stream cut, or failing fast."""


class TTSRefused(TTSUnavailable):
    """The server turned the request down (4xx, e.g. an unknown voice): our request, not its health."""


class PcmChunk(NamedTuple):
    pcm: Pcm16
    sample_rate: int


@dataclass(frozen=True, slots=True)
class ReferenceClip:
    """A cloned voice's reference recording: a WAV (PCM16 mono) and what is said in it."""

    wav: bytes
    transcript: str
    sample_rate: int
    duration_ms: int


@dataclass(frozen=True, slots=True)
class VoiceChoice:
    """What a reply is spoken in: the engine's built-in voice `name`, or a cloned voice's clip."""

    name: str
    clip: ReferenceClip | None = None


class StreamingTTSEngine(TTSEngine):
    """A TTS engine whose audio arrives in pieces. `voices` is the cloned-voice store when the engine
    can speak in a reference clip's voice (None: it has only its built-in voices)."""

    voices: VoiceStore | None = None
    default_voice: str = ""

    @abstractmethod
    def stream(self, text: str, voice: VoiceChoice) -> AsyncGenerator[PcmChunk, None]:
        """Yield the chunk's audio as the server sends it; raises TTSUnavailable. Leaving the iterator
        early (a barge-in cancels the reply) closes the request, which tells the server to stop."""

    def builtin_voice(self, name: str) -> str:
        """The engine's voice for a session's `voice` setting (its default for espeak's default name)."""
        return self.default_voice if name in ("", SESSION_DEFAULT_VOICE) else name

    async def synthesize(self, text: str, voice: str) -> Pcm16:
        """The whole chunk at `sample_rate` (for callers that do not stream)."""
        resampler = StreamResampler(self.sample_rate)
        pieces = [resampler.feed(chunk) async for chunk in self.stream(text, VoiceChoice(voice))]
        pieces.append(resampler.flush())
        return np.concatenate(pieces)


class StreamResampler:
    """One TTS request's pieces to `out_rate` through one soxr stream, so piece boundaries leave no
    clicks; `flush` at the end of the request returns what the filter still holds."""

    def __init__(self, out_rate: int) -> None:
        self.out_rate = out_rate
        self._in_rate = 0
        self._stream: soxr.ResampleStream | None = None

    def feed(self, chunk: PcmChunk) -> Pcm16:
        if chunk.sample_rate != self._in_rate:
            tail = self.flush()  # a server never changes rate mid-request; a new one starts a new stream
            self._in_rate = chunk.sample_rate
            if chunk.sample_rate != self.out_rate:
                self._stream = soxr.ResampleStream(chunk.sample_rate, self.out_rate, 1, dtype="int16")
            if len(tail):
                return np.concatenate([tail, self.feed(chunk)])
        if self._stream is None:
            return chunk.pcm
        out: Pcm16 = self._stream.resample_chunk(chunk.pcm)
        return out

    def flush(self) -> Pcm16:
        stream, self._stream = self._stream, None
        self._in_rate = 0
        if stream is None:
            return np.zeros(0, dtype=np.int16)
        out: Pcm16 = stream.resample_chunk(np.zeros(0, dtype=np.int16), last=True)
        return out
