"""The conversation items a Realtime client can see: ids, order (`previous_item_id`), and their content.

Only text is kept (transcripts, messages), never audio, and only the last MAX_ITEMS items, so a long
session holds a bounded amount here; Hark's Session keeps the history the model reads.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from .events import Dialect, assistant_part_type

MAX_ITEMS = 512

Role = Literal["user", "assistant", "system"]
ItemStatus = Literal["completed", "incomplete", "in_progress"]
ItemKind = Literal["message", "function_call", "function_call_output"]


@dataclass(slots=True)
class Item:
    id: str
    role: Role
    audio: bool  # user: spoken (input_audio); assistant: spoken reply (output_audio)
    text: str | None  # the transcript of audio (None until known), or the message text
    status: ItemStatus = "completed"
    audio_ms: float = 0.0  # assistant: reply audio sent so far
    hark_response_id: str | None = None  # assistant: the hark.v1 response behind it
    kind: ItemKind = "message"
    call_id: str = ""  # function_call and function_call_output
    name: str = ""  # function_call: the tool
    arguments: str = ""  # function_call: JSON text as the model wrote it
    output: str = ""  # function_call_output: the client's result

    @classmethod
    def function_call(cls, item_id: str, call_id: str, name: str, arguments: str) -> Item:
        return cls(
            item_id,
            "assistant",
            False,
            None,
            "in_progress",
            kind="function_call",
            call_id=call_id,
            name=name,
            arguments=arguments,
        )

    @classmethod
    def function_call_output(cls, item_id: str, call_id: str, output: str) -> Item:
        return cls(item_id, "user", False, None, kind="function_call_output", call_id=call_id, output=output)

    def render(self, dialect: Dialect, *, content: bool = True) -> dict[str, Any]:
        if self.kind == "function_call":
            # arguments stream in response.function_call_arguments.delta: the added item has none yet
            arguments = self.arguments if content else ""
            base = {"id": self.id, "object": "realtime.item", "type": "function_call", "status": self.status}
            return base | {"call_id": self.call_id, "name": self.name, "arguments": arguments}
        if self.kind == "function_call_output":
            base = {"id": self.id, "object": "realtime.item", "type": "function_call_output", "status": self.status}
            return base | {"call_id": self.call_id, "output": self.output}
        return {
            "id": self.id,
            "object": "realtime.item",
            "type": "message",
            "status": self.status,
            "role": self.role,
            "content": [self.part(dialect)] if content else [],
        }

    def part(self, dialect: Dialect) -> dict[str, Any]:
        if self.role == "assistant":
            kind = assistant_part_type(dialect, self.audio)
            return {"type": kind, "transcript": self.text} if self.audio else {"type": kind, "text": self.text}
        if self.audio:
            return {"type": "input_audio", "transcript": self.text}
        return {"type": "input_text", "text": self.text}


class Conversation:
    def __init__(self) -> None:
        self._items: OrderedDict[str, Item] = OrderedDict()

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __len__(self) -> int:
        return len(self._items)

    def last_id(self) -> str | None:
        return next(reversed(self._items), None)

    def append(self, item: Item) -> str | None:
        """Add at the end; return the id of the item before it (`previous_item_id`)."""
        previous = self.last_id()
        self._items[item.id] = item
        while len(self._items) > MAX_ITEMS:
            self._items.popitem(last=False)
        return previous

    def get(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    def delete(self, item_id: str) -> bool:
        return self._items.pop(item_id, None) is not None
