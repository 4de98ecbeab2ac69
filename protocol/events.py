"""Typed events of hark.v1. Each event is a frozen dataclass whose `TYPE` is its wire `type`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar


class ResponseStatus(StrEnum):
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


# ---------------------------------------------------------------- client -> server


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    TYPE: ClassVar[str] = "session.update"
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AudioCommit:
    TYPE: ClassVar[str] = "audio.commit"


@dataclass(frozen=True, slots=True)
class InputText:
    TYPE: ClassVar[str] = "input.text"
    text: str


@dataclass(frozen=True, slots=True)
class ResponseCancel:
    TYPE: ClassVar[str] = "response.cancel"
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class PlaybackPosition:
    TYPE: ClassVar[str] = "playback.position"
    response_id: str
    played_ms: int


@dataclass(frozen=True, slots=True)
class Ping:
    TYPE: ClassVar[str] = "ping"
    id: str | None = None


@dataclass(frozen=True, slots=True)
class SessionClose:
    TYPE: ClassVar[str] = "session.close"


ClientEvent = SessionUpdate | AudioCommit | InputText | ResponseCancel | PlaybackPosition | Ping | SessionClose
CLIENT_EVENTS: tuple[type, ...] = (
    SessionUpdate,
    AudioCommit,
    InputText,
    ResponseCancel,
    PlaybackPosition,
    Ping,
    SessionClose,
)

# ---------------------------------------------------------------- server -> client


@dataclass(frozen=True, slots=True)
class SessionCreated:
    TYPE: ClassVar[str] = "session.created"
    session_id: str
    protocol: str
    config: dict[str, Any]
    limits: dict[str, Any]
    engines: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    TYPE: ClassVar[str] = "session.updated"
    config: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    TYPE: ClassVar[str] = "speech.started"
    turn_id: int
    audio_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    TYPE: ClassVar[str] = "speech.stopped"
    turn_id: int
    audio_ms: int


@dataclass(frozen=True, slots=True)
class TranscriptPartial:
    TYPE: ClassVar[str] = "transcript.partial"
    turn_id: int
    text: str
    stable_text: str
    # what the recognizer learned besides the words, e.g. SenseVoice's {"language", "emotion", "event"}
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TranscriptFinal:
    TYPE: ClassVar[str] = "transcript.final"
    turn_id: int
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    TYPE: ClassVar[str] = "response.started"
    turn_id: int
    response_id: str


@dataclass(frozen=True, slots=True)
class ResponseTextDelta:
    TYPE: ClassVar[str] = "response.text.delta"
    response_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class ResponseAudioStarted:
    TYPE: ClassVar[str] = "response.audio.started"
    response_id: str
    sample_rate: int
    encoding: str = "pcm_s16le"


@dataclass(frozen=True, slots=True)
class ResponseAudioDone:
    TYPE: ClassVar[str] = "response.audio.done"
    response_id: str
    audio_ms: int


@dataclass(frozen=True, slots=True)
class ResponseDone:
    TYPE: ClassVar[str] = "response.done"
    response_id: str
    status: str
    text: str
    metrics: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Error:
    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class Pong:
    TYPE: ClassVar[str] = "pong"
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
    | Error
    | Pong
)
SERVER_EVENTS: tuple[type, ...] = (
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
    Error,
    Pong,
)
Event = ClientEvent | ServerEvent
