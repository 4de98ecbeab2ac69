"""One OpenAI Realtime connection's glue: Realtime messages -> translator ops -> the Session, and the
Session's hark.v1 output -> translator -> Realtime events.

The translator (hark.protocol.realtime) is sans-IO and knows nothing of the Session; the Session
knows nothing of Realtime item ids. This bridge applies each op through the Session's public
operations (hark.v1's own entry points where hark.v1 has the operation, session_ops.py for the
item-level ones) and keeps the one mapping neither side has: which history message a Realtime item
is, learnt from the events as they pass (a user item is named at `input_audio_buffer.committed`, an
assistant item at `response.output_item.added`).

Client tools: the Session asks for each call with `response.function_call`; the calls of one round
go out together (the tool round starts them in one turn of the event loop), so the bridge ends their
Realtime response (`translator.end_tool_round`) on the loop's next turn. Server tools (MCP) run
inside the Session and never show up here: the client hears the answer that uses their results.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from hark.protocol import (
    AudioCommit,
    Error,
    ErrorCode,
    ResponseCancel,
    ResponseFunctionCall,
    ResponseStarted,
    ServerEvent,
    SessionLimits,
    SessionUpdate,
    SpeechStopped,
    TranscriptFinal,
    encode,
)
from hark.protocol.realtime import RealtimeTranslator, ops
from hark.protocol.realtime.emitter import Event

from ..llm.base import Message, Role
from ..ratelimit import TokenBucket
from ..session import Session
from ..session_ops import ResponseOverrides, TurnTaking

log = logging.getLogger(__name__)

MAX_ITEMS = 512  # item ids remembered per connection (the translator keeps as many)
# appends are audio: a client may send one per audio callback (a browser's is ~5 ms); their audio is
# metered by the Session's audio bucket, their count here so tiny appends cannot flood the parser
APPENDS_PER_S = 250.0
APPEND_BURST = 500.0
_APPEND_TYPE = '"input_audio_buffer.append"'
_TYPE_WINDOW = 200  # clients put `type` (and perhaps `event_id`) first; a misplaced one only changes the bucket
_ROLES: dict[type[ops.SessionOp], Role] = {
    ops.AddUserText: "user",
    ops.AddAssistantText: "assistant",
    ops.AddSystemText: "system",
}


def _remember(table: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    table[key] = value
    while len(table) > MAX_ITEMS:
        table.popitem(last=False)


class RealtimeBridge:
    """Owned by one Realtime connection; `send` queues Realtime events to the client (the outbox)."""

    def __init__(
        self, session: Session, translator: RealtimeTranslator, send: Callable[[Iterable[Event]], None]
    ) -> None:
        self.session = session
        self.translator = translator
        self._send = send
        limits: SessionLimits = session.ctx.config.limits
        self._event_bucket = TokenBucket(limits.max_text_messages_per_s, limits.text_message_burst)
        self._append_bucket = TokenBucket(APPENDS_PER_S, APPEND_BURST)
        self._created: OrderedDict[str, Message] = OrderedDict()  # items the client created
        self._reply_of_item: OrderedDict[str, str] = OrderedDict()  # assistant item -> hark response id
        self._turn_of_item: OrderedDict[str, int] = OrderedDict()  # user audio item -> hark turn id
        self._reply_of_turn: OrderedDict[int, str] = OrderedDict()  # hark turn id -> its (last) reply
        self._round_end: asyncio.Handle | None = None  # ends a tool round's response on the next loop turn

    async def start(self) -> None:
        """Before any client message: the Realtime wire's rates, and the turn detection the client was
        told it has (server_vad, as on OpenAI's service, whatever this server's own default is)."""
        for op in self.translator.setup_ops():
            await self.apply(op)
        await self.apply(self.translator.session.turn_detection_op(None))

    # ------------------------------------------------------------------ client -> Session

    async def receive(self, message: str | bytes) -> None:
        if not self._admit(message):
            return
        if isinstance(message, bytes):
            inbound = self.translator.receive_binary(message)  # refused: audio is base64 in appends
        else:
            inbound = self.translator.receive_text(message)
        self._send(inbound.events)
        for op in inbound.ops:
            await self.apply(op)

    def _admit(self, message: str | bytes) -> bool:
        append = isinstance(message, str) and _APPEND_TYPE in message[:_TYPE_WINDOW]
        if (self._append_bucket if append else self._event_bucket).try_take(1):
            return True
        limits = self.session.ctx.config.limits
        what = (
            f"more than {APPENDS_PER_S:g} input_audio_buffer.append messages per second (send larger chunks)"
            if append
            else f"more than {limits.max_text_messages_per_s:g} events per second"
        )
        self.session.report(ErrorCode.RATE_LIMITED, f"{what}; message dropped")
        return False

    async def apply(self, op: ops.SessionOp) -> None:
        session = self.session
        match op:
            case ops.AppendAudio(pcm=pcm):
                await session.on_binary(pcm)  # a valid hark.v1 frame: metered and queued as any audio
            case ops.UpdateConfig(patch=patch):
                await session.on_text(encode(SessionUpdate(config=dict(patch))))
            case ops.SetTurnDetection():
                await self._set_turn_detection(op)
            case ops.SetTranscription():
                pass  # Hark always transcribes; whether events go out is the translator's; hints unused
            case ops.SetMaxOutputTokens(limit=limit):
                session.max_output_tokens = limit
            case ops.CommitAudio():
                await session.on_text(encode(AudioCommit()))
            case ops.ClearAudio():
                await session.clear_input()
            case ops.AddUserText() | ops.AddAssistantText() | ops.AddSystemText():
                _remember(self._created, op.item_id, session.add_message(_ROLES[type(op)], op.text))
            case ops.DeleteItem(item_id=item_id):
                message = self._message_of(item_id)
                if message is not None:
                    session.remove_message(message)
            case ops.TruncateItem(item_id=item_id, audio_end_ms=audio_end_ms, response_id=response_id):
                if response_id is not None:
                    kept = session.cut_reply(response_id, float(audio_end_ms))
                    if kept is not None:  # a finished reply: the translator's copy follows the history
                        self.translator.set_item_transcript(item_id, kept)
            case ops.CreateResponse():
                cap = op.max_output_tokens  # "inf": the session's cap
                await session.request_response(
                    ResponseOverrides(op.instructions, op.audio_output, cap if isinstance(cap, int) else None)
                )
            case ops.SubmitToolOutput(call_id=call_id, output=output):
                session.submit_tool_output(call_id, output)  # an id no call awaits is reported (unknown_call_id)
            case ops.CancelResponse(response_id=response_id):
                await session.on_text(encode(ResponseCancel(response_id=response_id)))

    async def _set_turn_detection(self, op: ops.SetTurnDetection) -> None:
        session = self.session
        manual = op.mode is None
        session.turn_taking = TurnTaking(
            client_commits=manual,
            auto_respond=not manual and op.create_response,
            interrupt=not manual and op.interrupt_response,
        )
        # client commits: nothing listens for the end of a turn, so no turn model needs to run either
        policy = dict(op.policy) if op.policy is not None else {"type": "silence"}
        if policy.get("type") == "semantic" and session.ctx.turn_detector is None:
            policy = {"type": "silence"}
            self._send(
                self.translator.on_server_event(
                    Error(
                        code="unsupported_feature",
                        message="semantic_vad needs a turn-completion model, which this server does not have "
                        "(make install, or --turn-model): turns end after silence_duration_ms of silence",
                    ),
                    client_event_id=op.event_id,
                )
            )
        await session.on_text(encode(SessionUpdate(config={"turn_detection": policy})))

    def _message_of(self, item_id: str) -> Message | None:
        """The history message behind a Realtime item, if it is still there."""
        session = self.session
        created = self._created.pop(item_id, None)
        if created is not None:
            return created
        response_id = self._reply_of_item.pop(item_id, None)
        if response_id is not None:
            return session.reply_messages(response_id)[1]
        turn_id = self._turn_of_item.pop(item_id, None)
        if turn_id is None:
            return None
        held = session.held_message(turn_id)
        if held is not None:
            return held
        answered_by = self._reply_of_turn.get(turn_id)
        return session.reply_messages(answered_by)[0] if answered_by is not None else None

    # ------------------------------------------------------------------ Session -> client

    def translate(self, event: ServerEvent) -> list[Event]:
        """The Realtime events for one event of the Session, noting the items they name."""
        events = self.translator.on_server_event(event)
        match event:
            case SpeechStopped() | TranscriptFinal():
                for out in events:
                    if out["type"] == "input_audio_buffer.committed":
                        _remember(self._turn_of_item, out["item_id"], event.turn_id)
            case ResponseStarted(turn_id=turn_id, response_id=response_id):
                _remember(self._reply_of_turn, turn_id, response_id)
            case ResponseFunctionCall() if self._round_end is None and self.translator.awaits_tool_round_end:
                self._round_end = asyncio.get_running_loop().call_soon(self._end_tool_round)
        self._note_messages(events)
        return events

    def translate_audio(self, pcm: bytes) -> list[Event]:
        events = self.translator.on_reply_audio(pcm)
        self._note_messages(events)
        return events

    def _note_messages(self, events: list[Event]) -> None:
        """A reply's message item opens at its start, or (a session with tools) at its first words or audio."""
        for out in events:
            if out["type"] == "response.output_item.added" and out["item"]["type"] == "message":
                item = self.translator.conversation.get(out["item"]["id"])
                if item is not None and item.hark_response_id is not None:
                    _remember(self._reply_of_item, item.id, item.hark_response_id)

    def _end_tool_round(self) -> None:
        self._round_end = None
        self._send(self.translator.end_tool_round())

    def close(self) -> None:
        """The connection ended: nothing more is sent."""
        if self._round_end is not None:
            self._round_end.cancel()
            self._round_end = None
