"""Text-to-speech: engines behind `TTSEngine` (chosen by name in `registry.TTS_ENGINES`): espeak-ng
embedded, and HTTP servers streamed as they speak (`streaming.StreamingTTSEngine`: OpenAI-style
speech, Fish Speech, CosyVoice) with cloned voices (`voices.VoiceStore`); and the chunker that feeds
them LLM text."""

from __future__ import annotations

from hark.server.tts.base import Pcm16, TTSEngine
from hark.server.tts.chunker import SentenceChunker

__all__ = ["Pcm16", "SentenceChunker", "TTSEngine"]
