"""Tools in the voice loop (issue 15): client tools over hark.v1 on a real server and socket, the
echo LLM's documented tool behaviour (server/llm/echo.py) or the SGLang simulator's (Qwen markup);
server tools through an in-test ServerToolbox in an in-process session."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from conftest import RunningServer, load_pcm, metric
from inprocess import in_process_session
from simproc import sglang_simulator
from wsclient import Peer, silence

from hark.protocol import ConversationError, ConversationTracker, ResponseStatus, Violation
from hark.protocol import events as ev
from hark.server.llm.base import LLMEngine, LLMRequest, LLMUsage, ToolCall, ToolSpec
from hark.server.llm.echo import EchoEngine
from hark.server.tool_round import MAX_CALLS_PER_ROUND
from hark.server.tools.base import ToolResult

pytestmark = pytest.mark.timeout(180)

SILENCE_500 = {"turn_detection": {"type": "silence", "silence_ms": 500}}


def tool(name: str, description: str = "", **properties: str) -> dict[str, Any]:
    schema = {key: {"type": kind} for key, kind in properties.items()}
    return {
        "type": "function",
        "name": name,
        "description": description or f"the {name} tool",
        "parameters": {"type": "object", "properties": schema},
    }


WEATHER = tool("weather", "current weather in a city", city="string")
LIGHTS = tool("lights", "switch the lights", on="boolean")
FORWARD = tool("forward", "drive the robot forward", text="string")


async def session(server: RunningServer, **config: Any) -> ToolPeer:
    peer = await open_peer(server.url)
    await peer.send_json({"type": "session.update", "config": {"audio_output": False, **config}})
    await peer.wait_for(lambda e: e["type"] in ("session.updated", "error"))
    assert peer.errors() == [], peer.of("error")
    return peer


def text_of(peer: ToolPeer, response_id: str) -> str:
    return "".join(e["delta"] for e in peer.of("response.text.delta") if e["response_id"] == response_id)


class ToolPeer(Peer):
    """A Peer that answers function calls, each once (events are searched from the first one)."""

    def __init__(self, conn: Any) -> None:
        super().__init__(conn)
        self.answered: set[str] = set()

    async def answer_calls(self, outputs: dict[str, str], expected: int) -> list[dict[str, Any]]:
        """Answer the next `expected` function calls not answered yet (by tool name); returns them."""
        calls: list[dict[str, Any]] = []
        while len(calls) < expected:
            try:
                call = await self.wait_for(self._unanswered)
            except AssertionError as exc:
                raise AssertionError(f"{exc}; errors: {self.of('error')}") from None
            self.answered.add(call["call_id"])
            calls.append(call)
            output = outputs[call["name"]]
            await self.send_json({"type": "function_call.output", "call_id": call["call_id"], "output": output})
        return calls

    def _unanswered(self, event: dict[str, Any]) -> bool:
        return event["type"] == "response.function_call" and event["call_id"] not in self.answered


async def open_peer(url: str) -> ToolPeer:
    peer = await ToolPeer.open(url)
    assert isinstance(peer, ToolPeer)
    return peer


# ---------------------------------------------------------------------- client tools over hark.v1


async def test_typed_request_client_tool_then_answer(server: RunningServer) -> None:
    peer = await session(server, tools=[WEATHER])
    await peer.send_json({"type": "input.text", "text": 'please, the weather {"city": "Paris"}'})
    (call,) = await peer.answer_calls({"weather": '{"sky": "clear", "temp_c": 21}'}, 1)
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    await peer.close()

    assert call["name"] == "weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    assert call["response_id"] == done["response_id"]
    assert done["status"] == "completed", peer.of("error")
    # the words before the call went out before it; the answer uses the client's output
    order = [e["type"] for e in peer.events if e["type"] in ("response.text.delta", "response.function_call")]
    assert order[0] == "response.text.delta" and "response.function_call" in order
    assert (
        done["text"] == text_of(peer, done["response_id"]) == 'Sure. weather returned {"sky": "clear", "temp_c": 21}.'
    )
    assert isinstance(done["metrics"]["tool_ms"], int) and done["metrics"]["tool_ms"] >= 0
    assert peer.errors() == []


async def test_spoken_request_client_tool_spoken_answer(server: RunningServer) -> None:
    peer = await open_peer(server.url)
    await peer.send_json({"type": "session.update", "config": {**SILENCE_500, "tools": [FORWARD]}})
    await peer.send_pcm(load_pcm("en_goforward_command") + silence(1000))
    (call,) = await peer.answer_calls({"forward": "moved ten meters"}, 1)
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    await peer.close()

    assert peer.of("transcript.final")[0]["text"] == "go forward ten meters"
    assert json.loads(call["arguments"]) == {"text": "go forward ten meters"}
    assert done["status"] == "completed"
    assert done["text"] == "forward returned moved ten meters."
    assert peer.of("response.audio.done")[0]["audio_ms"] > 500  # the answer was spoken
    assert done["metrics"]["first_audio_ms"] >= done["metrics"]["tool_ms"]


async def test_two_calls_in_one_turn_and_the_next_turn_knows(server: RunningServer) -> None:
    peer = await session(server, tools=[WEATHER, LIGHTS])
    await peer.send_json({"type": "input.text", "text": "lights off and what is the weather"})
    calls = await peer.answer_calls({"weather": "rain", "lights": "done"}, 2)
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    assert [c["name"] for c in calls] == ["lights", "weather"]  # both sent before either was answered
    assert len({c["call_id"] for c in calls}) == 2
    assert done["text"] == "lights returned done. weather returned rain."
    # a second turn: the conversation (with the calls and results) goes on; no tool named, no call
    await peer.send_json({"type": "input.text", "text": "thanks"})
    second = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] != done["response_id"])
    await peer.close()
    assert second["text"] == "You said: thanks."
    assert len(peer.of("response.function_call")) == 2


async def test_client_that_never_answers_times_out(server: RunningServer) -> None:
    peer = await session(server, tools=[WEATHER], client_tool_timeout_s=0.5)
    await peer.send_json({"type": "input.text", "text": "weather now"})
    call = await peer.wait_for(lambda e: e["type"] == "response.function_call")
    cancelled = await peer.wait_for(lambda e: e["type"] == "response.function_call.cancelled")
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    # a late answer is refused: nothing waits for it any more
    await peer.send_json({"type": "function_call.output", "call_id": call["call_id"], "output": "late"})
    await peer.wait_for(lambda e: e["type"] == "error")
    await peer.close()
    assert cancelled == {**cancelled, "call_id": call["call_id"], "reason": "timeout"}
    assert done["status"] == "completed"
    assert done["text"].startswith("weather returned Error (timeout): the client did not answer")
    assert done["metrics"]["tool_ms"] >= 400
    assert peer.errors() == ["unknown_call_id"]


async def test_invalid_arguments_once_then_fine(server: RunningServer) -> None:
    peer = await session(server, tools=[WEATHER])
    await peer.send_json({"type": "input.text", "text": "weather {city: Paris}"})  # not JSON: the model erred
    (call,) = await peer.answer_calls({"weather": "sunny"}, 1)
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    await peer.close()
    assert call["arguments"] == "{}"  # the invalid call never reached the client; the retry did
    assert done["status"] == "completed" and done["text"] == "weather returned sunny."
    assert peer.errors() == []


async def test_invalid_arguments_twice_ends_the_turn(server: RunningServer) -> None:
    peer = await session(server, tools=[WEATHER])
    await peer.send_json({"type": "input.text", "text": "weather forever {city: Paris}"})
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    await peer.send_json({"type": "input.text", "text": "hello again"})
    after = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] != done["response_id"])
    await peer.close()
    assert peer.of("response.function_call") == []
    assert done["status"] == "failed"
    assert peer.errors() == ["tool_arguments_invalid"]
    assert "<tool" not in done["text"] and done["text"].startswith("Sorry")
    assert after["status"] == "completed"  # the session goes on


async def test_round_limit_stops_a_model_that_calls_forever(server: RunningServer) -> None:
    peer = await session(server, tools=[LIGHTS])
    await peer.send_json({"type": "input.text", "text": "lights forever"})
    calls = await peer.answer_calls({"lights": "ok"}, 4)
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    await peer.close()
    assert len(calls) == 4 and len(peer.of("response.function_call")) == 4
    assert done["status"] == "failed"
    assert peer.errors() == ["tool_round_limit"]


async def test_tool_choice_none_required_function(server: RunningServer) -> None:
    peer = await session(server, tools=[WEATHER, LIGHTS], tool_choice="none")
    await peer.send_json({"type": "input.text", "text": "weather"})
    first = await peer.wait_for(lambda e: e["type"] == "response.done")
    assert first["text"] == "You said: weather." and peer.of("response.function_call") == []

    await peer.send_json({"type": "session.update", "config": {"tool_choice": "required"}})
    await peer.send_json({"type": "input.text", "text": "hello"})  # no tool named: required calls the first
    (required,) = await peer.answer_calls({"weather": "hot", "lights": "on"}, 1)
    second = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] != first["response_id"])
    assert required["name"] == "weather" and second["text"] == "weather returned hot."

    await peer.send_json({"type": "session.update", "config": {"tool_choice": {"type": "function", "name": "lights"}}})
    await peer.send_json({"type": "input.text", "text": "weather"})  # names weather, but lights is forced
    seen = {required["call_id"]}
    forced = await peer.wait_for(lambda e: e["type"] == "response.function_call" and e["call_id"] not in seen)
    await peer.send_json({"type": "function_call.output", "call_id": forced["call_id"], "output": "on"})
    third = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] == forced["response_id"])
    updated = peer.of("session.updated")[-1]["config"]
    await peer.close()
    assert forced["name"] == "lights" and third["text"] == "lights returned on."
    assert updated["tool_choice"] == {"type": "function", "name": "lights"}
    assert [t["name"] for t in updated["tools"]] == ["weather", "lights"]
    assert peer.errors() == []


async def test_barge_in_during_a_client_tool_call(server: RunningServer) -> None:
    sessions_before = metric(server, "hark_sessions_open")
    cancelled_before = metric(server, 'hark_tool_calls_total{kind="client",outcome="cancelled"}')
    peer = await open_peer(server.url)
    lookup = tool("lookup", "look something up", text="string")
    await peer.send_json({"type": "session.update", "config": {**SILENCE_500, "tools": [lookup]}})
    await peer.send_json({"type": "input.text", "text": "lookup"})
    call = await peer.wait_for(lambda e: e["type"] == "response.function_call")
    await peer.send_pcm(load_pcm("en_goforward_command") + silence(1000))  # the user talks over the wait
    cancelled = await peer.wait_for(lambda e: e["type"] == "response.function_call.cancelled")
    done = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] == call["response_id"])
    # nothing of the cut reply was heard: its words ride with the spoken turn, which calls again
    again = await peer.wait_for(lambda e: e["type"] == "response.function_call" and e["call_id"] != call["call_id"])
    await peer.send_json({"type": "function_call.output", "call_id": again["call_id"], "output": "found"})
    second = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] == again["response_id"])
    await peer.send_json({"type": "function_call.output", "call_id": call["call_id"], "output": "too late"})
    await peer.wait_for(lambda e: e["type"] == "error")
    await peer.send_json({"type": "session.close"})
    await peer.wait_closed()
    assert cancelled["call_id"] == call["call_id"] and cancelled["reason"] == "barge-in"
    assert done["status"] == "cancelled"
    assert json.loads(again["arguments"]) == {"text": "lookup go forward ten meters"}
    assert second["status"] == "completed" and second["text"] == "lookup returned found."
    assert peer.errors() == ["unknown_call_id"]
    assert metric(server, 'hark_tool_calls_total{kind="client",outcome="cancelled"}') == cancelled_before + 1
    for _ in range(50):  # the slot is freed once the server has seen the close
        if metric(server, "hark_sessions_open") <= sessions_before:
            break
        await asyncio.sleep(0.1)
    assert metric(server, "hark_sessions_open") <= sessions_before


async def test_response_cancel_during_a_client_tool_call(server: RunningServer) -> None:
    peer = await session(server, tools=[WEATHER])
    await peer.send_json({"type": "input.text", "text": "weather"})
    call = await peer.wait_for(lambda e: e["type"] == "response.function_call")
    await peer.send_json({"type": "response.cancel"})
    cancelled = await peer.wait_for(lambda e: e["type"] == "response.function_call.cancelled")
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    await peer.close()
    assert cancelled["call_id"] == call["call_id"] and cancelled["reason"] == "cancelled"
    assert done["status"] == "cancelled"


async def test_unknown_call_id_is_refused(server: RunningServer) -> None:
    peer = await session(server)
    await peer.send_json({"type": "function_call.output", "call_id": "call_nobody", "output": "x"})
    error = await peer.wait_for(lambda e: e["type"] == "error")
    await peer.close()
    assert error["code"] == "unknown_call_id" and "call_nobody" in error["message"]


# ---------------------------------------------------------------------- Qwen markup (SGLang simulator)


async def test_tool_markup_never_reaches_text_or_speech(server_factory: Any) -> None:
    with sglang_simulator() as sim:
        hark = server_factory("--llm", "sglang", "--llm-url", sim.url, "--no-llm-speculation")
        peer = await open_peer(hark.url)
        tools = [tool("get_weather", city="string"), tool("move_forward", distance_m="number")]
        await peer.send_json({"type": "session.update", "config": {"tools": tools, **SILENCE_500}})
        await peer.send_json({"type": "input.text", "text": "what's the weather in Paris"})
        (call,) = await peer.answer_calls({"get_weather": "clear, 21 degrees"}, 1)
        done = await peer.wait_for(lambda e: e["type"] == "response.done")
        records = sim.requests()
        # a model that errs (the simulator's hooks): invalid JSON, then a tool nobody has; the model
        # reads the error and answers in words, and the client runs nothing
        await peer.send_json({"type": "input.text", "text": "the weather in Oslo with broken arguments"})
        broken = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] == "resp_2")
        await peer.send_json({"type": "input.text", "text": "book_flight to Rome"})
        unknown = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] == "resp_3")
        # spoken: the recognizer's words reach the model, its call the client, the result the speaker
        await peer.send_pcm(load_pcm("en_goforward_command") + silence(1000))
        (spoken_call,) = await peer.answer_calls({"move_forward": "moved ten meters"}, 1)
        spoken = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] == "resp_4")
        await peer.close()
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    assert done["status"] == "completed", peer.of("error")
    text = text_of(peer, done["response_id"])
    assert text == done["text"] and text.startswith("Here is what I found") and "degrees" in text
    for marker in ("<tool_call>", "</tool_call>", "<tool_", '"arguments"', "<tools>"):
        assert marker not in text
    assert len(peer.of("response.function_call")) == 2  # get_weather, then the spoken move_forward
    squeezed = {r["response_id"]: r["text"].replace(" ", "") for r in (broken, unknown)}  # sim detokenizes spaced
    assert broken["status"] == "completed" and "Error(invalid_arguments)" in squeezed["resp_2"]
    assert unknown["status"] == "completed" and "Error(unknown_tool)" in squeezed["resp_3"]
    for reply in (broken, unknown):
        assert "<tool" not in text_of(peer, reply["response_id"])
    assert peer.errors() == []
    assert spoken_call["name"] == "move_forward" and json.loads(spoken_call["arguments"]) == {"distance_m": 10}
    assert spoken["status"] == "completed" and "moved" in spoken["text"] and "<tool" not in spoken["text"]
    spoken_audio = [e for e in peer.of("response.audio.done") if e["response_id"] == "resp_4"]
    assert spoken_audio and spoken_audio[0]["audio_ms"] > 500
    # what was spoken: the same text (TTS takes the deltas' chunks), so the audio is words only
    assert peer.of("response.audio.done")[0]["audio_ms"] > 0
    # the second round's prompt extends the first's (the call and its result appended): cache hits
    generate = [r for r in records if r["endpoint"] == "generate"]
    assert len(generate) == 2, records
    assert generate[1]["cached_tokens"] >= 0.9 * generate[0]["prompt_tokens"] > 0, generate
    assert generate[0]["rid"] != generate[1]["rid"]  # each round is a request of its own


# ---------------------------------------------------------------------- in-process: server tools, history


class Toolbox:
    """A real ServerToolbox for these tests: `clock` answers at once, `slow` waits until released,
    and every call is recorded (with how many ran at once)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], float]] = []
        self.running = 0
        self.most_at_once = 0
        self.cancelled = 0
        self.release = asyncio.Event()

    def specs(self) -> tuple[ToolSpec, ...]:
        return (
            ToolSpec("clock", "the time now", {"type": "object", "properties": {}}),
            ToolSpec("slow", "a tool that takes its time", {"type": "object", "properties": {}}),
            ToolSpec("big", "a tool that says too much", {"type": "object", "properties": {}}),
        )

    def owns(self, name: str) -> bool:
        return name in ("clock", "slow", "big")

    async def call(self, name: str, arguments: dict[str, Any], timeout_s: float) -> ToolResult:
        self.calls.append((name, arguments, timeout_s))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            if name == "slow":
                await self.release.wait()
            return ToolResult({"clock": "12:30", "big": "b" * 20_000}.get(name, "slow done"))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1


class RecordingEcho(EchoEngine):
    """The echo engine, keeping every request it was sent."""

    def __init__(self) -> None:
        self.requests: list[LLMRequest] = []

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncIterator[str | ToolCall]:
        self.requests.append(request)
        async for piece in super().stream(request, usage):
            yield piece


class Scripted(LLMEngine):
    """Calls whatever `script` says in its first round (an unknown tool, say), then echoes the results."""

    name = "scripted-standin"

    def __init__(self, script: Sequence[ToolCall]) -> None:
        self.script = script
        self.requests: list[LLMRequest] = []

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncIterator[str | ToolCall]:
        self.requests.append(request)
        results = [m.content for m in request.messages if m.role == "tool"]
        if not results:
            for call in self.script:
                yield call
            return
        yield "results: " + " | ".join(results)


async def test_server_tools_run_concurrently_without_client_events() -> None:
    toolbox = Toolbox()
    llm = RecordingEcho()
    async with in_process_session(llm=llm, tool_timeout_s=7.5) as s:
        s.ctx.server_tools = toolbox
        await s.send_json({"type": "session.update", "config": {"tools": [WEATHER]}})
        await s.send_json({"type": "input.text", "text": "slow clock"})
        await asyncio.sleep(0.2)
        assert toolbox.most_at_once == 2  # both calls of the round run at once
        toolbox.release.set()
        done = await s.outbox.wait_for(lambda e: e["type"] == "response.done")
        history = s.session.history.messages
    assert [c[0] for c in toolbox.calls] == ["slow", "clock"]
    assert all(c[2] == 7.5 for c in toolbox.calls)  # --tool-timeout-s reaches the toolbox
    assert s.outbox.of("response.function_call") == []
    assert done["text"] == "slow returned slow done. clock returned 12:30."
    # offered: the client's tool, then the server's
    assert [t.name for t in llm.requests[0].tools] == ["weather", "clock", "slow", "big"]
    # history: user, assistant calls, two results, the answer
    assert [(m.role, bool(m.tool_calls)) for m in history] == [
        ("user", False),
        ("assistant", True),
        ("tool", False),
        ("tool", False),
        ("assistant", False),
    ]
    assert [m.tool_call_id for m in history[2:4]] == [c.call_id for c in history[1].tool_calls]


async def test_next_turn_prompt_holds_the_calls_and_results() -> None:
    llm = RecordingEcho()
    async with in_process_session(llm=llm) as s:
        s.ctx.server_tools = Toolbox()
        await s.send_json({"type": "input.text", "text": "clock"})
        first = await s.outbox.wait_for(lambda e: e["type"] == "response.done")
        await s.send_json({"type": "input.text", "text": "and now"})
        await s.outbox.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] != first["response_id"])
    final_round, next_turn = llm.requests[1], llm.requests[2]
    # the next turn's prompt starts with everything the last round of the previous one saw
    assert next_turn.messages[: len(final_round.messages)] == final_round.messages
    assert next_turn.messages[len(final_round.messages)].content == "clock returned 12:30."
    assert next_turn.messages[-1].content == "and now"


async def test_cancel_during_tool_calls_cancels_them_all_and_leaks_nothing() -> None:
    toolbox = Toolbox()
    async with in_process_session() as s:
        s.ctx.server_tools = toolbox
        await s.send_json({"type": "session.update", "config": {"tools": [WEATHER]}})
        await s.outbox.wait_for(lambda e: e["type"] == "session.updated")
        tasks_before = len(asyncio.all_tasks())
        await s.send_json({"type": "input.text", "text": "slow weather"})  # a server and a client call
        call = await s.outbox.wait_for(lambda e: e["type"] == "response.function_call")
        for _ in range(100):
            if toolbox.running:
                break
            await asyncio.sleep(0.01)
        await s.send_json({"type": "response.cancel"})
        done = await s.outbox.wait_for(lambda e: e["type"] == "response.done")
        await asyncio.sleep(0.05)
        tasks_after = len(asyncio.all_tasks())
        history = s.session.history.messages
        registry = s.ctx.metrics.registry
        cancelled = {
            kind: registry.get_sample_value("hark_tool_calls_total", {"kind": kind, "outcome": "cancelled"})
            for kind in ("server", "client")
        }
        assert not s.session.submit_tool_output(call["call_id"], "late")  # nothing waits for it now
    assert done["status"] == "cancelled"
    assert toolbox.cancelled == 1 and toolbox.running == 0
    assert cancelled == {"server": 1.0, "client": 1.0}
    (told,) = s.outbox.of("response.function_call.cancelled")
    assert told == {"type": "response.function_call.cancelled", "call_id": call["call_id"], "reason": "cancelled"}
    assert tasks_after == tasks_before  # the reply's tasks and every call's are gone
    assert [m.role for m in history] == []  # the calls never finished: nothing of them in the conversation
    assert s.outbox.of("error")[-1]["code"] == "unknown_call_id"


async def test_unknown_tool_is_an_error_the_model_reads() -> None:
    llm = Scripted([ToolCall("call_a", "teleport", "{}"), ToolCall("call_a", "weather", '{"city": "Oslo"}')])
    async with in_process_session(llm=llm) as s:
        await s.send_json({"type": "session.update", "config": {"tools": [WEATHER]}})
        await s.send_json({"type": "input.text", "text": "go"})
        call = await s.outbox.wait_for(lambda e: e["type"] == "response.function_call")
        s.session.submit_tool_output(call["call_id"], "snow")
        done = await s.outbox.wait_for(lambda e: e["type"] == "response.done")
    assert call["name"] == "weather" and call["call_id"] != "call_a"  # a duplicate id got its own
    assert done["status"] == "completed"
    assert done["text"].startswith("results: Error (unknown_tool): there is no tool named 'teleport'")
    assert done["text"].endswith("| snow")
    assert [m.role for m in llm.requests[1].messages[-3:]] == ["assistant", "tool", "tool"]


async def test_filler_is_said_while_a_slow_tool_runs() -> None:
    async with in_process_session() as s:
        config = {"tools": [WEATHER], "tool_filler": "One moment.", "tool_filler_after_ms": 100}
        await s.send_json({"type": "session.update", "config": config})
        await s.send_json({"type": "input.text", "text": "weather"})
        call = await s.outbox.wait_for(lambda e: e["type"] == "response.function_call")
        await s.outbox.wait_for(lambda e: e["type"] == "response.text.delta")  # said while the tool runs
        s.session.submit_tool_output(call["call_id"], "fog")
        done = await s.outbox.wait_for(lambda e: e["type"] == "response.done")
        history = s.session.history.messages
    assert done["text"] == "One moment. weather returned fog."
    assert history[1].content == ""  # the model said nothing before its call: the filler is not its words
    assert history[-1].content == "weather returned fog."


async def test_no_tools_means_no_tools_in_the_request() -> None:
    llm = RecordingEcho()
    async with in_process_session(llm=llm) as s:
        await s.send_json({"type": "input.text", "text": "weather"})
        done = await s.outbox.wait_for(lambda e: e["type"] == "response.done")
    assert llm.requests[0].tools == () and done["text"] == "You said: weather."
    assert done["metrics"]["tool_ms"] == 0


def test_the_client_tracker_keeps_function_calls() -> None:
    tracker = ConversationTracker()
    tracker.feed(ev.ResponseStarted(turn_id=1, response_id="resp_1"), 0.0)
    call = ev.ResponseFunctionCall(response_id="resp_1", call_id="c1", name="weather", arguments="{}")
    assert tracker.feed(call, 0.1) is tracker.response("resp_1")
    tracker.feed(ev.ResponseFunctionCallCancelled(call_id="c1", reason="barge-in"), 0.2)
    done = ev.ResponseDone(response_id="resp_1", status=ResponseStatus.CANCELLED, text="", metrics={})
    tracker.feed(done, 0.3)
    response = tracker.response("resp_1")
    assert response is not None and response.function_calls == [call]
    with pytest.raises(ConversationError) as late:  # a call for a finished response breaks the contract
        tracker.feed(call, 0.4)
    assert late.value.violation is Violation.RESPONSE_ENDED


async def test_a_flood_of_calls_is_bounded() -> None:
    toolbox = Toolbox()
    flood = [ToolCall(f"call_{i}", "clock", "{}") for i in range(MAX_CALLS_PER_ROUND + 2)]
    llm = Scripted([*flood, ToolCall("call_big", "big", "{}")])
    async with in_process_session(llm=llm) as s:
        s.ctx.server_tools = toolbox
        await s.send_json({"type": "input.text", "text": "go"})
        done = await s.outbox.wait_for(lambda e: e["type"] == "response.done")
    results = [m.content for m in llm.requests[1].messages if m.role == "tool"]
    assert done["status"] == "completed"
    assert len(toolbox.calls) == MAX_CALLS_PER_ROUND  # the calls past the bound never ran
    assert results[:MAX_CALLS_PER_ROUND] == ["12:30"] * MAX_CALLS_PER_ROUND
    assert all(r.startswith("Error (too_many_calls)") for r in results[MAX_CALLS_PER_ROUND:])
    assert len(results) == len(flood) + 1  # every call has its result message, run or not
    assert results[-1].startswith("Error (too_many_calls)")


async def test_a_huge_server_tool_result_is_cut_to_a_clients_bound() -> None:
    llm = Scripted([ToolCall("call_big", "big", "{}")])
    async with in_process_session(llm=llm) as s:
        s.ctx.server_tools = Toolbox()
        await s.send_json({"type": "input.text", "text": "go"})
        await s.outbox.wait_for(lambda e: e["type"] == "response.done")
    (result,) = [m.content for m in llm.requests[1].messages if m.role == "tool"]
    assert result.startswith("b" * ev.MAX_TOOL_OUTPUT_CHARS)
    assert result.endswith(f"[cut: {20_000 - ev.MAX_TOOL_OUTPUT_CHARS} more characters]")


async def test_speculative_prefill_carries_the_tools(server_factory: Any) -> None:
    """The prefix prefilled while the user talks has the tools in it, so the reply's prompt finds
    it in the radix cache (tools are in the system turn: without them the prefixes part early)."""
    with sglang_simulator() as sim:
        hark = server_factory("--llm", "sglang", "--llm-url", sim.url, env={"HARK_LLM_SPECULATION_MIN_WORDS": "1"})
        peer = await open_peer(hark.url)
        tools = [tool("get_weather", city="string"), tool("move_forward", distance_m="number")]
        await peer.send_json({"type": "session.update", "config": {"tools": tools, **SILENCE_500}})
        await peer.send_pcm(load_pcm("en_goforward_command") + silence(1000))
        await peer.answer_calls({"move_forward": "moved"}, 1)
        done = await peer.wait_for(lambda e: e["type"] == "response.done")
        await peer.close()
        records = sim.requests()
    prefills = [r for r in records if r["max_new_tokens"] == 0]
    replies = [r for r in records if r["max_new_tokens"] > 1]
    assert done["metrics"]["speculative_prefills"] >= 1 and prefills, records
    assert replies[0]["cached_tokens"] >= prefills[-1]["prompt_tokens"], records
