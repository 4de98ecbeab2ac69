"""Qwen's chat template with tools (server/llm/qwen_template.py, prompt.py) against a golden string.

The golden string was rendered from the real template with jinja2, as transformers renders chat
templates (`trim_blocks`, `lstrip_blocks`, `tojson` = json.dumps with non-ASCII kept): the
`chat_template` of Qwen3's tokenizer_config.json (Qwen/Qwen3-0.6B), read from llama.cpp's copy
`models/templates/Qwen-Qwen3-0.6B.jinja`, with `add_generation_prompt=True, enable_thinking=False`,
`tools` in OpenAI's nested shape and the messages below (tool calls with string arguments).
"""

from __future__ import annotations

from hark.server.llm.base import Message, ToolCall, ToolChoice, ToolSpec
from hark.server.llm.prompt import ChatMLPrompt
from hark.server.llm.qwen_template import openai_tool, system_content

TOOLS = (
    ToolSpec(
        "get_weather",
        "Current weather in a city",
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    ),
    ToolSpec("set_timer", "Start a timer", {"type": "object", "properties": {"minutes": {"type": "integer"}}}),
)

CONVERSATION = [
    Message("system", "Be brief."),
    Message("user", "weather in Paris and a timer for 5 minutes"),
    Message(
        "assistant",
        "Checking.",
        tool_calls=(
            ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
            ToolCall("call_2", "set_timer", '{"minutes": 5}'),
        ),
    ),
    Message("tool", '{"temp_c": 18}', tool_call_id="call_1"),
    Message("tool", "started", tool_call_id="call_2"),
    Message("assistant", "It is 18 degrees; timer started."),
    Message("user", "thanks"),
    Message("assistant", "", tool_calls=(ToolCall("call_3", "get_weather", '{"city": "Rome"}'),)),
    Message("tool", "sunny", tool_call_id="call_3"),
]

GOLDEN = (
    "<|im_start|>system\nBe brief.\n\n# Tools\n\nYou may call one or more functions to assist with the user "
    "query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    '{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}\n'
    '{"type": "function", "function": {"name": "set_timer", "description": "Start a timer", "parameters": '
    '{"type": "object", "properties": {"minutes": {"type": "integer"}}}}}\n</tools>\n\nFor each function call, '
    "return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n"
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    "<|im_start|>user\nweather in Paris and a timer for 5 minutes<|im_end|>\n"
    '<|im_start|>assistant\nChecking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
    '</tool_call>\n<tool_call>\n{"name": "set_timer", "arguments": {"minutes": 5}}\n</tool_call><|im_end|>\n'
    '<|im_start|>user\n<tool_response>\n{"temp_c": 18}\n</tool_response>\n<tool_response>\nstarted\n'
    "</tool_response><|im_end|>\n"
    "<|im_start|>assistant\nIt is 18 degrees; timer started.<|im_end|>\n"
    "<|im_start|>user\nthanks<|im_end|>\n"
    '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n'
    "</tool_call><|im_end|>\n"
    "<|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\n"
)


def test_the_prompt_is_what_qwens_template_renders() -> None:
    assert ChatMLPrompt(empty_think=True).full_prompt(CONVERSATION, TOOLS) == GOLDEN


def test_tool_choice_none_renders_no_tools() -> None:
    prompt = ChatMLPrompt().full_prompt(CONVERSATION[:2], TOOLS, ToolChoice("none"))
    assert "<tools>" not in prompt and prompt.startswith("<|im_start|>system\nBe brief.<|im_end|>\n")


def test_required_and_named_function_open_the_call() -> None:
    builder = ChatMLPrompt(empty_think=True)
    auto = builder.full_prompt(CONVERSATION[:2], TOOLS)
    required = builder.full_prompt(CONVERSATION[:2], TOOLS, ToolChoice("required"))
    named = builder.full_prompt(CONVERSATION[:2], TOOLS, ToolChoice("function", "set_timer"))
    assert required == auto + '<tool_call>\n{"name": "'
    assert named == auto + '<tool_call>\n{"name": "set_timer", "arguments": '
    # without tools there is nothing to force
    assert builder.full_prompt(CONVERSATION[:2], (), ToolChoice("required")) == builder.full_prompt(CONVERSATION[:2])


def test_tool_lines_are_openai_nested_json() -> None:
    assert openai_tool(TOOLS[0])["function"]["name"] == "get_weather"
    assert system_content("S", ()) == "S"
    assert system_content("S", TOOLS).count('\n{"type": "function"') == 2


def test_openai_chat_messages_carry_calls_and_results() -> None:
    msgs = ChatMLPrompt().chat_messages(CONVERSATION)
    assert msgs[2] == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "set_timer", "arguments": '{"minutes": 5}'}},
        ],
    }
    assert msgs[3] == {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18}'}
    assert msgs[-2]["content"] is None  # an assistant turn that only called
    assert msgs[-1] == {"role": "tool", "tool_call_id": "call_3", "content": "sunny"}  # not "cleaned"
