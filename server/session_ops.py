"""Conversation operations for clients that edit the conversation item by item (the OpenAI Realtime API).

hark.v1 has turns: speech or a typed message, and the server answers each. The Realtime API also
lets the client decide who speaks when: turns that end only at the client's commit, turns that are
not answered until it asks (`response.create`), replies speech does not interrupt, messages added
to or deleted from the conversation, and a reply cut back to what was played. `ConversationOps` is
that part of the `Session` (a mixin: the same turn machine, history and reply path, never a second
pipeline); the translator's ops reach it through server/transport/realtime_bridge.py.

Everything here runs on the event loop; what touches the open utterance or starts a reply goes
through the session's inbox (`RespondIn`, `ClearIn`), so it happens in order with the audio before it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hark.protocol import ErrorCode, SessionConfig

from .history import History
from .llm.base import LLMRequest, Message, Role, SpeculativeLLM, ToolChoice, ToolSpec
from .response import ResponseRun
from .tool_round import ToolRunner, ToolSetup
from .turn.endpoint import EndReason, TurnEnd

if TYPE_CHECKING:
    from .context import Outbox, ServerContext
    from .listener import Listener
    from .llm.speculation import Speculator
    from .transcriber import Transcriber

MAX_REMEMBERED = 64  # finished replies and held user turns a client may still cut or delete
DEFAULT_MAX_TOKENS = LLMRequest(messages=[], request_id="", session_id="").max_tokens


@dataclass(slots=True)
class TurnTaking:
    """Who ends a turn and what follows it. hark.v1 sessions keep the defaults."""

    client_commits: bool = False  # a turn ends only at the client's commit (Realtime turn_detection: null)
    auto_respond: bool = True  # a finished user turn is answered at once (Realtime create_response)
    interrupt: bool = True  # speech during a reply cancels it (Realtime interrupt_response)


@dataclass(frozen=True, slots=True)
class ResponseOverrides:
    """Settings of one reply that differ from the session's (Realtime `response.create`); None keeps them."""

    instructions: str | None = None
    audio_output: bool | None = None
    max_tokens: int | None = None

    def instructions_for(self, config: SessionConfig) -> str:
        return config.instructions if self.instructions is None else self.instructions

    def audio_output_for(self, config: SessionConfig) -> bool:
        return config.audio_output if self.audio_output is None else self.audio_output


NO_OVERRIDES = ResponseOverrides()


@dataclass(frozen=True, slots=True)
class RespondIn:
    """Answer the conversation as it stands (Realtime `response.create`), in order with the input before it."""

    overrides: ResponseOverrides
    arrival: float


@dataclass(frozen=True, slots=True)
class ClearIn:
    """Drop the open, uncommitted utterance (Realtime `input_audio_buffer.clear`)."""


@dataclass(slots=True)
class _Reply:
    """A finished reply and the history messages it left (None: none, or deleted since)."""

    run: ResponseRun
    user: Message | None = None
    assistant: Message | None = None


def _remember(table: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    table[key] = value
    while len(table) > MAX_REMEMBERED:
        table.popitem(last=False)


@dataclass(slots=True)
class _OpsState:
    turn_taking: TurnTaking = field(default_factory=TurnTaking)
    max_output_tokens: int | None = None  # None: the engine's default cap
    replies: OrderedDict[str, _Reply] = field(default_factory=OrderedDict)  # by response id
    held: OrderedDict[int, Message] = field(default_factory=OrderedDict)  # user turns awaiting response.create
    cuts: dict[str, float] = field(default_factory=dict)  # replies cut while still running


class ConversationOps:
    """The Session's item-level operations. Session inherits this and calls `_init_conversation_ops()`."""

    # the Session's own state these operations work on
    _history: History
    _response: ResponseRun | None
    _inbox: asyncio.Queue[Any]
    _utterance: Any
    _listener: Listener
    _transcriber: Transcriber
    config: SessionConfig
    ctx: ServerContext
    id: str
    _outbox: Outbox
    _speculator: Speculator | None

    def report(self, code: ErrorCode, message: str, fatal: bool = False) -> None: ...

    def _init_conversation_ops(self) -> None:
        self._ops = _OpsState()

    @property
    def turn_taking(self) -> TurnTaking:
        return self._ops.turn_taking

    @turn_taking.setter
    def turn_taking(self, value: TurnTaking) -> None:
        self._ops.turn_taking = value

    @property
    def max_output_tokens(self) -> int | None:
        return self._ops.max_output_tokens

    @max_output_tokens.setter
    def max_output_tokens(self, value: int | None) -> None:
        self._ops.max_output_tokens = value

    # ------------------------------------------------------------------ from the transport

    async def request_response(self, overrides: ResponseOverrides = NO_OVERRIDES) -> None:
        """Answer the conversation as it stands, once the input before this request is processed."""
        await self._inbox.put(RespondIn(overrides, time.monotonic()))

    async def clear_input(self) -> None:
        """Forget the utterance in progress (its audio is not transcribed or answered)."""
        await self._inbox.put(ClearIn())

    def add_message(self, role: Role, text: str) -> Message:
        """A message the client adds at the end of the conversation; it is not answered by itself."""
        return self._history.add(Message(role, text))

    def remove_message(self, message: Message) -> bool:
        removed = self._history.remove(message)
        for reply in self._ops.replies.values():
            if reply.user is message:
                reply.user = None
            if reply.assistant is message:
                reply.assistant = None
        return removed

    def reply_messages(self, response_id: str) -> tuple[Message | None, Message | None]:
        """The (user, assistant) history messages of a finished reply."""
        reply = self._ops.replies.get(response_id)
        return (None, None) if reply is None else (reply.user, reply.assistant)

    def submit_tool_output(self, call_id: str, output: str) -> bool:
        """A client tool's result (hark.v1 function_call.output, Realtime function_call_output):
        the reply waiting for it goes on. An id no call awaits is reported (unknown_call_id)."""
        run = self._response
        if run is not None and run.tools is not None and run.tools.submit(call_id, output):
            return True
        self.report(ErrorCode.UNKNOWN_CALL_ID, f"no tool call {call_id[:128]!r} is waiting for its output")
        return False

    def held_message(self, turn_id: int) -> Message | None:
        """The user message of a turn that waits for a response.create."""
        return self._ops.held.get(turn_id)

    def cut_reply(self, response_id: str, played_ms: float) -> str | None:
        """The client played only `played_ms` of a reply: the history keeps what was heard, as a
        barge-in keeps it (the reply's own record of which words each stretch of audio carries).
        Returns the text kept; None for a reply still running (it is cut when it ends, and its
        response.done says with what) or one no longer remembered."""
        run = self._response
        if run is not None and run.response_id == response_id:
            run.client_played_ms = played_ms
            self._ops.cuts[response_id] = played_ms
            return None
        reply = self._ops.replies.get(response_id)
        if reply is None:
            return None
        reply.run.client_played_ms = played_ms
        heard = reply.run.heard_text()
        if reply.assistant is not None:
            if heard:
                cut = Message("assistant", heard)
                if self._history.replace(reply.assistant, cut):
                    reply.assistant = cut
            else:  # nothing of it was heard: as after a barge-in, the reply leaves no message
                self._history.remove(reply.assistant)
                reply.assistant = None
        return heard

    # ------------------------------------------------------------------ hooks in the Session's turn machine

    def _pause_may_end_turn(self) -> bool:
        return not self._ops.turn_taking.client_commits

    def _ends_turn(self, end: TurnEnd) -> bool:
        """Whether an end the endpointer found as the input clock advanced stands: with client
        commits only the cap on one utterance's length does."""
        return self._pause_may_end_turn() or end.reason is EndReason.MAX_UTTERANCE

    def _may_interrupt(self) -> bool:
        return self._ops.turn_taking.interrupt

    def _holds_turns(self) -> bool:
        return not self._ops.turn_taking.auto_respond

    def _hold_user_turn(self, turn_id: int, text: str) -> None:
        """A finished user turn the client will ask a reply for: its words join the conversation now."""
        message = self._history.add(Message("user", self._history.take_user_text(text)))
        _remember(self._ops.held, turn_id, message)

    def _conversation_for(self, user_text: str, overrides: ResponseOverrides) -> list[Message]:
        """The prompt of a reply: the conversation, and `user_text` ("" for a response.create: none)."""
        messages = self._history.conversation(overrides.instructions_for(self.config))
        if user_text:
            messages.append(Message("user", user_text))
        return messages

    def _new_reply(
        self, response_id: str, rid: str, messages: list[Message], overrides: ResponseOverrides
    ) -> ResponseRun:
        """The run of a reply to `messages`, with the tools it offers; the speculation settles on its prompt."""
        tools = self._tool_setup()
        specs, choice = ((), ToolChoice()) if tools is None else (tools.specs(), tools.choice_for(0))
        prefills = aborted = 0
        if self._speculator is not None and isinstance(self.ctx.llm, SpeculativeLLM):
            self._speculator.settle(self.ctx.llm.final_prompt(messages, specs, choice))
            prefills, aborted = self._speculator.turn_prefills, self._speculator.turn_aborted
        request = LLMRequest(messages, rid, self.id, self._max_tokens_for(overrides), tools=specs, tool_choice=choice)
        config = self.config
        run = ResponseRun(
            self.ctx,
            self._outbox,
            request,
            response_id,
            config.output_sample_rate,
            config.voice,
            overrides.audio_output_for(config),
        )
        if tools is not None:
            run.tools = ToolRunner(tools, self._outbox, response_id, self.ctx.metrics)
        run.usage.speculative_prefills = prefills
        run.usage.extra["speculative_aborted"] = aborted
        return run

    def _tool_setup(self) -> ToolSetup | None:
        """The tools a reply offers now (the session's and the server's); None: no tools at all."""
        return ToolSetup.for_session(self.config, self.ctx.server_tools, self.ctx.config.tool_timeout_s)

    def _prompt_tools(self) -> tuple[tuple[ToolSpec, ...], ToolChoice]:
        """The tools and choice a reply's first request carries: they are part of its prompt's prefix."""
        setup = self._tool_setup()
        return ((), ToolChoice()) if setup is None else (setup.specs(), setup.choice_for(0))

    def _max_tokens_for(self, overrides: ResponseOverrides) -> int:
        limit = overrides.max_tokens or self._ops.max_output_tokens
        return limit if limit is not None else DEFAULT_MAX_TOKENS

    def _was_cut(self, run: ResponseRun) -> bool:
        """Asked once as the reply ends: did the client cut it while it ran? Then even a completed
        reply keeps only what was heard."""
        return self._ops.cuts.pop(run.response_id, None) is not None

    def _record_exchange(self, run: ResponseRun, user_text: str, heard: str) -> None:
        """Into the history (a response.create's reply has no user message of its own): the user's
        words, the reply's tool calls and results, and its heard words; remembered by reply."""
        user = self._history.add(Message("user", user_text)) if user_text else None
        assistant = None
        for message in run.conversation_messages(heard):
            added = self._history.add(message)
            if message.role == "assistant" and not message.tool_calls:
                assistant = added
        _remember(self._ops.replies, run.response_id, _Reply(run, user, assistant))

    async def _drop_utterance(self) -> None:
        """ClearIn, on the input task: the open utterance ends without a transcript or a reply."""
        if self._utterance is None:
            return
        await self._transcriber.finalize()  # its words are not wanted
        self._listener.utterance_ended(self._listener.samples_in)
        self._utterance = None
