"""Session operations: what a Realtime client event asks of Hark's Session, in Hark's own terms.

The translator turns each Realtime client event into zero or more of these; the transport hands them
to the same Session that serves hark.v1 (it is a translation, never a second pipeline). Every op
carries the `event_id` of the client event it came from, so an error the Session reports for it can
name that event. Audio in ops is PCM16 little-endian mono at the session's input rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

TurnDetectionType = Literal["server_vad", "semantic_vad"]


@dataclass(frozen=True, slots=True)
class UpdateConfig:
    """A validated hark.v1 SessionConfig patch (`validate_config_patch` accepted it)."""

    patch: Mapping[str, Any]
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class SetTurnDetection:
    """How the user's turn ends. `policy` is None when the client commits (turn_detection: null).

    `policy` is a turn-taking policy: `{"type": "silence", "silence_ms": N}` (server_vad) or
    `{"type": "semantic", "eagerness": "low|medium|high|auto"}` (semantic_vad). With
    `create_response` false the session must not answer a detected turn by itself; with
    `interrupt_response` false speech during a reply must not cancel it.
    """

    mode: TurnDetectionType | None
    policy: Mapping[str, Any] | None
    create_response: bool = True
    interrupt_response: bool = True
    idle_timeout_ms: int | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class SetTranscription:
    """Input transcription settings. Hark always transcribes (its LLM reads text); `enabled` only
    says whether the client wants transcription events. `language` and `prompt` are hints."""

    enabled: bool
    model: str | None = None
    language: str | None = None
    prompt: str | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class SetMaxOutputTokens:
    """Cap on tokens per reply; None means no cap (Realtime's "inf")."""

    limit: int | None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class AppendAudio:
    """Microphone audio, PCM16 at the session's input rate, 10 to 1000 ms (a valid hark.v1 frame)."""

    pcm: bytes
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class CommitAudio:
    """End the user's turn now (hark.v1 `audio.commit`). The session reports the committed turn with
    `speech.stopped` then `transcript.final`; the translator names its user item `item_id`. With
    `respond` false (turn_detection null) the session must wait for a CreateResponse."""

    item_id: str
    respond: bool
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ClearAudio:
    """Drop the input audio not yet committed (and an open, uncommitted user turn)."""

    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class _AddText:
    """A message added to the conversation as an item: one op class per role."""

    item_id: str
    text: str
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class AddUserText(_AddText):
    """A typed user message added to the conversation; it is answered only after a CreateResponse."""


@dataclass(frozen=True, slots=True)
class AddAssistantText(_AddText):
    """An assistant message the client adds for context (no reply is generated for it)."""


@dataclass(frozen=True, slots=True)
class AddSystemText(_AddText):
    """A system message the client adds to the conversation."""


@dataclass(frozen=True, slots=True)
class DeleteItem:
    """Remove an item from the conversation (`conversation.item.delete`)."""

    item_id: str
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class TruncateItem:
    """The client played only `audio_end_ms` of an assistant item: the history keeps what was heard.

    `response_id` is the hark.v1 response that produced the item (for `playback.position`)."""

    item_id: str
    audio_end_ms: int
    response_id: str | None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class CreateResponse:
    """Answer the conversation so far. Fields left None take the session's settings."""

    instructions: str | None = None
    audio_output: bool | None = None
    max_output_tokens: int | Literal["inf"] | None = None
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class SubmitToolOutput:
    """A client tool's result for the model's call `call_id` (hark.v1 `function_call.output`); the
    reply that waits for it goes on. The translator sends these at the client's `response.create`."""

    call_id: str
    output: str
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class CancelResponse:
    """Stop the reply in progress (hark.v1 `response.cancel`); `response_id` is the hark.v1 id."""

    response_id: str | None
    event_id: str | None = None


SessionOp = (
    UpdateConfig
    | SetTurnDetection
    | SetTranscription
    | SetMaxOutputTokens
    | AppendAudio
    | CommitAudio
    | ClearAudio
    | AddUserText
    | AddAssistantText
    | AddSystemText
    | DeleteItem
    | TruncateItem
    | CreateResponse
    | SubmitToolOutput
    | CancelResponse
)
