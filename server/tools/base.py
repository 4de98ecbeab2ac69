"""Server-side tools: where the session finds tools it runs itself (MCP servers), and what a call returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..llm.base import ToolSpec


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What goes back to the model as the tool's output; `is_error` marks a failure it should read."""

    output: str
    is_error: bool = False


class ServerToolbox(Protocol):
    """Every tool the server runs itself, across its MCP servers (see server/tools/)."""

    def specs(self) -> tuple[ToolSpec, ...]:
        """The tools of every server that is up now."""
        ...

    def owns(self, name: str) -> bool:
        """Whether `name` is a server tool (else the client runs it)."""
        ...

    async def call(self, name: str, arguments: dict[str, Any], timeout_s: float) -> ToolResult:
        """Run one call. Failures (timeout, a dead server, the tool's own error) come back as an
        `is_error` result, never as an exception; cancelling the caller cancels the call."""
        ...
