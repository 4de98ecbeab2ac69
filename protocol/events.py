"""Typed events of hark.v1, one declaration each: the wire `type`, the fields and what they accept.

Every event is a frozen msgspec Struct tagged by its `type` (also `cls.TYPE`); the annotations are
the contract the codec checks, bounds included, so a number or string a client sends is range-checked
before any handler sees it. Server events are bounded only where a client relies on it: they come
from a trusted peer, and a newer server may say more (unknown `error` codes, new metrics keys).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, cast

import msgspec
from msgspec import Meta

MAX_TEXT_CHARS = 8000  # input.text
MAX_ID_CHARS = 128  # ids a client sends and the server echoes (ping.id, response ids)
MAX_PLAYED_MS = 24 * 3600 * 1000  # playback.position: a day of reply audio, far past any reply
MAX_SAMPLE_RATE = 384_000
MAX_TRANSCRIPT_CHARS = 1000  # voice.create: what is said in a reference clip
MAX_TOOL_OUTPUT_CHARS = 16000  # function_call.output: a tool's result, read by the model as prompt


class ResponseStatus(StrEnum):
    """How a reply ended (`response.done.status`)."""

    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


Id = Annotated[str, Meta(max_length=MAX_ID_CHARS)]
NonNegative = Annotated[int, Meta(ge=0)]


class _Event(msgspec.Struct, frozen=True, tag_field="type"):
    TYPE: ClassVar[str]  # the wire `type`: the struct's tag, set below for every event class


# ---------------------------------------------------------------- client -> server


class SessionUpdate(_Event, frozen=True, tag="session.update"):
    """Change some session settings; `config` is checked key by key against `SessionConfig`."""

    config: dict[str, Any]


class AudioCommit(_Event, frozen=True, tag="audio.commit"):
    """End the user's spoken turn now (push-to-talk release)."""


class InputText(_Event, frozen=True, tag="input.text"):
    """A typed user turn, answered like a spoken one."""

    text: Annotated[str, Meta(min_length=1, max_length=MAX_TEXT_CHARS)]


class ResponseCancel(_Event, frozen=True, tag="response.cancel"):
    """Stop the reply in progress (or only the one named)."""

    response_id: Id | None = None


class PlaybackPosition(_Event, frozen=True, tag="playback.position"):
    """How much of a reply the client has really played, so the history keeps what was heard."""

    response_id: Id
    played_ms: Annotated[int, Meta(ge=0, le=MAX_PLAYED_MS)]


class Ping(_Event, frozen=True, tag="ping"):
    """Answered by `pong` with the same id."""

    id: Id | None = None


class SessionClose(_Event, frozen=True, tag="session.close"):
    """The client is done: finish the open turn and the reply, then close with 1000."""


class VoiceCreate(_Event, frozen=True, tag="voice.create"):
    """Register a cloned voice: a reference clip (base64) and what is said in it; answered by
    `voice.created` (echoing `id`) or an `error`. `sample_rate` is needed for `pcm_s16le` only."""

    audio: Annotated[str, Meta(min_length=1)]
    transcript: Annotated[str, Meta(min_length=1, max_length=MAX_TRANSCRIPT_CHARS)]
    format: Literal["wav", "mp3", "flac", "ogg", "pcm_s16le"] = "wav"
    sample_rate: Annotated[int, Meta(ge=1, le=MAX_SAMPLE_RATE)] | None = None
    id: Id | None = None


class FunctionCallOutput(_Event, frozen=True, tag="function_call.output"):
    """The result of a client tool the server asked for with `response.function_call`; the model
    reads `output` (any text, JSON by convention) and the reply goes on."""

    call_id: Id
    output: Annotated[str, Meta(max_length=MAX_TOOL_OUTPUT_CHARS)]


ClientEvent = (
    SessionUpdate
    | AudioCommit
    | InputText
    | ResponseCancel
    | PlaybackPosition
    | Ping
    | SessionClose
    | VoiceCreate
    | FunctionCallOutput
)
CLIENT_EVENTS: tuple[type[_Event], ...] = (
    SessionUpdate,
    AudioCommit,
    InputText,
    ResponseCancel,
    PlaybackPosition,
    Ping,
    SessionClose,
    VoiceCreate,
    FunctionCallOutput,
)

# ---------------------------------------------------------------- server -> client


class SessionCreated(_Event, frozen=True, tag="session.created"):
    """The server's first message: the session's id, full config, input limits and engine names."""

    session_id: str
    protocol: Literal["hark.v1"]
    config: dict[str, Any]
    limits: dict[str, Any]
    engines: dict[str, Any] = msgspec.field(default_factory=dict)


class SessionUpdated(_Event, frozen=True, tag="session.updated"):
    """The full config after an accepted `session.update`."""

    config: dict[str, Any]


class SpeechStarted(_Event, frozen=True, tag="speech.started"):
    """The VAD heard speech; `audio_ms` is where the turn's audio starts on the input clock."""

    turn_id: NonNegative
    audio_ms: NonNegative


class SpeechStopped(_Event, frozen=True, tag="speech.stopped"):
    """The user's turn ended at `audio_ms` on the input clock.

    `reason` says why (`TURN_END_REASONS`; typed `str` so that a client still reads a reason a newer
    server adds), `probability` is the turn detector's P(turn complete) when it took part."""

    turn_id: NonNegative
    audio_ms: NonNegative
    reason: str | None = None
    probability: float | None = None


# speech.stopped.reason: what ended the turn
TURN_END_REASONS = ("semantic", "silence", "max_silence", "commit", "max_utterance", "close")


class TranscriptPartial(_Event, frozen=True, tag="transcript.partial"):
    """The current hypothesis while the user speaks; `stable_text` only grows within a turn."""

    turn_id: NonNegative
    text: str
    stable_text: str
    # what the recognizer learned besides the words, e.g. SenseVoice's {"language", "emotion", "event"}
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class TranscriptFinal(_Event, frozen=True, tag="transcript.final"):
    """The turn's transcript; empty text means nothing intelligible was said (no reply follows).

    `confidence` is the recognizer's, in [0, 1] (null when the engine cannot say). `low_confidence`:
    below the session's `min_asr_confidence`, so the assistant does not answer the words: it asks
    the person to say it again or type it (a reply of its own, not the language model's)."""

    turn_id: NonNegative
    text: str
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    confidence: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    low_confidence: bool = False


class ResponseStarted(_Event, frozen=True, tag="response.started"):
    """A reply to `turn_id` begins."""

    turn_id: NonNegative
    response_id: str


class ResponseTextDelta(_Event, frozen=True, tag="response.text.delta"):
    """Reply text as it is generated; the deltas concatenate to the reply."""

    response_id: str
    delta: str


class ResponseAudioStarted(_Event, frozen=True, tag="response.audio.started"):
    """The binary frames that follow are this reply's audio, at `sample_rate`."""

    response_id: str
    sample_rate: Annotated[int, Meta(ge=1, le=MAX_SAMPLE_RATE)]
    # a closed set: a client cannot play audio in an encoding it does not know
    encoding: Literal["pcm_s16le"] = "pcm_s16le"


class ResponseAudioDone(_Event, frozen=True, tag="response.audio.done"):
    """All of the reply's audio has been sent (`audio_ms` of it)."""

    response_id: str
    audio_ms: NonNegative


class ResponseDone(_Event, frozen=True, tag="response.done"):
    """The reply ended: how (`status`), what the user got (`text`) and the turn's latency breakdown."""

    response_id: str
    status: ResponseStatus
    text: str
    metrics: dict[str, Any]


class ResponseFunctionCall(_Event, frozen=True, tag="response.function_call"):
    """The model calls a client tool: run it and answer `function_call.output` with this `call_id`.
    `arguments` is a JSON object as text, as the model wrote it (the server checked it parses)."""

    response_id: str
    call_id: str
    name: str
    arguments: str


class ResponseFunctionCallCancelled(_Event, frozen=True, tag="response.function_call.cancelled"):
    """The server no longer waits for this call's output: `reason` is `barge-in`, `cancelled`
    (response.cancel, a newer turn, the session ending) or `timeout` (the deadline passed; the model
    was told the tool did not answer). An output sent after this is refused as `unknown_call_id`."""

    call_id: str
    reason: str


class Error(_Event, frozen=True, tag="error"):
    """A refused input or a failure. `code` is an `ErrorCode` value; typed `str` so that a client
    still reads the codes a newer server adds."""

    code: str
    message: str
    fatal: bool = False


class Pong(_Event, frozen=True, tag="pong"):
    """The answer to `ping`."""

    id: str | None = None


class VoiceCreated(_Event, frozen=True, tag="voice.created"):
    """A `voice.create` was accepted: `voice` is the name to put in `session.update {"voice": ...}`."""

    voice: str
    duration_ms: NonNegative
    sample_rate: NonNegative
    id: str | None = None


ServerEvent = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | TranscriptPartial
    | TranscriptFinal
    | ResponseStarted
    | ResponseTextDelta
    | ResponseAudioStarted
    | ResponseAudioDone
    | ResponseDone
    | ResponseFunctionCall
    | ResponseFunctionCallCancelled
    | Error
    | Pong
    | VoiceCreated
)
SERVER_EVENTS: tuple[type[_Event], ...] = (
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptPartial,
    TranscriptFinal,
    ResponseStarted,
    ResponseTextDelta,
    ResponseAudioStarted,
    ResponseAudioDone,
    ResponseDone,
    ResponseFunctionCall,
    ResponseFunctionCallCancelled,
    Error,
    Pong,
    VoiceCreated,
)
Event = ClientEvent | ServerEvent

for _cls in CLIENT_EVENTS + SERVER_EVENTS:
    _cls.TYPE = cast(str, _cls.__struct_config__.tag)
