"""The tool calls of one reply: who runs each call, the deadlines, and what the model is told.

A reply (`ResponseRun`) streams the model; when the model calls tools, the run hands the calls to its
`ToolRunner` and continues the same turn with the assistant's tool-call message and one tool message
per call. Every call becomes a tool message, whatever happened: arguments that are not a JSON object
(once per reply; the second time the turn ends with `tool_arguments_invalid`), a tool nobody has, a
server tool's failure or timeout, a client that never answers. A tool of the session's own list is
the client's: the server sends `response.function_call` and waits for `function_call.output` until
the session's `client_tool_timeout_s`. Any other name the server's toolbox owns (MCP servers) runs
here with `--tool-timeout-s`. The calls of one round run concurrently. Cancelling the reply
(barge-in, response.cancel) cancels every call; a client still running one is told with
`response.function_call.cancelled`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hark.protocol import ErrorCode, SessionConfig
from hark.protocol import events as ev
from hark.protocol.tools import ToolChoiceSetting, ToolDefinition

from .context import Outbox
from .llm.base import Message, ToolCall, ToolChoice, ToolSpec
from .metrics import Metrics
from .tools.base import ServerToolbox, ToolResult

log = logging.getLogger(__name__)

# LLM rounds that may call tools in one reply; the round after the last one is asked with
# tool_choice "none", and a model that still calls tools then ends the turn (tool_round_limit)
MAX_TOOL_ROUNDS = 4
# calls one round may make: past it a model (or an engine) gone wrong would flood the client and the
# server's tools; the calls past it are answered with an error and not run
MAX_CALLS_PER_ROUND = 8
ROUND_ATTEMPT_BASE = 9000  # rids of later rounds: see round_request_id
# the prefix of a tool message that reports a failure instead of a result (the model reads it)
TOOL_ERROR_PREFIX = "Error"


class ToolTurnEnded(Exception):
    """The model's tool use ended the turn; `code` goes to the client in an `error`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def tool_error(code: str, message: str) -> str:
    """A tool message that tells the model the call failed, and why."""
    return f"{TOOL_ERROR_PREFIX} ({code}): {message}"


def round_request_id(first: str, round_no: int) -> str:
    """The rid of a reply's `round_no`-th LLM request: its first rid (`llm.base.request_id`, attempt
    0) with attempt 9000 + round, so every request has its own rid, fixed width and prefix-free,
    apart from the speculator's prefills of the same turn number (attempts 1, 2, ...)."""
    stem, sep, attempt = first.rpartition("_r")
    if not sep or len(attempt) != 4 or not attempt.isdigit() or round_no == 0:
        return first  # the first round, or not that scheme (a test's own rid): keep it
    return f"{stem}_r{ROUND_ATTEMPT_BASE + round_no:04d}"


def parse_arguments(text: str) -> dict[str, Any] | None:
    """The call's arguments as an object; None when the model wrote something else. No arguments
    at all (what some models write for a tool without parameters) is an empty object."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _spec(tool: ToolDefinition) -> ToolSpec:
    return ToolSpec(tool.name, tool.description, tool.parameters)


@dataclass(frozen=True, slots=True)
class ToolSetup:
    """What a session offers one reply: its own (client) tools, the server's, and the rules."""

    client_tools: tuple[ToolDefinition, ...]
    server_tools: ServerToolbox | None
    choice: ToolChoiceSetting
    client_timeout_s: float
    server_timeout_s: float
    filler: str = ""
    filler_after_ms: int = 1000

    @classmethod
    def for_session(
        cls, config: SessionConfig, server_tools: ServerToolbox | None, server_timeout_s: float
    ) -> ToolSetup | None:
        """None when there is no tool at all (the reply then streams text only, as before tools)."""
        if not config.tools and (server_tools is None or not server_tools.specs()):
            return None
        return cls(
            config.tools,
            server_tools,
            config.tool_choice,
            config.client_tool_timeout_s,
            server_timeout_s,
            config.tool_filler,
            config.tool_filler_after_ms,
        )

    def specs(self) -> tuple[ToolSpec, ...]:
        """The client's tools, then the server's (a client tool of the same name shadows one)."""
        own = {tool.name for tool in self.client_tools}
        server = self.server_tools.specs() if self.server_tools is not None else ()
        return tuple(_spec(tool) for tool in self.client_tools) + tuple(s for s in server if s.name not in own)

    def choice_for(self, round_no: int) -> ToolChoice:
        """A forced call (required, one function) is forced only in the first round, or the model
        could never answer; past MAX_TOOL_ROUNDS it must answer in words."""
        if round_no >= MAX_TOOL_ROUNDS:
            return ToolChoice("none")
        if round_no > 0 and self.choice.mode in ("required", "function"):
            return ToolChoice("auto")
        return ToolChoice(self.choice.mode, self.choice.name)

    def kind_of(self, name: str) -> str:
        """client, server, or unknown: who runs a call of `name`."""
        if any(tool.name == name for tool in self.client_tools):
            return "client"
        if self.server_tools is not None and self.server_tools.owns(name):
            return "server"
        return "unknown"


class ToolRunner:
    """The tool calls of one reply (one per `ResponseRun`, created by the session). `run` runs one
    round's calls; `submit` delivers a client's output; `tool_ms` is the time the reply waited for
    tools. Used only on the event loop."""

    def __init__(self, setup: ToolSetup, outbox: Outbox, response_id: str, metrics: Metrics) -> None:
        self.setup = setup
        self._outbox = outbox
        self._response_id = response_id
        self._metrics = metrics
        self._pending: dict[str, asyncio.Future[str]] = {}  # client calls awaiting function_call.output
        self._invalid_arguments = 0
        self.tool_ms = 0.0
        self.calls = 0
        # what a client still running a call is told when the reply is cancelled (the session sets it)
        self.cancel_reason = "cancelled"

    def submit(self, call_id: str, output: str) -> bool:
        """A client's function_call.output; False when no call of this reply awaits `call_id`."""
        future = self._pending.get(call_id)
        if future is None or future.done():
            return False
        future.set_result(output)
        return True

    @staticmethod
    def normalize(calls: Sequence[ToolCall]) -> list[ToolCall]:
        """Every call with an id of its own (an engine that gave none, or the same one twice, gets one)."""
        seen: set[str] = set()
        out: list[ToolCall] = []
        for call in calls:
            call_id = call.call_id
            if not call_id or call_id in seen or len(call_id) > ev.MAX_ID_CHARS:
                call_id = f"call_{uuid.uuid4().hex[:24]}"
            seen.add(call_id)
            out.append(ToolCall(call_id, call.name, call.arguments))
        return out

    async def run(self, calls: Sequence[ToolCall], on_slow: Callable[[], Awaitable[None]] | None) -> list[Message]:
        """One tool message per call, in the calls' order. `on_slow` runs once if the calls take
        longer than the filler threshold. Raises ToolTurnEnded on a second set of invalid arguments."""
        jobs: list[Callable[[], Awaitable[str]]] = []  # coroutines made only once none can raise here
        for i, call in enumerate(calls):
            arguments = parse_arguments(call.arguments)
            kind = self.setup.kind_of(call.name)
            self.calls += 1
            if i >= MAX_CALLS_PER_ROUND:
                self._count(kind, "error")
                message = f"at most {MAX_CALLS_PER_ROUND} calls at once; this one was not run, call it again"
                jobs.append(functools.partial(_now, tool_error("too_many_calls", message)))
            elif arguments is None:
                self._invalid_arguments += 1
                self._count(kind, "invalid_arguments")
                if self._invalid_arguments > 1:
                    raise ToolTurnEnded(
                        ErrorCode.TOOL_ARGUMENTS_INVALID,
                        f"the model wrote arguments that are not a JSON object again (for {call.name[:64]!r}); "
                        "the turn ended",
                    )
                jobs.append(functools.partial(_now, tool_error("invalid_arguments", _invalid_arguments_message(call))))
            elif kind == "unknown":
                self._count(kind, "error")
                known = ", ".join(spec.name for spec in self.setup.specs())
                message = f"there is no tool named {call.name[:64]!r}; tools: {known}"
                jobs.append(functools.partial(_now, tool_error("unknown_tool", message)))
            elif kind == "server":
                jobs.append(functools.partial(self._server_call, call, arguments))
            else:
                jobs.append(functools.partial(self._client_call, call))
        started = time.monotonic()
        tasks = [asyncio.ensure_future(job()) for job in jobs]
        try:
            threshold = self.setup.filler_after_ms / 1000.0
            if on_slow is not None:
                _, pending = await asyncio.wait(tasks, timeout=threshold)
                if pending:
                    await on_slow()
            outputs = await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()  # cancelled with the reply: each call stops (and its client is told)
            await asyncio.gather(*tasks, return_exceptions=True)
            self.tool_ms += (time.monotonic() - started) * 1000.0
        return [Message("tool", output, tool_call_id=call.call_id) for call, output in zip(calls, outputs, strict=True)]

    async def _server_call(self, call: ToolCall, arguments: dict[str, Any]) -> str:
        toolbox = self.setup.server_tools
        assert toolbox is not None  # kind_of said server
        try:
            result = await toolbox.call(call.name, arguments, self.setup.server_timeout_s)
        except asyncio.CancelledError:
            self._count("server", "cancelled")
            raise
        except Exception as exc:  # the toolbox promises results, not exceptions: still, not the session's end
            log.exception("server tool %s raised", call.name)
            result = ToolResult(f"{type(exc).__name__}: {exc}", is_error=True)
        self._count("server", "error" if result.is_error else "ok")
        output = _bounded(result.output)
        return tool_error("tool_error", output) if result.is_error else output

    async def _client_call(self, call: ToolCall) -> str:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[call.call_id] = future
        self._outbox.send_event(
            ev.ResponseFunctionCall(
                response_id=self._response_id, call_id=call.call_id, name=call.name, arguments=call.arguments
            )
        )
        timeout = self.setup.client_timeout_s
        try:
            output = await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            self._count("client", "timeout")
            self._outbox.send_event(ev.ResponseFunctionCallCancelled(call_id=call.call_id, reason="timeout"))
            return tool_error("timeout", f"the client did not answer the call within {timeout:g} s")
        except asyncio.CancelledError:
            self._count("client", "cancelled")
            self._outbox.send_event(ev.ResponseFunctionCallCancelled(call_id=call.call_id, reason=self.cancel_reason))
            raise
        finally:
            del self._pending[call.call_id]
            future.cancel()
        self._count("client", "ok")
        return output

    def _count(self, kind: str, outcome: str) -> None:
        self._metrics.tool_calls.labels(kind, outcome).inc()


def _bounded(output: str) -> str:
    """A server tool's output within what a client's may be (it all goes into the prompt)."""
    limit = ev.MAX_TOOL_OUTPUT_CHARS
    return output if len(output) <= limit else f"{output[:limit]} [cut: {len(output) - limit} more characters]"


async def _now(text: str) -> str:
    return text


def _invalid_arguments_message(call: ToolCall) -> str:
    shown = call.arguments if len(call.arguments) <= 200 else call.arguments[:200] + "..."
    return f"the arguments of {call.name[:64]!r} are not a JSON object: {shown!r}; call it again with valid JSON"
