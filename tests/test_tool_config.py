"""Tool definitions and tool_choice (protocol/tools.py): every refusal with its own stable code, in
the codec, over a real socket (nothing of a refused update applies), and in the server's config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer
from wsclient import Peer

import hark.protocol as p
from hark.protocol.tools import (
    MAX_TOOL_DESCRIPTION_CHARS,
    MAX_TOOL_PARAMETERS_BYTES,
    MAX_TOOLS,
    ToolChoiceSetting,
    ToolDefinition,
)
from hark.server.config import load_config

GOOD = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def named(name: str) -> dict[str, Any]:
    return {**GOOD, "name": name}


BAD_TOOLS: list[tuple[str, Any, str]] = [
    ("not a list", GOOD, "invalid_tool"),
    ("not an object", ["get_weather"], "invalid_tool"),
    ("unknown field", [{**GOOD, "strict": True}], "invalid_tool"),
    ("not a function", [{**GOOD, "type": "code_interpreter"}], "invalid_tool"),
    ("description not a string", [{**GOOD, "description": 3}], "invalid_tool"),
    ("no name", [{k: v for k, v in GOOD.items() if k != "name"}], "invalid_tool_name"),
    ("space in the name", [named("get weather")], "invalid_tool_name"),
    ("empty name", [named("")], "invalid_tool_name"),
    ("name too long", [named("x" * 65)], "invalid_tool_name"),
    ("dot in the name", [named("weather.get")], "invalid_tool_name"),
    ("name not a string", [{**GOOD, "name": 7}], "invalid_tool_name"),
    ("duplicate names", [GOOD, GOOD], "duplicate_tool_name"),
    ("parameters not an object schema", [{**GOOD, "parameters": {"type": "string"}}], "invalid_tool_parameters"),
    ("parameters a list", [{**GOOD, "parameters": [1, 2]}], "invalid_tool_parameters"),
    (
        "properties not schemas",
        [{**GOOD, "parameters": {"type": "object", "properties": {"a": 1}}}],
        "invalid_tool_parameters",
    ),
    ("required not strings", [{**GOOD, "parameters": {"type": "object", "required": [1]}}], "invalid_tool_parameters"),
    ("description too long", [{**GOOD, "description": "d" * (MAX_TOOL_DESCRIPTION_CHARS + 1)}], "tool_too_large"),
    (
        "parameters too large",
        [{**GOOD, "parameters": {"type": "object", "description": "p" * MAX_TOOL_PARAMETERS_BYTES}}],
        "tool_too_large",
    ),
    ("too many tools", [named(f"t{i}") for i in range(MAX_TOOLS + 1)], "too_many_tools"),
]

BAD_CHOICES: list[tuple[Any, str]] = [
    ("sometimes", "invalid_tool_choice"),
    ({"type": "function"}, "invalid_tool_choice"),
    ({"type": "function", "name": "bad name"}, "invalid_tool_choice"),
    ({"type": "mcp", "name": "x"}, "invalid_tool_choice"),
    (3, "invalid_tool_choice"),
]


@pytest.mark.parametrize(("case", "tools", "code"), BAD_TOOLS, ids=[c[0] for c in BAD_TOOLS])
def test_bad_tools_are_refused_with_their_code(case: str, tools: Any, code: str) -> None:
    frame = json.dumps({"type": "session.update", "config": {"tools": tools}})
    with pytest.raises(p.ProtocolError) as refused:
        p.decode_client(frame)
    assert refused.value.code.value == code, refused.value.message
    assert "config.tools" in refused.value.message


@pytest.mark.parametrize(("choice", "code"), BAD_CHOICES, ids=[json.dumps(c[0]) for c in BAD_CHOICES])
def test_bad_tool_choice_is_refused(choice: Any, code: str) -> None:
    with pytest.raises(p.ProtocolError) as refused:
        p.decode_client(json.dumps({"type": "session.update", "config": {"tool_choice": choice}}))
    assert refused.value.code.value == code


def test_good_tools_round_trip_through_the_config() -> None:
    update = p.decode_client(
        json.dumps(
            {
                "type": "session.update",
                "config": {"tools": [GOOD, named("lights")], "tool_choice": {"type": "function", "name": "lights"}},
            }
        )
    )
    assert isinstance(update, p.SessionUpdate)
    config = p.SessionConfig().updated(update.config)
    assert config.tools[0] == ToolDefinition("get_weather", GOOD["description"], GOOD["parameters"])
    assert config.tool_choice == ToolChoiceSetting("function", "lights")
    wire = config.to_dict()
    assert wire["tools"] == [GOOD, named("lights")] and wire["tool_choice"] == {"type": "function", "name": "lights"}
    assert p.SessionConfig(**wire) == config  # a client reading session.created gets the same config
    hash(config)  # still usable as a key, schemas and all
    assert p.SessionConfig(**p.SessionConfig().to_dict()) == p.SessionConfig()  # no tools: [] on the wire, () here
    # a tool without parameters gets an empty object schema; no description is ""
    bare = p.SessionConfig().updated({"tools": [{"type": "function", "name": "ping"}]})
    assert bare.tools[0].parameters == {"type": "object", "properties": {}} and bare.tools[0].description == ""


def test_tool_choice_must_name_a_tool() -> None:
    config = p.SessionConfig().updated({"tools": [GOOD], "tool_choice": {"type": "function", "name": "lights"}})
    with pytest.raises(p.ProtocolError) as refused:
        config.check_tool_choice()
    assert refused.value.code is p.ErrorCode.UNKNOWN_TOOL_CHOICE
    config.check_tool_choice(("lights",))  # a server tool of that name will do


def test_client_tool_settings_are_bounded() -> None:
    for bad in ({"client_tool_timeout_s": 0}, {"client_tool_timeout_s": 601}, {"tool_filler": "x" * 201}):
        with pytest.raises(p.ProtocolError) as refused:
            p.SessionConfig().updated(bad)
        assert refused.value.code is p.ErrorCode.INVALID_FIELD


async def test_refused_updates_over_the_socket_apply_nothing(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    await peer.send_json({"type": "session.update", "config": {"tools": [GOOD]}})
    await peer.wait_for(lambda e: e["type"] == "session.updated")
    cases = [
        ({"tools": [named("bad name")], "voice": "en-gb"}, "invalid_tool_name"),
        ({"tools": [GOOD, GOOD]}, "duplicate_tool_name"),
        ({"tools": [{**GOOD, "parameters": {"type": "array"}}]}, "invalid_tool_parameters"),
        ({"tools": [named(f"t{i}") for i in range(MAX_TOOLS + 1)]}, "too_many_tools"),
        ({"tool_choice": {"type": "function", "name": "lights"}}, "unknown_tool_choice"),
        ({"tool_choice": "maybe"}, "invalid_tool_choice"),
    ]
    for config, code in cases:
        seen = len(peer.events)
        await peer.send_json({"type": "session.update", "config": config})
        error = await peer.wait_for(lambda e, seen=seen: e["type"] == "error" and peer.events.index(e) >= seen)
        assert error["code"] == code, error
    await peer.send_json({"type": "ping", "id": "after"})
    await peer.wait_for(lambda e: e["type"] == "pong")
    await peer.close()
    assert len(peer.of("session.updated")) == 1  # none of the refused updates applied
    assert peer.of("session.updated")[0]["config"]["voice"] == "en-us"


def test_tools_file_sets_the_sessions_defaults(tmp_path: Path) -> None:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps({"tools": [GOOD], "tool_choice": "required"}))
    config = load_config(["--tools-file", str(path), "--client-tool-timeout-s", "12"], environ={})
    defaults = config.session_defaults
    assert [t.name for t in defaults.tools] == ["get_weather"] and defaults.tool_choice.mode == "required"
    assert defaults.client_tool_timeout_s == 12.0
    path.write_text(json.dumps([GOOD]))  # a bare list is the tools
    assert load_config(["--tools-file", str(path)], environ={}).session_defaults.tools[0].name == "get_weather"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("[{]", "--tools-file"),
        (json.dumps([GOOD, GOOD]), "two tools are named"),
        (json.dumps({"tools": [GOOD], "tool_choice": {"type": "function", "name": "nope"}}), "nope"),
        (json.dumps({"tools": [GOOD], "voice": "x"}), "only tools and tool_choice"),
    ],
)
def test_bad_tools_file_stops_the_config(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "tools.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=says):
        load_config(["--tools-file", str(path)], environ={})


async def test_server_with_a_tools_file_offers_them(tmp_path: Path, server_factory: Any) -> None:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps([GOOD]))
    hark = server_factory("--tools-file", str(path))
    peer = await Peer.open(hark.url)
    created = peer.events[0]
    await peer.send_json({"type": "session.update", "config": {"audio_output": False}})
    await peer.send_json({"type": "input.text", "text": 'get_weather {"city": "Oslo"}'})
    call = await peer.wait_for(lambda e: e["type"] == "response.function_call")
    await peer.close()
    assert created["config"]["tools"] == [GOOD]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Oslo"}
