"""`--mcp-server NAME=COMMAND|URL` and `--mcp-tools` entries, parsed without the MCP SDK (it is optional)."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

# a server name becomes part of a tool name (`server__tool` on a collision) and a metrics label
SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


@dataclass(frozen=True, slots=True)
class StdioTarget:
    """A local MCP server: this command is started as our child and spoken to over its stdin/stdout."""

    command: str
    args: tuple[str, ...] = ()

    def describe(self) -> str:
        return shlex.join((self.command, *self.args))


@dataclass(frozen=True, slots=True)
class HttpTarget:
    """A running MCP server reached over streamable HTTP."""

    url: str

    def describe(self) -> str:
        return self.url


@dataclass(frozen=True, slots=True)
class MCPServerSpec:
    name: str
    target: StdioTarget | HttpTarget


def parse_server_spec(spec: str) -> MCPServerSpec:
    """`NAME=COMMAND ARGS...` (stdio; split as a shell would, without running one) or `NAME=http(s)://...`."""
    name, sep, rest = spec.partition("=")
    name, rest = name.strip(), rest.strip()
    if not sep or not rest:
        raise ValueError(f"--mcp-server {spec!r}: expected NAME=COMMAND or NAME=URL")
    if not SERVER_NAME.match(name) or "__" in name:
        raise ValueError(
            f"--mcp-server {spec!r}: the name must be 1-32 letters, digits, '-' or '_' (no '__'), starting with a "
            "letter or digit"
        )
    if rest.startswith(("http://", "https://")):
        return MCPServerSpec(name, HttpTarget(rest))
    if "://" in rest.split(" ", 1)[0]:
        raise ValueError(f"--mcp-server {spec!r}: only http:// and https:// URLs (streamable HTTP) are supported")
    try:
        argv = shlex.split(rest)
    except ValueError as exc:
        raise ValueError(f"--mcp-server {spec!r}: cannot split the command: {exc}") from None
    if not argv:
        raise ValueError(f"--mcp-server {spec!r}: empty command")
    return MCPServerSpec(name, StdioTarget(argv[0], tuple(argv[1:])))


def parse_server_specs(specs: Sequence[str]) -> tuple[MCPServerSpec, ...]:
    parsed = tuple(parse_server_spec(s) for s in specs)
    names = [p.name for p in parsed]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"--mcp-server: the name {duplicates[0]!r} is given twice")
    return parsed


@dataclass(frozen=True, slots=True)
class ToolFilter:
    """Which MCP tools sessions see (`--mcp-tools`). An entry is `TOOL` (that name on any server),
    `SERVER:TOOL` (one server's tool by its own name) or `SERVER:*` (all of that
    server's tools). No entries: every tool of every server."""

    entries: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: Sequence[str], servers: Sequence[MCPServerSpec]) -> ToolFilter:
        known = {s.name for s in servers}
        cleaned = []
        for entry in entries:
            entry = entry.strip()
            server, sep, tool = entry.partition(":")
            if not entry or (sep and not tool):
                raise ValueError(f"--mcp-tools {entry!r}: expected TOOL, SERVER:TOOL or SERVER:*")
            if sep and server not in known:
                raise ValueError(f"--mcp-tools {entry!r}: no --mcp-server is named {server!r}")
            cleaned.append(entry)
        return cls(tuple(cleaned))

    def allows(self, server: str, tool: str) -> bool:
        if not self.entries:
            return True
        return any(e in (tool, f"{server}:{tool}", f"{server}:*") for e in self.entries)
