"""What every session shares: configuration, engines, metrics and the inference thread pool."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from hark.protocol import ServerEvent

from .asr.base import ASREngine
from .config import ServerConfig
from .llm.base import LLMEngine
from .metrics import Metrics
from .tts.base import TTSEngine
from .vad import SileroVad
from .vad_batch import VadBatcher


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
    loop_lag_s: float = 0.0  # smoothed event-loop lag, for admission
    # smoothed time audio frames waited in sessions' inboxes before the VAD took them: grows when
    # the server falls behind even while the loop itself stays punctual (inference is elsewhere)
    frame_wait_s: float = 0.0
    frame_wait_at: float = 0.0  # when it was last updated; stale values are reset

    def note_frame_wait(self, seconds: float, now: float) -> None:
        self.frame_wait_s += (seconds - self.frame_wait_s) * 0.05
        self.frame_wait_at = now


class Outbox(Protocol):
    """Where a session puts what goes to its client; the transport owns the socket behind it."""

    def send_event(self, event: ServerEvent) -> None: ...

    def send_audio(self, pcm: bytes) -> None: ...
