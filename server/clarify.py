"""When the recognizer is unsure of a spoken turn: the assistant does not guess, it asks.

A transcript below the session's `min_asr_confidence` is not sent to the language model (an answer
to words the person did not say is worse than a question). The session speaks `ASK_AGAIN` instead,
through the normal reply path (chunker, TTS, pacer, barge-in), and marks the `transcript.final`
`low_confidence`, so a client can offer its text box.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from .llm.base import LLMEngine, LLMRequest, LLMUsage

ASK_AGAIN = "Sorry, I didn't catch that. Could you say it again, or type it?"


def is_low_confidence(confidence: float | None, threshold: float) -> bool:
    """Below the threshold; an engine that cannot say (None) or a threshold of 0 never is."""
    return confidence is not None and threshold > 0.0 and confidence < threshold


class ScriptedReply(LLMEngine):
    """One fixed line as a reply's text source: the reply path without the model."""

    name = "scripted"

    def __init__(self, text: str) -> None:
        self.text = text

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncIterator[str]:
        yield self.text
