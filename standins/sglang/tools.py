"""Tool calls in the simulator: canned, deterministic calls in Qwen's format, and the OpenAI
route's `tool_calls` (what SGLang's `--tool-call-parser qwen25` makes of the model's text).

The simulator is no model. Its rules, so that tests can rely on them:

- Tools are offered when the prompt's system turn holds Qwen's `<tools>` block (one JSON object a
  line, `{"type": "function", "function": {...}}`).
- A tool is asked for when the last user turn's words contain the tool's name, or one of the
  parts of its name (split at `_`, `-`, `.`) that is at least 4 letters long and not a generic verb
  (`GENERIC_PARTS`): "what's the weather in Paris" asks for `get_weather`. Every tool asked for is
  called, in the order of the tools block: two tools named in one turn are two calls.
- The arguments come from the tool's JSON schema (`properties`, those in `required`, all of them
  when there is no `required`, plus any with a `default`): a `default` as is; an `enum` the first
  value the user said, else its first; an integer/number the next number in the user's words
  (digits, or one to twelve in English), else 1; a boolean true; a string the first phrase after
  "in/for/at/to/about" that is no number (up to three words, ending at "and", "please", ...),
  else the user's words; an array [], an object {}.
- For tests of a model that errs: a snake_case word in the user's words that names no offered tool
  (`book_flight`) is a call to that unknown tool, arguments {}; the words "broken arguments" make
  every call's JSON invalid (its closing brace left out).
- The reply is the calls only, `<tool_call>\\n{"name": ..., "arguments": ...}\\n</tool_call>`, one a
  line, the way Qwen writes them; the tokenizer streams them in pieces, `<tool_call>` being one
  token as in Qwen's vocabulary.
- When the last user turn is tool results (`<tool_response>`s), the reply is in words:
  "Here is what I found: <results joined by '; '>."
- A prompt that ends inside an opened call (Hark's forced opening for tool_choice
  required/function on `/generate`) is continued: the name (when open) and the arguments.
- On the OpenAI route, tool_choice "required" or a named function makes the reply a call even
  when no tool was asked for (the named one, else the first asked for, else the first tool); SGLang
  enforces that with a grammar.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Final

from .chat import last_user_turn

TOOL_CALL_OPEN: Final = "<tool_call>"
TOOL_CALL_CLOSE: Final = "</tool_call>"
GENERIC_PARTS: Final = frozenset(
    {"get", "set", "list", "make", "find", "fetch", "create", "call", "tool", "read", "show", "query", "check", "info"}
)
BROKEN_ARGUMENTS: Final = "broken arguments"
_UNKNOWN_RE: Final = re.compile(r"\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\b")
_NUMBER_WORDS: Final = {
    w: i + 1 for i, w in enumerate("one two three four five six seven eight nine ten eleven twelve".split())
}
_TOOLS_BLOCK_RE: Final = re.compile(r"<tools>\n(.*?)\n</tools>", re.DOTALL)
_USER_TURNS_RE: Final = re.compile(r"<\|im_start\|>user\n?(.*?)(?:<\|im_end\|>|\Z)", re.DOTALL)
_RESPONSE_RE: Final = re.compile(r"<tool_response>\n?(.*?)\n?</tool_response>", re.DOTALL)
_GENERATION: Final = "<|im_start|>assistant\n"
_EMPTY_THINK: Final = "<think>\n\n</think>\n\n"
_OPEN_NAMED_RE: Final = re.compile(r'<tool_call>\s*\{"name":\s*"((?:[^"\\]|\\.)*)",\s*"arguments":\s*$')
_OPEN_NAME_RE: Final = re.compile(r'<tool_call>\s*\{"name":\s*"$')
_NAME_RE: Final = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
_ARGUMENTS_RE: Final = re.compile(r'"arguments"\s*:\s*')


def tools_in_prompt(prompt: str) -> list[dict[str, Any]]:
    """The `function` objects of the prompt's tools block (lines that are not tools are skipped)."""
    match = _TOOLS_BLOCK_RE.search(prompt)
    if match is None:
        return []
    out: list[dict[str, Any]] = []
    for line in match.group(1).splitlines():
        try:
            tool = json.loads(line)
        except ValueError:
            continue
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            out.append(function)
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def asked_for(tools: list[dict[str, Any]], user_text: str) -> list[dict[str, Any]]:
    """The tools the user's words name (the rule in the module docstring), in the tools' order."""
    words = set(_words(user_text))
    joined = " ".join(_words(user_text))
    chosen = []
    for tool in tools:
        name = str(tool["name"]).lower()
        parts = [p for p in re.split(r"[_\-.]+", name) if len(p) >= 4 and p not in GENERIC_PARTS]
        if " ".join(_words(name)) in joined or any(p in words for p in parts):
            chosen.append(tool)
    return chosen


def _numbers(text: str) -> list[int | float]:
    out: list[int | float] = []
    for token in re.findall(r"\d+(?:\.\d+)?|[A-Za-z]+", text):
        if token[0].isdigit():
            out.append(float(token) if "." in token else int(token))
        elif token.lower() in _NUMBER_WORDS:
            out.append(_NUMBER_WORDS[token.lower()])
    return out


_PREPOSITIONS: Final = frozenset({"in", "for", "at", "to", "about"})
_PHRASE_ENDS: Final = frozenset({"and", "please", "then", "with", "or", "now", "today", "tomorrow"})


def _phrase(text: str) -> str:
    """The first phrase after a preposition that is not a number (up to three words)."""
    for clause in re.split(r"[,.;!?]", text):
        words = clause.split()
        for i, word in enumerate(words[:-1]):
            following = words[i + 1]
            if word.lower() not in _PREPOSITIONS or following[0].isdigit() or following.lower() in _NUMBER_WORDS:
                continue
            phrase: list[str] = []
            for next_word in words[i + 1 : i + 4]:
                if next_word.lower() in _PHRASE_ENDS | _PREPOSITIONS:
                    break
                phrase.append(next_word)
            if phrase:
                return " ".join(phrase)
    return text.strip().rstrip(".?!")


def canned_arguments(tool: dict[str, Any], user_text: str) -> dict[str, Any]:
    parameters = tool.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, dict) else None
    if not isinstance(properties, dict):
        return {}
    required = parameters.get("required") if isinstance(parameters, dict) else None
    wanted = set(required) if isinstance(required, list) else set(properties)
    numbers = _numbers(user_text)
    lowered = user_text.lower()
    args: dict[str, Any] = {}
    for name, schema in properties.items():
        schema = schema if isinstance(schema, dict) else {}
        if name not in wanted and "default" not in schema:
            continue
        kind = schema.get("type")
        enum = schema.get("enum")
        if "default" in schema:
            args[name] = schema["default"]
        elif isinstance(enum, list) and enum:
            args[name] = next((v for v in enum if str(v).lower() in lowered), enum[0])
        elif kind in ("integer", "number"):
            value = numbers.pop(0) if numbers else 1
            args[name] = int(value) if kind == "integer" else value
        elif kind == "boolean":
            args[name] = True
        elif kind == "array":
            args[name] = []
        elif kind == "object":
            args[name] = {}
        else:
            args[name] = _phrase(user_text)
    return args


def call_text(tool: dict[str, Any], user_text: str) -> str:
    arguments = json.dumps(canned_arguments(tool, user_text), ensure_ascii=False)
    return f'{TOOL_CALL_OPEN}\n{{"name": "{tool["name"]}", "arguments": {arguments}}}\n{TOOL_CALL_CLOSE}'


def last_request(prompt: str) -> str:
    """The last user turn that is the user's words, not tool results."""
    for turn in reversed(_USER_TURNS_RE.findall(prompt)):
        if not turn.lstrip().startswith("<tool_response>"):
            return str(turn).strip()
    return ""


def _by_name(tools: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next((t for t in tools if t.get("name") == name), {"name": name})


def tool_reply(prompt: str, *, force: bool = False, force_name: str | None = None) -> str | None:
    """The simulator's reply to a prompt with tools or tool results; None: the usual canned reply."""
    tools = tools_in_prompt(prompt)
    at = prompt.rfind(_GENERATION)
    tail = prompt[at + len(_GENERATION) :] if at >= 0 else None
    if tail is not None and ("<|im_end|>" in tail or "<|im_start|>" in tail):
        tail = None  # the prompt ends inside another turn (a prefill, an end-of-turn check)
    if tail is None:
        return None
    tail = tail.removeprefix(_EMPTY_THINK)
    request = last_request(prompt)
    if tail.startswith(TOOL_CALL_OPEN):  # a call opened by the client: continue it
        named = _OPEN_NAMED_RE.search(tail)
        if named is not None:
            tool = _by_name(tools, named.group(1))
            return json.dumps(canned_arguments(tool, request), ensure_ascii=False) + "}\n" + TOOL_CALL_CLOSE
        if _OPEN_NAME_RE.search(tail) is not None and tools:
            tool = (asked_for(tools, request) or tools)[0]
            arguments = json.dumps(canned_arguments(tool, request), ensure_ascii=False)
            return f'{tool["name"]}", "arguments": {arguments}}}\n{TOOL_CALL_CLOSE}'
        return None
    if tail:
        return None
    user = last_user_turn(prompt)
    if user.startswith("<tool_response>"):
        results = [r.strip() for r in _RESPONSE_RE.findall(user)]
        return f"Here is what I found: {'; '.join(results)}."
    if force_name is not None:
        chosen = [_by_name(tools, force_name)]
    else:
        chosen = asked_for(tools, request)
        if force and not chosen and tools:
            chosen = tools[:1]
    if tools and force_name is None:
        offered = {str(t["name"]) for t in tools}
        chosen += [{"name": w} for w in dict.fromkeys(_UNKNOWN_RE.findall(request.lower())) if w not in offered]
    if not chosen:
        return None
    calls = [call_text(tool, request) for tool in chosen]
    if BROKEN_ARGUMENTS in request.lower():
        calls = [c.replace("}\n" + TOOL_CALL_CLOSE, "\n" + TOOL_CALL_CLOSE) for c in calls]
    return "\n".join(calls)


# --- the OpenAI route: the model's text as content and tool_calls ---------------------------


@dataclass
class StreamedCall:
    """One call as far as the text shows it: `arguments` only ever grows while it streams."""

    call_id: str
    name: str | None = None
    arguments: str = ""
    complete: bool = False


def _held_marker(text: str, marker: str) -> int:
    for k in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


class ToolCallSplitter:
    """What SGLang's streaming tool-call parser makes of cumulative output text: the content so
    far (markup held back) and the calls, each with its name once written and its arguments as
    they grow (the call's closing brace held back until the call ends)."""

    def __init__(self) -> None:
        self.calls: list[StreamedCall] = []

    def split(self, text: str, final: bool) -> str:
        """The content so far; updates `calls`."""
        parts = text.split(TOOL_CALL_OPEN)
        content = parts[0]
        if len(parts) == 1:
            hold = 0 if final else _held_marker(content, TOOL_CALL_OPEN)
            return content[: len(content) - hold] if final else content[: len(content) - hold].rstrip()
        pieces = [content.rstrip()]
        for index, part in enumerate(parts[1:]):
            if index == len(self.calls):
                self.calls.append(StreamedCall(call_id=f"call_{uuid.uuid4().hex[:24]}"))
            call = self.calls[index]
            body, closed, rest = part.partition(TOOL_CALL_CLOSE)
            if not closed and not final:
                body = body[: len(body) - _held_marker(body, TOOL_CALL_CLOSE)]
            name = _NAME_RE.search(body)
            if name is not None and call.name is None and body[name.end() :].strip():
                call.name = name.group(1)
            args = _ARGUMENTS_RE.search(body)
            if args is not None:
                arguments = body[args.end() :].rstrip()
                arguments = arguments[:-1].rstrip() if arguments.endswith("}") else arguments
                if len(arguments) > len(call.arguments) and arguments.startswith(call.arguments):
                    call.arguments = arguments
            call.complete = bool(closed) or final
            if rest.strip():
                pieces.append(rest.strip())
        return "\n".join(p for p in pieces if p)
