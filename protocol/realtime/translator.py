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
  go to the next `response.started`);
- call `end_tool_round()` once the `response.function_call` events of one round of tool calls have
  all been translated (the transport does it on the next turn of its event loop): the Realtime
  response then ends, and the reply's continuation waits for the client's `response.create`, which
  comes out as `SubmitToolOutput` ops (responses.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ..codec import MAX_MESSAGE_BYTES
from ..config import SessionConfig
from ..events import (
    Error,
    ResponseAudioDone,
    ResponseAudioStarted,
    ResponseDone,
    ResponseFunctionCall,
    ResponseFunctionCallCancelled,
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
from .audio_io import InputAudio
from .conversation import Conversation, Item
from .emitter import Emitter, Event
from .errors import RealtimeError, RealtimeErrorCode
from .events import CLIENT_EVENTS, UNSUPPORTED_EVENTS, Dialect
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
    SubmitToolOutput,
    TruncateItem,
    UpdateConfig,
)
from .responses import Responses
from .session_config import RealtimeSession, plan_update
from .turns import UserTurns

MIN_COMMIT_MS = 100  # as OpenAI's service: a shorter buffer is refused
_SERVER_SIDE_CODES = {"internal_error", "llm_unavailable", "response_failed", "server_busy", "server_not_ready"}
# hark.v1 codes with a Realtime name, and the client event (by kind) they most likely answer
_RENAMED_CODES = {
    "nothing_to_commit": (RealtimeErrorCode.INPUT_AUDIO_BUFFER_COMMIT_EMPTY, "commit"),
    "no_active_response": (RealtimeErrorCode.RESPONSE_CANCEL_NOT_ACTIVE, "cancel"),
    "invalid_field": (RealtimeErrorCode.INVALID_VALUE, "update"),
}
# hark.v1 codes kept as they are, and the client event (by kind) they most likely answer
_ANSWERS = {"unknown_tool_choice": "update", "unknown_call_id": "create"}
# the output of a call the client gave none for when it asked for the next response (the model reads it)
NO_OUTPUT = "Error (no_output): the client asked for the next response without this call's output"


@dataclass(frozen=True, slots=True)
class Inbound:
    """What one client message produced: ops for the Session, events to send the client now."""

    ops: tuple[SessionOp, ...] = ()
    events: tuple[Event, ...] = ()


def encode(event: Event) -> str:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


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
        self._emit = Emitter(self.dialect, id_tag)
        hark = SessionConfig().to_dict() | self.setup_patch()
        self.session = RealtimeSession(id=self._emit.new_id("sess"), model=model, hark=hark)
        self.conversation = Conversation()
        self._input = InputAudio(self.session.input_format)
        self._buffered_ms = 0.0  # appended since the last commit or clear
        self._turns = UserTurns(self._emit, self.conversation)
        self._responses = Responses(self._emit, self.conversation)
        self._last_event_ids: dict[str, str | None] = {}  # the client event a Session error most likely answers

    @property
    def dropped_audio_bytes(self) -> int:
        """Reply audio that came with no audio response to carry it."""
        return self._responses.dropped_audio_bytes

    # ------------------------------------------------------------------ setup

    @staticmethod
    def setup_patch() -> dict[str, Any]:
        return {"input_sample_rate": AudioFormat.PCM.sample_rate, "output_sample_rate": AudioFormat.PCM.sample_rate}

    def setup_ops(self) -> list[SessionOp]:
        """Apply before any client op: the Realtime wire's default rates."""
        return [UpdateConfig(self.setup_patch())]

    # ------------------------------------------------------------------ client -> Session

    def receive_text(self, data: str | bytes) -> Inbound:
        size = requests.utf8_size(data, self.max_message_bytes)
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
            obj = json.loads(data, parse_constant=requests.reject_constant)
        except (ValueError, RecursionError) as exc:
            return self._refuse(RealtimeError(RealtimeErrorCode.INVALID_JSON, f"not valid UTF-8 JSON: {exc}"), None)
        if requests.has_lone_surrogate(obj):  # it would come back in an echo that cannot be encoded as UTF-8
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
        events = [self._emit.refusal(refusal, event_id) for refusal in plan.refusals]
        events.append(self._emit.event("session.updated", session=self.session.render(self.dialect)))
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
        item_id = self._turns.name_commit()
        td = self.session.turn_detection
        ops.append(CommitAudio(item_id, respond=td is not None and td.create_response, event_id=event_id))
        self._buffered_ms = 0.0
        self._last_event_ids["commit"] = event_id
        return Inbound(tuple(ops))

    def _clear(self, obj: dict[str, Any], event_id: str | None) -> Inbound:
        self._input.clear()
        self._buffered_ms = 0.0
        self._turns.forget_commit()
        return Inbound((ClearAudio(event_id),), (self._emit.event("input_audio_buffer.cleared"),))

    def _item_create(self, obj: dict[str, Any], event_id: str | None) -> Inbound:
        message = requests.parse_item_create(obj)
        self._check_position(message.previous_item_id)
        item_id = message.item_id or self._emit.new_id("item")
        if item_id in self.conversation:
            raise RealtimeError(
                RealtimeErrorCode.INVALID_VALUE, f"conversation.item.create: item {item_id} already exists", "item.id"
            )
        if isinstance(message, requests.ToolOutput):
            return self._tool_output(message, item_id)
        item = Item(item_id, message.role, audio=False, text=message.text)
        op: SessionOp
        if message.role == "user":
            op = AddUserText(item_id, message.text, event_id)
        elif message.role == "assistant":
            op = AddAssistantText(item_id, message.text, event_id)
        else:
            op = AddSystemText(item_id, message.text, event_id)
        return Inbound((op,), tuple(self._emit.add_item(self.conversation, item)))

    def _check_position(self, previous_item_id: str | None) -> None:
        last = self.conversation.last_id()
        if previous_item_id not in (None, last) and not (previous_item_id == "root" and last is None):
            raise RealtimeError(
                RealtimeErrorCode.UNSUPPORTED_FEATURE,
                "conversation.item.create: items are added at the end of the conversation here; "
                f"previous_item_id must be the last item ({last}) or omitted",
                "previous_item_id",
            )

    def _tool_output(self, message: requests.ToolOutput, item_id: str) -> Inbound:
        """Held until the client's response.create (the model goes on only then, as on OpenAI's service)."""
        waiting = self._responses.suspended
        call_id = message.call_id
        if waiting is None or call_id not in waiting.awaiting:
            raise RealtimeError(
                RealtimeErrorCode.UNKNOWN_CALL_ID,
                f"conversation.item.create: no function call {call_id[:64]!r} waits for its output (never made, "
                "already answered, or ended by a timeout or an interruption)",
                "item.call_id",
            )
        if call_id in waiting.outputs:
            raise RealtimeError(
                RealtimeErrorCode.INVALID_VALUE,
                f"conversation.item.create: function call {call_id[:64]!r} already has an output",
                "item.call_id",
            )
        waiting.outputs[call_id] = message.output
        item = Item.function_call_output(item_id, call_id, message.output)
        return Inbound(events=tuple(self._emit.add_item(self.conversation, item)))

    def _item_retrieve(self, obj: dict[str, Any], event_id: str | None) -> Inbound:
        item = self._find_item(obj, "conversation.item.retrieve")
        return Inbound(events=(self._emit.event("conversation.item.retrieved", item=item.render(self.dialect)),))

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
        ack = self._emit.event(
            "conversation.item.truncated", item_id=item.id, content_index=0, audio_end_ms=audio_end_ms
        )
        return Inbound((op,), (ack,))

    def _item_delete(self, obj: dict[str, Any], event_id: str | None) -> Inbound:
        item = self._find_item(obj, "conversation.item.delete")
        active = self._responses.active
        if active is not None and item in active.outputs:
            raise RealtimeError(
                RealtimeErrorCode.INVALID_VALUE,
                "conversation.item.delete: the item belongs to the response in progress; cancel it first",
                "item_id",
            )
        self.conversation.delete(item.id)
        deleted = self._emit.event("conversation.item.deleted", item_id=item.id)
        return Inbound((DeleteItem(item.id, event_id),), (deleted,))

    def _response_create(self, obj: dict[str, Any], event_id: str | None) -> Inbound:
        active = self._responses.active
        if active is not None:
            raise RealtimeError(
                RealtimeErrorCode.CONVERSATION_ALREADY_HAS_ACTIVE_RESPONSE,
                f"response.create while response {active.id} is in progress: wait for its response.done "
                "or send response.cancel",
            )
        request = requests.parse_response_create(obj, self.session.output_format, str(self.session.hark.get("voice")))
        op = CreateResponse(request.instructions, request.audio_output, request.max_output_tokens, event_id)
        refusals = tuple(self._emit.refusal(refusal, event_id) for refusal in request.refusals)
        waiting = self._responses.suspended
        if waiting is None:
            self._responses.requested(op, request.metadata)
            return Inbound((op,), refusals)
        # the reply that called the tools goes on: the outputs go to it now (a call without one is told
        # so), and what it says next is this response (its own settings: it is the same hark.v1 reply)
        if waiting.create is not None:
            raise RealtimeError(
                RealtimeErrorCode.CONVERSATION_ALREADY_HAS_ACTIVE_RESPONSE,
                "response.create: the response answering the tool outputs is already on its way",
            )
        outputs = tuple(
            SubmitToolOutput(call_id, waiting.outputs.get(call_id, NO_OUTPUT), event_id) for call_id in waiting.awaiting
        )
        waiting.awaiting.clear()
        waiting.outputs.clear()
        self._responses.resume_requested(op, request.metadata)
        self._last_event_ids["create"] = event_id
        return Inbound(outputs, refusals)

    def _response_cancel(self, obj: dict[str, Any], event_id: str | None) -> Inbound:
        wanted = obj.get("response_id")
        active = self._responses.active
        waiting = self._responses.suspended
        if active is None and waiting is not None and wanted is None:
            # the reply waits for tool outputs between responses: the client wants it to stop there
            self._responses.suspended = None
            return Inbound((CancelResponse(waiting.hark_id, event_id),))
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
        session = self.session
        match event:
            case SessionCreated():
                return self._on_session_created(event)
            case SessionUpdated(config=config):
                session.hark.update(config)
                return []
            case SpeechStarted():
                return self._turns.speech_started(event, session)
            case TranscriptPartial():
                return self._turns.partial(event, session)
            case SpeechStopped():
                self._buffered_ms = 0.0  # the Session committed what was buffered
                return self._turns.speech_stopped(event, session)
            case TranscriptFinal():
                return self._turns.final(event, session)
            case ResponseStarted():
                return self._responses.started(event, session)
            case ResponseTextDelta():
                return self._responses.text_delta(event, session)
            case ResponseAudioStarted():
                return self._responses.audio_started(event, session)
            case ResponseAudioDone():
                return self._responses.audio_done(event, session)
            case ResponseFunctionCall():
                return self._responses.function_call(event, session)
            case ResponseFunctionCallCancelled(call_id=call_id):
                self._responses.call_ended(call_id)
                return []
            case ResponseDone():
                return self._responses.done(event, session)
            case Error():
                return self._on_error(event, client_event_id)
        return []  # pong: nothing to say in this protocol

    def end_tool_round(self) -> list[Event]:
        """The client tool calls of one round are all out: their response ends (see the module doc)."""
        return self._responses.end_tool_round(self.session)

    @property
    def awaits_tool_round_end(self) -> bool:
        active = self._responses.active
        return active is not None and bool(active.calls)

    def on_reply_audio(self, pcm: bytes) -> list[Event]:
        """One frame of reply PCM16 at the Session's output rate -> a base64 audio delta."""
        return self._responses.audio(pcm)

    def _on_session_created(self, event: SessionCreated) -> list[Event]:
        # the Session reports its defaults; setup_ops() moves it to the wire rates before any client op
        self.session.hark = dict(event.config) | self.setup_patch()
        asr = event.engines.get("asr")
        transcription = self.session.transcription
        if transcription is not None and transcription.model is None and isinstance(asr, str):
            transcription.model = asr
        return [self._emit.event("session.created", session=self.session.render(self.dialect))]

    def _on_error(self, event: Error, client_event_id: str | None) -> list[Event]:
        code: str = event.code
        renamed = _RENAMED_CODES.get(code)
        if renamed is not None:
            code = renamed[0].value
            client_event_id = client_event_id or self._last_event_ids.get(renamed[1])
        elif code in _ANSWERS:
            client_event_id = client_event_id or self._last_event_ids.get(_ANSWERS[code])
        if event.code == "nothing_to_commit":
            self._turns.forget_commit()
        active = self._responses.active
        if active is not None and event.code in ("response_failed", "llm_unavailable"):
            active.error = (event.code, event.message)
        error_type = "server_error" if event.code in _SERVER_SIDE_CODES else "invalid_request_error"
        return [self._emit.error(code, event.message, client_event_id=client_event_id, error_type=error_type)]

    def _refuse(self, exc: RealtimeError, client_event_id: str | None) -> Inbound:
        return Inbound(events=(self._emit.refusal(exc, client_event_id),))
