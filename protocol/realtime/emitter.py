"""Ids and event construction shared by the translator's parts: one Emitter per connection."""

from __future__ import annotations

import itertools
import secrets
import string
from typing import Any

from .conversation import Conversation, Item
from .errors import RealtimeError, RealtimeErrorCode
from .events import Dialect, wire_name

Event = dict[str, Any]


class Emitter:
    """Ids unique per connection (a random tag) and in order (a counter; no clock), and event dicts."""

    def __init__(self, dialect: Dialect, tag: str | None = None) -> None:
        alphabet = string.ascii_letters + string.digits
        self.dialect = dialect
        self._tag = tag if tag is not None else "".join(secrets.choice(alphabet) for _ in range(10))
        self._counter = itertools.count(1)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{self._tag}{next(self._counter):06x}"

    def event(self, name: str, /, **fields: Any) -> Event:
        """An event by its logical name (events.wire_name), which must exist in this dialect."""
        kind = wire_name(self.dialect, name)
        assert kind is not None, f"{name} has no {self.dialect} form"
        return {"type": kind, "event_id": self.new_id("event"), **fields}

    def error(
        self,
        code: RealtimeErrorCode | str,
        message: str,
        *,
        param: str | None = None,
        client_event_id: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> Event:
        error = {"type": error_type, "code": str(code), "message": message, "param": param, "event_id": client_event_id}
        return {"type": "error", "event_id": self.new_id("event"), "error": error}

    def refusal(self, exc: RealtimeError, client_event_id: str | None) -> Event:
        return self.error(exc.code, exc.message, param=exc.param, client_event_id=client_event_id)

    def item_added(self, item: Item, previous_item_id: str | None, *, content: bool = True) -> Event:
        return self.event(
            "item.added", previous_item_id=previous_item_id, item=item.render(self.dialect, content=content)
        )

    def item_done(self, item: Item, previous_item_id: str | None) -> list[Event]:
        """`conversation.item.done` in GA; beta has no such event."""
        if wire_name(self.dialect, "item.done") is None:
            return []
        return [self.event("item.done", previous_item_id=previous_item_id, item=item.render(self.dialect))]

    def add_item(self, conversation: Conversation, item: Item) -> list[Event]:
        """Append a finished item and announce it."""
        previous = conversation.append(item)
        return [self.item_added(item, previous), *self.item_done(item, previous)]
