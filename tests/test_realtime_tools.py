"""Function tools on the OpenAI Realtime endpoint.

First the translator alone (sans-IO, the Session played by hand-written hark.v1 events): session.tools
and tool_choice onto the hark.v1 config with hark.v1's error codes, a tool call as a `function_call`
item that ends its response, the client's `function_call_output` + `response.create` as the tool
outputs and the continuation as a new response; every event through the SDKs' own types. Then the
real path (realtime_sdk_tools_client.py): the official `openai` SDK (GA and beta) and openai-agents'
RealtimeAgent with a `@function_tool`, against a real hark-server with the echo LLM, whose tool
behaviour is deterministic (server/llm/echo.py: it calls every offered tool whose name the user says).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import realtime_sdk
from conftest import RunningServer, metric, start_server, stop_server
from simproc import sglang_simulator
from test_realtime_sdk import Run, _prepare_audio, words
from test_realtime_translator import METRICS, RATE, Harness, error_of, only, tone, types

import hark.protocol as p
from hark.protocol.events import MAX_TOOL_OUTPUT_CHARS
from hark.protocol.realtime import ops
from hark.protocol.realtime.translator import NO_OUTPUT

Event = dict[str, Any]
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CLOCK = {"type": "function", "name": "get_time", "description": "", "parameters": {"type": "object", "properties": {}}}
EMITTED: dict[str, list[Event]] = {"ga": [], "beta": []}  # for the SDK validation at the end


class ToolHarness(Harness):
    def _keep(self, events: list[Event] | tuple[Event, ...]) -> list[Event]:
        EMITTED[self.dialect].extend(events)
        return super()._keep(events)

    def with_tools(self, *tools: dict[str, Any], choice: Any = None) -> None:
        session: dict[str, Any] = {"tools": list(tools)}
        if choice is not None:
            session["tool_choice"] = choice
        inbound = self.send({"type": "session.update", "session": session})
        assert types(list(inbound.events)) == ["session.updated"], inbound.events
        patch = dict(inbound.ops[0].patch)  # type: ignore[union-attr]
        config = p.SessionConfig().updated(patch).to_dict()  # what the Session reports back
        self.server(p.SessionUpdated(config=config))

    def calls(self, rid: str, *calls: tuple[str, str, str]) -> list[Event]:
        out = self.server(*(p.ResponseFunctionCall(rid, call_id, name, args) for call_id, name, args in calls))
        return out + self._keep(self.tr.end_tool_round())

    def output(self, call_id: str, output: str, event_id: str | None = None) -> Any:
        item = {"type": "function_call_output", "call_id": call_id, "output": output}
        return self.send({"type": "conversation.item.create", "event_id": event_id, "item": item})


CALL_GA = [
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
]
CONTINUATION_GA = [  # repeated deltas collapsed (`collapsed`)
    "response.created",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_audio_transcript.delta",
    "response.output_audio.delta",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
]


def collapsed(events: list[Event]) -> list[str]:
    out: list[str] = []
    for kind in types(events):
        if not out or out[-1] != kind:
            out.append(kind)
    return out


def continue_reply(
    h: ToolHarness, rid: str, text: str, metrics: dict[str, Any] | None = None, said: str = ""
) -> list[Event]:
    """The hark.v1 reply's words after the tool round, `said` before it (the Session puts a space
    between the rounds' words: the continuation's first delta starts with it)."""
    words = text.split(" ")
    deltas = [(" " if i or said else "") + w for i, w in enumerate(words)]
    out = h.server(*(p.ResponseTextDelta(rid, d) for d in deltas), p.ResponseAudioStarted(rid, RATE))
    out += h.audio(tone(100, RATE)) + h.audio(tone(100, RATE, 300))
    out += h.server(p.ResponseAudioDone(rid, 200))
    return out + h.server(p.ResponseDone(rid, "completed", said + "".join(deltas), metrics or METRICS))


# ---------------------------------------------------------------- session.tools and tool_choice


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_session_tools_become_the_sessions_client_tools_and_are_echoed(dialect: str) -> None:
    h = ToolHarness(dialect)
    tool = {**WEATHER, "description": None}  # SDKs send unset fields as null
    inbound = h.send(
        {
            "type": "session.update",
            "event_id": "u1",
            "session": {"tools": [tool, CLOCK], "tool_choice": {"type": "function", "name": "get_time"}},
        }
    )
    assert types(list(inbound.events)) == ["session.updated"]
    update = inbound.ops[0]
    assert isinstance(update, ops.UpdateConfig)
    expected = [{**WEATHER, "description": ""}, CLOCK]
    assert update.patch == {"tools": expected, "tool_choice": {"type": "function", "name": "get_time"}}
    p.validate_config_patch(update.patch)  # what the Session gets is a valid hark.v1 patch as it stands
    echoed = inbound.events[0]["session"]
    # beta's tool_choice is a string: a function is named by its name (and may be sent so)
    choice = {"type": "function", "name": "get_time"} if dialect == "ga" else "get_time"
    assert echoed["tools"] == expected and echoed["tool_choice"] == choice
    by_name = h.send({"type": "session.update", "session": {"tool_choice": "get_weather"}})
    assert by_name.ops[0].patch == {"tool_choice": {"type": "function", "name": "get_weather"}}  # type: ignore[union-attr]
    off = h.send({"type": "session.update", "session": {"tools": [], "tool_choice": "auto"}})
    assert off.events[0]["session"]["tools"] == [] and off.events[0]["session"]["tool_choice"] == "auto"


@pytest.mark.parametrize(
    ("session", "code", "param"),
    [
        ({"tools": {"name": "x"}}, "invalid_tool", "session.tools"),
        ({"tools": [{"type": "function", "name": "no spaces"}]}, "invalid_tool_name", "session.tools"),
        ({"tools": [CLOCK, CLOCK]}, "duplicate_tool_name", "session.tools"),
        (
            {"tools": [{"type": "function", "name": "f", "parameters": {"type": "string"}}]},
            "invalid_tool_parameters",
            "session.tools",
        ),
        ({"tools": [{"type": "function", "name": "f", "description": "d" * 2000}]}, "tool_too_large", "session.tools"),
        ({"tools": [{"type": "function", "name": f"f{i}"} for i in range(40)]}, "too_many_tools", "session.tools"),
        ({"tools": [{"type": "function", "name": "f", "strict": True}]}, "invalid_tool", "session.tools"),
        ({"tools": [CLOCK], "tool_choice": 5}, "invalid_tool_choice", "session.tool_choice"),
        ({"tools": [CLOCK], "tool_choice": "sometimes"}, "unknown_tool_choice", "session.tool_choice"),
        (
            {"tools": [CLOCK], "tool_choice": {"type": "function", "name": "nope"}},
            "unknown_tool_choice",
            "session.tool_choice",
        ),
    ],
)
def test_bad_tools_refuse_the_whole_update_with_hark_codes(session: dict[str, Any], code: str, param: str) -> None:
    h = ToolHarness()
    inbound = h.send({"type": "session.update", "event_id": "bad", "session": {"instructions": "Hi", **session}})
    error = error_of(inbound)  # nothing of the update applies: no op, no session.updated
    assert (error["code"], error["param"], error["event_id"]) == (code, param, "bad")
    assert "config." not in error["message"], error["message"]  # named as the client sent it
    assert h.tr.session.tools == [] and h.tr.session.hark["instructions"] != "Hi"


def test_mcp_tools_are_refused_and_the_function_tools_apply() -> None:
    h = ToolHarness()
    inbound = h.send({"type": "session.update", "session": {"tools": [{"type": "mcp", "server_label": "x"}, CLOCK]}})
    assert types(list(inbound.events)) == ["error", "session.updated"]
    assert inbound.events[0]["error"]["code"] == "mcp_not_supported"
    assert inbound.events[1]["session"]["tools"] == [CLOCK]
    mcp_choice = h.send({"type": "session.update", "session": {"tool_choice": {"type": "mcp", "server_label": "x"}}})
    assert types(list(mcp_choice.events)) == ["error", "session.updated"]


# ---------------------------------------------------------------- a call, its output, the answer


def test_a_tool_call_ends_its_response_and_the_output_with_response_create_continues_the_reply() -> None:
    h = ToolHarness()
    h.with_tools(WEATHER)
    h.user_turn(text="get_weather in Paris")
    first = h.server(p.ResponseStarted(1, "r1")) + h.calls("r1", ("call_1", "get_weather", '{"city": "Paris"}'))
    assert types(first) == CALL_GA  # no empty message item: the response only calls the tool
    added, item_added = first[1], first[2]
    assert added["item"] == {
        "id": added["item"]["id"],
        "object": "realtime.item",
        "type": "function_call",
        "status": "in_progress",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": "",
    }
    assert item_added["item"]["type"] == "function_call"
    delta, args_done, item_done = first[3], first[4], first[5]
    assert delta["delta"] == '{"city": "Paris"}' and delta["call_id"] == "call_1" and delta["output_index"] == 0
    assert (args_done["arguments"], args_done["name"], args_done["item_id"]) == (
        '{"city": "Paris"}',
        "get_weather",
        added["item"]["id"],
    )
    assert item_done["item"]["status"] == "completed" and item_done["item"]["arguments"] == '{"city": "Paris"}'
    done = first[-1]["response"]
    assert done["status"] == "completed" and [o["type"] for o in done["output"]] == ["function_call"]
    assert done["output"][0]["call_id"] == "call_1"

    # the output is held until response.create: the model goes on only then
    held = h.output("call_1", '{"temp_c": 21}', "o1")
    assert held.ops == ()
    assert types(list(held.events)) == ["conversation.item.added", "conversation.item.done"]
    output_item = held.events[0]["item"]
    assert output_item["type"] == "function_call_output" and output_item["call_id"] == "call_1"
    assert held.events[0]["previous_item_id"] == added["item"]["id"]
    create = h.send({"type": "response.create", "event_id": "c1", "response": {"metadata": {"turn": "2"}}})
    assert create.ops == (ops.SubmitToolOutput("call_1", '{"temp_c": 21}', "c1"),)
    assert create.events == ()

    metrics = {**METRICS, "completion_tokens": 9}
    answer = continue_reply(h, "r1", "get_weather returned sunny.", metrics)
    assert collapsed(answer) == CONTINUATION_GA
    deltas = "".join(e["delta"] for e in only(answer, "response.output_audio_transcript.delta"))
    response = answer[-1]["response"]
    assert deltas == "get_weather returned sunny." == response["output"][0]["content"][0]["transcript"]
    assert response["id"] != done["id"] and response["metadata"] == {"turn": "2"}
    assert response["usage"]["output_tokens"] == 9 and response["usage"]["total_tokens"] == 30 + 9
    # the conversation, in order: user, function_call, function_call_output, assistant
    kinds = [e["item"]["type"] for e in h.events if e["type"] == "conversation.item.added"]
    assert kinds == ["message", "function_call", "function_call_output", "message"]


def test_words_before_the_call_are_their_own_message_in_the_calling_response() -> None:
    h = ToolHarness()
    h.with_tools(WEATHER)
    h.user_turn(text="please get_weather")
    out = h.server(p.ResponseStarted(1, "r1"), p.ResponseTextDelta("r1", "Sure."), p.ResponseAudioStarted("r1", RATE))
    out += h.audio(tone(100, RATE))
    out += h.calls("r1", ("call_1", "get_weather", "{}"))
    assert h.audio(tone(100, RATE)) == []  # the rest of "Sure." has no response to go in
    assert h.tr.dropped_audio_bytes > 0
    done = out[-1]["response"]
    assert [o["type"] for o in done["output"]] == ["message", "function_call"]
    assert done["output"][0]["content"][0]["transcript"] == "Sure."
    indexes = [e["output_index"] for e in only(out, "response.output_item.added")]
    assert indexes == [0, 1]


def test_two_calls_in_one_round_are_one_response_and_a_missing_output_is_reported_to_the_model() -> None:
    h = ToolHarness()
    h.with_tools(WEATHER, CLOCK)
    h.user_turn(text="get_weather and get_time")
    out = h.server(p.ResponseStarted(1, "r1"))
    out += h.calls("r1", ("c1", "get_weather", '{"city": "Oslo"}'), ("c2", "get_time", "{}"))
    assert len(only(out, "response.done")) == 1
    assert [o["call_id"] for o in out[-1]["response"]["output"]] == ["c1", "c2"]
    assert types(list(h.output("c2", "12:00").events)) == ["conversation.item.added", "conversation.item.done"]
    again = h.output("c2", "13:00", "dup")
    assert error_of(again)["code"] == "invalid_value"
    create = h.send({"type": "response.create"})
    assert create.ops == (ops.SubmitToolOutput("c1", NO_OUTPUT), ops.SubmitToolOutput("c2", "12:00"))
    second = h.send({"type": "response.create", "event_id": "twice"})
    assert error_of(second)["code"] == "conversation_already_has_active_response"
    answer = continue_reply(h, "r1", "get_time returned 12:00.")
    assert answer[-1]["response"]["status"] == "completed"


def test_the_continuation_speaks_as_the_reply_began_whatever_its_response_create_asks() -> None:
    h = ToolHarness()
    h.with_tools(WEATHER)
    h.user_turn(text="get_weather")
    h.server(p.ResponseStarted(1, "r1"))
    h.calls("r1", ("c1", "get_weather", "{}"))
    h.output("c1", "fog")
    h.send({"type": "response.create", "response": {"output_modalities": ["text"]}})
    answer = continue_reply(h, "r1", "get_weather returned fog.")
    assert only(answer, "response.output_audio.delta") and not only(answer, "response.output_text.delta")
    assert answer[-1]["response"]["output_modalities"] == ["audio"]


def test_a_second_round_of_calls_comes_in_the_continuation() -> None:
    h = ToolHarness()
    h.with_tools(WEATHER)
    h.user_turn(text="get_weather")
    h.server(p.ResponseStarted(1, "r1"))
    h.calls("r1", ("c1", "get_weather", "{bad"))
    h.output("c1", "Error (invalid_arguments)")
    h.send({"type": "response.create"})
    again = h.calls("r1", ("c2", "get_weather", "{}"))
    assert types(again) == CALL_GA
    h.output("c2", "rain")
    assert h.send({"type": "response.create"}).ops == (ops.SubmitToolOutput("c2", "rain"),)
    assert continue_reply(h, "r1", "get_weather returned rain.")[-1]["response"]["status"] == "completed"


def test_the_beta_dialect_names_the_items_its_way() -> None:
    h = ToolHarness("beta")
    h.with_tools(WEATHER)
    h.user_turn(text="get_weather")
    out = h.server(p.ResponseStarted(1, "r1")) + h.calls("r1", ("c1", "get_weather", "{}"))
    assert "conversation.item.created" in types(out) and "conversation.item.done" not in types(out)
    assert "name" not in only(out, "response.function_call_arguments.done")[0]
    assert types(list(h.output("c1", "ok").events)) == ["conversation.item.created"]
    h.send({"type": "response.create"})
    answer = continue_reply(h, "r1", "get_weather returned ok.")
    assert "response.audio_transcript.delta" in types(answer)


def test_barge_in_while_waiting_ends_the_reply_quietly_and_a_late_output_is_refused() -> None:
    h = ToolHarness()
    h.with_tools(WEATHER)
    h.user_turn(text="get_weather")
    h.server(p.ResponseStarted(1, "r1"))
    h.calls("r1", ("c1", "get_weather", "{}"))
    cut = h.server(
        p.SpeechStarted(2, 9000),
        p.ResponseFunctionCallCancelled("c1", "barge-in"),
        p.ResponseDone("r1", "cancelled", "", METRICS),
    )
    assert types(cut) == ["input_audio_buffer.speech_started"]  # the calling response was already done
    late = h.output("c1", "too late", "late")
    assert (error_of(late)["code"], error_of(late)["event_id"]) == ("unknown_call_id", "late")
    h.server(p.SpeechStopped(2, 9800), p.TranscriptFinal(2, "never mind"))
    reply = h.reply("r2", turn=2, text="You said: never mind.")
    assert reply[-1]["response"]["status"] == "completed"


def test_a_call_the_client_never_answers_times_out_and_the_reply_goes_on_by_itself() -> None:
    h = ToolHarness()
    h.with_tools(WEATHER)
    h.user_turn(text="get_weather")
    h.server(p.ResponseStarted(1, "r1"))
    h.calls("r1", ("c1", "get_weather", "{}"))
    assert h.server(p.ResponseFunctionCallCancelled("c1", "timeout")) == []
    answer = continue_reply(h, "r1", "The weather tool did not answer.")
    assert collapsed(answer) == CONTINUATION_GA  # the server's own response, as after server VAD
    assert answer[-1]["response"]["metadata"] is None


def test_response_cancel_between_the_call_and_the_outputs_ends_the_waiting_reply() -> None:
    h = ToolHarness()
    h.with_tools(WEATHER)
    h.user_turn(text="get_weather")
    h.server(p.ResponseStarted(1, "r1"))
    h.calls("r1", ("c1", "get_weather", "{}"))
    cancel = h.send({"type": "response.cancel", "event_id": "x"})
    assert cancel.ops == (ops.CancelResponse("r1", "x"),) and cancel.events == ()
    ended = h.server(p.ResponseFunctionCallCancelled("c1", "cancelled"), p.ResponseDone("r1", "cancelled", "", METRICS))
    assert ended == []
    assert error_of(h.output("c1", "late"))["code"] == "unknown_call_id"
    assert error_of(h.send({"type": "response.cancel"}))["code"] == "response_cancel_not_active"


def test_a_cancel_while_the_round_is_still_open_closes_the_response_cancelled() -> None:
    h = ToolHarness()
    h.with_tools(WEATHER)
    h.user_turn(text="get_weather")
    h.server(p.ResponseStarted(1, "r1"), p.ResponseFunctionCall("r1", "c1", "get_weather", "{}"))
    out = h.server(p.ResponseFunctionCallCancelled("c1", "cancelled"), p.ResponseDone("r1", "cancelled", "", METRICS))
    assert out[-1]["type"] == "response.done" and out[-1]["response"]["status"] == "cancelled"
    assert h.tr.end_tool_round() == []  # the transport's scheduled end finds nothing left to end


def test_a_session_without_tools_keeps_the_message_first_order() -> None:
    h = ToolHarness()
    out = h.server(p.ResponseStarted(1, "r1"))
    assert types(out) == [
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
    ]


def test_an_empty_reply_in_a_tools_session_still_has_its_message() -> None:
    h = ToolHarness()
    h.with_tools(WEATHER)
    out = h.server(p.ResponseStarted(1, "r1"), p.ResponseDone("r1", "completed", "", METRICS))
    assert [o["type"] for o in out[-1]["response"]["output"]] == ["message"]


def test_function_call_output_checks_its_fields() -> None:
    h = ToolHarness()
    missing = h.send({"type": "conversation.item.create", "item": {"type": "function_call_output", "output": "x"}})
    assert error_of(missing)["code"] == "missing_required_parameter"
    huge = h.output("c", "x" * (MAX_TOOL_OUTPUT_CHARS + 1))
    assert error_of(huge)["code"] == "invalid_value"


# ---------------------------------------------------------------- every event, through the SDKs' own types


@pytest.mark.timeout(900)
@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_every_tool_event_validates_against_the_sdk_types(dialect: str) -> None:
    events = EMITTED[dialect]
    assert only(events, "response.function_call_arguments.done"), "run the whole module: the scenarios come first"
    validation = realtime_sdk.validate_server_events(events, dialect)
    assert not validation.rejections, validation.describe(events)


# ---------------------------------------------------------------- the SDKs against a real server

TOOLS_CLIENT = Path(__file__).resolve().parent / "realtime_sdk_tools_client.py"
SDK_SCENARIOS = ("spoken_tool", "typed_tools", "server_tool", "beta_tool", "agents_tool")
MCP_STANDIN = Path(__file__).resolve().parents[1] / "standins" / "mcp_tools.py"
SDK_TIMEOUT_S = 150


@pytest.fixture(scope="module")
def tool_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    """Each scenario in its own SDK process, all at once against one server with the echo LLM and
    the MCP stand-in (standins/mcp_tools.py over stdio: now, add, multiply, ..., forward) as server tools."""
    python = realtime_sdk.sdk_python()
    audio = tmp_path_factory.mktemp("realtime-tools-audio")
    _prepare_audio(audio)
    directory = tmp_path_factory.mktemp("realtime-tools-server")
    mcp = f"tools={sys.executable} {MCP_STANDIN} --events {directory / 'mcp-events.jsonl'}"
    server: RunningServer = start_server(
        directory,
        *("--max-sessions", "16", "--overload-loop-lag-ms", "0", "--overload-frame-wait-ms", "0"),
        *("--mcp-server", mcp, "--tool-timeout-s", "10"),
        env={"HARK_SLOW_CONSUMER_TIMEOUT_S": "60"},
    )
    try:
        deadline = time.monotonic() + 30  # the server connects its MCP servers in the background
        while metric(server, 'hark_mcp_server_up{server="tools"}') != 1:
            assert time.monotonic() < deadline, f"the MCP stand-in never came up:\n{server.log()[-3000:]}"
            time.sleep(0.1)
        processes = {}
        for name in SDK_SCENARIOS:
            processes[name] = subprocess.Popen(
                [str(python), str(TOOLS_CLIENT), name, str(server.port), str(audio)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            time.sleep(1.0)  # importing the SDKs takes a CPU second each
        deadline = time.monotonic() + SDK_TIMEOUT_S
        runs = {name: _collect(name, process, deadline) for name, process in processes.items()}
        for run in runs.values():
            run.server_log = server.log()[-4000:]
        yield runs
        server.assert_alive()
    finally:
        stop_server(server)


def _collect(name: str, process: subprocess.Popen[str], deadline: float) -> Run:
    try:
        stdout, stderr = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        stderr += f"\n[killed after {SDK_TIMEOUT_S} s]"
    events, result = [], {}
    for line in stdout.splitlines():
        item = json.loads(line)
        if item["kind"] == "event":
            events.append(item["event"])
        else:
            result = item["result"]
    return Run(name, process.returncode, events, result, stderr)


def ok(runs: dict[str, Run], name: str) -> dict[str, Any]:
    run = runs[name]
    assert run.returncode == 0 and run.result, run.describe()
    return run.result


sdk_e2e = pytest.mark.timeout(900)


@sdk_e2e
@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_every_event_of_the_tool_apps_validates_against_the_sdk_types(tool_runs: dict[str, Run], dialect: str) -> None:
    names = ["beta_tool"] if dialect == "beta" else [n for n in SDK_SCENARIOS if n != "beta_tool"]
    events = [event for name in names for event in tool_runs[name].events]
    assert only(events, "response.function_call_arguments.done"), [r.describe() for r in tool_runs.values()]
    validation = realtime_sdk.validate_server_events(events, dialect)
    assert not validation.rejections, validation.describe(events)


@sdk_e2e
def test_a_spoken_request_calls_the_apps_tool_and_the_answer_is_spoken(tool_runs: dict[str, Run]) -> None:
    result = ok(tool_runs, "spoken_tool")
    assert result["session_tools"] == [
        {
            "type": "function",
            "name": "forward",
            "description": "Move the robot forward",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
        }
    ]
    first = result["first"]
    assert first["status"] == "completed" and [o["type"] for o in first["output"]] == ["function_call"]
    call = first["output"][0]
    assert call["name"] == "forward" and words(json.loads(call["arguments"])["text"]) == [
        "go",
        "forward",
        "ten",
        "meters",
    ]
    second = result["second"]
    assert second["status"] == "completed" and second["id"] != first["id"]
    assert words(result["answer"]) == ["forward", "returned", "moved", "go", "forward", "ten", "meters"]
    assert result["audio_bytes"] > 24000  # the answer is spoken: over half a second of 24 kHz audio
    assert second["usage"]["output_tokens"] > 0
    assert second["usage"]["total_tokens"] == second["usage"]["input_tokens"] + second["usage"]["output_tokens"]
    kinds = result["types"]
    start = kinds.index("response.function_call_arguments.delta")
    assert kinds[start : start + 2] == [
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
    ]


@sdk_e2e
def test_two_calls_a_forced_call_and_bad_tool_input_through_the_openai_sdk(tool_runs: dict[str, Run]) -> None:
    result = ok(tool_runs, "typed_tools")
    first = result["first"]
    assert [(o["name"], o["arguments"]) for o in first["output"]] == [
        ("get_weather", '{"city": "Paris"}'),
        ("get_time", '{"city": "Paris"}'),
    ]
    assert result["answer"] == "get_weather returned sunny. get_time returned noon."
    assert result["second"]["output"][0]["content"][0]["type"] == "output_text"
    assert [o["name"] for o in result["forced"]["output"]] == ["get_time"]
    assert result["forced_answer"] == "get_time returned one."
    assert result["errors"] == [
        {"code": "invalid_tool_name", "event_id": "e_name"},
        {"code": "duplicate_tool_name", "event_id": "e_dup"},
        {"code": "invalid_tool_parameters", "event_id": "e_params"},
        {"code": "unknown_tool_choice", "event_id": "e_choice"},
        {"code": "unknown_call_id", "event_id": "e_call"},
    ]


@sdk_e2e
def test_the_beta_sdk_gets_the_beta_tool_events(tool_runs: dict[str, Run]) -> None:
    result = ok(tool_runs, "beta_tool")
    assert [t["name"] for t in result["session_tools"]] == ["get_weather"]
    assert [o["type"] for o in result["first"]["output"]] == ["function_call"]
    assert result["answer"] == "get_weather returned snow."
    assert "conversation.item.created" in result["types"] and "conversation.item.added" not in result["types"]


@sdk_e2e
def test_openai_agents_runs_its_function_tool_and_speaks_the_result(tool_runs: dict[str, Run]) -> None:
    result = ok(tool_runs, "agents_tool")
    assert result["errors"] == []
    assert result["ran"] == ["Rome"]  # the SDK ran the tool once, with the model's arguments
    assert {"tool_start", "tool_end", "audio"} <= set(result["types"]), result["types"]
    assert result["audio_bytes"] > 0
    spoken = [
        part.get("transcript") or part.get("text")
        for item in result["history"]
        if item.get("role") == "assistant"
        for part in item.get("content", [])
    ]
    assert any("sunny in Rome" in str(text) for text in spoken), result["history"]
    calls = [item for item in result["history"] if item.get("type") == "function_call"]
    assert calls and calls[0]["name"] == "get_weather" and calls[0]["output"] == "sunny in Rome"


@sdk_e2e
def test_server_mcp_tools_run_inside_the_server_and_only_the_answer_is_seen(tool_runs: dict[str, Run]) -> None:
    result = ok(tool_runs, "server_tool")
    assert [t["name"] for t in result["session_tools"]] == ["get_weather"]  # the server's own are not listed
    assert [o["type"] for o in result["alone"]["output"]] == ["message"]  # no function_call, no mcp_call
    assert result["alone_answer"] == "add returned 5."
    # a client tool and a server tool in one request: only the client's is asked for
    assert [o.get("name") for o in result["mixed"]["output"]] == ["get_weather"]
    assert result["mixed_answer"] == "get_weather returned sunny. add returned 5."
    assert not any(kind.startswith("response.mcp_call") for kind in result["types"])


@sdk_e2e
def test_on_the_sglang_simulator_a_spoken_request_gets_a_qwen_tool_call_and_a_spoken_answer(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    python = realtime_sdk.sdk_python()
    audio = tmp_path_factory.mktemp("realtime-sim-audio")
    _prepare_audio(audio)
    with sglang_simulator("--decode-ms-per-token", "2") as sim:
        server = start_server(
            tmp_path_factory.mktemp("realtime-sim-server"),
            *("--llm", "sglang", "--llm-url", sim.url, "--overload-loop-lag-ms", "0", "--overload-frame-wait-ms", "0"),
        )
        try:
            process = subprocess.Popen(
                [str(python), str(TOOLS_CLIENT), "simulator_tool", str(server.port), str(audio)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            run = _collect("simulator_tool", process, time.monotonic() + SDK_TIMEOUT_S)
            run.server_log = server.log()[-4000:]
            server.assert_alive()
        finally:
            stop_server(server)
    result = ok({"simulator_tool": run}, "simulator_tool")
    (call,) = result["first"]["output"]
    assert call["type"] == "function_call" and call["name"] == "move_forward"
    assert json.loads(call["arguments"]) == {"distance_m": 10}  # "ten" in the recognized words
    squeezed = result["answer"].replace(" ", "")  # the simulator's detokenizer spaces its tokens
    assert squeezed == "HereiswhatIfound:movedtenmeters." and result["deltas"] == result["answer"]
    assert "<tool" not in result["deltas"] and '"arguments"' not in result["deltas"]  # no markup spoken
    assert result["audio_bytes"] > 24000
    usage = result["second"]["usage"]
    assert usage["output_tokens"] > 0 and usage["input_tokens"] > 0  # SGLang's meta_info counts
    validation = realtime_sdk.validate_server_events(run.events, "ga")
    assert not validation.rejections, validation.describe(run.events)
