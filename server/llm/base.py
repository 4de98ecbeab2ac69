"""Language-model engine interface: stream text deltas (and tool calls) for a conversation, cancellable."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the model made. `arguments` is the JSON text as the model wrote it: it may
    not parse, and the caller decides what to tell the model then."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """One function tool, in the Realtime API's flat shape; `parameters` is a JSON-schema object."""

    name: str
    description: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """`auto`, `none`, `required`, or `function` with the one tool the model must call."""

    mode: Literal["auto", "none", "required", "function"] = "auto"
    name: str = ""


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # assistant: the calls it made (content may then be "")
    tool_call_id: str = ""  # tool: the call whose result `content` is


@dataclass(slots=True)
class LLMRequest:
    messages: list[Message]
    request_id: str
    session_id: str
    max_tokens: int = 256
    tools: tuple[ToolSpec, ...] = ()  # offered to the model; part of the prompt's committed prefix
    tool_choice: ToolChoice = ToolChoice()


@dataclass(slots=True)
class LLMUsage:
    """Filled in by the engine as it streams; read after the stream ends."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0  # tokens the model wrote (text and tool calls), as its server counts them
    speculative_prefills: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class LLMEngine(ABC):
    name: str = "llm"

    async def start(self) -> None:
        """Connect or load; called once before the first request."""

    @abstractmethod
    def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncIterator[str | ToolCall]:
        """Yield reply text deltas, and a ToolCall for each complete call the model makes (never its
        markup as text). Cancelling the consuming task (or `aclose()` on the iterator) must stop
        generation on the engine's side too. Engines without tool support yield only text."""

    async def aclose(self) -> None:
        """Close connections."""


def request_id(session_id: str, turn: int, attempt: int = 0) -> str:
    """`<session>_t<turn>_r<attempt>`, fixed width.

    SGLang's gateway strips `_t`/`_r` suffixes from a rid to find the conversation, so every
    request of a session routes to the worker holding its cache; and SGLang's abort matches rids
    by prefix, so no rid may be a prefix of another: the fixed width guarantees it.
    """
    return f"{session_id}_t{turn:06d}_r{attempt:04d}"


class LLMUnavailable(RuntimeError):
    """The model server could not answer: unreachable, timed out, 5xx, or a stream cut short."""


@dataclass(frozen=True, slots=True)
class PrefillResult:
    prompt_tokens: int
    cached_tokens: int


class SpeculativeLLM(ABC):
    """An engine whose server keeps computed prompt prefixes (SGLang's radix cache).

    `partial_prompt(history, text)` must be a string prefix of `final_prompt(history + [user: T])`
    whenever T starts with `text`: that is what makes a prefill while the user talks pay off.
    """

    @abstractmethod
    def partial_prompt(
        self,
        history: list[Message],
        partial_user_text: str,
        tools: tuple[ToolSpec, ...] = (),
        tool_choice: ToolChoice = ToolChoice(),
    ) -> str: ...

    @abstractmethod
    def final_prompt(
        self,
        messages: list[Message],
        tools: tuple[ToolSpec, ...] = (),
        tool_choice: ToolChoice = ToolChoice(),
    ) -> str:
        """The reply's prompt; `tools`/`tool_choice` as in the LLMRequest (they are in the prefix)."""

    @abstractmethod
    async def prefill(self, prompt: str, request_id: str, session_id: str) -> PrefillResult:
        """Compute and cache the KV of `prompt`; generate nothing."""

    @abstractmethod
    async def abort(self, request_id: str) -> None:
        """Stop a request on the server (best effort)."""

    async def end_of_turn(self, prompt: str, request_id: str, session_id: str) -> float | None:
        """P(the user's turn is over) from the model's next token after `prompt`, which ends in the
        user's words (a `partial_prompt`); None where the engine cannot say. Raises LLMUnavailable."""
        return None
