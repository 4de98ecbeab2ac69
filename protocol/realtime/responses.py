"""Assistant responses: the Session's response events and reply PCM as the Realtime response sequence.

One response at a time, as on the Session: `response.created` when it starts, its message item and
content part, transcript or text deltas and base64 audio deltas while it runs, and every part closed
in order when it ends (a cut reply too), with `response.done` carrying status, `status_details` and
usage.

Tools: a hark.v1 reply goes on through its tool calls in one response; on Realtime, as on OpenAI's
service, a response that calls client tools ends there. Each `response.function_call` becomes a
`function_call` output item (added, its arguments as one delta and done, item done); `end_tool_round`
(the transport calls it once the round's calls are out) closes the response as `completed` and the
hark.v1 reply is held "suspended": the client answers with `function_call_output` items and a
`response.create`, and what the reply says next (same hark.v1 response) goes out as a new Realtime
response. In a session with tools the message item opens at the first words or audio, so a response
that only calls tools has no empty message in it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from ..events import (
    ResponseAudioDone,
    ResponseAudioStarted,
    ResponseDone,
    ResponseFunctionCall,
    ResponseStarted,
    ResponseTextDelta,
)
from .audio_io import OutputAudio
from .conversation import Conversation, Item
from .emitter import Emitter, Event
from .events import Dialect
from .ops import CreateResponse
from .session_config import RealtimeSession


@dataclass(frozen=True, slots=True)
class _PendingCreate:
    op: CreateResponse
    metadata: dict[str, Any] | None


@dataclass(slots=True)
class ActiveResponse:
    id: str
    hark_id: str
    audio: bool
    metadata: dict[str, Any] | None
    max_output_tokens: int | str
    text_from: int = 0  # where this response's words start in the hark.v1 reply's text
    continuation: bool = False  # the words after a tool round of the same hark.v1 reply
    outputs: list[Item] = field(default_factory=list)  # output items, in order (output_index)
    previous: dict[str, str | None] = field(default_factory=dict)  # item id -> previous_item_id
    message: Item | None = None  # the message item, while open
    output: OutputAudio | None = None
    audio_done: bool = False
    cancel_requested: bool = False
    error: tuple[str, str] | None = None  # (code, message) of the Session's error, for a failed response
    calls: list[str] = field(default_factory=list)  # call ids of this response's function_call items

    @property
    def item(self) -> Item | None:
        """The message item (open or closed), if the response has one."""
        return next((item for item in self.outputs if item.kind == "message"), None)


@dataclass(slots=True)
class Suspended:
    """A hark.v1 reply whose Realtime response ended with client tool calls; it waits for their outputs."""

    hark_id: str
    awaiting: list[str]  # call ids still to be answered, in call order
    text_from: int  # the reply's text so far: the next response's words start after it
    rate: int | None  # the reply audio's rate, once its audio started
    audio_ended: bool
    audio: bool  # the reply speaks: so does its next response, whatever that response.create asks
    outputs: dict[str, str] = field(default_factory=dict)  # function_call_output held until response.create
    create: _PendingCreate | None = None  # the client's response.create for what comes next


class Responses:
    def __init__(self, emitter: Emitter, conversation: Conversation) -> None:
        self._emit = emitter
        self._conversation = conversation
        self.active: ActiveResponse | None = None
        self.suspended: Suspended | None = None
        self._pending: deque[_PendingCreate] = deque(maxlen=4)
        self._reply_text = ""  # the hark.v1 reply's text so far (its deltas, all rounds)
        self._reply_rate: int | None = None
        self._reply_audio_ended = False
        self.dropped_audio_bytes = 0  # reply audio with no audio response to carry it

    def requested(self, op: CreateResponse, metadata: dict[str, Any] | None) -> None:
        """A client response.create the Session will answer with its next response.started."""
        self._pending.append(_PendingCreate(op, metadata))

    def resume_requested(self, op: CreateResponse, metadata: dict[str, Any] | None) -> None:
        """A client response.create for the suspended reply's continuation."""
        assert self.suspended is not None
        self.suspended.create = _PendingCreate(op, metadata)

    # ------------------------------------------------------------------ opening

    def started(self, event: ResponseStarted, session: RealtimeSession) -> list[Event]:
        events = self._close_replaced(session) if self.active is not None else []
        self.suspended = None  # a new reply: the old one is over, whatever it waited for
        self._reply_text, self._reply_rate, self._reply_audio_ended = "", None, False
        pending = self._pending.popleft() if self._pending else None
        events += self._open(event.response_id, session, pending)
        r = self.active
        assert r is not None
        if not session.tools:  # no tools: the message opens at once (the order apps have always seen)
            events += self._open_message(r)
        return events

    def _open(
        self,
        hark_id: str,
        session: RealtimeSession,
        pending: _PendingCreate | None,
        *,
        text_from: int = 0,
        continuation: bool = False,
        reply_audio: bool | None = None,
    ) -> list[Event]:
        audio, max_tokens = session.audio_output, session.max_output_tokens
        metadata = None
        if pending is not None:
            audio = audio if pending.op.audio_output is None else pending.op.audio_output
            max_tokens = max_tokens if pending.op.max_output_tokens is None else pending.op.max_output_tokens
            metadata = pending.metadata
        if reply_audio is not None:  # a continuation: the same hark.v1 reply, spoken or not as it began
            audio = reply_audio
        r = self.active = ActiveResponse(
            self._emit.new_id("resp"), hark_id, audio, metadata, max_tokens, text_from, continuation
        )
        if audio:  # the rate the Session sends replaces the wire's at response.audio.started
            r.output = OutputAudio(session.output_format, self._reply_rate or session.output_format.sample_rate)
        return [self._emit.event("response.created", response=self._response_object(r, session, "in_progress", None))]

    def _open_message(self, r: ActiveResponse) -> list[Event]:
        item = Item(self._emit.new_id("item"), "assistant", audio=r.audio, text="", status="in_progress")
        item.hark_response_id = r.hark_id
        r.previous[item.id] = self._conversation.append(item)
        r.message = item
        r.outputs.append(item)
        r.audio_done = self._reply_audio_ended
        return [
            self._emit.event(
                "response.output_item.added",
                response_id=r.id,
                output_index=len(r.outputs) - 1,
                item=item.render(self._emit.dialect, content=False),
            ),
            self._emit.item_added(item, r.previous[item.id], content=False),
            self._emit.event("response.content_part.added", part=_part(r, ""), **_ref(r, item)),
        ]

    def _current(self, response_id: str, session: RealtimeSession) -> tuple[ActiveResponse | None, list[Event]]:
        """The open response of hark.v1 reply `response_id`; for more of a suspended reply (words, audio,
        more calls, its end), the next response, opened now."""
        r = self.active
        if r is not None and r.hark_id == response_id:
            return r, []
        s = self.suspended
        if s is None or s.hark_id != response_id:
            return None, []
        self.suspended = None
        events = self._open(
            response_id, session, s.create, text_from=s.text_from, continuation=True, reply_audio=s.audio
        )
        return self.active, events

    def _message(self, r: ActiveResponse) -> tuple[Item, list[Event]]:
        if r.message is not None:
            return r.message, []
        events = self._open_message(r)
        assert r.message is not None
        return r.message, events

    # ------------------------------------------------------------------ while it runs

    def text_delta(self, event: ResponseTextDelta, session: RealtimeSession) -> list[Event]:
        if not event.delta:
            return []
        r, events = self._current(event.response_id, session)
        if r is None:
            return events
        self._reply_text += event.delta
        item, opened = self._message(r)
        # a later round's words begin with a space (they go on the reply's text); here they begin a response
        delta = event.delta.lstrip() if r.continuation and not item.text else event.delta
        if not delta:
            return events + opened
        item.text = (item.text or "") + delta
        kind = "audio_transcript.delta" if r.audio else "text.delta"
        return [*events, *opened, self._emit.event(kind, delta=delta, **_ref(r, item))]

    def audio_started(self, event: ResponseAudioStarted, session: RealtimeSession) -> list[Event]:
        r, events = self._current(event.response_id, session)
        self._reply_rate = event.sample_rate
        if r is not None and r.audio:
            r.output = OutputAudio(session.output_format, event.sample_rate)
        return events

    def audio(self, pcm: bytes) -> list[Event]:
        r = self.active
        if r is None or r.output is None or r.audio_done or r.calls:  # a response's audio ends at its calls
            self.dropped_audio_bytes += len(pcm)
            return []
        item, events = self._message(r)
        delta, ms = r.output.encode(pcm)
        item.audio_ms += ms
        return [*events, self._emit.event("audio.delta", delta=delta, **_ref(r, item))] if delta else events

    def audio_done(self, event: ResponseAudioDone, session: RealtimeSession) -> list[Event]:
        self._reply_audio_ended = True
        r, events = self._current(event.response_id, session)
        if r is None or not r.audio or r.audio_done:
            return events
        r.audio_done = True
        if r.message is None:
            return events
        return [*events, self._emit.event("audio.done", **_ref(r, r.message))]

    def function_call(self, event: ResponseFunctionCall, session: RealtimeSession) -> list[Event]:
        """A client tool call: its `function_call` item, after the words said before it (closed first)."""
        r, events = self._current(event.response_id, session)
        if r is None:
            return events
        if r.message is not None:
            events += self._close_message(r, r.message.text or "", "completed")
        item = Item.function_call(self._emit.new_id("item"), event.call_id, event.name, event.arguments)
        previous = r.previous[item.id] = self._conversation.append(item)
        r.outputs.append(item)
        r.calls.append(event.call_id)
        index = len(r.outputs) - 1
        ref = {"response_id": r.id, "item_id": item.id, "output_index": index, "call_id": event.call_id}
        dialect = self._emit.dialect
        done_fields = {"name": event.name} if dialect is Dialect.GA else {}
        events += [
            self._emit.event(
                "response.output_item.added",
                response_id=r.id,
                output_index=index,
                item=item.render(dialect, content=False),
            ),
            self._emit.item_added(item, previous, content=False),
            self._emit.event("response.function_call_arguments.delta", delta=event.arguments, **ref),
            self._emit.event("response.function_call_arguments.done", arguments=event.arguments, **ref, **done_fields),
        ]
        item.status = "completed"
        rendered = item.render(dialect)
        events.append(
            self._emit.event("response.output_item.done", response_id=r.id, output_index=index, item=rendered)
        )
        events += self._emit.item_done(item, previous)
        return events

    def end_tool_round(self, session: RealtimeSession) -> list[Event]:
        """The round's calls are all out: the response ends `completed` and the reply waits, suspended."""
        r = self.active
        if r is None or not r.calls or r.message is not None:
            return []  # already ended (cancelled in the meantime), or words came after the calls
        suspended = Suspended(
            r.hark_id, list(r.calls), len(self._reply_text), self._reply_rate, self._reply_audio_ended, r.audio
        )
        events = self._close(r, session, "completed", "", None, {})
        self.suspended = suspended
        return events

    def call_ended(self, call_id: str) -> None:
        """The Session no longer waits for this call's output (timeout, barge-in, cancel)."""
        s = self.suspended
        if s is not None and call_id in s.awaiting:
            s.awaiting.remove(call_id)
            s.outputs.pop(call_id, None)

    # ------------------------------------------------------------------ the end

    def done(self, event: ResponseDone, session: RealtimeSession) -> list[Event]:
        r = self.active if self.active is not None and self.active.hark_id == event.response_id else None
        events: list[Event] = []
        if r is None:
            s = self.suspended
            if s is None or s.hark_id != event.response_id:
                return []
            if event.status == "cancelled" and s.create is None:
                self.suspended = None  # cut while it waited for outputs nobody asked to be answered
                return []
            r, events = self._current(event.response_id, session)
            assert r is not None
        details: dict[str, Any] | None = None
        if event.status == "cancelled":
            details = _cancelled(r)
        elif event.status == "failed":
            code, message = r.error or ("response_failed", "the reply failed")
            details = {"type": "failed", "error": {"type": "server_error", "code": code, "message": message}}
        text = event.text[r.text_from :].lstrip() if r.continuation else event.text
        return events + self._close(r, session, event.status, text, details, event.metrics)

    def _close_replaced(self, session: RealtimeSession) -> list[Event]:
        """A new response began before the old one's done (the Session replaced it): close it as cancelled."""
        r = self.active
        assert r is not None
        text = r.message.text if r.message is not None else ""
        return self._close(r, session, "cancelled", text or "", _cancelled(r), {})

    def _close_message(self, r: ActiveResponse, text: str, status: str) -> list[Event]:
        item = r.message
        assert item is not None
        r.message = None
        item.text = text  # what the user got: all of it, or what was played before a cut
        item.status = "completed" if status == "completed" else "incomplete"
        ref = _ref(r, item)
        events: list[Event] = []
        if r.audio:
            if not r.audio_done:
                events.append(self._emit.event("audio.done", **ref))
            events.append(self._emit.event("audio_transcript.done", transcript=text, **ref))
        else:
            events.append(self._emit.event("text.done", text=text, **ref))
        events.append(self._emit.event("response.content_part.done", part=_part(r, text), **ref))
        rendered = item.render(self._emit.dialect)
        events.append(
            self._emit.event(
                "response.output_item.done", response_id=r.id, output_index=ref["output_index"], item=rendered
            )
        )
        events += self._emit.item_done(item, r.previous[item.id])
        return events

    def _close(
        self,
        r: ActiveResponse,
        session: RealtimeSession,
        status: str,
        text: str,
        details: dict[str, Any] | None,
        metrics: dict[str, Any],
    ) -> list[Event]:
        self.active = None
        events: list[Event] = []
        if r.message is None and not r.outputs:  # a reply with nothing in it still has its (empty) message
            events += self._open_message(r)
        if r.message is not None:
            events += self._close_message(r, text, status)
        response = self._response_object(r, session, status, details)
        response["output"] = [item.render(self._emit.dialect) for item in r.outputs]
        response["usage"] = usage(metrics, self._emit.dialect)
        events.append(self._emit.event("response.done", response=response))
        return events

    def _response_object(
        self, r: ActiveResponse, session: RealtimeSession, status: str, details: dict[str, Any] | None
    ) -> dict[str, Any]:
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
        fmt = r.output.format if r.output is not None else session.output_format
        voice = session.hark.get("voice")
        if self._emit.dialect is Dialect.GA:
            response["output_modalities"] = ["audio"] if r.audio else ["text"]
            response["audio"] = {"output": {"format": fmt.ga(), "voice": voice}}
        else:
            response["modalities"] = ["text", "audio"] if r.audio else ["text"]
            response["output_audio_format"] = fmt.beta()
            response["voice"] = voice
        return response


def _ref(r: ActiveResponse, item: Item) -> dict[str, Any]:
    return {"response_id": r.id, "item_id": item.id, "output_index": r.outputs.index(item), "content_index": 0}


def _part(r: ActiveResponse, text: str) -> dict[str, Any]:
    return {"type": "audio", "transcript": text} if r.audio else {"type": "text", "text": text}


def _cancelled(r: ActiveResponse) -> dict[str, Any]:
    # the Session cancels on barge-in, response.cancel, or a newer turn: only the client's cancel is its own
    return {"type": "cancelled", "reason": "client_cancelled" if r.cancel_requested else "turn_detected"}


def usage(metrics: dict[str, Any], dialect: Dialect) -> dict[str, Any]:
    """Realtime usage from hark.v1 `response.done.metrics` (token counts from the LLM server; a response
    that ended with tool calls has none of its own: the reply's counts come with its last response)."""

    def count(*keys: str) -> int:
        for key in keys:
            value = metrics.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return 0

    prompt, cached = count("prompt_tokens"), count("cached_tokens")
    output = count("completion_tokens", "output_tokens")
    input_details: dict[str, Any] = {"text_tokens": prompt, "audio_tokens": 0, "cached_tokens": cached}
    if dialect is Dialect.GA:
        input_details["cached_tokens_details"] = {"text_tokens": cached, "audio_tokens": 0}
    return {
        "total_tokens": prompt + output,
        "input_tokens": prompt,
        "output_tokens": output,
        "input_token_details": input_details,
        "output_token_details": {"text_tokens": output, "audio_tokens": 0},
    }
