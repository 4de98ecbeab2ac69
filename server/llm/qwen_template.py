"""Qwen's chat template for tools, rendered as text: the `# Tools` system block, assistant turns
with `<tool_call>`s, tool results as `<tool_response>`s inside one user turn.

Reproduces the `chat_template` of Qwen3's `tokenizer_config.json` (Qwen/Qwen3-0.6B and siblings;
the copy read is llama.cpp's `models/templates/Qwen-Qwen3-0.6B.jinja`) for what Hark sends: a
system message always present, no reasoning in past turns. Qwen2.5's template renders the same
text for these conversations (its only differences are a default system prompt, which Hark never
needs, and `tojson` on already-string arguments). tests/test_qwen_template.py holds a golden
string rendered from the real template with jinja2, the way transformers renders it.

The parsing side (what the model writes back) is tool_parser.py; the forced openings that make
`tool_choice` "required"/a function binding on the native API are `forced_opening`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from .base import ToolCall, ToolChoice, ToolSpec

TOOL_CALL_OPEN: Final = "<tool_call>"
TOOL_CALL_CLOSE: Final = "</tool_call>"
TOOL_RESPONSE_OPEN: Final = "<tool_response>"
TOOL_RESPONSE_CLOSE: Final = "</tool_response>"
AUTO: Final = ToolChoice()  # the default tool_choice

_TOOLS_INTRO: Final = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_OUTRO: Final = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)


def _plain(value: Any) -> Any:
    """Mappings and sequences as dicts and lists, so json.dumps takes them (keys keep their order)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def tojson(value: Any) -> str:
    """Jinja's `tojson` as transformers defines it for chat templates: json.dumps, non-ASCII kept."""
    return json.dumps(_plain(value), ensure_ascii=False)


def openai_tool(tool: ToolSpec) -> dict[str, Any]:
    """OpenAI's nested chat-completions shape, which is also what Qwen's template prints per line."""
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": _plain(tool.parameters)},
    }


def offered_tools(tools: Sequence[ToolSpec], choice: ToolChoice) -> tuple[ToolSpec, ...]:
    """The tools the prompt shows: none for tool_choice "none" (as SGLang's OpenAI server does)."""
    return () if choice.mode == "none" else tuple(tools)


def system_content(system: str, tools: Sequence[ToolSpec]) -> str:
    """The system turn's content: the system prompt, then the tools block when there are tools."""
    if not tools:
        return system
    lines = "".join("\n" + tojson(openai_tool(tool)) for tool in tools)
    return f"{system}\n\n{_TOOLS_INTRO}{lines}{_TOOLS_OUTRO}"


def render_tool_call(call: ToolCall) -> str:
    """One call as Qwen writes it. `arguments` is a string, which the template prints as is: the
    model's own text comes back unchanged, so the radix cache still holds the assistant turn."""
    arguments = call.arguments if call.arguments.strip() else "{}"
    return f'{TOOL_CALL_OPEN}\n{{"name": "{call.name}", "arguments": {arguments}}}\n{TOOL_CALL_CLOSE}'


def assistant_content(content: str, calls: Sequence[ToolCall]) -> str:
    """An assistant turn's body: its words, then each call on its own line."""
    out = content
    for i, call in enumerate(calls):
        if (i == 0 and content) or i > 0:
            out += "\n"
        out += render_tool_call(call)
    return out


def tool_responses(results: Sequence[str]) -> str:
    """Consecutive tool results, grouped into the body of one user turn."""
    return "".join(f"\n{TOOL_RESPONSE_OPEN}\n{result}\n{TOOL_RESPONSE_CLOSE}" for result in results)


def forced_opening(tools: Sequence[ToolSpec], choice: ToolChoice) -> str:
    """What the reply is made to start with so that the model must call a tool.

    SGLang's OpenAI server enforces "required" and a named function with a grammar (EBNF / JSON
    schema of the tools) over the whole reply. On the native `/generate` API Hark writes its own
    prompt, so it writes the opening of the call into the assistant turn instead: the model can
    only continue it. The gap: the arguments are not constrained by the schema (the model usually
    follows it; the session handles arguments that do not parse), and for "required" the name is
    the model's pick (an unknown one is the session's to handle). The opening sits after the user's
    turn, so the speculative prefix is untouched.
    """
    if not tools or choice.mode in ("auto", "none"):
        return ""
    if choice.mode == "function":
        return f'{TOOL_CALL_OPEN}\n{{"name": "{choice.name}", "arguments": '
    return f'{TOOL_CALL_OPEN}\n{{"name": "'
