"""Tool calls through Hark's LLM engines against an SGLang server: does a real model, rendered
with Hark's Qwen tools template, call the tool, and is the call parsed (never spoken as markup)?

`make sglang-check` runs it against a real SGLang on a GPU host (`--url`, launched with
`--tool-call-parser qwen25` for the OpenAI route). Without `--url` it runs against the simulator
in-process, whose canned calls follow a fixed rule (standins/sglang/tools.py): that checks the
script, not a model. Checks, for the native engine (`sglang`) and the OpenAI route (`openai`):

1. `auto`: "What's the weather in Paris right now?" with get_weather and set_timer offered gives a
   get_weather call whose arguments are JSON with a city, and no `<tool_call>` text.
2. The tool's result sent back gives words and no call.
3. tool_choice `set_timer` (a named function) gives a set_timer call.
4. tool_choice `none` gives words and no call.

A model may word things its own way, so only these shapes are checked. Exit status 1 when any
check fails; a line per check either way.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack

from hark.server.llm.base import LLMEngine, LLMRequest, LLMUsage, Message, ToolCall, ToolChoice, ToolSpec
from hark.server.llm.http import LLMSettings
from hark.server.llm.openai_compat import OpenAICompatEngine
from hark.server.llm.prompt import ChatMLPrompt
from hark.server.llm.sglang import SGLangEngine

TOOLS = (
    ToolSpec(
        "get_weather",
        "Get the current weather in a city",
        {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city, e.g. Paris"}},
            "required": ["city"],
        },
    ),
    ToolSpec(
        "set_timer",
        "Start a countdown timer",
        {
            "type": "object",
            "properties": {"minutes": {"type": "integer", "description": "How many minutes"}},
            "required": ["minutes"],
        },
    ),
)
ASK = [Message("user", "What's the weather in Paris right now?")]


async def _run(engine: LLMEngine, messages: list[Message], choice: ToolChoice, rid: str) -> list[str | ToolCall]:
    request = LLMRequest(list(messages), rid, "toolcheck", max_tokens=200, tools=TOOLS, tool_choice=choice)
    return [item async for item in engine.stream(request, LLMUsage())]


def _split(items: list[str | ToolCall]) -> tuple[str, list[ToolCall]]:
    return "".join(i for i in items if isinstance(i, str)), [i for i in items if isinstance(i, ToolCall)]


def _json_object(text: str) -> dict[str, object] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def check_engine(name: str, engine: LLMEngine) -> list[tuple[str, bool, str]]:
    results: list[tuple[str, bool, str]] = []
    text, calls = _split(await _run(engine, ASK, ToolChoice(), f"toolcheck_{name}_t000001_r0000"))
    weather = [c for c in calls if c.name == "get_weather"]
    args = _json_object(weather[0].arguments) if weather else None
    ok = bool(weather) and args is not None and isinstance(args.get("city"), str) and "<tool_call>" not in text
    results.append((f"{name}: auto -> get_weather call", ok, f"calls={calls} text={text!r}"))

    if weather:
        call = weather[0]
        second = [*ASK, Message("assistant", text, tool_calls=(call,))]
        second.append(Message("tool", '{"temperature_c": 18, "sky": "clear"}', tool_call_id=call.call_id))
        answer, again = _split(await _run(engine, second, ToolChoice(), f"toolcheck_{name}_t000001_r0001"))
        ok = bool(answer.strip()) and not again and "<tool" not in answer
        results.append((f"{name}: tool result -> words", ok, f"text={answer!r} calls={again}"))
    else:
        results.append((f"{name}: tool result -> words", False, "skipped: no call in check 1"))

    forced_items = await _run(engine, ASK, ToolChoice("function", "set_timer"), f"toolcheck_{name}_t000002_r0000")
    text, calls = _split(forced_items)
    ok = [c.name for c in calls][:1] == ["set_timer"] and "<tool_call>" not in text
    results.append((f"{name}: tool_choice set_timer -> set_timer call", ok, f"calls={calls} text={text!r}"))

    text, calls = _split(await _run(engine, ASK, ToolChoice("none"), f"toolcheck_{name}_t000003_r0000"))
    results.append((f"{name}: tool_choice none -> words", bool(text.strip()) and not calls, f"text={text!r}"))
    return results


async def run_checks(url: str, model: str) -> list[tuple[str, bool, str]]:
    settings = LLMSettings(url=url, model=model, temperature=0.0, top_p=1.0, max_tokens=200)
    engines: list[tuple[str, LLMEngine]] = [("sglang", SGLangEngine(settings, ChatMLPrompt()))]
    engines.append(("openai", OpenAICompatEngine(settings, ChatMLPrompt())))
    results: list[tuple[str, bool, str]] = []
    for name, engine in engines:
        await engine.start()
        try:
            results += await check_engine(name, engine)
        finally:
            await engine.aclose()
    return results


async def _main(args: argparse.Namespace) -> list[tuple[str, bool, str]]:
    async with AsyncExitStack() as stack:
        url, model = args.url, args.model
        if not url:
            from standins.sglang import SIMULATOR_NAME, SGLangSimulator, SimConfig

            sim = await stack.enter_async_context(SGLangSimulator(SimConfig(port=0, decode_ms_per_token=0.5)))
            url, model = sim.url, SIMULATOR_NAME
            print("tool-check: against the SGLang SIMULATOR (canned calls), not a model; pass --url for SGLang")
        return await run_checks(url, model)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="tool calls through Hark's engines against an SGLang server")
    p.add_argument("--url", default="", help="SGLang's base URL (default: an in-process simulator)")
    p.add_argument("--model", default="default", help="the served model name, for the OpenAI route")
    results = asyncio.run(_main(p.parse_args(argv)))
    for label, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {label}" + ("" if ok else f"  ({detail[:300]})"))
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
