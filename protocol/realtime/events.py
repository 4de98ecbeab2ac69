"""Shapes of the Realtime server events: the GA and beta wire names, conversation items, error events.

Events are plain dicts (they go out as JSON); the translator fills ids and order. Names differ between
the dialects (see ../shared/notes/openai-realtime.md): one table maps a logical name to each.
"""

from __future__ import annotations

from enum import StrEnum


class Dialect(StrEnum):
    GA = "ga"  # openai-python `client.realtime`, no OpenAI-Beta header
    BETA = "beta"  # `OpenAI-Beta: realtime=v1`


# logical name -> (GA type, beta type); None: the dialect has no such event and it is not sent
_NAMES: dict[str, tuple[str, str | None]] = {
    "item.added": ("conversation.item.added", "conversation.item.created"),
    "item.done": ("conversation.item.done", None),
    "audio.delta": ("response.output_audio.delta", "response.audio.delta"),
    "audio.done": ("response.output_audio.done", "response.audio.done"),
    "audio_transcript.delta": ("response.output_audio_transcript.delta", "response.audio_transcript.delta"),
    "audio_transcript.done": ("response.output_audio_transcript.done", "response.audio_transcript.done"),
    "text.delta": ("response.output_text.delta", "response.text.delta"),
    "text.done": ("response.output_text.done", "response.text.done"),
}


def wire_name(dialect: Dialect, name: str) -> str | None:
    """The event type `dialect` uses for `name`; names not in the table are the same in both."""
    pair = _NAMES.get(name)
    if pair is None:
        return name
    return pair[0] if dialect is Dialect.GA else pair[1]


# Realtime client event types: handled, or known but meaningless on this transport
CLIENT_EVENTS = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.create",
        "conversation.item.retrieve",
        "conversation.item.truncate",
        "conversation.item.delete",
        "response.create",
        "response.cancel",
    }
)
UNSUPPORTED_EVENTS: dict[str, str] = {
    "output_audio_buffer.clear": "output_audio_buffer.* is for WebRTC and SIP; on a WebSocket the client owns "
    "playback: stop it locally and send conversation.item.truncate",
    "transcription_session.update": "transcription-only sessions are not served here; use session.update",
}


def assistant_part_type(dialect: Dialect, audio: bool) -> str:
    """Content type of an assistant item's part (inside items; `response.content_part.*` use audio/text)."""
    if dialect is Dialect.GA:
        return "output_audio" if audio else "output_text"
    return "audio" if audio else "text"
