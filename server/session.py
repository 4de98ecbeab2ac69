"""One session per connection: the turn state machine, and the only place that orders the stages.

Input side (one task, in arrival order): audio -> resample -> VAD -> ASR -> partials / endpoint ->
final transcript -> response. Output side: a `ResponseRun` per reply. Barge-in: speech that lasts
`min_interrupt_ms` during a reply (or a shorter utterance that still yields words) cancels it and
only what the user heard stays in the history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from enum import StrEnum
from typing import Any

import numpy as np

from hark.protocol import (
    AudioCommit,
    ClientEvent,
    Error,
    ErrorCode,
    InputText,
    Ping,
    PlaybackPosition,
    Pong,
    ProtocolError,
    ResponseCancel,
    ResponseDone,
    ResponseStarted,
    ResponseStatus,
    ServerEvent,
    SessionClose,
    SessionConfig,
    SessionUpdate,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TranscriptPartial,
    decode_client,
    validate_audio_frame,
)

from .asr.base import ASRError
from .asr.stability import LocalAgreement
from .audio import ArrivalClock, InputResampler, float_to_pcm16, pcm16_to_float
from .context import Outbox, ServerContext
from .llm.base import LLMRequest, Message, SpeculativeLLM, request_id
from .llm.speculation import Speculator
from .ratelimit import ErrorThrottle, TokenBucket
from .response import ResponseRun
from .vad import SAMPLE_RATE, VadStream

log = logging.getLogger(__name__)

PARTIAL_EVERY_SAMPLES = SAMPLE_RATE * 300 // 1000
PREROLL_SAMPLES = SAMPLE_RATE  # keeps enough audio before a VAD start for the largest speech_pad_ms


class TurnState(StrEnum):
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"
    SPEAKING = "speaking"


class Session:
    def __init__(self, ctx: ServerContext, outbox: Outbox, session_id: str) -> None:
        self.id = session_id
        self.ctx = ctx
        self.config: SessionConfig = ctx.config.session_defaults
        self._outbox = outbox
        limits = ctx.config.limits
        self._audio_bucket = TokenBucket(limits.max_audio_rate * 1000.0, limits.audio_burst_ms)
        self._text_bucket = TokenBucket(limits.max_text_messages_per_s, limits.text_message_burst)
        self._throttle = ErrorThrottle()
        # bounded: when processing falls behind, the transport stops reading the socket (TCP backpressure)
        self._inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=64)
        self._asr = ctx.asr.open_stream(session_id)
        self._vad = VadStream(ctx.vad, self.config.vad_threshold, self.config.min_silence_ms)
        self._resampler = InputResampler(self.config.input_sample_rate)
        self._receipt_rate = self.config.input_sample_rate
        self._clock = ArrivalClock()
        self._samples_in = 0  # 16 kHz samples received so far: the input audio clock
        self._ring: deque[tuple[int, np.ndarray[Any, Any]]] = deque()  # (start sample, int16 audio)
        self._stability = LocalAgreement()
        self._turn_id = 0
        self._utterance_turn = 0
        self._utterance_open = False
        self._utterance_start = 0
        self._asr_cursor = 0
        self._last_partial_at = 0
        self._asr_failed = False
        self._pending_user_text = ""  # user words whose reply was cut before any of it was heard
        self._history: list[Message] = []
        self._response_seq = 0
        self._response: ResponseRun | None = None
        self._response_task: asyncio.Task[None] | None = None
        self._closing = False
        self._speculator: Speculator | None = None
        if isinstance(ctx.llm, SpeculativeLLM) and ctx.config.llm_speculation:
            self._speculator = Speculator(ctx.llm, session_id, ctx.config.llm_speculation_min_words, ctx.metrics)
        self._frame_in_hand = False  # taken from the inbox, not yet through the VAD
        self.closed = asyncio.Event()  # set when a graceful session.close has finished

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> TurnState:
        if self._utterance_open:
            return TurnState.USER_SPEAKING
        if self._response is not None:
            return TurnState.SPEAKING if self._response.timeline.first_audio else TurnState.THINKING
        return TurnState.LISTENING

    def emit(self, event: ServerEvent) -> None:
        self._outbox.send_event(event)

    def report(self, code: ErrorCode, message: str, fatal: bool = False) -> None:
        self.ctx.metrics.errors.labels(code.value).inc()
        if not fatal:
            admitted, folded = self._throttle.admit(code.value)
            if not admitted:
                return
            if folded:
                message += f" ({folded} more like this in the last second not reported)"
        self.emit(Error(code=code.value, message=message, fatal=fatal))

    # ------------------------------------------------------------------ input from the transport

    async def on_binary(self, frame: bytes) -> None:
        metrics = self.ctx.metrics
        metrics.audio_frames.inc()
        if self._closing:
            metrics.audio_frames_dropped.labels("closing").inc()
            self.report(ErrorCode.SESSION_CLOSED, "audio after session.close is ignored")
            return
        try:
            duration_ms = validate_audio_frame(frame, self._receipt_rate, self.ctx.config.limits)
        except ProtocolError as exc:
            metrics.audio_frames_dropped.labels("invalid").inc()
            self.report(exc.code, exc.message)
            return
        if not self._audio_bucket.try_take(duration_ms):
            metrics.audio_frames_dropped.labels("flood").inc()
            limits = self.ctx.config.limits
            self.report(
                ErrorCode.AUDIO_FLOOD,
                f"audio is arriving faster than {limits.max_audio_rate:g}x real time "
                f"(after a {limits.audio_burst_ms} ms burst); frame dropped: pace frames at real time",
            )
            return
        metrics.audio_seconds.inc(duration_ms / 1000.0)
        queued_at = time.monotonic()
        try:
            await self._inbox.put(("audio", (frame, queued_at)))
        except asyncio.CancelledError:  # the connection ended while the inbox was full
            metrics.audio_frames_dropped.labels("session_ended").inc()
            raise
        # While the inbox was full the transport stopped reading, and the client's real-time audio
        # piled up in the socket: it arrives as a burst that is our doing, not a flood
        blocked_ms = (time.monotonic() - queued_at) * 1000.0
        if blocked_ms > 1.0:
            self._audio_bucket.grant(blocked_ms)

    async def on_text(self, data: str) -> None:
        if not self._text_bucket.try_take(1):
            limits = self.ctx.config.limits
            self.report(
                ErrorCode.RATE_LIMITED,
                f"more than {limits.max_text_messages_per_s:g} text messages per second; message dropped",
            )
            return
        try:
            event = decode_client(data)
        except ProtocolError as exc:
            self.report(exc.code, exc.message)
            return
        await self._on_event(event)

    async def _on_event(self, event: ClientEvent) -> None:
        match event:
            case Ping(id=ping_id):
                self.emit(Pong(id=ping_id))
            case ResponseCancel(response_id=rid):
                self._cancel_from_client(rid)
            case PlaybackPosition(response_id=rid, played_ms=played):
                if self._response is not None and self._response.response_id == rid:
                    self._response.client_played_ms = float(played)
            case SessionClose():
                if not self._closing:
                    self._closing = True
                    await self._inbox.put(("close", None))
            case SessionUpdate() | AudioCommit() | InputText():
                if self._closing:
                    self.report(ErrorCode.SESSION_CLOSED, f"{event.TYPE} after session.close is ignored")
                    return
                if isinstance(event, SessionUpdate) and "input_sample_rate" in event.config:
                    # frames after this message are at the new rate: size them by it from now on
                    self._receipt_rate = event.config["input_sample_rate"]
                # applied in order with the audio before it; timed from its arrival, not its turn in line
                await self._inbox.put(("event", (event, time.monotonic())))

    # ------------------------------------------------------------------ the input task

    async def run(self) -> None:
        """Process input in order until session.close (then finish the reply) or cancellation."""
        try:
            while True:
                kind, item = await self._inbox.get()
                if kind == "audio":
                    frame, arrival = item
                    self._frame_in_hand = True
                    await self._process_audio(frame, arrival)
                elif kind == "event":
                    await self._process_event(*item)
                elif kind == "close":
                    if self._utterance_open:
                        await self._end_utterance(self._samples_in, time.monotonic(), "close")
                    if self._response_task is not None:
                        await asyncio.wait({self._response_task})
                    self.closed.set()
                    return
        finally:
            await self._shutdown()

    async def _process_event(self, event: ClientEvent, arrival: float) -> None:
        if isinstance(event, SessionUpdate):
            self._apply_update(event.config)
        elif isinstance(event, AudioCommit):
            if not self._utterance_open:
                self.report(ErrorCode.NOTHING_TO_COMMIT, "audio.commit while no speech is in progress")
                return
            await self._end_utterance(self._samples_in, arrival, "commit")
            self._vad.force_stop()
        elif isinstance(event, InputText):
            self._turn_id += 1
            if self._speculator is not None:
                self._speculator.begin_turn()  # a typed turn had no speculation of its own
            await self._respond(self._turn_id, event.text, arrival, final_ms=None)

    def _apply_update(self, patch: dict[str, Any]) -> None:
        new = self.config.updated(patch)
        if new.input_sample_rate != self.config.input_sample_rate:
            # everything after the resampler runs at 16 kHz, so a change mid-utterance is safe
            self._resampler = InputResampler(new.input_sample_rate)
        self._vad.threshold = new.vad_threshold
        self._vad.min_silence_samples = new.min_silence_ms * SAMPLE_RATE // 1000
        self.config = new
        self.emit(SessionUpdated(config=new.to_dict()))

    async def _process_audio(self, frame: bytes, arrival: float) -> None:
        started = time.monotonic()
        self.ctx.note_frame_wait(started - arrival, started)
        self.ctx.metrics.observe("frame_wait", started - arrival)
        batcher = self.ctx.vad_batcher
        if batcher is not None:
            # resampling a 100 ms frame costs tens of microseconds: not worth a thread hop
            audio = self._resampler.process(pcm16_to_float(frame))
            probabilities, self._vad.state = await batcher.score(self._vad.take_windows(audio), self._vad.state)
            events = self._vad.apply(probabilities)
        else:
            loop = asyncio.get_running_loop()
            audio, events = await loop.run_in_executor(self.ctx.inference_pool, self._vad_step, frame)
        self.ctx.metrics.observe("vad", time.monotonic() - started)
        self.ctx.metrics.audio_frames_processed.inc()
        self._frame_in_hand = False
        frame_start = self._samples_in
        self._samples_in += len(audio)
        self._clock.add(self._samples_in, arrival)
        self._ring.append((frame_start, float_to_pcm16(audio)))
        while self._ring and self._ring[0][0] + len(self._ring[0][1]) < self._samples_in - PREROLL_SAMPLES:
            self._ring.popleft()
        for event in events:
            if event.kind == "start" and not self._utterance_open:
                await self._begin_utterance(event.sample)
            elif event.kind == "stop" and self._utterance_open:
                detected_at = min(event.sample + self._vad.min_silence_samples, self._samples_in)
                await self._feed_asr(detected_at)
                wall = self._clock.wall_time_of(event.sample) or arrival
                await self._end_utterance(event.sample, wall, "vad")
        if self._utterance_open:
            await self._feed_asr(self._samples_in)
            self._maybe_barge_in()

    def _vad_step(self, frame: bytes) -> tuple[Any, list[Any]]:
        """Off the loop: resample to 16 kHz and run the VAD model."""
        audio = self._resampler.process(pcm16_to_float(frame))
        return audio, self._vad.process(audio)

    def _audio_between(self, start: int, end: int) -> bytes:
        parts = []
        for first, chunk in self._ring:
            lo, hi = max(start, first), min(end, first + len(chunk))
            if lo < hi:
                parts.append(chunk[lo - first : hi - first])
        return np.concatenate(parts).tobytes() if parts else b""

    async def _begin_utterance(self, speech_sample: int) -> None:
        pad = self.config.speech_pad_ms * SAMPLE_RATE // 1000
        oldest = self._ring[0][0] if self._ring else 0
        start = max(speech_sample - pad, oldest, 0)
        self._turn_id += 1
        self._utterance_turn = self._turn_id
        self._utterance_open = True
        self._utterance_start = start
        self._asr_cursor = start
        self._last_partial_at = start
        self._stability.reset()
        self._asr_failed = False
        if self._speculator is not None:
            self._speculator.begin_turn()
        self.emit(SpeechStarted(turn_id=self._utterance_turn, audio_ms=start * 1000 // SAMPLE_RATE))
        try:
            await self._asr.begin()
        except ASRError as exc:
            self._asr_failure(exc)

    async def _feed_asr(self, until: int) -> None:
        if self._asr_failed or until <= self._asr_cursor:
            return
        pcm = self._audio_between(self._asr_cursor, until)
        self._asr_cursor = until
        started = time.monotonic()
        try:
            hypothesis = await self._asr.accept(pcm)
        except ASRError as exc:
            self._asr_failure(exc)
            return
        self.ctx.metrics.observe("asr", time.monotonic() - started)
        if self._asr_cursor - self._last_partial_at >= PARTIAL_EVERY_SAMPLES and hypothesis:
            self._last_partial_at = self._asr_cursor
            stable = self._asr.stable_text  # engines that know their stable prefix say so
            if stable is None:
                stable = self._stability.update(hypothesis)
            partial = TranscriptPartial(self._utterance_turn, hypothesis, stable, self._asr.metadata)
            self.emit(partial)
            # not while a reply plays: its end changes the conversation the prefix starts with
            if self._speculator is not None and stable and self._response is None:
                self._speculator.offer(self._conversation(), self._user_text(stable))

    def _asr_failure(self, exc: Exception) -> None:
        log.error("session %s: ASR failed: %s", self.id, exc)
        self._asr_failed = True
        self.report(ErrorCode.INTERNAL_ERROR, "speech recognition failed for this turn; keep talking to retry")

    def _maybe_barge_in(self) -> None:
        if self._response is None:
            return
        heard_ms = (self._samples_in - self._utterance_start) * 1000 / SAMPLE_RATE
        if heard_ms >= self.config.min_interrupt_ms + self.config.speech_pad_ms:
            self._cancel_response("barge-in")

    async def _end_utterance(self, end_sample: int, speech_end_wall: float, source: str) -> None:
        self._utterance_open = False
        turn = self._utterance_turn
        self.emit(SpeechStopped(turn_id=turn, audio_ms=end_sample * 1000 // SAMPLE_RATE))
        self._vad.reset_model_state()
        started = time.monotonic()
        text = ""
        if not self._asr_failed:
            try:
                text = (await self._asr.finalize()).strip()
            except ASRError as exc:
                self._asr_failure(exc)
        self.ctx.metrics.observe("asr_final", time.monotonic() - started)
        self.ctx.metrics.turns.labels(source).inc()
        now = time.monotonic()
        self.emit(TranscriptFinal(turn_id=turn, text=text, metadata=self._asr.metadata))
        if not text and self._speculator is not None:
            self._speculator.settle("")  # nothing to answer: drop any speculation still running
        if text:
            await self._respond(turn, text, speech_end_wall, final_ms=(now - speech_end_wall) * 1000.0)

    # ------------------------------------------------------------------ responses

    async def _respond(self, turn_id: int, user_text: str, speech_end: float, final_ms: float | None) -> None:
        self._cancel_response("new turn")
        if self._response_task is not None:
            await asyncio.wait({self._response_task})
        self._response_seq += 1
        response_id = f"resp_{self._response_seq}"
        user_text = self._user_text(user_text)
        self._pending_user_text = ""
        messages = [*self._conversation(), Message("user", user_text)]
        prefills = aborted = 0
        if self._speculator is not None and isinstance(self.ctx.llm, SpeculativeLLM):
            self._speculator.settle(self.ctx.llm.final_prompt(messages))
            prefills, aborted = self._speculator.turn_prefills, self._speculator.turn_aborted
        run = ResponseRun(
            self.ctx,
            self._outbox,
            LLMRequest(messages=messages, request_id=request_id(self.id, self._response_seq), session_id=self.id),
            response_id,
            self.config.output_sample_rate,
            self.config.voice,
            self.config.audio_output,
        )
        run.usage.speculative_prefills = prefills
        run.usage.extra["speculative_aborted"] = aborted
        self._response = run
        self.emit(ResponseStarted(turn_id=turn_id, response_id=response_id))
        self._response_task = asyncio.create_task(
            self._run_response(run, user_text, speech_end, final_ms), name=f"{self.id}-{response_id}"
        )

    def _conversation(self) -> list[Message]:
        """System instructions and the finished turns, as the LLM sees them."""
        messages = [Message("system", self.config.instructions)] if self.config.instructions else []
        return messages + self._history[-self.ctx.config.max_history_messages :]

    def _user_text(self, text: str) -> str:
        return f"{self._pending_user_text} {text}".strip()

    async def _run_response(self, run: ResponseRun, user_text: str, speech_end: float, final_ms: float | None) -> None:
        status = ResponseStatus.COMPLETED
        try:
            await run.run()
            if run.failure is not None:
                status = ResponseStatus.FAILED
                self.report(ErrorCode.LLM_UNAVAILABLE, f"the language model did not answer: {run.failure}")
        except asyncio.CancelledError:
            status = ResponseStatus.CANCELLED
        except Exception as exc:  # an engine failed: this reply is lost, the session goes on
            log.exception("session %s: %s failed", self.id, run.response_id)
            status = ResponseStatus.FAILED
            self.report(ErrorCode.RESPONSE_FAILED, f"{run.response_id} failed: {type(exc).__name__}: {exc}")
        finally:
            self._finish_response(run, status, user_text, speech_end, final_ms)

    def _finish_response(
        self, run: ResponseRun, status: ResponseStatus, user_text: str, speech_end: float, final_ms: float | None
    ) -> None:
        heard = run.text if status == ResponseStatus.COMPLETED else run.heard_text()
        if status == ResponseStatus.FAILED:
            self._pending_user_text = user_text  # the model never heard it: ask again with the next turn
        elif heard:
            self._history += [Message("user", user_text), Message("assistant", heard)]
        else:  # nothing was heard: fold the user's words into their next turn
            self._pending_user_text = user_text
        tl = run.timeline

        def since_speech_end(t: float | None) -> int | None:
            return None if t is None else round((t - speech_end) * 1000.0)

        metrics = {
            "final_ms": None if final_ms is None else round(final_ms),
            "first_token_ms": since_speech_end(tl.first_token),
            "first_audio_ms": since_speech_end(tl.first_audio),
            "prompt_tokens": run.usage.prompt_tokens,
            "cached_tokens": run.usage.cached_tokens,
            "speculative_prefills": run.usage.speculative_prefills,
            "speculative_aborted": run.usage.extra.get("speculative_aborted", 0),
            "audio_ms": round(tl.audio_sent_ms),
        }
        observe = self.ctx.metrics.observe
        if final_ms is not None:  # typed turns have no transcript to wait for
            observe("final", final_ms / 1000.0)
        for stage, value in (("first_token", metrics["first_token_ms"]), ("first_audio", metrics["first_audio_ms"])):
            if isinstance(value, int):
                observe(stage, value / 1000.0)
        self.ctx.metrics.responses.labels(status.value).inc()
        self.ctx.metrics.llm_tokens.labels("prompt").inc(run.usage.prompt_tokens)
        self.ctx.metrics.llm_tokens.labels("cached").inc(run.usage.cached_tokens)
        self.emit(ResponseDone(response_id=run.response_id, status=status.value, text=heard, metrics=metrics))
        if self._response is run:
            self._response = None
            self._response_task = None

    def _cancel_response(self, reason: str) -> bool:
        task = self._response_task
        # once is enough: cancelling again would cut the reply's own clean-up (its abort on the LLM)
        if task is None or task.done() or task.cancelling():
            return False
        response_id = self._response.response_id if self._response else None
        log.info("session %s: cancelling %s while %s (%s)", self.id, response_id, self.state, reason)
        task.cancel()
        return True

    def _cancel_from_client(self, response_id: str | None) -> None:
        current = self._response
        if current is None or (response_id is not None and response_id != current.response_id):
            which = f"response {response_id}" if response_id else "response"
            self.report(ErrorCode.NO_ACTIVE_RESPONSE, f"no {which} in progress to cancel")
            return
        self._cancel_response("response.cancel")

    # ------------------------------------------------------------------ teardown

    def _drop_queued_frames(self) -> int:
        dropped = 0
        while not self._inbox.empty():
            dropped += self._inbox.get_nowait()[0] == "audio"
        return dropped

    async def _shutdown(self) -> None:
        # frames still queued when the session ends (a disconnect mid-stream) are counted, not lost
        unprocessed = self._drop_queued_frames() + self._frame_in_hand
        if unprocessed:
            self.ctx.metrics.audio_frames_dropped.labels("session_ended").inc(unprocessed)
        if self._speculator is not None:
            await self._speculator.close()
        if self._response_task is not None:
            self._response_task.cancel()
            # wait without awaiting the task itself: a second cancel of *this* task must not be eaten
            await asyncio.wait({self._response_task})
        await self._asr.close()
