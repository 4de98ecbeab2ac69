"""Server tools from MCP servers (issue 15): MCPToolbox against the real MCP stand-in
(standins/mcp_tools.py, built with the mcp SDK) as a stdio subprocess and over streamable HTTP, and a
real hark-server started with --mcp-server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import mcp.types as mcp_types
except ImportError:
    pytest.fail("the MCP tests need the MCP SDK: pip install 'hark[mcp]' (make install-dev has it)", pytrace=False)

from conftest import REPO, RunningServer, load_pcm, metric
from simproc import sglang_simulator
from wsclient import Peer, silence

from hark.server.metrics import Metrics
from hark.server.tools.mcp_client import ConnectionState
from hark.server.tools.mcp_config import HttpTarget, StdioTarget, ToolFilter, parse_server_spec, parse_server_specs
from hark.server.tools.toolbox import MAX_OUTPUT_CHARS, MCPToolbox, result_text
from standins.mcp_tools import READY_PREFIX, evaluate
from standins.process import launched

STANDIN = REPO / "standins" / "mcp_tools.py"
STANDIN_TOOLS = {"now", "add", "multiply", "calculate", "forward", "slow", "crash"}


def stdio_spec(name: str, events: Path) -> str:
    # the script by path: the SDK starts stdio servers with a minimal environment, wherever we run
    return f"{name}={sys.executable} {STANDIN} --events {events}"


@pytest.fixture
def events(tmp_path: Path) -> Path:
    return tmp_path / "events.jsonl"


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def count_events(path: Path, tool: str, event: str) -> int:
    return sum(1 for e in read_events(path) if (e["tool"], e["event"]) == (tool, event))


async def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_standin(events: Path, port: int = 0) -> Any:
    def ready(line: str) -> str | None:
        return line.strip().removeprefix(READY_PREFIX) if line.startswith(READY_PREFIX) else None

    return launched("standins.mcp_tools", ["--http", str(port), "--events", str(events)], ready)


@pytest.fixture
def http_server(events: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    with http_standin(events) as (process, url):
        yield process, url


async def started_toolbox(
    *specs: str, tool_filter: ToolFilter | None = None, metrics: Metrics | None = None
) -> MCPToolbox:
    parsed = parse_server_specs(specs)
    toolbox = MCPToolbox(
        parsed,
        tool_filter,
        metrics=metrics,
        connect_timeout_s=10.0,
        ping_interval_s=0.5,
        backoff_initial_s=0.2,
        backoff_max_s=1.0,
    )
    toolbox.start()
    assert await toolbox.wait_attempted(30.0), toolbox.status()
    return toolbox


@pytest.fixture(params=["stdio", "http"])
async def toolbox(request: pytest.FixtureRequest, events: Path) -> AsyncIterator[MCPToolbox]:
    if request.param == "stdio":
        box = await started_toolbox(stdio_spec("tools", events))
        yield box
        await box.aclose()
        return
    with http_standin(events) as (_, url):
        box = await started_toolbox(f"tools={url}")
        yield box
        await box.aclose()


# --- the toolbox against the real MCP server, stdio and streamable HTTP ------------------------


async def test_lists_the_servers_tools(toolbox: MCPToolbox) -> None:
    assert toolbox.status()[0]["state"] == "up", toolbox.status()
    specs = {spec.name: spec for spec in toolbox.specs()}
    assert set(specs) == STANDIN_TOOLS
    assert specs["add"].parameters["type"] == "object"
    assert set(specs["add"].parameters["properties"]) == {"a", "b"}
    assert "timezone" in specs["now"].description.lower() or "IANA" in specs["now"].description
    assert all(toolbox.owns(name) for name in STANDIN_TOOLS)
    assert not toolbox.owns("get_weather")  # the client's, not ours


async def test_calls_return_their_text(toolbox: MCPToolbox) -> None:
    assert (await toolbox.call("add", {"a": 2, "b": 3}, 10.0)).output == "5"
    assert (await toolbox.call("multiply", {"a": 6, "b": 7}, 10.0)).output == "42"
    result = await toolbox.call("calculate", {"expression": "(2 + 3) * 4 / 5"}, 10.0)
    assert (result.output, result.is_error) == ("4", False)
    tokyo = await toolbox.call("now", {"timezone": "Asia/Tokyo"}, 10.0)
    assert not tokyo.is_error and "JST" in tokyo.output


async def test_tool_errors_come_back_as_error_results(toolbox: MCPToolbox) -> None:
    bad_zone = await toolbox.call("now", {"timezone": "Mars/Olympus_Mons"}, 10.0)
    assert bad_zone.is_error and "unknown timezone" in bad_zone.output
    not_arithmetic = await toolbox.call("calculate", {"expression": "__import__('os').system('true')"}, 10.0)
    assert not_arithmetic.is_error and "only numbers" in not_arithmetic.output
    bad_arguments = await toolbox.call("add", {"a": "two"}, 10.0)  # the server validates: isError
    assert bad_arguments.is_error
    unknown = await toolbox.call("get_weather", {}, 10.0)
    assert unknown.is_error and "no server tool" in unknown.output
    assert (await toolbox.call("add", {"a": 1, "b": 1}, 10.0)).output == "2"  # the connection is fine


async def test_a_timeout_is_an_error_result_and_cancels_the_mcp_call(toolbox: MCPToolbox, events: Path) -> None:
    async with asyncio.timeout(20):
        result = await toolbox.call("slow", {"seconds": 60}, 0.5)
    assert result.is_error and "took longer than 0.5 s" in result.output
    await wait_for(lambda: ("slow", "cancelled") in {(e["tool"], e["event"]) for e in read_events(events)}, "cancel")
    assert (await toolbox.call("add", {"a": 1, "b": 2}, 10.0)).output == "3"


async def test_cancelling_the_caller_cancels_the_mcp_call(toolbox: MCPToolbox, events: Path) -> None:
    call = asyncio.create_task(toolbox.call("slow", {"seconds": 60}, 120.0))
    await wait_for(lambda: any(e["event"] == "started" for e in read_events(events)), "the slow call to start")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await wait_for(lambda: any(e["event"] == "cancelled" for e in read_events(events)), "notifications/cancelled")
    assert not any(e["event"] == "finished" for e in read_events(events))
    assert (await toolbox.call("add", {"a": 1, "b": 2}, 10.0)).output == "3"


# --- crashes, dead servers and reconnection ---------------------------------------------------


async def test_a_stdio_server_crashing_mid_call_is_an_error_and_it_reconnects(events: Path) -> None:
    metrics = Metrics()
    box = await started_toolbox(stdio_spec("tools", events), metrics=metrics)
    try:
        result = await box.call("crash", {}, 10.0)
        assert result.is_error and "went away during the call" in result.output
        crashed_pid = read_events(events)[-1]["pid"]
        sample = metrics.registry.get_sample_value
        assert sample("hark_mcp_tool_calls_total", {"server": "tools", "outcome": "unavailable"}) == 1
        conn = box.connections[0]
        await wait_for(lambda: conn.connects == 2 and conn.state is ConnectionState.UP, "the reconnect")
        assert conn.failures == 1 and conn.last_error == ""  # cleared by the new session
        assert sample("hark_mcp_server_up", {"server": "tools"}) == 1
        assert sample("hark_mcp_connects_total", {"server": "tools", "outcome": "failed"}) == 1
        assert (await box.call("add", {"a": 20, "b": 22}, 10.0)).output == "42"
        await box.call("slow", {"seconds": 0}, 10.0)
        assert read_events(events)[-1]["pid"] != crashed_pid  # a new process answered
    finally:
        await box.aclose()


async def test_an_idle_stdio_server_that_dies_is_found_and_restarted(events: Path) -> None:
    box = await started_toolbox(stdio_spec("tools", events))
    try:
        await box.call("slow", {"seconds": 0}, 10.0)
        pid = read_events(events)[-1]["pid"]
        os.kill(pid, signal.SIGKILL)  # not during a call: the ping finds it
        conn = box.connections[0]
        await wait_for(lambda: conn.connects == 2 and conn.state is ConnectionState.UP, "the reconnect")
        assert conn.failures == 1
    finally:
        await box.aclose()


async def test_an_http_server_crashing_mid_call_and_coming_back(events: Path) -> None:
    port = free_port()
    box: MCPToolbox | None = None
    try:
        with http_standin(events, port) as (process, url):
            box = await started_toolbox(f"tools={url}")
            result = await box.call("crash", {}, 10.0)
            assert result.is_error, result
            process.wait(10)
        conn = box.connections[0]
        await wait_for(lambda: conn.state is ConnectionState.DOWN, "the server to be reported down")
        assert box.specs() == ()  # a down server's tools are not offered...
        assert box.owns("add")  # ...but a call to one is ours, answered with an error, not sent to the client
        down = await box.call("add", {"a": 1, "b": 2}, 10.0)
        assert down.is_error and "not connected" in down.output
        with http_standin(events, port):
            await wait_for(lambda: conn.state is ConnectionState.UP, "the reconnect over HTTP", 30.0)
            assert (await box.call("add", {"a": 1, "b": 2}, 10.0)).output == "3"
            assert {s.name for s in box.specs()} == STANDIN_TOOLS
    finally:
        if box is not None:
            await box.aclose()


async def test_servers_that_are_not_there_are_reported_not_fatal(events: Path) -> None:
    box = await started_toolbox(
        f"nothing=http://127.0.0.1:{free_port()}/mcp",
        "missing=/nonexistent/mcp-server --flag",
        stdio_spec("tools", events),
    )
    try:
        by_name = {s["name"]: s for s in box.status()}
        assert by_name["nothing"]["state"] == "down" and by_name["nothing"]["last_error"]
        assert by_name["missing"]["state"] == "down" and by_name["missing"]["last_error"]
        assert by_name["tools"]["state"] == "up"
        assert {s.name for s in box.specs()} == STANDIN_TOOLS
    finally:
        async with asyncio.timeout(15):  # closing while retrying is prompt too
            await box.aclose()
    assert {s["state"] for s in box.status()} == {"closed"}


# --- names, filters, results, configuration ----------------------------------------------------


async def test_colliding_names_are_prefixed_and_the_filter_applies(tmp_path: Path) -> None:
    a, b = stdio_spec("a", tmp_path / "a.jsonl"), stdio_spec("b", tmp_path / "b.jsonl")
    box = await started_toolbox(a, b)
    try:
        assert {s.name for s in box.specs()} == {f"{n}__{t}" for n in "ab" for t in STANDIN_TOOLS}
        assert (await box.call("b__add", {"a": 1, "b": 1}, 10.0)).output == "2"
        assert read_events(tmp_path / "a.jsonl") == []
        await box.call("b__slow", {"seconds": 0}, 10.0)
        assert [e["tool"] for e in read_events(tmp_path / "b.jsonl")] == ["slow", "slow"]
    finally:
        await box.aclose()
    specs = parse_server_specs([a, b])
    filtered = await started_toolbox(a, b, tool_filter=ToolFilter.parse(["a:*", "calculate", "b:now"], specs))
    try:
        names = {s.name for s in filtered.specs()}
        # a's tools, b's calculate and now: only calculate and now collide
        assert names == (STANDIN_TOOLS - {"calculate", "now"}) | {"a__calculate", "b__calculate", "a__now", "b__now"}
        assert not filtered.owns("b__add")
    finally:
        await filtered.aclose()


def test_server_specs_parse_and_bad_ones_are_refused() -> None:
    stdio = parse_server_spec("clock = python -m standins.mcp_tools --events '/tmp/a b.jsonl'")
    assert stdio.name == "clock"
    assert stdio.target == StdioTarget("python", ("-m", "standins.mcp_tools", "--events", "/tmp/a b.jsonl"))
    assert parse_server_spec("web=https://tools.example/mcp").target == HttpTarget("https://tools.example/mcp")
    for bad, why in [
        ("no-equals-sign", "NAME=COMMAND"),
        ("name=", "NAME=COMMAND"),
        ("two words=x", "the name"),
        ("a__b=x", "the name"),
        ("sse=ws://host/mcp", "only http"),
        ("q=python 'unclosed", "cannot split"),
    ]:
        with pytest.raises(ValueError, match=why):
            parse_server_spec(bad)
    with pytest.raises(ValueError, match="given twice"):
        parse_server_specs(["a=x", "a=y"])
    with pytest.raises(ValueError, match="no --mcp-server is named 'b'"):
        ToolFilter.parse(["b:*"], parse_server_specs(["a=x"]))
    with pytest.raises(ValueError, match="expected TOOL"):
        ToolFilter.parse(["a:"], parse_server_specs(["a=x"]))


def test_results_as_text_for_the_model() -> None:
    blocks: list[mcp_types.ContentBlock] = [
        mcp_types.TextContent(text="first"),
        mcp_types.ImageContent(data="aGVsbG8=", mime_type="image/png"),
        mcp_types.AudioContent(data="AAAA", mime_type="audio/wav"),
        mcp_types.ResourceLink(name="report", uri="file:///r.txt"),
        mcp_types.EmbeddedResource(resource=mcp_types.TextResourceContents(uri="file:///n.txt", text="embedded")),
        mcp_types.EmbeddedResource(resource=mcp_types.BlobResourceContents(uri="file:///b.bin", blob="AAAA")),
    ]
    text = result_text(mcp_types.CallToolResult(content=blocks))
    assert text.splitlines() == [
        "first",
        "[image: image/png, 5 bytes]",
        "[audio: audio/wav, 3 bytes]",
        "[resource link: report file:///r.txt]",
        "embedded",
        "[resource: file:///b.bin, binary, 3 bytes]",
    ]
    structured = mcp_types.CallToolResult(content=[], structured_content={"temp_c": 21})
    assert result_text(structured) == '{"temp_c": 21}'
    huge = result_text(mcp_types.CallToolResult(content=[mcp_types.TextContent(text="x" * (MAX_OUTPUT_CHARS + 10))]))
    assert len(huge) < MAX_OUTPUT_CHARS + 100 and huge.endswith("10 more characters cut]")


def test_the_stand_in_calculator_never_evaluates_code() -> None:
    assert evaluate("2 ** 10 - 24 / 4") == 1018
    for bad in ["__import__('os')", "(1).real", "[1, 2]", "9 ** 9 ** 9", "1 / 0", "x + 1", "1" * 300]:
        with pytest.raises(ValueError):
            evaluate(bad)


# --- a real hark-server with --mcp-server ------------------------------------------------------


def test_hark_server_starts_with_a_dead_mcp_server_and_reports_it(server_factory: Any, events: Path) -> None:
    dead_port = free_port()
    running = server_factory(
        "--mcp-server", f"dead=http://127.0.0.1:{dead_port}/mcp", "--mcp-server", stdio_spec("tools", events)
    )
    deadline = time.monotonic() + 30
    while metric(running, 'hark_mcp_server_up{server="tools"}') != 1:
        assert time.monotonic() < deadline, running.log_tail()
        time.sleep(0.2)
    assert metric(running, 'hark_mcp_server_up{server="dead"}') == 0
    assert metric(running, 'hark_mcp_connects_total{outcome="failed",server="dead"}') >= 1
    assert "MCP server dead" in running.log() and "cannot connect" in running.log()
    running.assert_alive()


def test_a_bad_mcp_server_option_stops_the_server_with_a_message(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hark.server.app", "--port", "0", "--mcp-server", "bad name=x"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--mcp-server 'bad name=x': the name" in proc.stderr


# --- end to end: a session's model calls an MCP tool (server/tool_round.py) --------------------


async def mcp_server_up(hark: RunningServer, name: str, timeout_s: float = 30.0) -> None:
    """The server connects its MCP servers in the background: wait until `name` is up."""
    await wait_for(lambda: metric(hark, f'hark_mcp_server_up{{server="{name}"}}') == 1, f"{name} up", timeout_s)


async def typed_turn(peer: Peer, text: str) -> dict[str, Any]:
    seen = len(peer.of("response.done"))
    await peer.send_json({"type": "input.text", "text": text})
    return await peer.wait_for(lambda e: e["type"] == "response.done" and len(peer.of("response.done")) > seen)


async def test_typed_requests_the_echo_llm_calls_mcp_tools(server_factory: Any, events: Path) -> None:
    # the echo LLM calls every offered tool its message names, with the message's {...} as arguments
    hark = server_factory("--mcp-server", stdio_spec("tools", events), "--tool-timeout-s", "5")
    await mcp_server_up(hark, "tools")
    peer = await Peer.open(hark.url)
    await peer.send_json({"type": "session.update", "config": {"audio_output": False}})
    done = await typed_turn(peer, 'add {"a": 2, "b": 3}')
    assert done["status"] == "completed", peer.of("error")
    assert done["text"] == "add returned 5."
    assert peer.of("response.function_call") == []  # a server tool: the client is not asked
    assert isinstance(done["metrics"]["tool_ms"], int) and done["metrics"]["tool_ms"] >= 0
    assert metric(hark, 'hark_mcp_tool_calls_total{outcome="ok",server="tools"}') == 1

    # the MCP server crashes mid-call: the model reads an error, the turn completes, the server lives
    crashed = await typed_turn(peer, "crash {}")
    assert crashed["status"] == "completed", peer.of("error")
    assert crashed["text"].startswith("crash returned Error") and "went away during the call" in crashed["text"]
    assert metric(hark, 'hark_mcp_tool_calls_total{outcome="unavailable",server="tools"}') == 1
    await wait_for(lambda: metric(hark, 'hark_mcp_connects_total{outcome="up",server="tools"}') == 2, "reconnect")
    again = await typed_turn(peer, 'multiply {"a": 6, "b": 7}')
    assert again["text"] == "multiply returned 42."

    # past --tool-timeout-s: the model reads a timeout, and the MCP server was told to stop
    late = await typed_turn(peer, 'slow {"seconds": 30}')
    assert late["status"] == "completed" and "took longer than 5 s" in late["text"], late
    await wait_for(lambda: count_events(events, "slow", "cancelled") == 1, "the timeout's cancel")

    # the reply cancelled during the call (as barge-in does): the MCP call is cancelled with it
    seen = len(peer.of("response.done"))
    await peer.send_json({"type": "input.text", "text": 'slow {"seconds": 30}'})
    await wait_for(lambda: count_events(events, "slow", "started") == 2, "the second slow call")
    await peer.send_json({"type": "response.cancel"})
    cancelled = await peer.wait_for(lambda e: e["type"] == "response.done" and len(peer.of("response.done")) > seen)
    assert cancelled["status"] == "cancelled", peer.of("error")
    await wait_for(lambda: count_events(events, "slow", "cancelled") == 2, "the caller's cancel")
    assert count_events(events, "slow", "finished") == 0
    assert metric(hark, 'hark_mcp_tool_calls_total{outcome="cancelled",server="tools"}') == 1
    assert metric(hark, 'hark_mcp_tool_calls_total{outcome="timeout",server="tools"}') == 1
    await peer.close()
    hark.assert_alive()


async def test_spoken_request_mcp_tool_spoken_answer_on_the_simulator(server_factory: Any, events: Path) -> None:
    with sglang_simulator() as sim:
        hark = server_factory("--llm", "sglang", "--llm-url", sim.url, "--mcp-server", stdio_spec("robot", events))
        await mcp_server_up(hark, "robot")
        peer = await Peer.open(hark.url)
        await peer.send_json(
            {"type": "session.update", "config": {"turn_detection": {"type": "silence", "silence_ms": 500}}}
        )
        await peer.send_pcm(load_pcm("en_goforward_command") + silence(1000))
        done = await peer.wait_for(lambda e: e["type"] == "response.done")
        await peer.close()
        records = sim.requests()
    assert peer.of("transcript.final")[0]["text"] == "go forward ten meters"
    assert done["status"] == "completed", peer.of("error")
    # the simulator calls `forward` (named in the words) with meters=10; its answer quotes the result
    assert "moved10metersforward" in done["text"].replace(" ", ""), done["text"]  # the simulator's spacing
    assert "<tool_call>" not in done["text"] and peer.of("response.function_call") == []
    assert peer.of("response.audio.done")[0]["audio_ms"] > 500  # spoken
    generate = [r for r in records if r["endpoint"] == "generate"]
    assert len(generate) >= 2, records  # the call, then the answer from its result


def test_listed_tools_get_a_clients_bounds() -> None:
    box = MCPToolbox(parse_server_specs(["big=unused-command"]))
    conn = box.connections[0]
    schema = {"type": "object", "properties": {}}
    conn.tools = (
        mcp_types.Tool(name="weather.get", input_schema=schema),  # not a function name
        mcp_types.Tool(name="huge", input_schema={"type": "object", "description": "x" * 9000}),
        mcp_types.Tool(name="wordy", description="d" * 5000, input_schema=schema),
        *(mcp_types.Tool(name=f"t{i}", input_schema=schema) for i in range(40)),
    )
    conn._set_state(ConnectionState.UP)  # what the connection does once it has listed them
    specs = box.specs()
    assert [s.name for s in specs] == ["wordy", *(f"t{i}" for i in range(31))]
    assert len(specs[0].description) == 1024
    assert not box.owns("weather.get") and not box.owns("huge") and not box.owns("t31")


def test_mcp_options_from_the_command_line_and_the_environment() -> None:
    from hark.server.config import load_config

    servers = ["a=python x.py", "b=http://127.0.0.1:9/mcp"]
    argv = ["--mcp-server", servers[0], "--mcp-server", servers[1], "--mcp-tools", "a:*", "--tool-timeout-s", "3.5"]
    cli = load_config(argv, environ={})
    assert (cli.mcp_servers, cli.mcp_tools, cli.tool_timeout_s) == (servers, ["a:*"], 3.5)
    env = load_config([], environ={"HARK_MCP_SERVERS": ", ".join(servers), "HARK_MCP_TOOLS": "now"})
    assert env.mcp_servers == servers and env.mcp_tools == ["now"]
    assert load_config([], environ={}).mcp_servers == []
