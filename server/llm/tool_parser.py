"""Tool calls out of a model's streamed text (Qwen's `<tool_call>{json}</tool_call>`), sans IO.

Feed text deltas in any chunking; get back text to speak and a ToolCall per complete call. Text
outside the markup streams out as it comes, except a tail that could be the start of
`<tool_call>` (held until the next chunk says what it is) and whitespace next to a call (the
template's line breaks, not words). Without markup the text out equals the text in.

The JSON inside is read as SGLang's Qwen detector (`sglang/srt/function_call/qwen25_detector.py`,
`BaseFormatDetector.parse_base_json`) reads it: `name`, and `arguments` (or `parameters`) as
JSON text. Unlike SGLang, which drops a call it cannot parse, a call that is not valid JSON still
comes out as a ToolCall, its `arguments` the raw text and its `name` whatever could be read: the
session tells the model what went wrong. So does a call cut off by the end of the stream.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Final

from .base import ToolCall
from .qwen_template import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

_NAME_RE: Final = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex}"


def _partial_marker(text: str, marker: str) -> int:
    """How many characters at the end of `text` could begin `marker` (0 when none can)."""
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


def parse_call_body(body: str, call_id: str) -> ToolCall:
    """The JSON between the markers as a ToolCall; raw text as arguments when it does not parse."""
    text = body.strip()
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        arguments = value.get("arguments", value.get("parameters", {}))
        if isinstance(arguments, str):
            return ToolCall(call_id, value["name"], arguments)  # already JSON text (or the model's error)
        return ToolCall(call_id, value["name"], json.dumps(arguments, ensure_ascii=False))
    match = _NAME_RE.search(text)
    name = ""
    if match is not None:
        try:
            name = str(json.loads(f'"{match.group(1)}"'))
        except ValueError:
            name = match.group(1)
    return ToolCall(call_id, name, text)


class ToolCallParser:
    """Incremental splitter of streamed model text into text deltas and ToolCalls."""

    def __init__(self, call_id: Callable[[], str] = new_call_id) -> None:
        self._call_id = call_id
        self._buffer = ""  # outside a call: text not yet emitted; inside: the call's body so far
        self._inside = False
        self._after_call = False  # drop the whitespace that follows a call
        self.calls = 0

    def feed(self, delta: str) -> list[str | ToolCall]:
        self._buffer += delta
        out: list[str | ToolCall] = []
        while True:
            if self._inside:
                end = self._buffer.find(TOOL_CALL_CLOSE)
                if end < 0:
                    return out
                out.append(parse_call_body(self._buffer[:end], self._call_id()))
                self.calls += 1
                self._buffer = self._buffer[end + len(TOOL_CALL_CLOSE) :]
                self._inside = False
                self._after_call = True
                continue
            if self._after_call:
                self._buffer = self._buffer.lstrip()
                if not self._buffer:
                    return out
                self._after_call = False
            start = self._buffer.find(TOOL_CALL_OPEN)
            if start >= 0:
                text = self._buffer[:start].rstrip()
                if text:
                    out.append(text)
                self._buffer = self._buffer[start + len(TOOL_CALL_OPEN) :]
                self._inside = True
                continue
            # hold a tail that may begin the marker, and trailing whitespace that may precede it
            keep = _partial_marker(self._buffer, TOOL_CALL_OPEN)
            head = self._buffer[: len(self._buffer) - keep]
            stripped = head.rstrip()
            if stripped:
                out.append(stripped)
            self._buffer = self._buffer[len(stripped) :]
            return out

    def finish(self) -> list[str | ToolCall]:
        """The end of the stream: what was held back, and a call left open (cut off) as a ToolCall."""
        out: list[str | ToolCall] = []
        if self._inside:
            out.append(parse_call_body(self._buffer, self._call_id()))
            self.calls += 1
        elif self._buffer and not (self._after_call and not self._buffer.strip()):
            out.append(self._buffer)
        self._buffer = ""
        self._inside = False
        return out
