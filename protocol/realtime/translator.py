"""OpenAI Realtime <-> hark.v1, sans-IO: one translator per connection, onto the same Session.

Input: `receive_text` parses one Realtime client event and returns session operations (ops.py) for
the Session plus Realtime events to send at once (acks, errors). Output: `on_server_event` takes the
hark.v1 events the Session emits and `on_reply_audio` its reply PCM, and return the Realtime events,
in the order of ../shared/notes/openai-realtime.md, with ids, `previous_item_id` chains and content
indexes. No sockets, no clocks, no tasks.

What the translator expects of the Session (the transport's wiring):
- apply `setup_ops()` before any client op (the wire rates: 24 kHz PCM in and out);
- report each ended user turn with `speech.stopped` then `transcript.final`, a client `CommitAudio`
  included (its item id is the op's `item_id`); in manual mode (turn_detection null) with exactly one
  `speech.stopped` per commit;
- start responses in the order of `CreateResponse` ops (a pending request's modalities and metadata
  go to the next `response.started`).
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import string
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..codec import MAX_MESSAGE_BYTES
from ..config import SessionConfig
from ..events import (
    Error,
    ResponseAudioDone,
    ResponseAudioStarted,
    ResponseDone,
    ResponseStarted,
    ResponseTextDelta,
    ServerEvent,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    TranscriptPartial,
)
from . import requests
from .audio_io import InputAudio, OutputAudio
from .conversation import Conversation, Item
from .errors import RealtimeError, RealtimeErrorCode
from .events import CLIENT_EVENTS, UNSUPPORTED_EVENTS, Dialect, error_event, wire_name
from .formats import AudioFormat
from .ops import (
    AddAssistantText,
    AddSystemText,
    AddUserText,
    AppendAudio,
    CancelResponse,
    ClearAudio,
    CommitAudio,
    CreateResponse,
    DeleteItem,
    SessionOp,
    TruncateItem,
    UpdateConfig,
)
from .session_config import RealtimeSession, plan_update

Event = dict[str, Any]
MIN_COMMIT_MS = 100  # as OpenAI's service: a shorter buffer is refused
MAX_OPEN_TURNS = 8
_SERVER_SIDE_CODES = {"internal_error", "llm_unavailable", "response_failed", "server_busy", "server_not_ready"}


@dataclass(frozen=True, slots=True)
class Inbound:
    """What one client message produced: ops for the Session, events to send the client now."""

    ops: tuple[SessionOp, ...] = ()
    events: tuple[Event, ...] = ()


def encode(event: Event) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class _Ids:
    """Unique per connection (a random tag) and in order (a counter); no clock."""

    def __init__(self, tag: str | None) -> None:
        alphabet = string.ascii_letters + string.digits
        self._tag = tag if tag is not None else "".join(secrets.choice(alphabet) for _ in range(10))
        self._counter = itertools.count(1)

    def new(self, prefix: str) -> str:
        return f"{prefix}_{self._tag}{next(self._counter):06x}"


@dataclass(slots=True)
class _UserTurn:
    item_id: str
    audio_start_ms: int = 0
    audio_end_ms: int = 0
    committed: bool = False
    sent_text: str = ""  # transcript sent as deltas so far
    held_deltas: list[str] = field(default_factory=list)  # stable text heard before the commit


@dataclass(slots=True)
class _Response:
    id: str
    hark_id: str
    item: Item
    previous_item_id: str | None
    audio: bool
    metadata: dict[str, Any] | None
    max_output_tokens: int | str
    output: OutputAudio | None = None
    audio_done: bool = False
    cancel_requested: bool = False
    user_spoke: bool = False  # speech started while it ran: a cancel was a barge-in
    error: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class _PendingCreate:
    op: CreateResponse
    metadata: dict[str, Any] | None


class RealtimeTranslator:
    def __init__(
        self,
        dialect: Dialect | str = Dialect.GA,
        model: str = "hark",
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        id_tag: str | None = None,
    ) -> None:
        self.dialect = Dialect(dialect)
        self.max_message_bytes = max_message_bytes
        self._ids = _Ids(id_tag)
        hark = SessionConfig().to_dict() | self.setup_patch()
        self.session = RealtimeSession(id=self._ids.new("sess"), model=model, hark=hark)
        self.conversation = Conversation()
        self._input = InputAudio(self.session.input_format)
        self._buffered_ms = 0.0  # appended since the last commit or clear
        self._turns: dict[int, _UserTurn] = {}
        self._open_turn: int | None = None  # speech started, not yet stopped
        self._commit_item: str | None = None  # named by a client commit, not yet seen from the Session
        self._response: _Response | None = None
        self._pending_creates: deque[_PendingCreate] = deque(maxlen=4)
        self._last_event_ids: dict[str, str | None] = {}  # the client event a Session error most likely answers
        self.dropped_audio_bytes = 0  # reply audio with no audio response to carry it

    # ------------------------------------------------------------------ setup

    @staticmethod
    def setup_patch() -> dict[str, Any]:
        return {"input_sample_rate": AudioFormat.PCM.sample_rate, "output_sample_rate": AudioFormat.PCM.sample_rate}

    def setup_ops(self) -> list[SessionOp]:
        """Apply before any client op: the Realtime wire's default rates."""
        return [UpdateConfig(self.setup_patch())]

    # ------------------------------------------------------------------ client -> Session

    def receive_text(self, data: str | bytes) -> Inbound:
        size = _utf8_size(data, self.max_message_bytes)
        if size > self.max_message_bytes:
            return self._refuse(
                RealtimeError(
                    RealtimeErrorCode.MESSAGE_TOO_LARGE,
                    f"message of {size} bytes exceeds {self.max_message_bytes}; send audio in appends of "
                    "at most a second or two",
                ),
                None,
            )
        try:
            obj = json.loads(data, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            return self._refuse(RealtimeError(RealtimeErrorCode.INVALID_JSON, f"not valid UTF-8 JSON: {exc}"), None)
        if _has_lone_surrogate(obj):  # it would come back in an echo that cannot be encoded as UTF-8
            return self._refuse(
                RealtimeError(
                    RealtimeErrorCode.INVALID_JSON, "a string holds an unpaired UTF-16 surrogate (\\ud800-\\udfff)"
                ),
                None,
            )
        event_id = obj.get("event_id") if isinstance(obj, dict) else None
        event_id = event_id if isinstance(event_id, str) and len(event_id) <= 128 else None
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            return self._refuse(
                RealtimeError(
                    RealtimeErrorCode.INVALID_EVENT, "a client event must be a JSON object with a string 'type'"
                ),
                event_id,
            )
        kind: str = obj["type"]
        try:
            if kind in UNSUPPORTED_EVENTS:
                raise RealtimeError(RealtimeErrorCode.UNSUPPORTED_EVENT, f"{kind}: {UNSUPPORTED_EVENTS[kind]}", "type")
            if kind not in CLIENT_EVENTS:
                raise RealtimeError(
                    RealtimeErrorCode.UNKNOWN_EVENT,
                    f"unknown client event type {kind[:64]!r}; known: {', '.join(sorted(CLIENT_EVENTS))}",
                    "type",
                )
            return self._handlers[kind](self, obj, event_id)
        except RealtimeError as exc:
            return self._refuse(exc, event_id)

    def receive_binary(self, data: bytes) -> Inbound:
        return self._refuse(
            RealtimeError(
                RealtimeErrorCode.BINARY_FRAME_NOT_SUPPORTED,
                f"a binary frame of {len(data)} bytes: the Realtime API sends audio as base64 in "
                "input_audio_buffer.append text events",
            ),
            None,
        )

    def _session_update(self, obj: dict[str, Any], event_id: str | None) -> Inbound:
        if "session" not in obj:
            raise RealtimeError(
                RealtimeErrorCode.MISSING_REQUIRED_PARAMETER, "session.update: missing 'session'", "session"
            )
        plan = plan_update(obj["session"], self.session, event_id)
        if plan.session.input_format is not self.session.input_format:
            self._input = InputAudio(plan.session.input_format)
        self.session = plan.session
        ops: list[SessionOp] = [UpdateConfig(plan.patch, event_id)] if plan.patch else []
        ops += plan.ops
        self._last_event_ids["update"] = event_id
        events = [self._error(refusal, event_id) for refusal in plan.refusals]
        events.append(self._event("session.updated", session=self.session.render(self.dialect)))
        return Inbound(tuple(ops), tuple(events))

    def _append(self, obj: dict[str, Any], event_id: str | None) -> Inbound:
        wire = requests.decode_audio(obj)
        frames = self._input.frames(wire)
        self._buffered_ms += len(wire) / self._input.format.bytes_per_sample * 1000.0 / self._input.rate
        return Inbound(tuple(AppendAudio(frame, event_id) for frame in frames))

    def _commit(self, obj: dict[str, Any], event_id: str | None) -> Inbound:
        if self._buffered_ms < MIN_COMMIT_MS:
            raise RealtimeError(
                RealtimeErrorCode.INPUT_AUDIO_BUFFER_COMMIT_EMPTY,
                f"input_audio_buffer.commit: the buffer holds {self._buffered_ms:.0f} ms of audio; "
                f"a commit needs at least {MIN_COMMIT_MS} ms",
            )
        ops: list[SessionOp] = [AppendAudio(frame, event_id) for frame in self._input.flush()]
        open_turn = self._turns.get(self._open_turn) if self._open_turn is not None else None
        item_id = open_turn.item_id if open_turn is not None else self._ids.new("item")
        if open_turn is None:
            self._commit_item = item_id
        td = self.session.turn_detection
        ops.append(CommitAudio(item_id, respond=td is not None and td.create_response, event_id=event_id))
        self._buffered_ms = 0.0
        self._last_event_ids["commit"] = event_id
        return Inbound(tuple(ops))

    def _clear(self, obj: dict[str, Any], event_id: str | None) -> Inbound:
        self._input.clear()
        self._buffered_ms = 0.0
        self._commit_item = None
        return Inbound((ClearAudio(event_id),), (self._event("input_audio_buffer.cleared"),))

    def _item_create(self, obj: dict[str, Any], event_id: str | None) -> Inbound:
        message = requests.parse_item_create(obj)
        last = self.conversation.last_id()
        if message.previous_item_id not in (None, last) and not (message.previous_item_id == "root" and last is None):
            raise RealtimeError(
                RealtimeErrorCode.UNSUPPORTED_FEATURE,
                "conversation.item.create: items are added at the end of the conversation here; "
                f"previous_item_id must be the last item ({last}) or omitted",
                "previous_item_id",
            )
        item_id = message.item_id or self._ids.new("item")
        if item_id in self.conversation:
            raise RealtimeError(
                RealtimeErrorCode.INVALID_VALUE, f"conversation.item.create: item {item_id} already exists", "item.id"
            )
        item = Item(item_id, message.role, audio=False, text=message.text)
        op: SessionOp
        if message.role == "user":
            op = AddUserText(item_id, message.text, event_id)
        elif message.role == "assistant":
            op = AddAssistantText(item_id, message.text, event_id)
        else:
            op = AddSystemText(item_id, message.text, event_id)
        return Inbound((op,), tuple(self._add_item(item)))

    def _item_retrieve(self, obj: dict[str, Any], event_id: str | None) -> Inbound:
        item = self._find_item(obj, "conversation.item.retrieve")
        return Inbound(events=(self._event("conversation.item.retrieved", item=item.render(self.dialect)),))

    def _item_truncate(self, obj: dict[str, Any], event_id: str | None) -> Inbound:
        event = "conversation.item.truncate"
        item = self._find_item(obj, event)
        content_index = requests.require(obj, "content_index", int, event)
        audio_end_ms = requests.require(obj, "audio_end_ms", int, event)
        if item.role != "assistant" or not item.audio:
            raise RealtimeError(
                RealtimeErrorCode.INVALID_VALUE, f"{event}: only assistant audio can be truncated", "item_id"
            )
        if content_index != 0:
            raise RealtimeError(
                RealtimeErrorCode.INVALID_VALUE, f"{event}: the item has one content part (index 0)", "content_index"
            )
        if not 0 <= audio_end_ms <= item.audio_ms + 1:  # +1: the client rounds what it played
            raise RealtimeError(
                RealtimeErrorCode.INVALID_VALUE,
                f"{event}: audio_end_ms {audio_end_ms} is outside the item's {item.audio_ms:.0f} ms of audio",
                "audio_end_ms",
            )
        op = TruncateItem(item.id, audio_end_ms, item.hark_response_id, event_id)
        ack = self._event("conversation.item.truncated", item_id=item.id, content_index=0, audio_end_ms=audio_end_ms)
        return Inbound((op,), (ack,))

    def _item_delete(self, obj: dict[str, Any], event_id: str | None) -> Inbound:
        item = self._find_item(obj, "conversation.item.delete")
        if self._response is not None and self._response.item is item:
            raise RealtimeError(
                RealtimeErrorCode.INVALID_VALUE,
                "conversation.item.delete: the item belongs to the response in progress; cancel it first",
                "item_id",
            )
        self.conversation.delete(item.id)
        return Inbound((DeleteItem(item.id, event_id),), (self._event("conversation.item.deleted", item_id=item.id),))

    def _response_create(self, obj: dict[str, Any], event_id: str | None) -> Inbound:
        if self._response is not None:
            raise RealtimeError(
                RealtimeErrorCode.CONVERSATION_ALREADY_HAS_ACTIVE_RESPONSE,
                f"response.create while response {self._response.id} is in progress: wait for its response.done "
                "or send response.cancel",
            )
        request = requests.parse_response_create(obj, self.session.output_format, str(self.session.hark.get("voice")))
        op = CreateResponse(request.instructions, request.audio_output, request.max_output_tokens, event_id)
        self._pending_creates.append(_PendingCreate(op, request.metadata))
        return Inbound((op,), tuple(self._error(refusal, event_id) for refusal in request.refusals))

    def _response_cancel(self, obj: dict[str, Any], event_id: str | None) -> Inbound:
        wanted = obj.get("response_id")
        active = self._response
        if active is None or (wanted is not None and wanted != active.id):
            which = f"response {str(wanted)[:40]}" if wanted is not None else "response"
            raise RealtimeError(
                RealtimeErrorCode.RESPONSE_CANCEL_NOT_ACTIVE, f"response.cancel: no {which} in progress"
            )
        active.cancel_requested = True
        self._last_event_ids["cancel"] = event_id
        return Inbound((CancelResponse(active.hark_id, event_id),))

    _handlers: ClassVar[dict[str, Callable[[RealtimeTranslator, dict[str, Any], str | None], Inbound]]] = {
        "session.update": _session_update,
        "input_audio_buffer.append": _append,
        "input_audio_buffer.commit": _commit,
        "input_audio_buffer.clear": _clear,
        "conversation.item.create": _item_create,
        "conversation.item.retrieve": _item_retrieve,
        "conversation.item.truncate": _item_truncate,
        "conversation.item.delete": _item_delete,
        "response.create": _response_create,
        "response.cancel": _response_cancel,
    }

    def _find_item(self, obj: dict[str, Any], event: str) -> Item:
        item_id = requests.require(obj, "item_id", str, event)
        item = self.conversation.get(item_id)
        if item is None:
            raise RealtimeError(
                RealtimeErrorCode.ITEM_NOT_FOUND, f"{event}: no item {item_id[:40]!r} in the conversation", "item_id"
            )
        return item

    def set_item_transcript(self, item_id: str, text: str) -> None:
        """The Session cut an item's history (a truncate after the reply ended): keep the copy in step."""
        item = self.conversation.get(item_id)
        if item is not None:
            item.text = text

    # ------------------------------------------------------------------ Session -> client

    def on_server_event(self, event: ServerEvent, *, client_event_id: str | None = None) -> list[Event]:
        """Realtime events for one hark.v1 event (`client_event_id`: the client event an error answers)."""
        match event:
            case SessionCreated():
                return self._on_session_created(event)
            case SessionUpdated(config=config):
                self.session.hark.update(config)
                return []
            case SpeechStarted():
                return self._on_speech_started(event)
            case TranscriptPartial():
                return self._on_partial(event)
            case SpeechStopped():
                return self._on_speech_stopped(event)
            case TranscriptFinal():
                return self._on_final(event)
            case ResponseStarted():
                return self._on_response_started(event)
            case ResponseTextDelta():
                return self._on_text_delta(event)
            case ResponseAudioStarted():
                return self._on_audio_started(event)
            case ResponseAudioDone():
                return self._on_audio_done(event)
            case ResponseDone():
                return self._on_response_done(event)
            case Error():
                return self._on_error(event, client_event_id)
        return []  # pong: nothing to say in this protocol

    def on_reply_audio(self, pcm: bytes) -> list[Event]:
        """One frame of reply PCM16 at the Session's output rate -> a base64 audio delta."""
        r = self._response
        if r is None or r.output is None:
            self.dropped_audio_bytes += len(pcm)
            return []
        delta, ms = r.output.encode(pcm)
        r.item.audio_ms += ms
        if not delta:
            return []
        return [self._event(wire_name(self.dialect, "audio.delta"), delta=delta, **self._part_ref(r))]

    def _on_session_created(self, event: SessionCreated) -> list[Event]:
        # the Session reports its defaults; setup_ops() moves it to the wire rates before any client op
        self.session.hark = dict(event.config) | self.setup_patch()
        asr = event.engines.get("asr")
        if self.session.transcription is not None and self.session.transcription.model is None and isinstance(asr, str):
            self.session.transcription.model = asr
        return [self._event("session.created", session=self.session.render(self.dialect))]

    def _turn(self, turn_id: int) -> _UserTurn:
        turn = self._turns.get(turn_id)
        if turn is None:
            item_id, self._commit_item = self._commit_item or self._ids.new("item"), None
            turn = self._turns[turn_id] = _UserTurn(item_id)
            while len(self._turns) > MAX_OPEN_TURNS:  # turns the Session dropped (a clear) are forgotten
                del self._turns[next(iter(self._turns))]
        return turn

    def _on_speech_started(self, event: SpeechStarted) -> list[Event]:
        turn = self._turn(event.turn_id)
        turn.audio_start_ms = event.audio_ms
        self._open_turn = event.turn_id
        if self._response is not None:
            self._response.user_spoke = True
        if self.session.turn_detection is None:  # manual turns: the client knows when it spoke
            return []
        return [self._event("input_audio_buffer.speech_started", audio_start_ms=event.audio_ms, item_id=turn.item_id)]

    def _on_partial(self, event: TranscriptPartial) -> list[Event]:
        turn = self._turn(event.turn_id)
        if self.session.transcription is None:
            return []
        # deltas only append: send what became stable (it only grows), never the revisable rest
        stable = event.stable_text
        sent = turn.sent_text + "".join(turn.held_deltas)
        if not stable.startswith(sent) or len(stable) == len(sent):
            return []
        delta = stable[len(sent) :]
        if not turn.committed:  # clients expect transcription of a committed item: hold until then
            turn.held_deltas.append(delta)
            return []
        turn.sent_text += delta
        return [self._transcription_delta(turn, delta)]

    def _on_speech_stopped(self, event: SpeechStopped) -> list[Event]:
        turn = self._turn(event.turn_id)
        turn.audio_end_ms = event.audio_ms
        if self._open_turn == event.turn_id:
            self._open_turn = None
        self._buffered_ms = 0.0
        if turn.committed:
            return []
        turn.committed = True
        events: list[Event] = []
        if self.session.turn_detection is not None:
            events.append(
                self._event("input_audio_buffer.speech_stopped", audio_end_ms=event.audio_ms, item_id=turn.item_id)
            )
        item = Item(turn.item_id, "user", audio=True, text=None)
        previous = self.conversation.last_id()
        events.append(self._event("input_audio_buffer.committed", item_id=turn.item_id, previous_item_id=previous))
        events += self._add_item(item)
        for delta in turn.held_deltas:
            turn.sent_text += delta
            events.append(self._transcription_delta(turn, delta))
        turn.held_deltas.clear()
        return events

    def _on_final(self, event: TranscriptFinal) -> list[Event]:
        turn = self._turn(event.turn_id)
        events = [] if turn.committed else self._on_speech_stopped(SpeechStopped(event.turn_id, turn.audio_start_ms))
        self._turns.pop(event.turn_id, None)
        if self.session.transcription is None:
            return events
        item = self.conversation.get(turn.item_id)
        if item is not None:
            item.text = event.text
        if event.text.startswith(turn.sent_text) and len(event.text) > len(turn.sent_text):
            events.append(self._transcription_delta(turn, event.text[len(turn.sent_text) :]))
        seconds = max(turn.audio_end_ms - turn.audio_start_ms, 0) / 1000.0
        events.append(
            self._event(
                "conversation.item.input_audio_transcription.completed",
                item_id=turn.item_id,
                content_index=0,
                transcript=event.text,
                usage={"type": "duration", "seconds": seconds},
            )
        )
        return events

    def _transcription_delta(self, turn: _UserTurn, delta: str) -> Event:
        return self._event(
            "conversation.item.input_audio_transcription.delta", item_id=turn.item_id, content_index=0, delta=delta
        )

    def _on_response_started(self, event: ResponseStarted) -> list[Event]:
        events = self._abandon_response() if self._response is not None else []
        pending = self._pending_creates.popleft() if self._pending_creates else None
        audio = self.session.audio_output
        max_tokens: int | str = self.session.max_output_tokens
        if pending is not None:
            audio = audio if pending.op.audio_output is None else pending.op.audio_output
            max_tokens = max_tokens if pending.op.max_output_tokens is None else pending.op.max_output_tokens
        item = Item(self._ids.new("item"), "assistant", audio=audio, text="", status="in_progress")
        item.hark_response_id = event.response_id
        previous = self.conversation.append(item)
        r = self._response = _Response(
            self._ids.new("resp"),
            event.response_id,
            item,
            previous,
            audio,
            pending.metadata if pending else None,
            max_tokens,
        )
        if audio:
            r.output = OutputAudio(self.session.output_format, self.session.output_format.sample_rate)
        events.append(self._event("response.created", response=self._response_object(r, "in_progress", None)))
        events.append(
            self._event(
                "response.output_item.added",
                response_id=r.id,
                output_index=0,
                item=item.render(self.dialect, content=False),
            )
        )
        added = item.render(self.dialect, content=False)
        events.append(self._event(wire_name(self.dialect, "item.added"), previous_item_id=previous, item=added))
        events.append(self._event("response.content_part.added", part=self._part(r, ""), **self._part_ref(r)))
        return events

    def _on_text_delta(self, event: ResponseTextDelta) -> list[Event]:
        r = self._response
        if r is None or r.hark_id != event.response_id or not event.delta:
            return []
        r.item.text = (r.item.text or "") + event.delta
        name = "audio_transcript.delta" if r.audio else "text.delta"
        return [self._event(wire_name(self.dialect, name), delta=event.delta, **self._part_ref(r))]

    def _on_audio_started(self, event: ResponseAudioStarted) -> list[Event]:
        r = self._response
        if r is not None and r.hark_id == event.response_id and r.audio:
            r.output = OutputAudio(self.session.output_format, event.sample_rate)
        return []

    def _on_audio_done(self, event: ResponseAudioDone) -> list[Event]:
        r = self._response
        if r is None or r.hark_id != event.response_id or not r.audio or r.audio_done:
            return []
        r.audio_done = True
        return [self._event(wire_name(self.dialect, "audio.done"), **self._part_ref(r))]

    def _on_response_done(self, event: ResponseDone) -> list[Event]:
        r = self._response
        if r is None or r.hark_id != event.response_id:
            return []
        status = event.status
        details: dict[str, Any] | None = None
        if status == "cancelled":
            reason = "client_cancelled" if r.cancel_requested else "turn_detected"
            details = {"type": "cancelled", "reason": reason}
        elif status == "failed":
            code, message = r.error or ("response_failed", "the reply failed")
            details = {"type": "failed", "error": {"type": "server_error", "code": code, "message": message}}
        return self._close_response(r, status, event.text, details, event.metrics)

    def _abandon_response(self) -> list[Event]:
        """A new response began before the old one's done (the Session replaced it): close it as cancelled."""
        r = self._response
        assert r is not None
        details = {"type": "cancelled", "reason": "client_cancelled" if r.cancel_requested else "turn_detected"}
        return self._close_response(r, "cancelled", r.item.text or "", details, {})

    def _close_response(
        self, r: _Response, status: str, text: str, details: dict[str, Any] | None, metrics: dict[str, Any]
    ) -> list[Event]:
        self._response = None
        r.item.text = text  # what the user got: all of it, or what was played before a cut
        r.item.status = "completed" if status == "completed" else "incomplete"
        events: list[Event] = []
        ref = self._part_ref(r)
        if r.audio:
            if not r.audio_done:
                events.append(self._event(wire_name(self.dialect, "audio.done"), **ref))
            events.append(self._event(wire_name(self.dialect, "audio_transcript.done"), transcript=text, **ref))
        else:
            events.append(self._event(wire_name(self.dialect, "text.done"), text=text, **ref))
        events.append(self._event("response.content_part.done", part=self._part(r, text), **ref))
        rendered = r.item.render(self.dialect)
        events.append(self._event("response.output_item.done", response_id=r.id, output_index=0, item=rendered))
        done_name = wire_name(self.dialect, "item.done")
        if done_name is not None:
            events.append(self._event(done_name, previous_item_id=r.previous_item_id, item=rendered))
        response = self._response_object(r, status, details)
        response["output"] = [rendered]
        response["usage"] = self._usage(metrics)
        events.append(self._event("response.done", response=response))
        return events

    def _on_error(self, event: Error, client_event_id: str | None) -> list[Event]:
        code = event.code
        if code == "nothing_to_commit":
            code, client_event_id = (
                RealtimeErrorCode.INPUT_AUDIO_BUFFER_COMMIT_EMPTY.value,
                client_event_id or self._last_event_ids.get("commit"),
            )
            self._commit_item = None
        elif code == "no_active_response":
            code, client_event_id = (
                RealtimeErrorCode.RESPONSE_CANCEL_NOT_ACTIVE.value,
                client_event_id or self._last_event_ids.get("cancel"),
            )
        elif code == "invalid_field":
            code, client_event_id = (
                RealtimeErrorCode.INVALID_VALUE.value,
                client_event_id or self._last_event_ids.get("update"),
            )
        if self._response is not None and event.code in ("response_failed", "llm_unavailable"):
            self._response.error = (event.code, event.message)
        error_type = "server_error" if event.code in _SERVER_SIDE_CODES else "invalid_request_error"
        return [
            error_event(
                self._ids.new("event"), code, event.message, client_event_id=client_event_id, error_type=error_type
            )
        ]

    # ------------------------------------------------------------------ shapes

    def _event(self, kind: str | None, **fields: Any) -> Event:
        assert kind is not None
        return {"type": kind, "event_id": self._ids.new("event"), **fields}

    def _error(self, exc: RealtimeError, client_event_id: str | None) -> Event:
        return error_event(
            self._ids.new("event"), exc.code, exc.message, param=exc.param, client_event_id=client_event_id
        )

    def _refuse(self, exc: RealtimeError, client_event_id: str | None) -> Inbound:
        return Inbound(events=(self._error(exc, client_event_id),))

    def _add_item(self, item: Item) -> list[Event]:
        previous = self.conversation.append(item)
        rendered = item.render(self.dialect)
        events = [self._event(wire_name(self.dialect, "item.added"), previous_item_id=previous, item=rendered)]
        done_name = wire_name(self.dialect, "item.done")
        if done_name is not None:
            events.append(self._event(done_name, previous_item_id=previous, item=rendered))
        return events

    @staticmethod
    def _part_ref(r: _Response) -> dict[str, Any]:
        return {"response_id": r.id, "item_id": r.item.id, "output_index": 0, "content_index": 0}

    @staticmethod
    def _part(r: _Response, text: str) -> dict[str, Any]:
        return {"type": "audio", "transcript": text} if r.audio else {"type": "text", "text": text}

    def _response_object(self, r: _Response, status: str, details: dict[str, Any] | None) -> dict[str, Any]:
        fmt = self.session.output_format
        voice = self.session.hark.get("voice")
        response: dict[str, Any] = {
            "id": r.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": [],
            "metadata": r.metadata,
            "max_output_tokens": r.max_output_tokens,
            "usage": None,
        }
        if self.dialect is Dialect.GA:
            response["output_modalities"] = ["audio"] if r.audio else ["text"]
            response["audio"] = {"output": {"format": fmt.ga(), "voice": voice}}
        else:
            response["modalities"] = ["text", "audio"] if r.audio else ["text"]
            response["output_audio_format"] = fmt.beta()
            response["voice"] = voice
        return response

    def _usage(self, metrics: dict[str, Any]) -> dict[str, Any]:
        def count(*keys: str) -> int:
            for key in keys:
                value = metrics.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
            return 0

        prompt = count("prompt_tokens")
        cached = count("cached_tokens")
        output = count("completion_tokens", "output_tokens")
        input_details: dict[str, Any] = {"text_tokens": prompt, "audio_tokens": 0, "cached_tokens": cached}
        if self.dialect is Dialect.GA:
            input_details["cached_tokens_details"] = {"text_tokens": cached, "audio_tokens": 0}
        return {
            "total_tokens": prompt + output,
            "input_tokens": prompt,
            "output_tokens": output,
            "input_token_details": input_details,
            "output_token_details": {"text_tokens": output, "audio_tokens": 0},
        }


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _utf8_size(data: str | bytes, limit: int) -> int:
    """Bytes on the wire; the exact count is only needed when a str could be over the limit."""
    if isinstance(data, bytes) or len(data) * 4 <= limit:
        return len(data)
    return len(data.encode("utf-8", "surrogatepass"))


_SURROGATES = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(obj: Any) -> bool:
    stack = [obj]  # iterative: JSON nested as deep as the parser allows must not overflow here
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if not node.isascii() and _SURROGATES.search(node):
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False
