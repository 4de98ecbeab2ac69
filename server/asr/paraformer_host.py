"""paraformer-zh-streaming inside one inference worker (thread or process): its models and streams.

Each utterance has its own FunASR cache dict; audio goes in whole 600 ms chunks
(`chunk_size=[0, 10, 5]`: 10 frames of 60 ms, 5 frames of look-ahead), each call returns only the new
tokens, and `is_final=True` at the endpoint flushes the tail and resets the cache. With 2-pass, the
utterance's audio is kept and re-decoded at the endpoint by the offline paraformer, then punctuated
by ct-punc; that text is the final (FunASR's own 2pass runtime does the same). This host decodes
one stream per FunASR call; `paraformer_batch_host` decodes every stream with a chunk ready at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .funasr_load import load_model
from .paraformer_batch import CHUNK_SAMPLES, CHUNK_SIZE, DECODER_LOOK_BACK, ENCODER_LOOK_BACK
from .utterance_host import Float32Array, UtteranceHost


def join_text(left: str, right: str) -> str:
    """Concatenate token texts: a space only between two Latin-script words."""
    if left and right and left[-1].isascii() and left[-1].isalnum() and right[0].isascii() and right[0].isalnum():
        return f"{left} {right}"
    return left + right


@dataclass
class _Utterance:
    cache: dict[str, Any] = field(default_factory=dict)
    pending: np.ndarray[Any, np.dtype[np.float32]] = field(default_factory=lambda: np.zeros(0, np.float32))
    audio: list[np.ndarray[Any, np.dtype[np.float32]]] = field(default_factory=list)
    text: str = ""
    samples: int = 0


class ParaformerStreamingHost(UtteranceHost[_Utterance]):
    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__()
        ncpu = settings["ncpu"]
        self._online = load_model(settings["model"], "--asr-model", ncpu)
        self._two_pass = bool(settings["two_pass"])
        self._offline = load_model(settings["offline_model"], "--asr-model-offline", ncpu) if self._two_pass else None
        self._punc = load_model(settings["punc_model"], "--punc-model", ncpu) if self._two_pass else None

    def new_utterance(self) -> _Utterance:
        return _Utterance()

    def accept(self, utt: _Utterance, audio: Float32Array) -> tuple[str, str | None, dict[str, Any]]:
        self._take(utt, audio)
        while (chunk := self._next_chunk(utt)) is not None:
            utt.text = join_text(utt.text, self._decode(utt, chunk, is_final=False))
        return self._hypothesis(utt)

    def finalize(self, utt: _Utterance) -> tuple[str, dict[str, Any]]:
        if utt.samples == 0:
            return "", {}  # no audio at all: FunASR would still decode its zero padding
        utt.text = join_text(utt.text, self._decode(utt, utt.pending, is_final=True))
        return self._final(utt)

    def _take(self, utt: _Utterance, audio: Float32Array) -> None:
        utt.samples += len(audio)
        if self._two_pass:
            utt.audio.append(audio)
        utt.pending = np.concatenate([utt.pending, audio])

    @staticmethod
    def _next_chunk(utt: _Utterance) -> Float32Array | None:
        if len(utt.pending) < CHUNK_SAMPLES:
            return None
        chunk, utt.pending = utt.pending[:CHUNK_SAMPLES], utt.pending[CHUNK_SAMPLES:]
        return chunk

    @staticmethod
    def _hypothesis(utt: _Utterance) -> tuple[str, str | None, dict[str, Any]]:
        return utt.text, utt.text, {}  # online tokens are never revised: the whole hypothesis is stable

    def _final(self, utt: _Utterance) -> tuple[str, dict[str, Any]]:
        if self._two_pass and utt.audio:
            return self._second_pass(np.concatenate(utt.audio)) or utt.text, {}
        return utt.text, {}

    def _decode(self, utt: _Utterance, chunk: np.ndarray[Any, np.dtype[np.float32]], is_final: bool) -> str:
        result = self._online.generate(
            input=chunk,
            cache=utt.cache,
            is_final=is_final,
            chunk_size=CHUNK_SIZE,
            encoder_chunk_look_back=ENCODER_LOOK_BACK,
            decoder_chunk_look_back=DECODER_LOOK_BACK,
        )
        return str(result[0]["text"]) if result else ""

    def _second_pass(self, audio: np.ndarray[Any, np.dtype[np.float32]]) -> str:
        assert self._offline is not None
        result = self._offline.generate(input=audio)
        return self._punctuate(str(result[0]["text"]) if result else "")

    def _punctuate(self, text: str) -> str:
        """ct-punc over one offline transcript ("" stays ""): FunASR's CTTransformer takes one text
        per call (its mini-sentences run in sequence, each carrying the last one's open sentence)."""
        assert self._punc is not None
        if not text.strip():
            return ""
        punctuated = self._punc.generate(input=text)
        return str(punctuated[0]["text"]) if punctuated else text
