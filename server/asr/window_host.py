"""funasr-window inside one inference worker: an offline model re-decoding a sliding window.

Every `step` of new audio (or twice the last decode's time, if longer) the current window (the
utterance since the last commit, at most `window_s` long) is decoded again from its start, so the
hypothesis improves as context grows.
When the window reaches its cap, its audio up to the quietest 100 ms of its second half is decoded
once more and that text is committed; the window restarts there. `stable_text` is the committed
text plus what two consecutive window decodes agree on (LocalAgreement-2).

SenseVoice writes its language, emotion and audio event as special tokens (`<|zh|><|NEUTRAL|>
<|Speech|><|woitn|>`): they are taken out of the text and returned as metadata.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .funasr_load import load_model
from .paraformer_host import join_text
from .stability import LocalAgreement, unit_prefix
from .utterance_host import Float32Array, UtteranceHost

RATE = 16000
_TAG = re.compile(r"<\|([^|<>]*)\|>")
LANGUAGES = {"zh", "en", "yue", "ja", "ko", "nospeech"}
EMOTIONS = {"HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED", "SURPRISED", "EMO_UNKNOWN"}
TEXT_NORMS = {"woitn", "withitn"}


def split_tags(text: str) -> tuple[str, dict[str, str]]:
    """Text without SenseVoice's <|tag|> tokens, and the tags as {language, emotion, event}."""
    meta: dict[str, str] = {}
    for tag in _TAG.findall(text):
        key = (
            "language" if tag in LANGUAGES else "emotion" if tag in EMOTIONS else None if tag in TEXT_NORMS else "event"
        )
        if key is not None:
            meta.setdefault(key, tag)  # the leading tags are the model's answer
    return re.sub(r"\s+", " ", _TAG.sub("", text)).strip(), meta


def quietest_cut(audio: np.ndarray[Any, np.dtype[np.float32]], lo: int, hi: int, frame: int = RATE // 10) -> int:
    """Start of the lowest-energy frame in audio[lo:hi]: the likeliest pause to cut a window at."""
    starts = range(lo, max(lo + 1, hi - frame), frame)
    energies = [float(np.mean(audio[s : s + frame] ** 2)) for s in starts]
    return starts[int(np.argmin(energies))]


@dataclass
class _Utterance:
    audio: np.ndarray[Any, np.dtype[np.float32]] = field(default_factory=lambda: np.zeros(0, np.float32))
    decoded_len: int = 0  # window samples at the last decode
    step: int = 0  # new samples before the next decode
    committed: str = ""
    window_text: str = ""
    stable: str = ""
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    meta: dict[str, str] = field(default_factory=dict)


class WindowHost(UtteranceHost[_Utterance]):
    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__()
        self._model = load_model(settings["model"], "--asr-model", settings["ncpu"])
        self._window = int(settings["window_s"] * RATE)
        self._step = int(settings["step_ms"] * RATE // 1000)
        # SenseVoice takes a language and a text-normalization switch; other offline models neither
        self._options: dict[str, Any] = {}
        if type(self._model.model).__name__.startswith("SenseVoice"):
            self._options = {"language": settings["language"], "use_itn": False}

    def new_utterance(self) -> _Utterance:
        return _Utterance()

    def accept(self, utt: _Utterance, audio: Float32Array) -> tuple[str, str | None, dict[str, Any]]:
        utt.audio = np.concatenate([utt.audio, audio])
        if len(utt.audio) - utt.decoded_len >= max(self._step, utt.step):
            self._advance(utt)
        return join_text(utt.committed, utt.window_text), utt.stable, dict(utt.meta)

    def finalize(self, utt: _Utterance) -> tuple[str, dict[str, Any]]:
        if len(utt.audio) > utt.decoded_len or utt.decoded_len == 0:
            self._advance(utt)
        return join_text(utt.committed, utt.window_text), dict(utt.meta)

    def _advance(self, utt: _Utterance) -> None:
        if len(utt.audio) > self._window:
            cut = quietest_cut(utt.audio, self._window // 2, self._window)
            utt.committed = join_text(utt.committed, self._decode(utt, utt.audio[:cut]))
            utt.audio = utt.audio[cut:]
            utt.agreement.reset()  # the new window's hypotheses start over
        started = time.perf_counter()
        utt.window_text = self._decode(utt, utt.audio)
        utt.decoded_len = len(utt.audio)
        # a decode may take longer than the step on a long window or a busy worker: wait for twice
        # its time in new audio, so re-decoding uses at most about half of real time and never
        # falls further and further behind
        utt.step = int(2 * (time.perf_counter() - started) * RATE)
        utt.agreement.update(utt.window_text)
        # the agreed units as they read in the hypothesis, so stable_text is a prefix of the text
        candidate = join_text(utt.committed, unit_prefix(utt.window_text, utt.agreement.stable_units))
        if len(candidate) > len(utt.stable) and candidate.startswith(utt.stable):
            utt.stable = candidate  # only grows; a contradicting agreement is ignored

    def _decode(self, utt: _Utterance, audio: np.ndarray[Any, np.dtype[np.float32]]) -> str:
        if len(audio) < RATE // 10:
            return ""
        result = self._model.generate(input=audio, **self._options)
        text, meta = split_tags(str(result[0]["text"]) if result else "")
        utt.meta.update(meta)
        return text


class WindowHostFactory:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    def __call__(self) -> WindowHost:
        return WindowHost(self.settings)
