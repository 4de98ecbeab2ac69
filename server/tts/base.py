"""Text-to-speech engine interface. Engines know nothing of sockets or sessions."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import numpy.typing as npt

Pcm16 = npt.NDArray[np.int16]


class TTSEngine(ABC):
    """Turns one chunk of text (a sentence or clause) into PCM16 mono at `sample_rate`.

    `synthesize` must not block the event loop: engines run their work off the loop and bound
    how much of it may wait.
    """

    name: str = "tts"
    sample_rate: int = 16000

    async def start(self) -> None:
        """Load models; called once before the first `synthesize`."""

    @abstractmethod
    async def synthesize(self, text: str, voice: str) -> Pcm16:
        """Return the whole chunk's audio; an empty array for text that has nothing to speak."""

    async def aclose(self) -> None:
        """Release threads and native resources."""
