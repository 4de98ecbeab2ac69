"""Silero VAD (its ONNX model, taken out of the silero-vad wheel by `make install`, run with onnxruntime)
and a streaming segmenter.

One `SileroVad` per process holds the ONNX session (onnxruntime releases the GIL, so calls run in
a thread pool). Each session owns a `VadStream`: the model's recurrent state, the 64-sample context
the v5 model expects before each 512-sample window, the leftover samples of a frame that did not
fill a window, and the start/stop hysteresis.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

from .models import SILERO_VAD, default_path, verify

SAMPLE_RATE = 16000
WINDOW = 512  # samples per model call at 16 kHz (32 ms)
CONTEXT = 64  # samples of the previous window the model sees in front of each window

Float32Array = npt.NDArray[np.float32]


def silero_model_path() -> str:
    """The verified model file in the models directory (ModelFileError naming `make install` if not)."""
    return str(verify(default_path(SILERO_VAD), SILERO_VAD, "Silero VAD model"))


class SileroVad:
    def __init__(self, model_path: str | None = None) -> None:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        # one thread per call: concurrency comes from many sessions, not from one 512-sample window
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            model_path or silero_model_path(), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def run(self, windows: Float32Array, state: Float32Array) -> tuple[Float32Array, Float32Array]:
        """windows: [batch, CONTEXT + WINDOW]; state: [2, batch, 128] -> (probabilities [batch], state)."""
        prob, new_state = self._session.run(None, {"input": windows, "state": state, "sr": self._sr})
        return prob[:, 0].astype(np.float32), new_state


class VadEventKind(Enum):
    START = "start"  # speech began
    STOP = "stop"  # speech was followed by `min_silence_ms` of silence: a pause
    # only where `quiet_samples` is set (a semantic endpointer's early check): silence has lasted
    # `quiet_samples` inside speech, a pause may be beginning; then either STOP at the same sample
    # or RESUMED (the speech went on before the silence became a pause)
    QUIET = "quiet"
    RESUMED = "resumed"


@dataclass(frozen=True, slots=True)
class VadEvent:
    kind: VadEventKind
    sample: int  # on the 16 kHz input clock: first speech sample, or first sample of the silence that ended it


class VadStream:
    """Feed 16 kHz float32 audio in any frame size; get speech start/stop events."""

    def __init__(
        self, model: SileroVad, threshold: float = 0.5, min_silence_ms: int = 500, quiet_ms: int | None = None
    ) -> None:
        self._model = model
        self.threshold = threshold
        self.min_silence_samples = min_silence_ms * SAMPLE_RATE // 1000
        self.quiet_samples = None if quiet_ms is None else quiet_ms * SAMPLE_RATE // 1000
        self.reset()

    def reset(self) -> None:
        self.state: Float32Array = np.zeros((2, 1, 128), dtype=np.float32)  # the model's recurrent state
        self._context: Float32Array = np.zeros(CONTEXT, dtype=np.float32)
        self._pending: Float32Array = np.zeros(0, dtype=np.float32)
        self._position = 0  # samples consumed by the model so far
        self.in_speech = False
        self._silence_start: int | None = None
        self._quiet_reported = False  # QUIET was emitted for the silence under way

    def reset_model_state(self) -> None:
        """Forget the recurrent state after an utterance (keeps the clock and hysteresis)."""
        self.state = np.zeros((2, 1, 128), dtype=np.float32)

    def process(self, audio: Float32Array) -> list[VadEvent]:
        """Run the model on every full window in `audio` (plus leftovers); blocking, call off the loop."""
        windows = self.take_windows(audio)
        probs = np.empty(len(windows), dtype=np.float32)
        for i, window in enumerate(windows):
            prob, self.state = self._model.run(window[None, :], self.state)
            probs[i] = prob[0]
        return self.apply(probs)

    def take_windows(self, audio: Float32Array) -> Float32Array:
        """Cut `audio` (after the leftovers) into model inputs [n, CONTEXT + WINDOW], each with the
        context it needs; the caller scores them in order with `state` and passes the
        probabilities to `apply`."""
        samples = np.concatenate([self._pending, audio]) if len(self._pending) else audio
        n_windows = len(samples) // WINDOW
        self._pending = samples[n_windows * WINDOW :].copy()
        if n_windows == 0:
            return np.zeros((0, CONTEXT + WINDOW), dtype=np.float32)
        full = np.concatenate([self._context, samples[: n_windows * WINDOW]])
        # window i is samples [i*WINDOW - CONTEXT, (i+1)*WINDOW) of `full` shifted by CONTEXT
        index = np.arange(CONTEXT + WINDOW)[None, :] + WINDOW * np.arange(n_windows)[:, None]
        self._context = full[-CONTEXT:].copy()
        windows: Float32Array = full[index]
        return windows

    def apply(self, probabilities: Float32Array) -> list[VadEvent]:
        """The hysteresis over the windows' speech probabilities, in order."""
        events: list[VadEvent] = []
        for prob in probabilities:
            event = self._step(float(prob))
            self._position += WINDOW
            if event is not None:
                events.append(event)
        return events

    def _step(self, prob: float) -> VadEvent | None:
        # hysteresis as in Silero's own iterator: start above threshold, end after
        # min_silence below (threshold - 0.15)
        window_start = self._position
        if prob >= self.threshold:
            self._silence_start = None
            if not self.in_speech:
                self.in_speech = True
                return VadEvent(VadEventKind.START, window_start)
            if self._quiet_reported:
                self._quiet_reported = False
                return VadEvent(VadEventKind.RESUMED, window_start)
            return None
        if self.in_speech and prob < max(self.threshold - 0.15, 0.01):
            if self._silence_start is None:
                self._silence_start = window_start
            silent = window_start + WINDOW - self._silence_start
            if silent >= self.min_silence_samples:
                self.in_speech = False
                stop = self._silence_start
                self._silence_start = None
                self._quiet_reported = False
                return VadEvent(VadEventKind.STOP, stop)
            if self.quiet_samples is not None and not self._quiet_reported and silent >= self.quiet_samples:
                self._quiet_reported = True
                return VadEvent(VadEventKind.QUIET, self._silence_start)
        return None

    def force_stop(self) -> None:
        """End speech now (audio.commit): the next speech above threshold starts a new utterance."""
        self.in_speech = False
        self._silence_start = None
        self._quiet_reported = False
