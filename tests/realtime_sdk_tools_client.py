"""Apps written for OpenAI Realtime that use function tools, talking to Hark. Runs with the SDK venv's python.

Usage: python realtime_sdk_tools_client.py SCENARIO PORT AUDIO_DIR
Same output as realtime_sdk_client.py (whose helpers it uses): {"kind": "event"} lines for every server
event, then one {"kind": "result"}. The server runs the echo LLM, whose tool behaviour is
deterministic (server/llm/echo.py): it calls every offered tool whose name is a word of the user's
message, with the message's `{...}` as arguments (else {"text": message}), and after the results
says "<name> returned <output>." for each.
Not imported by the tests and not run by pytest: it needs openai[realtime] and openai-agents.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path
from typing import Any

from realtime_sdk_client import TIMEOUT_S, Events, appender, client, emit, opened, pcm24, stream

FORWARD = {
    "type": "function",
    "name": "forward",
    "description": "Move the robot forward",
    "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CLOCK = {"type": "function", "name": "get_time", "description": "The time", "parameters": {"type": "object"}}


def calls_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in response["output"] if item["type"] == "function_call"]


async def answer_calls(conn: Any, events: Events, done: dict[str, Any], outputs: dict[str, str]) -> dict[str, Any]:
    """What an app does with a response that called tools: an output per call, then response.create."""
    after = len(events.items)
    for call in calls_of(done["response"]):
        await conn.conversation.item.create(
            item={"type": "function_call_output", "call_id": call["call_id"], "output": outputs[call["name"]]}
        )
    await conn.response.create()
    return await events.kind("response.done", after)


def transcript(response: dict[str, Any]) -> str:
    parts = [part for item in response["output"] if item["type"] == "message" for part in item["content"]]
    return " ".join(str(part.get("transcript") or part.get("text") or "") for part in parts)


SCENARIOS: dict[str, Any] = {}


def scenario(fn: Any) -> Any:
    SCENARIOS[fn.__name__] = fn
    return fn


# ---------------------------------------------------------------- openai-python, GA


@scenario
async def spoken_tool(port: int, audio: Path) -> dict[str, Any]:
    """Say "go forward ten meters" to an app with a `forward` tool: the call, its output, the spoken answer."""
    async with opened(lambda: client(port).realtime.connect(model="hark")) as (conn, events, _):
        await conn.session.update(session={"type": "realtime", "tools": [FORWARD], "tool_choice": "auto"})
        updated = await events.kind("session.updated")
        sender = asyncio.create_task(stream(appender(conn), pcm24(audio, "en_goforward_command", 2500), 48))
        first = await events.kind("response.done")
        sender.cancel()
        arguments = json.loads(calls_of(first["response"])[0]["arguments"])
        second = await answer_calls(conn, events, first, {"forward": "moved " + arguments.get("text", "?")})
        audio_bytes = sum(
            len(base64.b64decode(e["delta"])) for e in events.items if e["type"] == "response.output_audio.delta"
        )
        return {
            "session_tools": updated["session"]["tools"],
            "first": first["response"],
            "second": second["response"],
            "answer": transcript(second["response"]),
            "audio_bytes": audio_bytes,
            "types": events.types(),
        }


@scenario
async def typed_tools(port: int, audio: Path) -> dict[str, Any]:
    """A typed request that names two tools, a forced function, and every kind of bad tool input."""
    async with opened(lambda: client(port).realtime.connect(model="hark")) as (conn, events, _):
        await conn.session.update(
            session={"type": "realtime", "output_modalities": ["text"], "tools": [WEATHER, CLOCK]}
        )
        await events.kind("session.updated")
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": 'get_weather and get_time {"city": "Paris"}'}],
            }
        )
        await conn.response.create()
        first = await events.kind("response.done")
        second = await answer_calls(conn, events, first, {"get_weather": "sunny", "get_time": "noon"})

        # forced: the model calls get_time whatever is said
        await conn.session.update(session={"type": "realtime", "tool_choice": {"type": "function", "name": "get_time"}})
        await events.kind("session.updated", len(events.items))
        after = len(events.items)
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]}
        )
        await conn.response.create()
        forced = await events.kind("response.done", after)
        forced_answer = await answer_calls(conn, events, forced, {"get_time": "one"})

        after = len(events.items)
        bad = [
            ("e_name", {"tools": [{"type": "function", "name": "has space"}]}),
            ("e_dup", {"tools": [CLOCK, CLOCK]}),
            ("e_params", {"tools": [{"type": "function", "name": "f", "parameters": {"type": "array"}}]}),
            ("e_choice", {"tool_choice": {"type": "function", "name": "nope"}}),
        ]
        for event_id, session in bad:
            update = {"type": "session.update", "event_id": event_id, "session": {"type": "realtime", **session}}
            await conn.send_raw(json.dumps(update))
        output = {"type": "function_call_output", "call_id": "call_nobody", "output": "x"}
        await conn.send_raw(json.dumps({"type": "conversation.item.create", "event_id": "e_call", "item": output}))
        await events.wait(lambda e: e["type"] == "error" and e["error"]["event_id"] == "e_call", after)
        errors = [
            {"code": e["error"]["code"], "event_id": e["error"]["event_id"]}
            for e in events.items[after:]
            if e["type"] == "error"
        ]
        return {
            "first": first["response"],
            "second": second["response"],
            "answer": transcript(second["response"]),
            "forced": forced["response"],
            "forced_answer": transcript(forced_answer["response"]),
            "errors": errors,
        }


@scenario
async def server_tool(port: int, audio: Path) -> dict[str, Any]:
    """The server's MCP tools (`add`) run inside it, unseen; a client tool in the same request is asked for."""
    async with opened(lambda: client(port).realtime.connect(model="hark")) as (conn, events, _):
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"], "tools": [WEATHER]})
        updated = await events.kind("session.updated")
        ask = 'add {"a": 2, "b": 3}'
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": ask}]}
        )
        await conn.response.create()
        alone = await events.kind("response.done")
        after = len(events.items)
        both = 'get_weather and add {"a": 2, "b": 3}'
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": both}]}
        )
        await conn.response.create()
        mixed = await events.kind("response.done", after)
        answer = await answer_calls(conn, events, mixed, {"get_weather": "sunny"})
        return {
            "session_tools": updated["session"]["tools"],
            "alone": alone["response"],
            "alone_answer": transcript(alone["response"]),
            "mixed": mixed["response"],
            "mixed_answer": transcript(answer["response"]),
            "types": events.types(),
        }


@scenario
async def simulator_tool(port: int, audio: Path) -> dict[str, Any]:
    """On the SGLang simulator (Qwen's tool-call format, parsed by the sglang engine): a spoken request."""
    move = {
        "type": "function",
        "name": "move_forward",
        "description": "Drive the robot forward",
        "parameters": {"type": "object", "properties": {"distance_m": {"type": "number"}}, "required": ["distance_m"]},
    }
    async with opened(lambda: client(port).realtime.connect(model="hark")) as (conn, events, _):
        await conn.session.update(session={"type": "realtime", "tools": [move]})
        await events.kind("session.updated")
        sender = asyncio.create_task(stream(appender(conn), pcm24(audio, "en_goforward_command", 2500), 48))
        first = await events.kind("response.done")
        sender.cancel()
        second = await answer_calls(conn, events, first, {"move_forward": "moved ten meters"})
        texts = [
            e.get("delta", "")
            for e in events.items
            if e["type"] in ("response.output_audio_transcript.delta", "response.output_text.delta")
        ]
        audio_bytes = sum(
            len(base64.b64decode(e["delta"])) for e in events.items if e["type"] == "response.output_audio.delta"
        )
        return {
            "first": first["response"],
            "second": second["response"],
            "answer": transcript(second["response"]),
            "deltas": "".join(texts),
            "audio_bytes": audio_bytes,
        }


# ---------------------------------------------------------------- openai-python, beta


@scenario
async def beta_tool(port: int, audio: Path) -> dict[str, Any]:
    async with opened(lambda: client(port).beta.realtime.connect(model="gpt-4o-realtime-preview")) as (
        conn,
        events,
        _,
    ):
        await conn.session.update(session={"tools": [WEATHER], "tool_choice": "auto"})
        updated = await events.kind("session.updated")
        await conn.conversation.item.create(
            item={
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": 'get_weather {"city": "Oslo"}'}],
            }
        )
        await conn.response.create()
        first = await events.kind("response.done")
        second = await answer_calls(conn, events, first, {"get_weather": "snow"})
        return {
            "session_tools": updated["session"]["tools"],
            "first": first["response"],
            "second": second["response"],
            "answer": transcript(second["response"]),
            "types": events.types(),
        }


# ---------------------------------------------------------------- openai-agents (RealtimeAgent + @function_tool)


@scenario
async def agents_tool(port: int, audio: Path) -> dict[str, Any]:
    """The agent loop as users write it: the SDK runs the tool and asks for the answer by itself."""
    from agents import function_tool
    from agents.realtime import RealtimeAgent, RealtimeRunner

    ran: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"sunny in {city}"

    agent = RealtimeAgent(name="assistant", instructions="You help with the weather.", tools=[get_weather])
    runner = RealtimeRunner(agent)
    config = {"url": f"ws://127.0.0.1:{port}/v1/realtime?model=hark", "api_key": "any"}
    seen: list[str] = []
    errors: list[str] = []
    dones = 0
    audio_bytes = 0
    history: list[Any] = []
    session = await runner.run(model_config=config)  # type: ignore[arg-type]
    async with session:
        await session.send_message('get_weather {"city": "Rome"}')
        async with asyncio.timeout(TIMEOUT_S):
            async for event in session:
                seen.append(event.type)
                if event.type == "raw_model_event" and getattr(event.data, "type", "") == "raw_server_event":
                    raw = event.data.data
                    emit(kind="event", event=raw)
                    if raw.get("type") == "response.done":
                        dones += 1
                        if dones == 2:
                            break
                elif event.type == "error":
                    errors.append(repr(event.error)[:500])
                elif event.type == "audio":
                    audio_bytes += len(event.audio.data)
                elif event.type == "history_updated":
                    history = [item.model_dump(mode="json") for item in event.history]
        # let the last history update arrive
        await asyncio.sleep(0.5)
    return {"types": sorted(set(seen)), "errors": errors, "ran": ran, "audio_bytes": audio_bytes, "history": history}


async def main() -> None:
    name, port, audio_dir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    result = await SCENARIOS[name](port, audio_dir)
    emit(kind="result", result=result)


if __name__ == "__main__":
    asyncio.run(main())
