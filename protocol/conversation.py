"""The hark.v1 conversation as a client sees it, sans-IO: turns, utterances, responses, reply audio.

Feed a `ConversationTracker` every decoded server event (`feed`) and the byte count of every binary
frame (`audio`), in arrival order, each with the caller's clock reading. It keeps what a client needs
to know about the conversation and raises `ConversationError` on anything the contract does not
allow at that point (PROTOCOL.md, "Order within a turn"). It reads no clock and no socket, so the
reference client, the load harness and the benchmarks share one reading of the rules.

The rules it checks:
- turn ids only increase: `speech.started` opens a new turn, `response.started` names the turn it
  answers (a spoken one whose `transcript.final` has arrived, or a new typed one); the one exception
  is a joined turn: `speech.started` with the last turn's id while its reply is cancelled or still
  going (speech that resumed right after the turn ended continues it: a second utterance, a second
  `transcript.final` with the whole turn's text, and a new response in place of the cancelled one);
- one utterance at a time: `speech.started` -> `transcript.partial`* -> `speech.stopped` ->
  `transcript.final`, each once (partials only before the stop);
- one response at a time, each id once, at most one per turn; its text deltas, function calls,
  audio events and `response.done` name a started response that is not done yet;
- reply audio (binary frames, even byte counts) belongs to the response announced by the last
  `response.audio.started`, until its `response.audio.done` or `response.done`.
Not checked here: field values (the codec's job) and what transcripts say (e.g. that `stable_text`
only grows, which engines may render differently).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from . import events as ev  # the wire events, apart from the records this module keeps
from .audio import BYTES_PER_SAMPLE
from .errors import ErrorCode, ProtocolError


class Violation(StrEnum):
    """Which conversation rule a server event broke (stable names, for code and reports)."""

    AUDIO_WITHOUT_RESPONSE = "audio_without_response"  # reply audio with no response audio in progress
    BAD_AUDIO_FRAME = "bad_audio_frame"  # an empty reply-audio frame or an odd byte count
    UNKNOWN_RESPONSE = "unknown_response"  # names a response that never started
    DUPLICATE_RESPONSE = "duplicate_response"  # response.started with an id already used
    OVERLAPPING_RESPONSE = "overlapping_response"  # response.started before the current one is done
    RESPONSE_ENDED = "response_ended"  # an event for a response after its response.done
    TURN_ANSWERED = "turn_answered"  # a second response for one turn
    AUDIO_NOT_STARTED = "audio_not_started"  # response.audio.done without response.audio.started
    AUDIO_ALREADY_STARTED = "audio_already_started"  # a second response.audio.started
    AUDIO_ENDED = "audio_ended"  # a second response.audio.done
    UNKNOWN_TURN = "unknown_turn"  # a transcript or speech.stopped for a turn with no speech.started
    TURN_OUT_OF_ORDER = "turn_out_of_order"  # a new turn id not above every earlier one
    UTTERANCE_OPEN = "utterance_open"  # what needs speech.stopped (or transcript.final) came before it
    UTTERANCE_STOPPED = "utterance_stopped"  # a partial or speech.stopped after the turn's speech.stopped
    DUPLICATE_FINAL = "duplicate_final"  # a second transcript.final for one turn


class ConversationError(ProtocolError):
    """A server event or reply-audio frame the hark.v1 conversation rules do not allow at this point.

    A `ProtocolError` with code `invalid_event`; `violation` names the rule. The tracker is left as it
    was before the offending event, so a caller that only reports the error can go on feeding it.
    """

    def __init__(self, violation: Violation, message: str) -> None:
        super().__init__(ErrorCode.INVALID_EVENT, f"{violation.value}: {message}")
        self.violation = violation


@dataclass(slots=True)
class Utterance:
    """What the user said in one spoken turn, as the server segmented and transcribed it."""

    turn_id: int
    start_audio_ms: int  # speech.started.audio_ms: the turn's audio start on the input clock
    started_at: float
    stop_audio_ms: int | None = None  # speech.stopped.audio_ms: where the speech ended
    stopped_at: float | None = None
    partials: list[ev.TranscriptPartial] = field(default_factory=list)
    final: ev.TranscriptFinal | None = None
    final_at: float | None = None
    joins: Utterance | None = None  # a joined turn: the utterance (and final) this one continues

    @property
    def stopped(self) -> bool:
        return self.stop_audio_ms is not None

    @property
    def text(self) -> str | None:
        """The final transcript ("" when nothing intelligible was said); None until it arrives."""
        return None if self.final is None else self.final.text


@dataclass(slots=True)
class TrackedResponse:
    """One response (one `response_id`) from response.started to response.done, with its reply audio."""

    response_id: str
    turn_id: int
    started_at: float
    deltas: list[str] = field(default_factory=list)
    first_delta_at: float | None = None
    sample_rate: int | None = None  # from response.audio.started; None while no audio was announced
    audio_started_at: float | None = None
    audio_bytes: int = 0
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (arrival, bytes) of each audio frame
    audio_done: ev.ResponseAudioDone | None = None
    done: ev.ResponseDone | None = None
    done_at: float | None = None
    errors: list[ev.Error] = field(default_factory=list)  # error events that arrived while it was current
    function_calls: list[ev.ResponseFunctionCall] = field(default_factory=list)  # client tools it called

    @property
    def text(self) -> str:
        """The reply text: the server's final text once done, else what streamed so far."""
        return self.done.text if self.done is not None else "".join(self.deltas)

    @property
    def status(self) -> str | None:
        """completed | cancelled | failed; None while in progress."""
        return None if self.done is None else self.done.status

    @property
    def metrics(self) -> Mapping[str, Any]:
        """response.done.metrics as sent ({} while in progress)."""
        return {} if self.done is None else self.done.metrics

    def metric(self, name: str) -> float | None:
        """A numeric metric of response.done (None when absent, null or not a number)."""
        value = self.metrics.get(name)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    @property
    def first_audio_at(self) -> float | None:
        return self.arrivals[0][0] if self.arrivals else None

    @property
    def audio_ms(self) -> float:
        """Reply audio received, in ms (0 before any arrived)."""
        if not self.sample_rate:
            return 0.0
        return self.audio_bytes / BYTES_PER_SAMPLE * 1000.0 / self.sample_rate

    def chunk_seconds(self) -> list[tuple[float, float]]:
        """The audio frames as (arrival, seconds of audio), e.g. to simulate their playback."""
        rate = self.sample_rate or 1  # set once audio arrived (the codec refuses rates below 1)
        return [(at, n / BYTES_PER_SAMPLE / rate) for at, n in self.arrivals]


@dataclass(slots=True)
class Turn:
    """One turn id: a spoken turn (with its utterance) or a typed one (`input.text`), and its response."""

    turn_id: int
    utterance: Utterance | None = None  # None for a typed turn
    response: TrackedResponse | None = None

    @property
    def settled(self) -> bool:
        """Nothing more will come for it: transcribed, and answered if there were words to answer."""
        u = self.utterance
        if u is not None:
            if u.final is None:
                return False
            if not u.final.text:
                return True  # nothing intelligible: no response follows
        return self.response is not None and self.response.done is not None


class ConversationTracker:
    """The state of one hark.v1 conversation, fed the server's events in order; it raises on violations.

    `feed(event, at)` takes every decoded server event (session.*, pong and other events that do not
    shape the conversation are counted and otherwise ignored) and returns the response it concerns,
    if any; `audio(n_bytes, at)` takes every reply-audio frame and returns the response it belongs to.
    `at` is the caller's clock (seconds, any epoch): the tracker only stores it.

    With `history`, only the last `history` turns (and errors) are kept: older settled turns and their
    responses are forgotten, so a long session holds bounded memory. The rules hold either way.
    """

    def __init__(self, history: int | None = None) -> None:
        if history is not None and history < 1:
            raise ValueError(f"history must be at least 1 turn, got {history}")
        self.history = history
        self.turns: dict[int, Turn] = {}  # by turn id, in the order they began
        self.responses: dict[str, TrackedResponse] = {}  # by response id, in the order they started
        self.errors: list[ev.Error] = []
        self.current: TrackedResponse | None = None  # started and not done
        self.open_utterance: Utterance | None = None  # speech.started, no speech.stopped yet
        self.audio_owner: TrackedResponse | None = None  # where a binary frame goes now
        self.last_turn_id = 0
        self.event_count = 0
        self.audio_frames = 0
        self.audio_bytes = 0
        self._forgotten: set[str] = set()  # ids of responses dropped by `history`: still used, still ended

    def turn(self, turn_id: int) -> Turn | None:
        return self.turns.get(turn_id)

    def response(self, response_id: str) -> TrackedResponse | None:
        return self.responses.get(response_id)

    # ------------------------------------------------------------ input

    def feed(self, event: ev.ServerEvent, at: float) -> TrackedResponse | None:
        """Record one server event; returns the response it concerns (for `error`: the current one)."""
        result: TrackedResponse | None = None
        match event:
            case ev.SpeechStarted():
                self._speech_started(event, at)
            case ev.TranscriptPartial():
                self._partial(event)
            case ev.SpeechStopped():
                self._speech_stopped(event, at)
            case ev.TranscriptFinal():
                self._final(event, at)
                self._forget_old_turns()
            case ev.ResponseStarted():
                result = self._response_started(event, at)
            case ev.ResponseTextDelta():
                result = self._live(event.response_id, "response.text.delta")
                if result.first_delta_at is None:
                    result.first_delta_at = at
                result.deltas.append(event.delta)
            case ev.ResponseFunctionCall():
                result = self._live(event.response_id, "response.function_call")
                result.function_calls.append(event)
            case ev.ResponseAudioStarted():
                result = self._audio_started(event, at)
            case ev.ResponseAudioDone():
                result = self._audio_finished(event)
            case ev.ResponseDone():
                result = self._live(event.response_id, "response.done")
                result.done, result.done_at = event, at
                self.current = None  # the live response is the current one: there is one at a time
                if self.audio_owner is result:
                    self.audio_owner = None
                self._forget_old_turns()
            case ev.Error():
                self.errors.append(event)
                if self.history is not None and len(self.errors) > self.history:
                    del self.errors[0]
                result = self.current
                if result is not None:
                    result.errors.append(event)
        self.event_count += 1
        return result

    def audio(self, n_bytes: int, at: float) -> TrackedResponse:
        """Record one reply-audio frame of `n_bytes`; returns the response it belongs to."""
        if n_bytes <= 0 or n_bytes % BYTES_PER_SAMPLE:
            raise ConversationError(
                Violation.BAD_AUDIO_FRAME, f"a reply-audio frame of {n_bytes} bytes (PCM16 needs a positive even count)"
            )
        owner = self.audio_owner
        if owner is None:
            raise ConversationError(
                Violation.AUDIO_WITHOUT_RESPONSE,
                "a reply-audio frame while no response audio is in progress "
                "(none announced by response.audio.started, or it already ended)",
            )
        owner.audio_bytes += n_bytes
        owner.arrivals.append((at, n_bytes))
        self.audio_frames += 1
        self.audio_bytes += n_bytes
        return owner

    # ------------------------------------------------------------ the user's turns

    def _speech_started(self, event: ev.SpeechStarted, at: float) -> None:
        if self.open_utterance is not None:
            raise ConversationError(
                Violation.UTTERANCE_OPEN,
                f"speech.started for turn {event.turn_id} while turn {self.open_utterance.turn_id} "
                "has had no speech.stopped",
            )
        joined = self.turns.get(event.turn_id) if event.turn_id == self.last_turn_id else None
        if joined is not None and self._joinable(joined):
            assert joined.utterance is not None
            utterance = Utterance(event.turn_id, event.audio_ms, at, joins=joined.utterance)
            joined.utterance = utterance
            self.open_utterance = utterance
            return
        self._check_new_turn(event.turn_id, "speech.started")
        utterance = Utterance(event.turn_id, event.audio_ms, at)
        self.turns[event.turn_id] = Turn(event.turn_id, utterance)
        self.open_utterance = utterance
        self.last_turn_id = event.turn_id

    @staticmethod
    def _joinable(turn: Turn) -> bool:
        """Speech may join `turn`: spoken and transcribed, and its reply (if any) not completed."""
        u, r = turn.utterance, turn.response
        return u is not None and u.final is not None and (r is None or r.done is None or r.status == "cancelled")

    def _partial(self, event: ev.TranscriptPartial) -> None:
        utterance = self._utterance(event.turn_id, "transcript.partial")
        if utterance.stopped:
            raise ConversationError(
                Violation.UTTERANCE_STOPPED, f"transcript.partial for turn {event.turn_id} after its speech.stopped"
            )
        utterance.partials.append(event)

    def _speech_stopped(self, event: ev.SpeechStopped, at: float) -> None:
        utterance = self._utterance(event.turn_id, "speech.stopped")
        if utterance.stopped:
            raise ConversationError(Violation.UTTERANCE_STOPPED, f"a second speech.stopped for turn {event.turn_id}")
        utterance.stop_audio_ms, utterance.stopped_at = event.audio_ms, at
        self.open_utterance = None  # one utterance is open at a time, so it was this one

    def _final(self, event: ev.TranscriptFinal, at: float) -> None:
        utterance = self._utterance(event.turn_id, "transcript.final")
        if not utterance.stopped:
            raise ConversationError(
                Violation.UTTERANCE_OPEN, f"transcript.final for turn {event.turn_id} before its speech.stopped"
            )
        if utterance.final is not None:
            raise ConversationError(Violation.DUPLICATE_FINAL, f"a second transcript.final for turn {event.turn_id}")
        utterance.final, utterance.final_at = event, at

    def _utterance(self, turn_id: int, what: str) -> Utterance:
        turn = self.turns.get(turn_id)
        if turn is None or turn.utterance is None:
            raise ConversationError(Violation.UNKNOWN_TURN, f"{what} for turn {turn_id}, which had no speech.started")
        return turn.utterance

    def _check_new_turn(self, turn_id: int, what: str) -> None:
        if turn_id <= self.last_turn_id:
            raise ConversationError(
                Violation.TURN_OUT_OF_ORDER,
                f"{what} opens turn {turn_id}, but turn ids only increase (the last was {self.last_turn_id})",
            )

    # ------------------------------------------------------------ responses

    def _response_started(self, event: ev.ResponseStarted, at: float) -> TrackedResponse:
        rid = event.response_id
        if rid in self.responses or rid in self._forgotten:
            raise ConversationError(Violation.DUPLICATE_RESPONSE, f"response.started reuses the id {rid}")
        if self.current is not None:
            raise ConversationError(
                Violation.OVERLAPPING_RESPONSE,
                f"response.started for {rid} while {self.current.response_id} has had no response.done",
            )
        turn = self.turns.get(event.turn_id)
        if turn is None:  # a typed turn: a new turn id
            self._check_new_turn(event.turn_id, f"response.started for {rid}")
            turn = Turn(event.turn_id)
        elif turn.response is not None and not self._replaces(turn):
            raise ConversationError(
                Violation.TURN_ANSWERED,
                f"response.started for {rid}: turn {event.turn_id} already got {turn.response.response_id}",
            )
        elif turn.utterance is not None and turn.utterance.final is None:
            raise ConversationError(
                Violation.UTTERANCE_OPEN, f"response.started for {rid} before turn {event.turn_id}'s transcript.final"
            )
        response = TrackedResponse(rid, event.turn_id, at)
        if turn.response is not None and self.history is not None:  # the joined turn's cancelled reply
            del self.responses[turn.response.response_id]
            self._forgotten.add(turn.response.response_id)
        turn.response = response
        self.turns[event.turn_id] = turn
        self.last_turn_id = max(self.last_turn_id, event.turn_id)
        self.responses[rid] = response
        self.current = response
        return response

    @staticmethod
    def _replaces(turn: Turn) -> bool:
        """A joined turn's new response takes the place of its cancelled one."""
        u, r = turn.utterance, turn.response
        return u is not None and u.joins is not None and r is not None and r.status == "cancelled"

    def _live(self, response_id: str, what: str) -> TrackedResponse:
        """The started, not yet done response `response_id` names, or the violation."""
        response = self.responses.get(response_id)
        if response is None and response_id not in self._forgotten:
            raise ConversationError(Violation.UNKNOWN_RESPONSE, f"{what} for {response_id}, which never started")
        if response is None or response.done is not None:
            raise ConversationError(Violation.RESPONSE_ENDED, f"{what} for {response_id} after its response.done")
        return response

    def _audio_started(self, event: ev.ResponseAudioStarted, at: float) -> TrackedResponse:
        response = self._live(event.response_id, "response.audio.started")
        if response.sample_rate is not None:
            raise ConversationError(
                Violation.AUDIO_ALREADY_STARTED, f"a second response.audio.started for {event.response_id}"
            )
        response.sample_rate, response.audio_started_at = event.sample_rate, at
        self.audio_owner = response
        return response

    def _audio_finished(self, event: ev.ResponseAudioDone) -> TrackedResponse:
        response = self._live(event.response_id, "response.audio.done")
        if response.sample_rate is None:
            raise ConversationError(
                Violation.AUDIO_NOT_STARTED,
                f"response.audio.done for {event.response_id} without a response.audio.started",
            )
        if response.audio_done is not None:
            raise ConversationError(Violation.AUDIO_ENDED, f"a second response.audio.done for {event.response_id}")
        response.audio_done = event
        if self.audio_owner is response:
            self.audio_owner = None
        return response

    # ------------------------------------------------------------ memory

    def _forget_old_turns(self) -> None:
        """With `history`: drop the oldest settled turns beyond it (an unsettled one stays until it settles)."""
        if self.history is None:
            return
        excess = len(self.turns) - self.history
        for turn_id in list(self.turns)[:excess] if excess > 0 else ():
            turn = self.turns[turn_id]
            if turn.settled:
                del self.turns[turn_id]
                if turn.response is not None:
                    del self.responses[turn.response.response_id]
                    self._forgotten.add(turn.response.response_id)
