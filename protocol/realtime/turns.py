"""User turns: the Session's speech and transcript events as Realtime input-buffer and transcription events.

A hark.v1 turn becomes one user item. Its transcription deltas are the growth of `stable_text` (it
only grows within a turn; the rest of a partial may still change) and, at the final, whatever the
final adds to it; deltas heard before the commit are held until the item exists, since clients
expect transcription of a committed item (the order of ../shared/notes/openai-realtime.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..events import SpeechStarted, SpeechStopped, TranscriptFinal, TranscriptPartial
from .conversation import Conversation, Item
from .emitter import Emitter, Event
from .session_config import RealtimeSession

MAX_OPEN_TURNS = 8


@dataclass(slots=True)
class _Turn:
    item_id: str
    audio_start_ms: int = 0
    audio_end_ms: int = 0
    committed: bool = False
    sent_text: str = ""  # transcript sent as deltas so far
    held_deltas: list[str] = field(default_factory=list)  # stable text heard before the commit


class UserTurns:
    def __init__(self, emitter: Emitter, conversation: Conversation) -> None:
        self._emit = emitter
        self._conversation = conversation
        self._turns: dict[int, _Turn] = {}
        self._open_turn: int | None = None  # speech started, not yet stopped
        self._commit_item: str | None = None  # named by a client commit, not yet seen from the Session

    def name_commit(self) -> str:
        """The item id of a client commit: the turn being spoken, else a new one the next turn takes."""
        open_turn = self._turns.get(self._open_turn) if self._open_turn is not None else None
        if open_turn is not None:
            return open_turn.item_id
        self._commit_item = self._emit.new_id("item")
        return self._commit_item

    def forget_commit(self) -> None:
        """The Session found nothing to commit, or the buffer was cleared."""
        self._commit_item = None

    def _turn(self, turn_id: int) -> _Turn:
        turn = self._turns.get(turn_id)
        if turn is None:
            item_id, self._commit_item = self._commit_item or self._emit.new_id("item"), None
            turn = self._turns[turn_id] = _Turn(item_id)
            while len(self._turns) > MAX_OPEN_TURNS:  # turns the Session dropped (a clear) are forgotten
                del self._turns[next(iter(self._turns))]
        return turn

    def speech_started(self, event: SpeechStarted, session: RealtimeSession) -> list[Event]:
        turn = self._turn(event.turn_id)
        turn.audio_start_ms = event.audio_ms
        self._open_turn = event.turn_id
        if session.turn_detection is None:  # manual turns: the client knows when it spoke
            return []
        return [
            self._emit.event("input_audio_buffer.speech_started", audio_start_ms=event.audio_ms, item_id=turn.item_id)
        ]

    def partial(self, event: TranscriptPartial, session: RealtimeSession) -> list[Event]:
        turn = self._turn(event.turn_id)
        if session.transcription is None:
            return []
        stable = event.stable_text
        known = turn.sent_text + "".join(turn.held_deltas)
        if not stable.startswith(known) or len(stable) == len(known):
            return []
        delta = stable[len(known) :]
        if not turn.committed:
            turn.held_deltas.append(delta)
            return []
        turn.sent_text += delta
        return [self._delta(turn, delta)]

    def speech_stopped(self, event: SpeechStopped, session: RealtimeSession) -> list[Event]:
        """The turn is committed: speech_stopped (VAD only), committed, the user item, held deltas."""
        turn = self._turn(event.turn_id)
        turn.audio_end_ms = event.audio_ms
        if self._open_turn == event.turn_id:
            self._open_turn = None
        if turn.committed:
            return []
        turn.committed = True
        events: list[Event] = []
        if session.turn_detection is not None:
            events.append(
                self._emit.event("input_audio_buffer.speech_stopped", audio_end_ms=event.audio_ms, item_id=turn.item_id)
            )
        previous = self._conversation.last_id()
        events.append(self._emit.event("input_audio_buffer.committed", item_id=turn.item_id, previous_item_id=previous))
        events += self._emit.add_item(self._conversation, Item(turn.item_id, "user", audio=True, text=None))
        for delta in turn.held_deltas:
            turn.sent_text += delta
            events.append(self._delta(turn, delta))
        turn.held_deltas.clear()
        return events

    def final(self, event: TranscriptFinal, session: RealtimeSession) -> list[Event]:
        turn = self._turn(event.turn_id)
        events = (
            [] if turn.committed else self.speech_stopped(SpeechStopped(event.turn_id, turn.audio_start_ms), session)
        )
        self._turns.pop(event.turn_id, None)
        if session.transcription is None:
            return events
        item = self._conversation.get(turn.item_id)
        if item is not None:
            item.text = event.text
        if event.text.startswith(turn.sent_text) and len(event.text) > len(turn.sent_text):
            events.append(self._delta(turn, event.text[len(turn.sent_text) :]))
        seconds = max(turn.audio_end_ms - turn.audio_start_ms, 0) / 1000.0
        events.append(
            self._emit.event(
                "conversation.item.input_audio_transcription.completed",
                item_id=turn.item_id,
                content_index=0,
                transcript=event.text,
                usage={"type": "duration", "seconds": seconds},
            )
        )
        return events

    def _delta(self, turn: _Turn, delta: str) -> Event:
        return self._emit.event(
            "conversation.item.input_audio_transcription.delta", item_id=turn.item_id, content_index=0, delta=delta
        )
