"""One session per connection: the turn state machine, and the only place that orders the stages.

Input side (one task, in arrival order): audio -> `Listener` (resample, VAD) -> `Transcriber`
(ASR, partials) while the user speaks -> `Endpointer` (is the turn over?) -> final transcript ->
response. Output side: a `ResponseRun` per reply. Barge-in: speech that lasts `min_interrupt_ms`
during a reply cancels it and only what the user heard stays in the `History`.

A false end of turn is cheap to undo: speech that resumes within `JOIN_WINDOW_MS` of a `semantic`
end, before anything of the reply was heard, joins the same turn (same `turn_id`): the reply is
cancelled, and when the joined utterance ends the whole turn's text is transcribed and answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

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
    VoiceCreate,
    decode_client,
    validate_audio_frame,
)
from hark.protocol.events import FunctionCallOutput
from hark.protocol.turn_detection import SemanticTurnDetection

from .asr.base import ASRError
from .clarify import ASK_AGAIN, ScriptedReply, is_low_confidence
from .context import Outbox, ServerContext
from .history import History
from .listener import PREROLL_SAMPLES, Listener, samples_of_ms
from .llm.base import LLMRequest, SpeculativeLLM, request_id
from .llm.speculation import Speculator
from .ratelimit import ErrorThrottle, TokenBucket
from .response import ResponseRun
from .session_ops import NO_OVERRIDES, ClearIn, ConversationOps, RespondIn, ResponseOverrides
from .transcriber import Transcriber
from .tts.voice_ops import SessionVoices
from .tts.voices import VoiceError
from .turn.endpoint import Endpointer, EndReason, TurnEnd, create_endpointer
from .turn.features import N_SAMPLES
from .turn.llm_signal import LLMTurnJudge
from .turn.semantic import SemanticEndpointer, TurnSignals
from .vad import SAMPLE_RATE, VadEventKind

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- the input task's inbox


@dataclass(frozen=True, slots=True)
class AudioIn:
    """A validated audio frame, and the wall time it arrived."""

    frame: bytes
    arrival: float


@dataclass(frozen=True, slots=True)
class ClientEventIn:
    """A client event applied in order with the audio before it, timed from its arrival."""

    event: SessionUpdate | AudioCommit | InputText | VoiceCreate
    arrival: float


@dataclass(frozen=True, slots=True)
class CloseIn:
    """session.close: end the utterance, let the reply finish, then stop."""


@dataclass(frozen=True, slots=True)
class WakeIn:
    """The endpointer's check of a pause finished: decide now rather than at the next frame."""


InboxMessage = AudioIn | ClientEventIn | CloseIn | WakeIn | RespondIn | ClearIn

# speech this soon after a semantic end, before any of the reply was heard, continues that turn
JOIN_WINDOW_MS = 1500
# a semantic endpointer scores up to the last 8 s of an utterance: the listener keeps that much
TURN_AUDIO_SAMPLES = N_SAMPLES + SAMPLE_RATE


class TurnState(StrEnum):
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    THINKING = "thinking"
    SPEAKING = "speaking"


@dataclass(frozen=True, slots=True)
class _Utterance:
    turn_id: int
    start: int  # input-clock sample, pre-roll included
    joins: _Joinable | None = None  # the semantic end this utterance undoes, when it joins that turn


@dataclass(frozen=True, slots=True)
class _Joinable:
    """A turn that ended by `semantic`, and what joining speech to it needs."""

    turn_id: int
    text: str  # its transcript.final text
    user_text: str  # the user message its reply was asked with (carried words included)
    decided_at: int  # input sample at which the endpointer decided
    audio_from: int  # where the turn's audio starts
    response: ResponseRun


class Session(ConversationOps):
    """One client's conversation, whatever the transport: the turn state machine.

    A transport creates one per connection, calls `on_binary` / `on_text` from its reader (they
    check, rate-limit and queue the input; the bounded inbox makes a slow session push back on the
    socket), runs `run()` as the session's input task, and ends the session by cancelling that
    task, or by a client's `session.close`, after which `run()` returns and `closed` is set. What
    goes to the client goes through the transport's `Outbox`. The session owns its listener,
    transcriber, endpointer, history, speculator and the current `ResponseRun`, and releases them
    all when `run()` ends.
    """

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
        self._inbox: asyncio.Queue[InboxMessage] = asyncio.Queue(maxsize=64)
        self._receipt_rate = self.config.input_sample_rate
        self._speculator: Speculator | None = None
        self._llm_judge: LLMTurnJudge | None = None
        if isinstance(ctx.llm, SpeculativeLLM) and ctx.config.llm_speculation:
            self._speculator = Speculator(ctx.llm, session_id, ctx.config.llm_speculation_min_words, ctx.metrics)
            self._llm_judge = LLMTurnJudge(ctx.llm, self._speculator, session_id)
        self._endpointer = self._create_endpointer(self.config)
        self._listener = Listener(ctx, self.config, self._endpointer.pause_ms, self._endpointer.quiet_ms)
        self._listener.retain_samples = self._retain_samples(self.config)
        self._transcriber = Transcriber(ctx.asr.open_stream(session_id), self._listener, ctx.metrics, self._asr_failed)
        self._history = History(ctx.config.max_history_messages, limits.max_carried_text_chars)
        self._voices = SessionVoices(ctx.tts)
        self._init_conversation_ops()  # session_ops.py: item-level operations (OpenAI Realtime)
        self._turn_id = 0
        self._utterance: _Utterance | None = None
        self._joinable: _Joinable | None = None
        self._joined_replies: set[str] = set()  # replies cancelled because speech joined their turn
        self._response_seq = 0
        self._response: ResponseRun | None = None
        self._response_task: asyncio.Task[None] | None = None
        self._closing = False
        self.closed = asyncio.Event()  # set when a graceful session.close has finished

    @property
    def state(self) -> TurnState:
        if self._utterance is not None:
            return TurnState.USER_SPEAKING
        if self._response is not None:
            return TurnState.SPEAKING if self._response.timeline.first_audio else TurnState.THINKING
        return TurnState.LISTENING

    @property
    def history(self) -> History:
        return self._history

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
        limits = self.ctx.config.limits
        try:
            duration_ms = validate_audio_frame(frame, self._receipt_rate, limits)
        except ProtocolError as exc:
            metrics.audio_frames_dropped.labels("invalid").inc()
            self.report(exc.code, exc.message)
            return
        if not self._audio_bucket.try_take(duration_ms):
            metrics.audio_frames_dropped.labels("flood").inc()
            self.report(
                ErrorCode.AUDIO_FLOOD,
                f"audio is arriving faster than {limits.max_audio_rate:g}x real time "
                f"(after a {limits.audio_burst_ms} ms burst); frame dropped: pace frames at real time",
            )
            return
        metrics.audio_seconds.inc(duration_ms / 1000.0)
        queued_at = time.monotonic()
        try:
            await self._inbox.put(AudioIn(frame, queued_at))
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
            case FunctionCallOutput(call_id=call_id, output=output):
                self.submit_tool_output(call_id, output)
            case PlaybackPosition(response_id=rid, played_ms=played):
                if self._response is not None and self._response.response_id == rid:
                    self._response.client_played_ms = float(played)
            case SessionClose():
                if not self._closing:
                    self._closing = True
                    await self._inbox.put(CloseIn())
            case SessionUpdate() | AudioCommit() | InputText() | VoiceCreate():
                if self._closing:
                    self.report(ErrorCode.SESSION_CLOSED, f"{event.TYPE} after session.close is ignored")
                    return
                if isinstance(event, SessionUpdate) and "input_sample_rate" in event.config:
                    # frames after this message are at the new rate: size them by it from now on
                    self._receipt_rate = event.config["input_sample_rate"]
                await self._inbox.put(ClientEventIn(event, time.monotonic()))

    # ------------------------------------------------------------------ the input task

    async def run(self) -> None:
        """Process input in order until session.close (then finish the reply) or cancellation."""
        try:
            while True:
                match await self._inbox.get():
                    case AudioIn(frame=frame, arrival=arrival):
                        await self._on_audio(frame, arrival)
                    case ClientEventIn(event=SessionUpdate(config=patch)):
                        self._apply_update(patch)
                    case ClientEventIn(event=VoiceCreate() as create):
                        # in order: a session.update naming the new voice right after it finds it
                        try:
                            self.emit(await self._voices.create(create))
                        except VoiceError as exc:
                            self.report(exc.code, exc.message)
                    case ClientEventIn(event=AudioCommit(), arrival=arrival):
                        if self._utterance is None:
                            self.report(ErrorCode.NOTHING_TO_COMMIT, "audio.commit while no speech is in progress")
                        else:
                            await self._end_utterance(self._endpointer.commit(self._listener.samples_in), arrival)
                    case WakeIn():
                        if self._utterance is not None and (
                            end := await self._endpointer.on_progress(self._listener.samples_in)
                        ):
                            await self._end_utterance(end, time.monotonic())
                    case ClientEventIn(event=InputText(text=text), arrival=arrival):
                        self._turn_id += 1
                        self._joinable = None  # a typed turn in between: spoken words no longer join
                        if self._speculator is not None:
                            self._speculator.begin_turn()  # a typed turn had no speculation of its own
                        await self._respond(self._turn_id, text, arrival, final_ms=None, endpoint_ms=None)
                    case RespondIn(overrides=overrides, arrival=arrival):
                        await self._respond(self._turn_id, "", arrival, None, None, overrides)
                    case ClearIn():
                        await self._drop_utterance()
                    case CloseIn():
                        if self._utterance is not None:
                            end = self._endpointer.close(self._listener.samples_in)
                            await self._end_utterance(end, time.monotonic())
                        if self._response_task is not None:
                            await asyncio.wait({self._response_task})
                        self.closed.set()
                        return
        finally:
            await self._shutdown()

    def _apply_update(self, patch: dict[str, Any]) -> None:
        new = self.config.updated(patch)
        if "voice" in patch and (refusal := self._voices.refusal(new.voice)):
            self.report(ErrorCode.UNKNOWN_VOICE, f"{refusal}; nothing of this update was applied")
            return
        if isinstance(new.turn_detection, SemanticTurnDetection) and self.ctx.turn_detector is None:
            self.report(
                ErrorCode.INVALID_FIELD,
                'config.turn_detection: "semantic" is not available on this server (it has no turn model: '
                "it needs `make install`, or --turn-model); nothing of this update was applied",
            )
            return
        try:
            new.check_tool_choice(
                tuple(spec.name for spec in self.ctx.server_tools.specs()) if self.ctx.server_tools else ()
            )
        except ProtocolError as exc:
            self.report(exc.code, f"{exc.message}; nothing of this update was applied")
            return
        if type(new.turn_detection) is not type(self.config.turn_detection):
            endpointer = self._create_endpointer(new)
            endpointer.adopt(self._endpointer)  # the open utterance and a pause under way go on
            self._endpointer = endpointer
            self._listener.retain_samples = self._retain_samples(new)
        else:
            self._endpointer.reconfigure(new)
        self._listener.reconfigure(new, self._endpointer.pause_ms, self._endpointer.quiet_ms)
        self.config = new
        self.emit(SessionUpdated(config=new.to_dict()))

    # ------------------------------------------------------------------ the endpointer's evidence

    def _create_endpointer(self, config: SessionConfig) -> Endpointer:
        detector = self.ctx.turn_detector
        semantic = None
        if detector is not None:
            llm = self._llm_end_probability if self._llm_judge is not None else None
            signals = TurnSignals(detector, self._turn_audio, self._turn_text, self._wake, llm)
            semantic = functools.partial(SemanticEndpointer, signals=signals)
        return create_endpointer(config, self.ctx.config.limits, semantic)

    def _retain_samples(self, config: SessionConfig) -> int:
        # the config is a parameter: on a session.update it is the new one, not yet self.config
        semantic = isinstance(config.turn_detection, SemanticTurnDetection) and self.ctx.turn_detector
        return TURN_AUDIO_SAMPLES if semantic else PREROLL_SAMPLES

    def _turn_audio(self, start: int, end: int) -> bytes:
        return self._listener.audio_between(start, end)

    def _turn_text(self) -> str:
        """The turn's words so far: a joined turn's earlier text, then the recognizer's newest."""
        joined = self._utterance.joins.text if self._utterance and self._utterance.joins else ""
        return f"{joined} {self._transcriber.hypothesis}".strip()

    def _user_words(self, words: str) -> str:
        """The user message so far for `words` of the open utterance (a joined turn's first)."""
        joins = self._utterance.joins if self._utterance else None
        return f"{joins.user_text} {words}".strip() if joins else self._history.user_text(words)

    async def _llm_end_probability(self) -> float | None:
        if self._llm_judge is None or self._response is not None:  # a reply still changes the conversation
            return None
        history = self._history.conversation(self.config.instructions)
        words = self._user_words(self._transcriber.hypothesis)
        return await self._llm_judge.probability(history, words, *self._prompt_tools())

    def _wake(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # a full inbox has frames that ask anyway
            self._inbox.put_nowait(WakeIn())

    async def _on_audio(self, frame: bytes, arrival: float) -> None:
        listener = self._listener
        for event in await listener.feed(frame, arrival):
            if event.kind is VadEventKind.START:
                if self._utterance is None:
                    await self._begin_utterance(event.sample)
                else:
                    self._endpointer.on_speech(event.sample)
            elif event.kind is VadEventKind.QUIET:
                if self._utterance is not None and self._pause_may_end_turn():
                    self._endpointer.on_quiet(event.sample)
            elif event.kind is VadEventKind.RESUMED:
                if self._utterance is not None:
                    self._endpointer.on_resumed()
            elif (
                self._utterance is not None
                and self._pause_may_end_turn()
                and (end := await self._endpointer.on_pause(event.sample))
            ):
                await self._end_utterance(end, listener.wall_time_of(end.speech_end) or arrival)
        if self._utterance is None:
            return
        if (end := await self._endpointer.on_progress(listener.samples_in)) and self._ends_turn(end):
            await self._end_utterance(end, arrival)
            return
        await self._hear(listener.samples_in)
        self.ctx.asr_lag.record(time.monotonic() - arrival)  # for admission: this frame, recognized
        self._maybe_barge_in()

    async def _begin_utterance(self, speech_sample: int) -> None:
        start = self._listener.utterance_start(speech_sample, self.config.speech_pad_ms)
        joins, self._joinable = self._joinable, None
        if joins is not None and not self._can_join(joins, speech_sample):
            joins = None
        if joins is not None:
            turn_id = joins.turn_id  # the semantic end was premature: this speech continues the turn
            self._joined_replies.add(joins.response.response_id)
            self._cancel_response("speech resumed: it joins the turn")
        else:
            self._turn_id += 1
            turn_id = self._turn_id
        self._utterance = _Utterance(turn_id, start, joins)
        self._endpointer.begin(start, joins.audio_from if joins else None)
        if self._speculator is not None:
            self._speculator.begin_turn()
        self.emit(SpeechStarted(turn_id=turn_id, audio_ms=start * 1000 // SAMPLE_RATE))
        await self._transcriber.begin(turn_id, start)

    def _can_join(self, joins: _Joinable, speech_sample: int) -> bool:
        """Speech at `speech_sample` continues `joins`' turn: soon enough, and nothing of its reply heard."""
        run, task = joins.response, self._response_task
        if self._response is not run or task is None or task.done() or task.cancelling():
            return False  # the reply is over (or going): it is in the history now
        if speech_sample - joins.decided_at > samples_of_ms(JOIN_WINDOW_MS):
            return False
        if run.client_played_ms is not None:  # the client's own playback report wins over our pacing
            return run.client_played_ms <= 0
        heard_at = run.timeline.first_audio if self.config.audio_output else run.timeline.first_token
        resumed_at = self._listener.wall_time_of(speech_sample)
        return heard_at is None or (resumed_at is not None and heard_at > resumed_at)

    async def _hear(self, until: int) -> None:
        partial = await self._transcriber.hear(until)
        if partial is None:
            return
        stable = partial.stable_text  # this utterance's own
        joins = self._utterance.joins if self._utterance else None
        if joins is not None and joins.text:  # a joined turn's partials go on from its earlier text
            partial = TranscriptPartial(
                partial.turn_id, f"{joins.text} {partial.text}", f"{joins.text} {stable}".strip(), partial.metadata
            )
        self.emit(partial)
        # not while a reply plays: its end changes the conversation the prefix starts with
        if self._speculator is not None and stable and self._response is None:
            history = self._history.conversation(self.config.instructions)
            self._speculator.offer(history, self._user_words(stable), *self._prompt_tools())

    def _asr_failed(self, exc: ASRError) -> None:
        log.error("session %s: ASR failed: %s", self.id, exc)
        self.report(ErrorCode.INTERNAL_ERROR, "speech recognition failed for this turn; keep talking to retry")

    def _maybe_barge_in(self) -> None:
        if self._response is None or self._utterance is None or not self._may_interrupt():
            return
        heard_ms = (self._listener.samples_in - self._utterance.start) * 1000 / SAMPLE_RATE
        if heard_ms >= self.config.min_interrupt_ms + self.config.speech_pad_ms:
            self._cancel_response("barge-in")

    async def _end_utterance(self, end: TurnEnd, arrival: float) -> None:
        """The endpointer said the turn is over: the rest of its audio to the ASR, final, reply.

        `arrival`: when what ended it arrived (a frame, audio.commit); a turn that ended at the
        speech end the VAD found is timed from the wall time that audio reached the server."""
        decided = time.monotonic()
        utterance = self._utterance
        assert utterance is not None
        turn, joins = utterance.turn_id, utterance.joins
        speech_end_wall = arrival
        if end.reason in (EndReason.SEMANTIC, EndReason.SILENCE, EndReason.MAX_SILENCE):
            speech_end_wall = self._listener.wall_time_of(end.speech_end) or arrival
        endpoint_ms = max(0.0, (decided - speech_end_wall) * 1000.0)
        await self._hear(end.audio_end)
        self._utterance = None
        self._listener.utterance_ended(end.audio_end)
        probability = None if end.probability is None else round(end.probability, 3)
        self.emit(
            SpeechStopped(
                turn_id=turn,
                audio_ms=end.speech_end * 1000 // SAMPLE_RATE,
                reason=end.reason.value,
                probability=probability,
            )
        )
        own_text = await self._transcriber.finalize()
        self.ctx.metrics.turns.labels(end.reason.value).inc()
        now = time.monotonic()
        self.ctx.final_lag.record(now - decided, now)  # for admission, beside asr_lag
        text = f"{joins.text} {own_text}".strip() if joins else own_text
        confidence = self._transcriber.confidence if own_text else None
        low = is_low_confidence(confidence, self.config.min_asr_confidence)
        self.emit(
            TranscriptFinal(
                turn_id=turn,
                text=text,
                metadata=self._transcriber.metadata,
                confidence=None if confidence is None else round(confidence, 3),
                low_confidence=low,
            )
        )
        if (not text or low) and self._speculator is not None:
            self._speculator.settle("")  # nothing to answer: drop any speculation still running
        if not text:
            return
        if self._holds_turns():  # the client asks for the reply (Realtime create_response: false)
            self._hold_user_turn(turn, text)
            return
        if low:  # clarify.py: ask, do not guess
            await self._ask_again(turn, speech_end_wall, (now - speech_end_wall) * 1000.0, endpoint_ms)
            return
        # a joined turn asks again with everything its first reply was asked with, and the new words
        user_text = f"{joins.user_text} {own_text}".strip() if joins else text
        run, user_message = await self._respond(
            turn, user_text, speech_end_wall, final_ms=(now - speech_end_wall) * 1000.0, endpoint_ms=endpoint_ms
        )
        if end.reason is EndReason.SEMANTIC:
            audio_from = joins.audio_from if joins else utterance.start
            self._joinable = _Joinable(turn, text, user_message, self._listener.samples_in, audio_from, run)

    # ------------------------------------------------------------------ responses

    async def _respond(
        self,
        turn_id: int,
        user_text: str,
        speech_end: float,
        final_ms: float | None,
        endpoint_ms: float | None,
        overrides: ResponseOverrides = NO_OVERRIDES,
    ) -> tuple[ResponseRun, str]:
        """Start the reply to `user_text`; returns its run and the user message it was asked with."""
        self._cancel_response("new turn")
        if self._response_task is not None:
            await asyncio.wait({self._response_task})
        self._response_seq += 1
        response_id = f"resp_{self._response_seq}"
        user_text = self._history.take_user_text(user_text)
        messages = self._conversation_for(user_text, overrides)  # "": a response.create adds no user message
        run = self._new_reply(response_id, request_id(self.id, self._response_seq), messages, overrides)
        self._response = run
        self.emit(ResponseStarted(turn_id=turn_id, response_id=response_id))
        task = asyncio.create_task(run.run(), name=f"{self.id}-{response_id}")
        # a callback, not a `finally` in the task: a task cancelled before its first step (a newer
        # turn right behind this one) never runs its body, and response.done must still go out
        task.add_done_callback(lambda _: self._finish_response(run, task, user_text, speech_end, final_ms, endpoint_ms))
        self._response_task = task
        return run, user_text

    def _status_of(self, run: ResponseRun, task: asyncio.Task[None]) -> ResponseStatus:
        if task.cancelled():
            return ResponseStatus.CANCELLED
        exc = task.exception()
        if exc is not None:  # an engine failed: this reply is lost, the session goes on
            log.error("session %s: %s failed", self.id, run.response_id, exc_info=exc)
            self.report(ErrorCode.RESPONSE_FAILED, f"{run.response_id} failed: {type(exc).__name__}: {exc}")
            return ResponseStatus.FAILED
        if run.failure is not None:
            self.report(ErrorCode.LLM_UNAVAILABLE, f"the language model did not answer: {run.failure}")
            return ResponseStatus.FAILED
        if run.tool_failure is not None:
            self.report(run.tool_failure.code, run.tool_failure.message)
            return ResponseStatus.FAILED
        return ResponseStatus.COMPLETED

    def _finish_response(
        self,
        run: ResponseRun,
        task: asyncio.Task[None],
        user_text: str,
        speech_end: float,
        final_ms: float | None,
        endpoint_ms: float | None,
    ) -> None:
        status = self._status_of(run, task)
        heard = run.text if not self._was_cut(run) and status == ResponseStatus.COMPLETED else run.heard_text()
        if run.response_id in self._joined_replies:
            # speech joined its turn before any of it was heard: the joined turn asks with these words
            self._joined_replies.discard(run.response_id)
            heard = ""
        elif (status != ResponseStatus.FAILED and heard) or run.exchanges:  # tool calls that ran stay
            self._record_exchange(run, user_text, heard)
        else:  # the model never answered, or nothing of it was heard: ask again with the next turn
            self._history.carry(user_text)
        self._emit_done(run, status, heard, speech_end, final_ms, endpoint_ms)

    def _emit_done(
        self,
        run: ResponseRun,
        status: ResponseStatus,
        heard: str,
        speech_end: float,
        final_ms: float | None,
        endpoint_ms: float | None,
    ) -> None:
        """response.done with the turn's metrics; the session is free for the next reply."""
        metrics = run.record_done(status, speech_end, final_ms)
        metrics["endpoint_ms"] = None if endpoint_ms is None else round(endpoint_ms)
        self.emit(ResponseDone(response_id=run.response_id, status=status, text=heard, metrics=metrics))
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
        if self._response is not None and self._response.tools is not None:  # a client running a call is told why
            self._response.tools.cancel_reason = "barge-in" if reason == "barge-in" else "cancelled"
        task.cancel()
        return True

    def _cancel_from_client(self, response_id: str | None) -> None:
        current = self._response
        if current is None or (response_id is not None and response_id != current.response_id):
            which = f"response {response_id}" if response_id else "response"
            self.report(ErrorCode.NO_ACTIVE_RESPONSE, f"no {which} in progress to cancel")
            return
        self._cancel_response("response.cancel")

    async def _ask_again(self, turn_id: int, speech_end: float, final_ms: float, endpoint_ms: float | None) -> None:
        """The reply to a turn the recognizer was unsure of (clarify.py): the server's own question,
        spoken like any reply (barge-in cancels it); neither it nor the unsure words enter the
        conversation, and words carried from an earlier turn stay carried."""
        self._cancel_response("new turn")
        if self._response_task is not None:
            await asyncio.wait({self._response_task})
        self._response_seq += 1
        response_id = f"resp_{self._response_seq}"
        request = LLMRequest(messages=[], request_id=request_id(self.id, self._response_seq), session_id=self.id)
        config = self.config
        run = ResponseRun(
            self.ctx, self._outbox, request, response_id, config.output_sample_rate, config.voice, config.audio_output
        )
        run.llm = ScriptedReply(ASK_AGAIN)
        self._response = run
        self.emit(ResponseStarted(turn_id=turn_id, response_id=response_id))
        task = asyncio.create_task(run.run(), name=f"{self.id}-{response_id}")
        task.add_done_callback(lambda _: self._finish_ask_again(run, task, speech_end, final_ms, endpoint_ms))
        self._response_task = task

    def _finish_ask_again(
        self, run: ResponseRun, task: asyncio.Task[None], speech_end: float, final_ms: float, endpoint_ms: float | None
    ) -> None:
        status = self._status_of(run, task)
        heard = run.text if status == ResponseStatus.COMPLETED else run.heard_text()
        self._emit_done(run, status, heard, speech_end, final_ms, endpoint_ms)

    # ------------------------------------------------------------------ teardown

    def _drop_queued_frames(self) -> int:
        dropped = 0
        while not self._inbox.empty():
            dropped += isinstance(self._inbox.get_nowait(), AudioIn)
        return dropped

    async def _shutdown(self) -> None:
        # frames still queued when the session ends (a disconnect mid-stream) are counted, not lost
        unprocessed = self._drop_queued_frames() + self._listener.frame_in_flight
        if unprocessed:
            self.ctx.metrics.audio_frames_dropped.labels("session_ended").inc(unprocessed)
        self._endpointer.release()
        if self._llm_judge is not None:
            await self._llm_judge.close()
        if self._speculator is not None:
            await self._speculator.close()
        if self._response_task is not None:
            self._response_task.cancel()
            # wait without awaiting the task itself: a second cancel of *this* task must not be eaten
            await asyncio.wait({self._response_task})
        await self._transcriber.close()
