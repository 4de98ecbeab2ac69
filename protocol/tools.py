"""Function tools a session offers its model: the Realtime API's flat shape, checked with stable codes.

A tool is `{"type": "function", "name", "description", "parameters"}`, where `parameters` is a JSON
schema whose `type` is `object`. `tool_choice` is `"auto"`, `"none"`, `"required"` or
`{"type": "function", "name": ...}` naming one of the session's tools. Every refusal is a
`ProtocolError` with its own code, so a client can tell a bad name from a schema that is too big.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ErrorCode, ProtocolError

MAX_TOOLS = 32
MAX_TOOL_DESCRIPTION_CHARS = 1024
MAX_TOOL_PARAMETERS_BYTES = 8192  # the schema as compact JSON: every byte is prompt, every turn
TOOL_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_CHOICE_MODES = ("auto", "none", "required")

ToolChoiceMode = Literal["auto", "none", "required", "function"]


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    """One checked function tool; `parameters` is the JSON-schema object as the client sent it."""

    name: str
    description: str
    parameters: dict[str, Any]

    def __hash__(self) -> int:  # the schema is a dict: hash its canonical JSON
        return hash((self.name, self.description, json.dumps(self.parameters, sort_keys=True)))

    def to_dict(self) -> dict[str, Any]:
        return {"type": "function", "name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass(frozen=True, slots=True)
class ToolChoiceSetting:
    """`mode` is auto, none, required, or function (then `name` is the tool the model must call)."""

    mode: ToolChoiceMode = "auto"
    name: str = ""

    def to_wire(self) -> str | dict[str, str]:
        return {"type": "function", "name": self.name} if self.mode == "function" else self.mode


AUTO = ToolChoiceSetting()


def _refuse(code: ErrorCode, message: str) -> ProtocolError:
    return ProtocolError(code, message)


def parse_tool(value: Any, where: str) -> ToolDefinition:
    """One tool from its wire shape (an existing ToolDefinition passes unchanged)."""
    if isinstance(value, ToolDefinition):
        return value
    if not isinstance(value, Mapping):
        raise _refuse(ErrorCode.INVALID_TOOL, f"{where} must be an object {{type, name, description, parameters}}")
    unknown = sorted(str(k)[:64] for k in value if k not in ("type", "name", "description", "parameters"))
    if unknown:
        raise _refuse(ErrorCode.INVALID_TOOL, f"{where}: unknown field(s) {', '.join(unknown)}")
    if value.get("type", "function") != "function":
        raise _refuse(ErrorCode.INVALID_TOOL, f'{where}.type must be "function" (the only kind of tool)')
    name = value.get("name")
    if not isinstance(name, str) or not TOOL_NAME_PATTERN.match(name):
        shown = json.dumps(name)[:80] if isinstance(name, str) else type(name).__name__
        raise _refuse(
            ErrorCode.INVALID_TOOL_NAME, f"{where}.name {shown} must be 1 to 64 of the characters a-z A-Z 0-9 _ -"
        )
    description = value.get("description", "")
    if not isinstance(description, str):
        raise _refuse(ErrorCode.INVALID_TOOL, f"{where}.description must be a string")
    if len(description) > MAX_TOOL_DESCRIPTION_CHARS:
        raise _refuse(
            ErrorCode.TOOL_TOO_LARGE,
            f"{where}.description is {len(description)} chars; at most {MAX_TOOL_DESCRIPTION_CHARS}",
        )
    parameters = value.get("parameters", {"type": "object", "properties": {}})
    if not isinstance(parameters, Mapping) or parameters.get("type") != "object":
        raise _refuse(
            ErrorCode.INVALID_TOOL_PARAMETERS,
            f'{where}.parameters must be a JSON-schema object with "type": "object" (the arguments are an object)',
        )
    properties = parameters.get("properties", {})
    if not isinstance(properties, Mapping) or not all(isinstance(p, Mapping) for p in properties.values()):
        raise _refuse(ErrorCode.INVALID_TOOL_PARAMETERS, f"{where}.parameters.properties must map names to schemas")
    required = parameters.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _refuse(ErrorCode.INVALID_TOOL_PARAMETERS, f"{where}.parameters.required must be a list of strings")
    try:
        size = len(json.dumps(parameters, separators=(",", ":"), allow_nan=False).encode())
    except (TypeError, ValueError, RecursionError):
        raise _refuse(ErrorCode.INVALID_TOOL_PARAMETERS, f"{where}.parameters must be plain JSON") from None
    if size > MAX_TOOL_PARAMETERS_BYTES:
        raise _refuse(
            ErrorCode.TOOL_TOO_LARGE, f"{where}.parameters is {size} bytes as JSON; at most {MAX_TOOL_PARAMETERS_BYTES}"
        )
    return ToolDefinition(name, description, json.loads(json.dumps(parameters)))  # a private, plain copy


def parse_tools(value: Any, where: str = "config.tools") -> tuple[ToolDefinition, ...]:
    """A session's whole tool list: at most MAX_TOOLS, names unique."""
    if not isinstance(value, list | tuple):
        raise _refuse(ErrorCode.INVALID_TOOL, f"{where} must be a list of tools")
    if len(value) > MAX_TOOLS:
        raise _refuse(ErrorCode.TOO_MANY_TOOLS, f"{where} has {len(value)} tools; at most {MAX_TOOLS}")
    tools = tuple(parse_tool(item, f"{where}[{i}]") for i, item in enumerate(value))
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise _refuse(ErrorCode.DUPLICATE_TOOL_NAME, f"{where}: two tools are named {tool.name!r}")
        seen.add(tool.name)
    return tools


def parse_tool_choice(value: Any, where: str = "config.tool_choice") -> ToolChoiceSetting:
    if isinstance(value, ToolChoiceSetting):
        return value
    if isinstance(value, str) and value in TOOL_CHOICE_MODES:
        return ToolChoiceSetting(value)  # type: ignore[arg-type]  # checked against the modes just above
    if isinstance(value, Mapping) and value.get("type") == "function" and set(value) <= {"type", "name"}:
        name = value.get("name")
        if isinstance(name, str) and TOOL_NAME_PATTERN.match(name):
            return ToolChoiceSetting("function", name)
    raise _refuse(
        ErrorCode.INVALID_TOOL_CHOICE,
        f'{where} must be "auto", "none", "required" or {{"type": "function", "name": <a tool\'s name>}}',
    )


def check_tool_choice(
    choice: ToolChoiceSetting, tools: tuple[ToolDefinition, ...], where: str, also: tuple[str, ...] = ()
) -> None:
    """A forced function must be one of the session's tools (or `also`: the server's own tools)."""
    names = tuple(tool.name for tool in tools) + also
    if choice.mode == "function" and choice.name not in names:
        known = ", ".join(names) or "none"
        raise _refuse(
            ErrorCode.UNKNOWN_TOOL_CHOICE,
            f"{where} names {choice.name!r}, which is not a tool of this session ({known})",
        )
