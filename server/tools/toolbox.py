"""MCPToolbox: the ServerToolbox over every `--mcp-server`, the tools' names the model sees, and their
results as text.

Names: a tool keeps its own name when no other configured server has one like it; when two servers
offer the same name, both are offered as `SERVER__TOOL` (so neither silently shadows the other).
Names are computed over every server's last listing, up or not, so they do not change while one
server reconnects. A tool whose name does not fit a function name (letters, digits, `_`, `-`, at
most 64), or whose schema is over 8 KiB as JSON, is skipped with a warning, as are tools past the
32nd; descriptions are cut at 1024 characters (a client's tools have the same bounds).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mcp.types as mcp_types

from ..llm.base import ToolSpec
from .base import ToolResult
from .mcp_client import ConnectionState, MCPConnection, ToolCallFailed
from .mcp_config import MCPServerSpec, ToolFilter

if TYPE_CHECKING:
    from ..metrics import Metrics

log = logging.getLogger("hark.mcp")

# the bounds a client's tools have (hark.protocol's tool checks): every tool is prompt, every turn
TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_SERVER_TOOLS = 32
MAX_DESCRIPTION_CHARS = 1024
MAX_PARAMETERS_BYTES = 8192  # the input schema as compact JSON
PREFIX_SEPARATOR = "__"
MAX_OUTPUT_CHARS = 16_000  # a tool result goes into the prompt: bounded, like everything else there


@dataclass(frozen=True, slots=True)
class _Route:
    connection: MCPConnection
    tool: mcp_types.Tool  # its own name is tool.name; the model sees the route's key


class MCPToolbox:
    """Server tools from MCP servers (see module docstring for naming)."""

    def __init__(
        self,
        servers: Sequence[MCPServerSpec],
        tool_filter: ToolFilter | None = None,
        *,
        metrics: Metrics | None = None,
        connect_timeout_s: float = 10.0,
        ping_interval_s: float = 5.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self._filter = tool_filter or ToolFilter()
        self._metrics = metrics
        self.connections = tuple(
            MCPConnection(
                spec,
                connect_timeout_s=connect_timeout_s,
                ping_interval_s=ping_interval_s,
                backoff_initial_s=backoff_initial_s,
                backoff_max_s=backoff_max_s,
                on_change=self._changed,
            )
            for spec in servers
        )
        self._routes: dict[str, _Route] = {}
        self._specs: tuple[ToolSpec, ...] = ()
        self._skipped: set[tuple[str, str]] = set()  # warned about once
        for conn in self.connections:
            self._changed(conn)

    def start(self) -> None:
        """Connect every server in the background: a server that is not there is retried, never fatal."""
        for conn in self.connections:
            conn.start()

    async def wait_attempted(self, timeout_s: float) -> bool:
        """Wait for every server's first connection attempt to end (for tests and the benchmark)."""
        results = await asyncio.gather(*(c.wait_attempted(timeout_s) for c in self.connections))
        return all(results)

    def status(self) -> list[dict[str, Any]]:
        return [c.status() for c in self.connections]

    def specs(self) -> tuple[ToolSpec, ...]:
        return self._specs

    def owns(self, name: str) -> bool:
        return name in self._routes

    async def call(self, name: str, arguments: dict[str, Any], timeout_s: float) -> ToolResult:
        route = self._routes.get(name)
        if route is None:
            return ToolResult(f"no server tool is named {name!r}", is_error=True)
        server = route.connection.name
        started = time.monotonic()
        outcome = "cancelled"
        try:
            result = await route.connection.call(route.tool.name, arguments, timeout_s)
        except ToolCallFailed as exc:
            outcome = exc.kind
            log.warning("MCP tool %s on %s failed (%s): %s", route.tool.name, server, exc.kind, exc)
            return ToolResult(str(exc), is_error=True)
        else:
            outcome = "tool_error" if result.is_error else "ok"
            return ToolResult(result_text(result), is_error=result.is_error)
        finally:
            self._observe(server, outcome, time.monotonic() - started)

    async def aclose(self, timeout_s: float = 5.0) -> None:
        await asyncio.gather(*(c.aclose(timeout_s) for c in self.connections))

    def _changed(self, conn: MCPConnection) -> None:
        """A server came up, went down or closed: rebuild the names and the offered specs."""
        if self._metrics is not None:
            self._metrics.mcp_server_up.labels(conn.name).set(1 if conn.state is ConnectionState.UP else 0)
            if conn.state is ConnectionState.UP:
                self._metrics.mcp_connects.labels(conn.name, "up").inc()
            elif conn.state is ConnectionState.DOWN:
                self._metrics.mcp_connects.labels(conn.name, "failed").inc()
        candidates: list[tuple[MCPConnection, mcp_types.Tool]] = []
        for c in self.connections:
            for tool in c.tools:
                if not self._filter.allows(c.name, tool.name):
                    continue
                if not TOOL_NAME.match(tool.name):
                    self._skip(c.name, tool.name, "its name is not a valid function name")
                    continue
                size = len(json.dumps(tool.input_schema, separators=(",", ":")))
                if size > MAX_PARAMETERS_BYTES:
                    self._skip(c.name, tool.name, f"its input schema is {size} bytes (at most {MAX_PARAMETERS_BYTES})")
                    continue
                candidates.append((c, tool))
        counts: dict[str, int] = {}
        for _, tool in candidates:
            counts[tool.name] = counts.get(tool.name, 0) + 1
        routes: dict[str, _Route] = {}
        for c, tool in candidates:
            exposed = tool.name if counts[tool.name] == 1 else f"{c.name}{PREFIX_SEPARATOR}{tool.name}"
            if exposed in routes or not TOOL_NAME.match(exposed):  # one server listing a name twice
                self._skip(c.name, tool.name, f"{exposed!r} is taken or too long")
                continue
            if len(routes) == MAX_SERVER_TOOLS:
                self._skip(c.name, tool.name, f"more than {MAX_SERVER_TOOLS} server tools (filter with --mcp-tools)")
                continue
            routes[exposed] = _Route(c, tool)
        self._routes = routes
        self._specs = tuple(
            ToolSpec(name, (route.tool.description or "")[:MAX_DESCRIPTION_CHARS], dict(route.tool.input_schema))
            for name, route in routes.items()
            if route.connection.state is ConnectionState.UP
        )

    def _skip(self, server: str, tool: str, why: str) -> None:
        if (server, tool) not in self._skipped:
            self._skipped.add((server, tool))
            log.warning("MCP server %s: tool %r not offered: %s", server, tool, why)

    def _observe(self, server: str, outcome: str, seconds: float) -> None:
        if self._metrics is not None:
            self._metrics.mcp_tool_calls.labels(server, outcome).inc()
            self._metrics.mcp_tool_seconds.labels(server).observe(seconds)


def result_text(result: mcp_types.CallToolResult) -> str:
    """What the model reads: text blocks joined; other blocks described in a line; structured
    content as JSON when there are no blocks; capped at MAX_OUTPUT_CHARS."""
    parts = [_block_text(block) for block in result.content]
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    text = "\n".join(parts)
    if len(text) > MAX_OUTPUT_CHARS:
        text = text[:MAX_OUTPUT_CHARS] + f"\n[... {len(text) - MAX_OUTPUT_CHARS} more characters cut]"
    return text


def _block_text(block: mcp_types.ContentBlock) -> str:
    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
        kind = "image" if isinstance(block, mcp_types.ImageContent) else "audio"
        return f"[{kind}: {block.mime_type}, {_base64_bytes(block.data)} bytes]"
    if isinstance(block, mcp_types.ResourceLink):
        return f"[resource link: {block.name} {block.uri}]"
    resource = block.resource
    if isinstance(resource, mcp_types.TextResourceContents):
        return resource.text
    return f"[resource: {resource.uri}, {resource.mime_type or 'binary'}, {_base64_bytes(resource.blob)} bytes]"


def _base64_bytes(data: str) -> int:
    return len(data.rstrip("=")) * 3 // 4
