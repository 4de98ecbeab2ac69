"""Assistant responses: the Session's response events and reply PCM as the Realtime response sequence.

One response at a time, as on the Session: `response.created`, its output item and content part when
it starts, transcript or text deltas and base64 audio deltas while it runs, and every part closed in
order when it ends (a cut reply too), with `response.done` carrying status, `status_details` and usage.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from ..events import ResponseAudioDone, ResponseAudioStarted, ResponseDone, ResponseStarted, ResponseTextDelta
from .audio_io import OutputAudio
from .conversation import Conversation, Item
from .emitter import Emitter, Event
from .events import Dialect
from .ops import CreateResponse
from .session_config import RealtimeSession


@dataclass(slots=True)
class ActiveResponse:
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
    error: tuple[str, str] | None = None  # (code, message) of the Session's error, for a failed response


@dataclass(frozen=True, slots=True)
class _PendingCreate:
    op: CreateResponse
    metadata: dict[str, Any] | None


class Responses:
    def __init__(self, emitter: Emitter, conversation: Conversation) -> None:
        self._emit = emitter
        self._conversation = conversation
        self.active: ActiveResponse | None = None
        self._pending: deque[_PendingCreate] = deque(maxlen=4)
        self.dropped_audio_bytes = 0  # reply audio with no audio response to carry it

    def requested(self, op: CreateResponse, metadata: dict[str, Any] | None) -> None:
        """A client response.create the Session will answer with its next response.started."""
        self._pending.append(_PendingCreate(op, metadata))

    def started(self, event: ResponseStarted, session: RealtimeSession) -> list[Event]:
        events = self._close_replaced(session) if self.active is not None else []
        pending = self._pending.popleft() if self._pending else None
        audio, max_tokens = session.audio_output, session.max_output_tokens
        metadata = None
        if pending is not None:
            audio = audio if pending.op.audio_output is None else pending.op.audio_output
            max_tokens = max_tokens if pending.op.max_output_tokens is None else pending.op.max_output_tokens
            metadata = pending.metadata
        item = Item(self._emit.new_id("item"), "assistant", audio=audio, text="", status="in_progress")
        item.hark_response_id = event.response_id
        previous = self._conversation.append(item)
        r = self.active = ActiveResponse(
            self._emit.new_id("resp"), event.response_id, item, previous, audio, metadata, max_tokens
        )
        if audio:  # replaced at response.audio.started by the rate the Session actually sends
            r.output = OutputAudio(session.output_format, session.output_format.sample_rate)
        dialect = self._emit.dialect
        return [
            *events,
            self._emit.event("response.created", response=self._response_object(r, session, "in_progress", None)),
            self._emit.event(
                "response.output_item.added", response_id=r.id, output_index=0, item=item.render(dialect, content=False)
            ),
            self._emit.item_added(item, previous, content=False),
            self._emit.event("response.content_part.added", part=_part(r, ""), **_ref(r)),
        ]

    def _current(self, response_id: str) -> ActiveResponse | None:
        r = self.active
        return r if r is not None and r.hark_id == response_id else None

    def text_delta(self, event: ResponseTextDelta) -> list[Event]:
        r = self._current(event.response_id)
        if r is None or not event.delta:
            return []
        r.item.text = (r.item.text or "") + event.delta
        return [self._emit.event("audio_transcript.delta" if r.audio else "text.delta", delta=event.delta, **_ref(r))]

    def audio_started(self, event: ResponseAudioStarted, session: RealtimeSession) -> None:
        r = self._current(event.response_id)
        if r is not None and r.audio:
            r.output = OutputAudio(session.output_format, event.sample_rate)

    def audio(self, pcm: bytes) -> list[Event]:
        r = self.active
        if r is None or r.output is None:
            self.dropped_audio_bytes += len(pcm)
            return []
        delta, ms = r.output.encode(pcm)
        r.item.audio_ms += ms
        return [self._emit.event("audio.delta", delta=delta, **_ref(r))] if delta else []

    def audio_done(self, event: ResponseAudioDone) -> list[Event]:
        r = self._current(event.response_id)
        if r is None or not r.audio or r.audio_done:
            return []
        r.audio_done = True
        return [self._emit.event("audio.done", **_ref(r))]

    def done(self, event: ResponseDone, session: RealtimeSession) -> list[Event]:
        r = self._current(event.response_id)
        if r is None:
            return []
        details: dict[str, Any] | None = None
        if event.status == "cancelled":
            details = _cancelled(r)
        elif event.status == "failed":
            code, message = r.error or ("response_failed", "the reply failed")
            details = {"type": "failed", "error": {"type": "server_error", "code": code, "message": message}}
        return self._close(r, session, event.status, event.text, details, event.metrics)

    def _close_replaced(self, session: RealtimeSession) -> list[Event]:
        """A new response began before the old one's done (the Session replaced it): close it as cancelled."""
        r = self.active
        assert r is not None
        return self._close(r, session, "cancelled", r.item.text or "", _cancelled(r), {})

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
        r.item.text = text  # what the user got: all of it, or what was played before a cut
        r.item.status = "completed" if status == "completed" else "incomplete"
        ref = _ref(r)
        events: list[Event] = []
        if r.audio:
            if not r.audio_done:
                events.append(self._emit.event("audio.done", **ref))
            events.append(self._emit.event("audio_transcript.done", transcript=text, **ref))
        else:
            events.append(self._emit.event("text.done", text=text, **ref))
        events.append(self._emit.event("response.content_part.done", part=_part(r, text), **ref))
        rendered = r.item.render(self._emit.dialect)
        events.append(self._emit.event("response.output_item.done", response_id=r.id, output_index=0, item=rendered))
        events += self._emit.item_done(r.item, r.previous_item_id)
        response = self._response_object(r, session, status, details)
        response["output"] = [rendered]
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


def _ref(r: ActiveResponse) -> dict[str, Any]:
    return {"response_id": r.id, "item_id": r.item.id, "output_index": 0, "content_index": 0}


def _part(r: ActiveResponse, text: str) -> dict[str, Any]:
    return {"type": "audio", "transcript": text} if r.audio else {"type": "text", "text": text}


def _cancelled(r: ActiveResponse) -> dict[str, Any]:
    # the Session cancels on barge-in, response.cancel, or a newer turn: only the client's cancel is its own
    return {"type": "cancelled", "reason": "client_cancelled" if r.cancel_requested else "turn_detected"}


def usage(metrics: dict[str, Any], dialect: Dialect) -> dict[str, Any]:
    """Realtime usage from hark.v1 `response.done.metrics` (prompt and cached tokens from the LLM server)."""

    def count(*keys: str) -> int:
        for key in keys:
            value = metrics.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return 0

    prompt, cached = count("prompt_tokens"), count("cached_tokens")
    output = count("completion_tokens", "output_tokens")  # sent by Sessions that report it
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
