"""A small real MCP server for tests and demos (stand-in for whatever MCP servers a deployment runs).

Built with the official `mcp` SDK's MCPServer (v1's FastMCP): a clock, a calculator, a demo robot's
`forward` (answers at once: the fast tool of bench/tools.py), and two tools for failure tests: `slow`
sleeps (timeouts, cancellation) and `crash` kills the process mid-call.

    python -m standins.mcp_tools              # stdio: hark-server --mcp-server tools="python -m standins.mcp_tools"
    python -m standins.mcp_tools --http 0     # streamable HTTP on 127.0.0.1; prints its URL when ready

`--events FILE` appends one JSON line per tool event (started, finished, cancelled), so a test can see
that a call it gave up on was really cancelled on this side.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import math
import operator
import os
import socket
import sys
import time
import zoneinfo
from collections.abc import Callable
from typing import Any

import anyio

try:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
except ImportError:  # pragma: no cover - the message is the point
    sys.exit("standins.mcp_tools needs the MCP SDK: pip install 'hark[mcp]'")

READY_PREFIX = "mcp_tools ready "  # followed by the streamable HTTP URL (--http)
MAX_SLOW_S = 600.0

# the calculator: arithmetic over numbers only, walked from the parsed tree (never eval); bounded so
# that an expression cannot make the server compute for minutes or build huge integers
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EXPRESSION_CHARS = 200
MAX_MAGNITUDE = 1e100
MAX_EXPONENT = 100


def evaluate(expression: str) -> float:
    """The value of an arithmetic expression (+ - * / // % **, parentheses, numbers); ValueError otherwise."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        raise ValueError(f"not an arithmetic expression: {expression!r}") from None
    value = _evaluate_node(tree.body)
    return float(value)


def _evaluate_node(node: ast.expr) -> float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _bounded(_UNARY[type(node.op)](_evaluate_node(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate_node(node.left), _evaluate_node(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponent above {MAX_EXPONENT}")
        try:
            return _bounded(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ValueError("division by zero") from None
        except OverflowError:
            raise ValueError("result too large") from None
    raise ValueError(f"only numbers and + - * / // % ** are allowed, not {type(node).__name__}")


def _bounded(value: Any) -> float:
    if isinstance(value, complex) or not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
        raise ValueError("result out of range")
    return float(value)


def _number_text(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


class EventLog:
    """JSON lines appended to a file (or nowhere): what the tools did, for tests to read."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, tool: str, event: str, **fields: Any) -> None:
        if not self.path:
            return
        line = json.dumps({"tool": tool, "event": event, "pid": os.getpid(), "at": time.time(), **fields})
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def build_server(events: EventLog) -> MCPServer[Any]:
    server: MCPServer[Any] = MCPServer(
        "hark-standin-tools", instructions="A clock and a calculator (Hark stand-in).", log_level="WARNING"
    )

    @server.tool()
    def now(timezone: str = "UTC") -> str:
        """The current date and time in an IANA timezone such as Europe/Paris (default UTC)."""
        try:
            zone = zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ToolError(f"unknown timezone {timezone!r}: use an IANA name such as Europe/Paris") from None
        return dt.datetime.now(zone).strftime("%A %d %B %Y, %H:%M:%S %Z")

    @server.tool()
    def add(a: float, b: float) -> str:
        """a + b."""
        return _number_text(_bounded(a + b))

    @server.tool()
    def multiply(a: float, b: float) -> str:
        """a times b."""
        return _number_text(_bounded(a * b))

    @server.tool()
    def calculate(expression: str) -> str:
        """Evaluate arithmetic such as (2 + 3) * 4 / 5 or 2 ** 10; numbers and + - * / // % ** only."""
        try:
            return _number_text(evaluate(expression))
        except ValueError as exc:
            raise ToolError(str(exc)) from None

    @server.tool()
    def forward(meters: float) -> str:
        """Drive the demo robot forward by `meters` metres (a stand-in: it answers at once, nothing moves)."""
        if not 0 < meters <= 100:
            raise ToolError("meters must be within 0..100")
        return f"moved {_number_text(meters)} meters forward"

    @server.tool()
    async def slow(seconds: float) -> str:
        """Wait `seconds` seconds, then say so (for timeout and cancellation tests)."""
        if not 0 <= seconds <= MAX_SLOW_S:
            raise ToolError(f"seconds must be within 0..{MAX_SLOW_S:g}")
        events.write("slow", "started", seconds=seconds)
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            events.write("slow", "cancelled")
            raise
        events.write("slow", "finished")
        return f"waited {seconds:g} s"

    @server.tool()
    def crash() -> str:
        """Kill this MCP server process mid-call (for the crashed-server test)."""
        events.write("crash", "started")
        os._exit(3)

    return server


async def serve_http(server: MCPServer[Any], port: int) -> None:
    """Streamable HTTP on 127.0.0.1:port (0: a free one), the URL printed once the socket listens."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    sock.setblocking(False)
    app = server.streamable_http_app(host="127.0.0.1")
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    print(f"{READY_PREFIX}http://127.0.0.1:{sock.getsockname()[1]}/mcp", flush=True)
    await uv.serve(sockets=[sock])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m standins.mcp_tools", description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="streamable HTTP on 127.0.0.1:PORT (0: free)")
    parser.add_argument("--events", default="", metavar="FILE", help="append tool events here as JSON lines")
    args = parser.parse_args(argv)
    server = build_server(EventLog(args.events))
    if args.http is None:
        server.run("stdio")
    else:
        anyio.run(serve_http, server, args.http)


if __name__ == "__main__":
    main()
