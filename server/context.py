"""What every session shares: configuration, engines, metrics and the inference thread pool."""

from __future__ import annotations

import collections
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from prometheus_client import Counter, Gauge

from hark.protocol import ServerEvent

from .asr.base import ASREngine
from .config import ServerConfig
from .llm.base import LLMEngine
from .metrics import Metrics
from .tts.base import TTSEngine
from .vad import SileroVad
from .vad_batch import VadBatcher

if TYPE_CHECKING:
    from .tools.base import ServerToolbox
    from .turn.smart_turn import SmartTurnDetector


class LagMeter:
    """How late the recognizer's answers are, over the last `window_s`: the mean of the samples in
    the window, 0 while fewer than `min_samples` are (a slow turn or two on a busy machine must not
    refuse the next session).

    Two of them feed admission (`--overload-asr-lag-ms`): the streaming lag (a speaking session's
    newest frame: arrival -> recognized) and the final lag (a turn's end decided -> its final
    transcript). The frame wait alone misses a recognizer falling behind: averaged over every
    session's frames it is diluted by the sessions that only listen, and a late finalize delays one
    session's frames only while its turn ends; the pool's per-call wait stays flat because a late
    session sends its backlog in fewer, larger calls."""

    def __init__(self, window_s: float, min_samples: int) -> None:
        self.window_s = window_s
        self.min_samples = min_samples
        self._samples: collections.deque[tuple[float, float]] = collections.deque()
        self._total = 0.0  # of the samples held: a mean in O(1) however many sessions speak

    def record(self, seconds: float, now: float | None = None) -> None:
        if len(self._samples) >= LAG_MAX_SAMPLES:
            self._total -= self._samples.popleft()[1]
        lag = max(0.0, seconds)
        self._samples.append((time.monotonic() if now is None else now, lag))
        self._total += lag

    def mean_s(self, now: float | None = None) -> float:
        horizon = (time.monotonic() if now is None else now) - self.window_s
        while self._samples and self._samples[0][0] < horizon:
            self._total -= self._samples.popleft()[1]
        if not self._samples:
            self._total = 0.0  # what rounding left behind goes with the last sample
        if len(self._samples) < self.min_samples:
            return 0.0
        return max(0.0, self._total) / len(self._samples)


LAG_MAX_SAMPLES = 8192  # the newest are kept: a mean over them is the mean of the window at any real load
STREAMING_LAG_WINDOW_S = 2.0  # ten samples a second per speaking session
FINAL_LAG_WINDOW_S = 5.0  # one sample per turn: a longer window to hold a few
LAG_MIN_SAMPLES = 3


def _streaming_lag() -> LagMeter:
    return LagMeter(STREAMING_LAG_WINDOW_S, LAG_MIN_SAMPLES)


def _final_lag() -> LagMeter:
    return LagMeter(FINAL_LAG_WINDOW_S, LAG_MIN_SAMPLES)


@dataclass(slots=True)
class ServerContext:
    config: ServerConfig
    metrics: Metrics
    vad: SileroVad
    asr: ASREngine
    llm: LLMEngine
    tts: TTSEngine
    # onnxruntime releases the GIL, so VAD runs in threads; sessions await one call at a time,
    # so the pool's queue is bounded by the number of sessions
    inference_pool: ThreadPoolExecutor
    vad_batcher: VadBatcher | None = None  # None: each session runs its own VAD calls in the pool
    # the turn-completion model for semantic turn detection; None: no model here, silence only
    turn_detector: SmartTurnDetector | None = None
    server_tools: ServerToolbox | None = None  # MCP servers' tools (--mcp-server); None: none configured
    loop_lag_s: float = 0.0  # smoothed event-loop lag, for admission
    # smoothed time audio frames waited in sessions' inboxes before the VAD took them: grows when
    # the server falls behind even while the loop itself stays punctual (inference is elsewhere)
    frame_wait_s: float = 0.0
    frame_wait_at: float = 0.0  # when a frame was last taken
    asr_lag: LagMeter = field(default_factory=_streaming_lag)  # admission: is the recognizer keeping up?
    final_lag: LagMeter = field(default_factory=_final_lag)

    # Both signals are smoothed over wall time, not over samples: a loop that runs one tick a second
    # or an inbox taken from once a second would otherwise take minutes to move an average kept
    # per sample, which is how an overloaded server kept admitting (issue 12).

    def note_frame_wait(self, seconds: float, now: float) -> None:
        """A frame was taken from an inbox after waiting `seconds`."""
        elapsed = now - self.frame_wait_at if self.frame_wait_at else SIGNAL_TIME_CONSTANT_S
        self.frame_wait_s += (seconds - self.frame_wait_s) * _weight(elapsed)
        self.frame_wait_at = now

    def note_loop_lag(self, lag: float, elapsed: float) -> None:
        """A loop tick that took `elapsed` seconds ran `lag` seconds late."""
        self.loop_lag_s += (lag - self.loop_lag_s) * _weight(elapsed)

    def refresh_frame_wait(self, now: float) -> None:
        """Between frames: audio that is queued and not taken for a while is waiting that long
        (a stalled engine stops every inbox, and a value kept from the last frame taken would read
        as punctual); no audio queued means nothing waits."""
        stalled = now - self.frame_wait_at
        if self.frame_wait_at and self.frames_pending() > 0:
            self.frame_wait_s = max(self.frame_wait_s, stalled)
        elif stalled > 1.0:
            self.frame_wait_s = 0.0

    def frames_pending(self) -> float:
        """Audio frames received and neither processed nor dropped yet (in inboxes, or in the VAD)."""
        m = self.metrics
        if _value(m.sessions_open) <= 0:  # a frame miscounted somewhere must not read as a stall forever
            return 0.0
        return _value(m.audio_frames) - _value(m.audio_frames_processed) - _value(m.audio_frames_dropped)


SIGNAL_TIME_CONSTANT_S = 2.0  # the overload signals follow a change within a few seconds


def _value(metric: Counter | Gauge) -> float:
    """This process's value of a metric, summed over its labels (prometheus-client's public API)."""
    return sum(s.value for family in metric.collect() for s in family.samples if not s.name.endswith("_created"))


def _weight(elapsed: float) -> float:
    """How much a new sample moves an exponential average with SIGNAL_TIME_CONSTANT_S."""
    return 1.0 - math.exp(-max(0.0, elapsed) / SIGNAL_TIME_CONSTANT_S)


class Outbox(Protocol):
    """Where a session puts what goes to its client; the transport owns the socket behind it."""

    def send_event(self, event: ServerEvent) -> None: ...

    def send_audio(self, pcm: bytes) -> None: ...
