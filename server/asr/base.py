"""Streaming speech-recognition interface. Engines know nothing of sockets or sessions."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any


class ASRError(RuntimeError):
    """The engine failed (a worker died, a model broke); the utterance is lost, the session goes on."""


class ASRStream(ABC):
    """One utterance at a time for one session: feed 16 kHz PCM16, read hypotheses, finalize."""

    @abstractmethod
    async def begin(self) -> None:
        """Start an utterance."""

    @abstractmethod
    async def accept(self, pcm: bytes) -> str:
        """Feed PCM16 mono at the engine's rate; return the current (partial) hypothesis."""

    @property
    def stable_text(self) -> str | None:
        """The engine's own stable prefix of the last hypothesis (it knows best: streaming
        paraformer never revises a token), or None to let the session run LocalAgreement on it."""
        return None

    @property
    def metadata(self) -> dict[str, Any]:
        """What the engine learned besides the words (SenseVoice: language, emotion, event) for the
        last hypothesis or final; goes into the transcript events' `metadata`."""
        return {}

    @property
    def confidence(self) -> float | None:
        """How sure the engine is of the last final (after `finalize`), in [0, 1]: roughly the
        share of its words it expects to be right. None when the engine cannot say (then the
        session never asks the person to repeat on its account)."""
        return None

    @abstractmethod
    async def finalize(self) -> str:
        """End the utterance and return the final text."""

    @abstractmethod
    async def close(self) -> None:
        """Release engine resources held for this session (also mid-utterance)."""


class ASREngine(ABC):
    name: str = "asr"
    sample_rate: int = 16000

    async def start(self) -> None:
        """Load models; called once before the first stream opens."""

    @abstractmethod
    def open_stream(self, session_id: str) -> ASRStream: ...

    def overload_reason(self) -> str | None:
        """Why a new session would push the engine past real time (it is then refused with
        server_busy, so the sessions already running keep their latency), or None to admit it."""
        return None

    async def aclose(self) -> None:
        """Stop workers."""
