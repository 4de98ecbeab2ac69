"""What every FunASR host (the code inside one inference worker) shares: the worker protocol's ops
(begin, accept, finalize, close) dispatched to one utterance state per stream."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Generic, TypeVar

import numpy as np

U = TypeVar("U")
Float32Array = np.ndarray[Any, np.dtype[np.float32]]


class UtteranceHost(ABC, Generic[U]):
    def __init__(self) -> None:
        self._streams: dict[str, U] = {}

    @abstractmethod
    def new_utterance(self) -> U: ...

    @abstractmethod
    def accept(self, utt: U, audio: Float32Array) -> tuple[str, str | None, dict[str, Any]]:
        """Take 16 kHz audio; return (hypothesis, stable text or None, metadata)."""

    @abstractmethod
    def finalize(self, utt: U) -> tuple[str, dict[str, Any]]:
        """The utterance ended: (final text, metadata). Its state is already forgotten."""

    def __call__(self, op: str, stream_id: str, payload: Any) -> Any:
        if op == "begin":
            self._streams[stream_id] = self.new_utterance()
            return None
        if op == "close":
            self._streams.pop(stream_id, None)
            return None
        if op == "accept":
            return self.accept(self._streams[stream_id], np.frombuffer(payload, np.int16).astype(np.float32) / 32768.0)
        if op == "finalize":
            return self.finalize(self._streams.pop(stream_id))
        raise ValueError(f"unknown op {op}")
