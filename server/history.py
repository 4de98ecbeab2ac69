"""What one session's language model remembers: the finished exchanges, and the user's words still
waiting for an answer. Both are bounded, so a long or hostile session cannot grow them."""

from __future__ import annotations

from collections import deque

from .llm.base import Message


class History:
    """Owned by one `Session`. Finished exchanges keep only the newest `max_messages` (the most the
    prompt ever uses; the LLM engine trims further by tokens). Carried text is the user's words of
    replies that were cut before any of it was heard, or that failed: they ride with the next turn,
    at most `max_carried_chars` of them, the oldest dropped first (at a word boundary where the
    language has spaces). Without that cap, typed turns each cancelled by the next would fold into
    one prompt that grows with every message."""

    def __init__(self, max_messages: int, max_carried_chars: int) -> None:
        self._messages: deque[Message] = deque(maxlen=max(0, max_messages))
        self._max_carried = max(0, max_carried_chars)
        self._carried = ""

    @property
    def messages(self) -> list[Message]:
        return list(self._messages)

    @property
    def carried(self) -> str:
        return self._carried

    def conversation(self, instructions: str) -> list[Message]:
        """System instructions and the finished turns, as the LLM sees them."""
        system = [Message("system", instructions)] if instructions else []
        return system + list(self._messages)

    def user_text(self, text: str) -> str:
        """The user's message for a turn whose own words are `text`: the carried words first."""
        return f"{self._carried} {text}".strip()

    def take_user_text(self, text: str) -> str:
        """`user_text(text)`, and the carried words are now in flight with it."""
        message = self.user_text(text)
        self._carried = ""
        return message

    def add_exchange(self, user_text: str, assistant_text: str) -> None:
        self._messages.extend((Message("user", user_text), Message("assistant", assistant_text)))

    def carry(self, user_text: str) -> None:
        """Nothing of the reply to `user_text` reached the user: ask again with their next turn."""
        self._carried = keep_newest(user_text, self._max_carried)

    # a client that edits the conversation item by item (OpenAI Realtime) names messages by identity:
    # equal texts in two places are still two messages

    def add(self, message: Message) -> Message:
        self._messages.append(message)
        return message

    def remove(self, message: Message) -> bool:
        for i, held in enumerate(self._messages):
            if held is message:
                del self._messages[i]
                return True
        return False

    def replace(self, old: Message, new: Message) -> bool:
        for i, held in enumerate(self._messages):
            if held is old:
                self._messages[i] = new
                return True
        return False


def keep_newest(text: str, max_chars: int) -> str:
    """The last `max_chars` characters of `text`, without a cut word at the front."""
    if len(text) <= max_chars:
        return text
    cut = len(text) - max_chars
    kept = text[cut:]
    if cut > 0 and not text[cut - 1].isspace():  # cut inside a word: drop its tail, if words are spaced
        _, space, rest = kept.partition(" ")
        if space:
            kept = rest
    return kept.strip()
