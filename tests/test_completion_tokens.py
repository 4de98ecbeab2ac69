"""`completion_tokens`: what the model wrote, as its server counts it, from each engine to
`LLMUsage`, hark.v1's `response.done.metrics`, and the Realtime `usage.output_tokens`.

The SGLang simulator (standins/sglang/) tokenizes with its stand-in tokenizer: the count an engine
reports must be the simulator's own count of the text it streamed (meta_info for `sglang`, the
final usage chunk of `stream_options.include_usage` for `openai`). The echo engine counts a word a token.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from simproc import SimProcess, sglang_simulator

from hark.server.llm.base import LLMEngine, LLMRequest, LLMUsage, Message
from hark.server.llm.echo import EchoEngine
from hark.server.llm.http import LLMSettings
from hark.server.llm.openai_compat import OpenAICompatEngine
from hark.server.llm.prompt import ChatMLPrompt
from hark.server.llm.sglang import SGLangEngine
from standins.sglang import StandInTokenizer


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    with sglang_simulator("--decode-ms-per-token", "1") as running:
        yield running


async def reply(engine: LLMEngine, text: str) -> tuple[str, LLMUsage]:
    usage = LLMUsage()
    request = LLMRequest([Message("system", "Be brief."), Message("user", text)], "s_t000001_r0000", "s", max_tokens=64)
    pieces = [item async for item in engine.stream(request, usage) if isinstance(item, str)]
    return "".join(pieces), usage


@pytest.mark.parametrize("engine_name", ["sglang", "openai"])
async def test_the_engines_report_the_servers_count_of_the_tokens_the_model_wrote(
    engine_name: str, sim: SimProcess
) -> None:
    settings = LLMSettings(url=sim.url, model="hark-sglang-simulator")
    engine: LLMEngine = (
        SGLangEngine(settings, ChatMLPrompt())
        if engine_name == "sglang"
        else OpenAICompatEngine(settings, ChatMLPrompt())
    )
    await engine.start()
    try:
        text, usage = await reply(engine, "tell me about the sea")
    finally:
        await engine.aclose()  # type: ignore[attr-defined]
    assert text and usage.prompt_tokens > 0
    written = len(StandInTokenizer().encode(text))
    # the server also counts the end-of-turn token it does not stream as text
    assert written <= usage.completion_tokens <= written + 1, (text, usage)


async def test_the_echo_engine_counts_a_word_a_token() -> None:
    text, usage = await reply(EchoEngine(), "go forward ten meters")
    assert text == "You said: go forward ten meters."
    assert usage.completion_tokens == len(text.split()) == 6
