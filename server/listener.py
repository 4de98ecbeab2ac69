"""The audio front end of one session: client frames in, speech events and 16 kHz PCM16 out.

resample (only when the client does not send 16 kHz) -> Silero VAD (this session's `VadStream`,
scored by the shared VAD batcher or in the inference pool) -> a ring buffer of PCM16 on the input
clock (16 kHz samples received so far), the arrival clock that maps that clock to wall time, and
the pre-roll a new utterance starts with. Knows nothing of turns: the session decides what the
events mean.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

import numpy as np

from hark.protocol import SessionConfig

from .audio import ArrivalClock, Float32Array, InputResampler, Int16Array, float_to_pcm16
from .context import ServerContext
from .vad import SAMPLE_RATE, VadEvent, VadStream

# audio kept behind the newest frame: enough for the largest speech_pad_ms (1000) before a VAD start
PREROLL_SAMPLES = SAMPLE_RATE


def samples_of_ms(ms: float) -> int:
    return round(ms * SAMPLE_RATE / 1000)


class Listener:
    """Owned by one `Session`, fed by its input task one frame at a time, in arrival order.

    At 16 kHz the client's bytes go into the ring untouched (float is made only for the VAD), so
    the ASR hears exactly what was sent. A new utterance's pre-roll never reaches back into audio
    that already belonged to the previous one.
    """

    def __init__(self, ctx: ServerContext, config: SessionConfig, pause_ms: int, quiet_ms: int | None = None) -> None:
        self._ctx = ctx
        self._vad = VadStream(ctx.vad, config.vad_threshold, pause_ms, quiet_ms)
        self._rate = config.input_sample_rate
        self._resampler = _resampler_for(self._rate)
        self._clock = ArrivalClock()
        self._ring: deque[tuple[int, Int16Array]] = deque()  # (first sample, PCM16), in order
        self.samples_in = 0  # 16 kHz samples received so far: the input audio clock
        # audio kept behind the newest frame: the pre-roll, or more for a turn detector that scores
        # the utterance's last seconds (the session raises it)
        self.retain_samples = PREROLL_SAMPLES
        self._floor = 0  # audio before this sample went to an utterance that has ended
        # taken from the inbox and not through the VAD yet: counted as dropped if the session ends now
        self.frame_in_flight = False

    def reconfigure(self, config: SessionConfig, pause_ms: int, quiet_ms: int | None = None) -> None:
        """Apply a session.update (and the endpointer's `pause_ms` / `quiet_ms`); everything after
        the resampler runs at 16 kHz, so a rate change mid-utterance is safe."""
        if config.input_sample_rate != self._rate:
            self._rate = config.input_sample_rate
            self._resampler = _resampler_for(self._rate)
        self._vad.threshold = config.vad_threshold
        self._vad.min_silence_samples = samples_of_ms(pause_ms)
        self._vad.quiet_samples = None if quiet_ms is None else samples_of_ms(quiet_ms)

    async def feed(self, frame: bytes, arrival: float) -> list[VadEvent]:
        """Take one validated PCM16 frame at the session's input rate; return the VAD's events."""
        self.frame_in_flight = True
        started = time.monotonic()
        # how long the frame waited in the inbox: the server's "behind real time" signal for admission
        self._ctx.note_frame_wait(started - arrival, started)
        metrics = self._ctx.metrics
        metrics.observe("frame_wait", started - arrival)
        batcher = self._ctx.vad_batcher
        if batcher is not None:
            # resampling a 100 ms frame costs tens of microseconds: not worth a thread hop
            audio, pcm = self._to_16k(frame)
            probabilities, self._vad.state = await batcher.score(self._vad.take_windows(audio), self._vad.state)
            events = self._vad.apply(probabilities)
        else:
            loop = asyncio.get_running_loop()
            pcm, events = await loop.run_in_executor(self._ctx.inference_pool, self._vad_step, frame)
        metrics.observe("vad", time.monotonic() - started)
        metrics.audio_frames_processed.inc()
        self.frame_in_flight = False
        if len(pcm):
            self._ring.append((self.samples_in, pcm))
            self.samples_in += len(pcm)
        self._clock.add(self.samples_in, arrival)
        while self._ring and self._ring[0][0] + len(self._ring[0][1]) < self.samples_in - self.retain_samples:
            self._ring.popleft()
        return events

    def _to_16k(self, frame: bytes) -> tuple[Float32Array, Int16Array]:
        """(float32 for the VAD, PCM16 for the ring)."""
        pcm = np.frombuffer(frame, dtype="<i2")
        audio = pcm.astype(np.float32) / 32768.0
        if self._resampler is None:
            return audio, pcm  # the client's own samples, not a float round trip
        audio = self._resampler.process(audio)
        return audio, float_to_pcm16(audio)

    def _vad_step(self, frame: bytes) -> tuple[Int16Array, list[VadEvent]]:
        """Off the loop: resample if needed and run the VAD model."""
        audio, pcm = self._to_16k(frame)
        return pcm, self._vad.process(audio)

    def audio_between(self, start: int, end: int) -> bytes:
        """PCM16 bytes of input samples [start, end) still in the ring (older audio is gone)."""
        parts = []
        for first, chunk in self._ring:
            lo, hi = max(start, first), min(end, first + len(chunk))
            if lo < hi:
                parts.append(chunk[lo - first : hi - first])
        return np.concatenate(parts).tobytes() if parts else b""

    def wall_time_of(self, sample: int) -> float | None:
        """When the frame holding `sample` arrived (None before any audio)."""
        return self._clock.wall_time_of(sample)

    def utterance_start(self, speech_sample: int, pad_ms: int) -> int:
        """Where an utterance whose speech the VAD found at `speech_sample` starts: `pad_ms` earlier,
        but not before the audio still held, nor into the previous utterance."""
        oldest = self._ring[0][0] if self._ring else 0
        return max(speech_sample - samples_of_ms(pad_ms), oldest, self._floor, 0)

    def utterance_ended(self, last_sample: int) -> None:
        """The utterance took the audio up to `last_sample`: the next one starts no earlier. The VAD
        forgets its recurrent state and ends speech, so the next speech is a new utterance."""
        self._floor = max(self._floor, last_sample)
        self._vad.reset_model_state()
        self._vad.force_stop()


def _resampler_for(rate: int) -> InputResampler | None:
    return None if rate == SAMPLE_RATE else InputResampler(rate, SAMPLE_RATE)
