"""Tools in the LLM engines against the SGLang simulator process (standins/sglang/, no GPU here):
Qwen's tools block in the prompt, calls parsed out of the stream (never spoken as text), the second
round with the results; the openai engine with streamed `tool_calls` deltas; the speculative
prefix with tools in it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from simproc import SimProcess, sglang_simulator

from hark.server.llm.base import LLMEngine, LLMRequest, LLMUsage, Message, ToolCall, ToolChoice, ToolSpec
from hark.server.llm.http import LLMSettings
from hark.server.llm.openai_compat import OpenAICompatEngine, ToolCallDeltas
from hark.server.llm.prompt import ChatMLPrompt
from hark.server.llm.qwen_template import assistant_content
from hark.server.llm.sglang import SGLangEngine
from hark.server.llm.speculation import Speculator
from hark.server.metrics import Metrics
from standins.sglang import StandInTokenizer

WEATHER = ToolSpec(
    "get_weather",
    "The current weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIMER = ToolSpec(
    "set_timer", "Start a countdown timer", {"type": "object", "properties": {"minutes": {"type": "integer"}}}
)
TOOLS = (WEATHER, TIMER)
SYSTEM = Message("system", "Be brief.")


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    with sglang_simulator("--decode-ms-per-token", "1", "--disconnect-abort-delay-s", "0.2") as running:
        yield running


@pytest.fixture
async def sglang(sim: SimProcess) -> AsyncIterator[SGLangEngine]:
    engine = SGLangEngine(LLMSettings(url=sim.url), ChatMLPrompt())
    await engine.start()
    yield engine
    await engine.aclose()


@pytest.fixture
async def openai(sim: SimProcess) -> AsyncIterator[OpenAICompatEngine]:
    engine = OpenAICompatEngine(LLMSettings(url=sim.url, model="hark-sglang-simulator"), ChatMLPrompt())
    await engine.start()
    yield engine
    await engine.aclose()


async def collect(
    engine: LLMEngine, messages: list[Message], choice: ToolChoice | None = None, rid: str = "s_t000001_r0000"
) -> tuple[list[str | ToolCall], LLMUsage]:
    usage = LLMUsage()
    request = LLMRequest(messages, rid, "s", max_tokens=200, tools=TOOLS, tool_choice=choice or ToolChoice())
    return [item async for item in engine.stream(request, usage)], usage


def common_prefix(a: str, b: str) -> str:
    n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return a[:n]


def calls_of(items: list[str | ToolCall]) -> list[ToolCall]:
    return [item for item in items if isinstance(item, ToolCall)]


def text_of(items: list[str | ToolCall]) -> str:
    return "".join(item for item in items if isinstance(item, str))


@pytest.mark.parametrize("engine_name", ["sglang", "openai"])
async def test_two_calls_then_the_answer_from_their_results(
    engine_name: str, sglang: SGLangEngine, openai: OpenAICompatEngine
) -> None:
    engine: LLMEngine = sglang if engine_name == "sglang" else openai
    ask = [SYSTEM, Message("user", "what's the weather in Paris, and set a timer for 5 minutes")]
    items, usage = await collect(engine, ask)
    calls = calls_of(items)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("set_timer", {"minutes": 5}),
    ]
    assert text_of(items) == ""  # the markup never comes out as text
    assert len({c.call_id for c in calls}) == 2 and all(c.call_id for c in calls)
    assert usage.prompt_tokens > 0

    results = [Message("tool", "sunny, 21 C", tool_call_id=calls[0].call_id)]
    results.append(Message("tool", "timer started", tool_call_id=calls[1].call_id))
    second = [*ask, Message("assistant", "", tool_calls=tuple(calls)), *results]
    answer, usage2 = await collect(engine, second, rid="s_t000001_r0001")
    assert calls_of(answer) == []
    assert text_of(answer) == "Here is what I found: sunny, 21 C; timer started."
    if engine_name == "sglang":
        # the radix cache holds the first round's prompt and the model's own call text: the second
        # round reuses all it shares with them (all but the empty think block that Qwen's template
        # does not render again in a past assistant turn)
        first_round = sglang.final_prompt(ask, TOOLS) + assistant_content("", calls)
        shared = common_prefix(first_round, sglang.final_prompt(second, TOOLS))
        assert usage2.cached_tokens >= len(StandInTokenizer().encode(shared)) - 1 > usage.prompt_tokens * 0.9


@pytest.mark.parametrize("engine_name", ["sglang", "openai"])
async def test_a_model_that_errs_still_gives_tool_calls(
    engine_name: str, sglang: SGLangEngine, openai: OpenAICompatEngine
) -> None:
    engine: LLMEngine = sglang if engine_name == "sglang" else openai
    # the simulator's hooks: a snake_case word is an unknown tool, "broken arguments" invalid JSON
    items, _ = await collect(engine, [SYSTEM, Message("user", "weather in Rome with broken arguments")])
    (broken,) = calls_of(items)
    assert broken.name == "get_weather" and text_of(items) == ""
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.arguments)
    assert '"city": "Rome"' in broken.arguments  # the raw text, for the session to send back
    items, _ = await collect(engine, [SYSTEM, Message("user", "please book_flight to Rome")])
    assert [(c.name, c.arguments) for c in calls_of(items)] == [("book_flight", "{}")]


async def test_without_a_tool_asked_for_the_reply_is_words(sglang: SGLangEngine) -> None:
    items, _ = await collect(sglang, [SYSTEM, Message("user", "tell me a joke")])
    assert calls_of(items) == [] and text_of(items).startswith("You asked about tell me a joke")


async def test_tool_choice_none_offers_no_tools(sglang: SGLangEngine, openai: OpenAICompatEngine) -> None:
    ask = [SYSTEM, Message("user", "what's the weather in Oslo")]
    for engine in (sglang, openai):
        items, _ = await collect(engine, ask, ToolChoice("none"))
        assert calls_of(items) == [] and text_of(items).startswith("You asked about")
    assert "<tools>" not in sglang.final_prompt(ask, TOOLS, ToolChoice("none"))
    assert "<tools>\n" in sglang.final_prompt(ask, TOOLS)


@pytest.mark.parametrize("engine_name", ["sglang", "openai"])
async def test_required_and_named_function_force_a_call(
    engine_name: str, sglang: SGLangEngine, openai: OpenAICompatEngine
) -> None:
    engine: LLMEngine = sglang if engine_name == "sglang" else openai
    ask = [SYSTEM, Message("user", "hello there, in ten minutes")]
    items, _ = await collect(engine, ask, ToolChoice("required"))
    assert [c.name for c in calls_of(items)] == ["get_weather"] and text_of(items) == ""
    items, _ = await collect(engine, ask, ToolChoice("function", "set_timer"))
    assert [(c.name, json.loads(c.arguments)) for c in calls_of(items)] == [("set_timer", {"minutes": 10})]


async def test_speculative_prefill_with_tools_is_reused(sim: SimProcess, sglang: SGLangEngine) -> None:
    history = [
        SYSTEM,
        Message("user", "weather in Rome"),
        Message("assistant", "", tool_calls=(ToolCall("call_a", "get_weather", '{"city": "Rome"}'),)),
        Message("tool", "rain", tool_call_id="call_a"),
        Message("assistant", "It rains in Rome."),
    ]
    speculator = Speculator(sglang, "spec", min_new_words=1, metrics=Metrics())
    speculator.begin_turn()
    speculator.offer(history, "and what about", TOOLS)
    await asyncio.sleep(0.1)
    await asyncio.get_running_loop().run_in_executor(None, sim.wait_idle, 10.0)  # the prefill is done
    await speculator.close()
    final = [*history, Message("user", "and what about tomorrow")]
    usage = LLMUsage()
    request = LLMRequest(final, "spec_t000001_r0009", "spec", max_tokens=50, tools=TOOLS)
    assert sglang.final_prompt(final, TOOLS).startswith(sglang.partial_prompt(history, "and what about", TOOLS))
    items = [item async for item in sglang.stream(request, usage)]
    assert text_of(items)
    prefill = next(r for r in sim.requests() if r["rid"] == "spec_t000001_r0001")
    assert prefill["max_new_tokens"] == 0 and prefill["finish_reason"] == "length"
    assert usage.cached_tokens >= prefill["prompt_tokens"] - 1  # all of the speculated prefix


def test_streamed_tool_call_deltas_are_assembled_by_index() -> None:
    deltas = ToolCallDeltas()
    assert (
        deltas.add([{"index": 0, "id": "call_x", "type": "function", "function": {"name": "f", "arguments": ""}}]) == []
    )
    assert deltas.add([{"index": 0, "function": {"arguments": '{"a": '}}]) == []
    assert deltas.add([{"index": 0, "function": {"arguments": "1}"}}]) == []
    # the next index starts: the first call is complete
    started = deltas.add([{"index": 1, "id": "call_y", "function": {"name": "g", "arguments": "{}"}}])
    assert started == [ToolCall("call_x", "f", '{"a": 1}')]
    assert deltas.add(None) == [] and deltas.add([{"index": "bad"}]) == []
    assert deltas.finish() == [ToolCall("call_y", "g", "{}")]
    assert deltas.finish() == []
    no_id = ToolCallDeltas()
    no_id.add([{"index": 0, "function": {"name": "h", "arguments": "{}"}}])
    (call,) = no_id.finish()
    assert call.name == "h" and call.call_id.startswith("call_")


HISTORY = [
    SYSTEM,
    Message("user", "weather in Rome"),
    Message("assistant", "Checking.", tool_calls=(ToolCall("call_a", "get_weather", '{"city": "Rome"}'),)),
    Message("tool", '{"sky": "rain"}', tool_call_id="call_a"),
    Message("assistant", "It rains in Rome."),
]
words = st.lists(st.sampled_from(["set", "a", "timer", "uh", "for", "5", "明天", "weather", "um"]), max_size=10)
choices = st.sampled_from(
    [ToolChoice(), ToolChoice("none"), ToolChoice("required"), ToolChoice("function", "set_timer")]
)


@given(words, words, st.booleans(), st.integers(min_value=0, max_value=2), choices)
def test_partial_prompt_with_tools_is_a_prefix_of_the_final_prompt(
    stable: list[str], rest: list[str], think: bool, n_tools: int, choice: ToolChoice
) -> None:
    builder = ChatMLPrompt(empty_think=think)
    tools = TOOLS[:n_tools]
    partial = builder.partial_user_prompt(HISTORY, " ".join(stable), tools, choice)
    final = builder.full_prompt([*HISTORY, Message("user", " ".join(stable + rest))], tools, choice)
    assert final.startswith(partial)
    assert ("<tools>" in partial) == bool(tools and choice.mode != "none")
    assert partial.count("<tool_response>") == 1  # the earlier turn's call and result are in the prefix


def test_the_sglang_check_tool_script_passes_on_the_simulator(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.tool_check import main

    assert main([]) == 0
    out = capsys.readouterr().out
    assert "SIMULATOR" in out and out.count("PASS") == 8 and "FAIL" not in out
