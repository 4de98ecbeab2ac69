"""One MCP server connection through the official `mcp` SDK: connect, list its tools, call them, and
reconnect with backoff when it dies.

The SDK's transports and ClientSession are anyio context managers that must be entered and exited in
the same task, so one long-lived task per server owns them (`_run`); calls come from the sessions' own
tasks and only send requests over the session it holds. Cancelling a caller makes the SDK send
`notifications/cancelled`, so the MCP server stops that call too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from enum import StrEnum
from typing import Any, Literal

import mcp.types as mcp_types
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from .mcp_config import HttpTarget, MCPServerSpec

log = logging.getLogger("hark.mcp")
# the SDK's HTTP client logs every request at INFO: a ping every few seconds would flood the server's log
if logging.getLogger("httpx2").level == logging.NOTSET:
    logging.getLogger("httpx2").setLevel(logging.WARNING)

MAX_TOOL_PAGES = 20  # a server paginating its tool list forever must not hold the connection up
CLIENT_INFO = mcp_types.Implementation(name="hark", version="0.1.0")


class ConnectionState(StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"  # waiting to retry
    CLOSED = "closed"


FailureKind = Literal["timeout", "unavailable", "error"]


class ToolCallFailed(Exception):
    """A call that returned no result: it timed out (and was cancelled), the server was not there or
    went away during it, or the protocol failed. `str()` is the message for the model."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class MCPConnection:
    """A configured MCP server and, while it is up, the session to it."""

    def __init__(
        self,
        spec: MCPServerSpec,
        *,
        connect_timeout_s: float = 10.0,
        ping_interval_s: float = 5.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        on_change: Callable[[MCPConnection], None] | None = None,
    ) -> None:
        self.spec = spec
        self.connect_timeout_s = connect_timeout_s
        self.ping_interval_s = ping_interval_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self._on_change = on_change
        self.state = ConnectionState.CONNECTING
        # the last listing is kept while the server is down, so a call to one of its tools gets a
        # "not connected" error instead of going to the client as an unknown tool
        self.tools: tuple[mcp_types.Tool, ...] = ()
        self.last_error = ""
        self.connects = 0  # sessions established
        self.failures = 0  # connection attempts that failed, and sessions lost
        self.up_since = 0.0
        self._session: ClientSession | None = None
        self._lost = asyncio.Event()  # a call saw the session die: reconnect without waiting for a ping
        self._lost_reason = ""
        self._closing = asyncio.Event()
        self._attempted = asyncio.Event()  # the first connection attempt has ended either way
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"mcp-{self.name}")

    async def wait_attempted(self, timeout_s: float) -> bool:
        """Wait for the first connection attempt to end (up or failed); False if it is still going."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._attempted.wait()
        return self._attempted.is_set()

    def status(self) -> dict[str, Any]:
        """For logs and tests: where this server stands."""
        return {
            "name": self.name,
            "target": self.spec.target.describe(),
            "state": self.state.value,
            "tools": [t.name for t in self.tools],
            "connects": self.connects,
            "failures": self.failures,
            "last_error": self.last_error,
        }

    async def call(self, tool: str, arguments: dict[str, Any], timeout_s: float) -> mcp_types.CallToolResult:
        """One tools/call on the live session. Raises ToolCallFailed when no result came back;
        CancelledError propagates (the SDK has told the server)."""
        session = self._session
        if session is None or self.state is not ConnectionState.UP:
            why = self.last_error or "still connecting"
            raise ToolCallFailed("unavailable", f"MCP server {self.name!r} is not connected ({why})")
        try:
            # the SDK's own timeout cancels the call on the server; the outer bound only guards a
            # transport whose writes hang
            async with asyncio.timeout(timeout_s + self.connect_timeout_s):
                return await session.call_tool(tool, arguments, read_timeout_seconds=timeout_s)
        except MCPError as exc:
            code = exc.error.code
            if code == mcp_types.REQUEST_TIMEOUT:
                raise ToolCallFailed("timeout", f"{tool} took longer than {timeout_s:g} s and was cancelled") from None
            if code == mcp_types.CONNECTION_CLOSED:
                self._mark_lost(f"connection lost during {tool}: {exc.error.message}")
                raise ToolCallFailed(
                    "unavailable", f"MCP server {self.name!r} went away during the call ({exc.error.message})"
                ) from None
            raise ToolCallFailed("error", f"MCP error {code}: {exc.error.message}") from None
        except TimeoutError:
            self._mark_lost(f"{tool}: the transport stopped responding")
            raise ToolCallFailed("timeout", f"{tool} took longer than {timeout_s:g} s") from None
        except Exception as exc:  # a result that does not validate, a transport error surfacing here
            raise ToolCallFailed("error", f"MCP call failed: {_describe(exc)}") from None

    async def aclose(self, timeout_s: float = 5.0) -> None:
        """Stop reconnecting and leave the session (the SDK stops a stdio server: stdin closed, then
        SIGTERM, then SIGKILL); cancelled if that takes longer than `timeout_s`."""
        self._closing.set()
        task, self._task = self._task, None
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
            if not done:
                log.warning("MCP server %s did not close within %g s; cancelling", self.name, timeout_s)
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
        self._session = None
        self._set_state(ConnectionState.CLOSED)

    def _mark_lost(self, reason: str) -> None:
        if self.state is ConnectionState.UP:
            self._lost_reason = reason
            self._lost.set()

    def _set_state(self, state: ConnectionState) -> None:
        if state is not self.state:
            self.state = state
            if self._on_change is not None:
                self._on_change(self)

    async def _run(self) -> None:
        attempt = 0  # consecutive failures since the last good session: the backoff exponent
        while not self._closing.is_set():
            self._set_state(ConnectionState.CONNECTING)
            connects_before = self.connects
            try:
                await self._session_lifetime()
                error = self._lost_reason or ""
            except Exception as exc:  # the SDK raises what its transport raised, often as an ExceptionGroup
                error = _describe(exc)
            self._session = None
            if self._closing.is_set():
                break
            if self.connects > connects_before:
                attempt = 0
                log.warning("MCP server %s: connection lost (%s)", self.name, error or "closed")
            elif attempt == 0:
                log.warning("MCP server %s (%s): cannot connect: %s", self.name, self.spec.target.describe(), error)
            else:  # one warning per outage; the retries are quieter
                log.info("MCP server %s still down after %d attempts: %s", self.name, attempt + 1, error)
            self.failures += 1
            self.last_error = error or "connection closed"
            self._set_state(ConnectionState.DOWN)
            self._attempted.set()
            delay = min(self.backoff_max_s, self.backoff_initial_s * 2**attempt)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()
        self._attempted.set()

    async def _session_lifetime(self) -> None:
        """Connect, list the tools, then hold the session until it dies or we close."""
        self._lost.clear()
        self._lost_reason = ""
        async with self._transport() as (read, write):
            session = ClientSession(read, write, read_timeout_seconds=self.connect_timeout_s, client_info=CLIENT_INFO)
            async with session:
                started = time.monotonic()
                await session.initialize()
                self.tools = await self._list_tools(session)
                self._session = session
                self.connects += 1
                self.last_error = ""
                self.up_since = time.monotonic()
                log.info(
                    "MCP server %s up in %.0f ms: %d tools (%s)",
                    self.name,
                    (self.up_since - started) * 1000,
                    len(self.tools),
                    ", ".join(t.name for t in self.tools),
                )
                self._set_state(ConnectionState.UP)
                self._attempted.set()
                await self._hold(session)

    async def _hold(self, session: ClientSession) -> None:
        """Ping while idle: a stdio server that exited or an HTTP server that stopped answering is
        found within a ping interval, not at the next call."""
        while not self._closing.is_set():
            waiters = {asyncio.ensure_future(self._closing.wait()), asyncio.ensure_future(self._lost.wait())}
            try:
                done, _ = await asyncio.wait(waiters, timeout=self.ping_interval_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if done:
                return
            await session.send_ping()  # raises MCPError (timeout, closed): the caller reconnects

    @contextlib.asynccontextmanager
    async def _transport(self) -> AsyncIterator[tuple[Any, Any]]:
        target = self.spec.target
        if isinstance(target, HttpTarget):
            async with streamable_http_client(target.url) as (read, write):
                yield read, write
        else:
            params = StdioServerParameters(command=target.command, args=list(target.args))
            async with stdio_client(params) as (read, write):
                yield read, write

    @staticmethod
    async def _list_tools(session: ClientSession) -> tuple[mcp_types.Tool, ...]:
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(MAX_TOOL_PAGES):
            params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tuple(tools)


def _describe(exc: BaseException) -> str:
    """One line for the log and the model: the innermost errors of an ExceptionGroup, not the group."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(_describe(e) for e in exc.exceptions))
    if isinstance(exc, MCPError):
        return exc.error.message
    text = str(exc) or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"
