"""Request bodies of `/generate` and `/v1/chat/completions` checked and turned into SimRequests.

The checks and their messages follow SGLang's: pydantic-style validation errors for wrong types
(`kind="validation"`), the ValueErrors of its request normalization (`kind="value"`), and the
OpenAI serving layer's own refusals (`kind="openai"`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any, Final

from .chat import canned_reply, last_user_turn, render_chatml
from .logprobs import LogprobRequest, first_token
from .request import BadRequest, SimRequest
from .scheduler import Scheduler
from .tokens import IM_END_ID
from .tools import tool_reply

ROUTING_HEADERS: Final = ("X-SMG-Routing-Key", "X-Request-Id", "X-Session-Id")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _field(
    body: dict[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    expected: str,
    *,
    default: Any = None,
    nullable: bool = True,
) -> Any:
    """`body[name]`, `default` when absent (or null, if `nullable`); the wrong type is SGLang's pydantic
    error naming the field. A bool is no int here, as in pydantic's strict integers."""
    value = body.get(name, default)
    if value is None and nullable:
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise BadRequest(f"{name}: Input should be {expected}", kind="validation")
    return value


def headers_of_interest(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: headers[name] for name in ROUTING_HEADERS if name in headers}


def parse_generate(body: Any, scheduler: Scheduler, headers: Mapping[str, str]) -> SimRequest:
    if not isinstance(body, dict):
        raise BadRequest("Input should be a valid dictionary or instance of GenerateReqInput", kind="validation")
    text = _field(body, "text", (str, list), "a valid string or list of strings")
    input_ids = _field(body, "input_ids", list, "a valid list of integers")
    rid = _field(body, "rid", str, "a valid string (batch rids are not simulated)")
    priority = _field(body, "priority", int, "a valid integer")
    stream = _field(body, "stream", bool, "a valid boolean", default=False, nullable=False)
    sampling = _field(body, "sampling_params", dict, "a valid dictionary", default={})
    routing_key = _field(body, "routing_key", str, "a valid string")
    namespace_parts: list[str] = []
    for name in ("extra_key", "cache_salt"):
        value = _field(body, name, str, "a valid string")
        if value:  # "" means unset, as in SGLang
            namespace_parts.append(f"{name}={value}")
    return_logprob = body.get("return_logprob", False)
    logprob_start_len = body.get("logprob_start_len")
    if not isinstance(return_logprob, bool | None) or (logprob_start_len is not None and not is_int(logprob_start_len)):
        raise BadRequest("return_logprob: bool, logprob_start_len: int", kind="validation")
    max_prefix = (
        logprob_start_len if return_logprob and logprob_start_len is not None and logprob_start_len >= 0 else None
    )
    top_logprobs_num = _field(body, "top_logprobs_num", int, "a valid integer", default=0)
    with_text = _field(body, "return_text_in_logprobs", bool, "a valid boolean", default=False)
    if top_logprobs_num < 0:
        raise BadRequest(f"top_logprobs_num must be at least 0, got {top_logprobs_num}.")
    logprobs = LogprobRequest(top_logprobs_num, with_text) if return_logprob else None

    # From here on, what SGLang raises as ValueError while normalizing the request.
    if text is None and input_ids is None:
        raise BadRequest("Either text, input_ids or input_embeds should be provided.")
    if isinstance(text, list) or (isinstance(input_ids, list) and input_ids and isinstance(input_ids[0], list)):
        raise BadRequest("Batch requests are not supported by the simulator.")
    prompt_text: str
    if text is not None:
        assert isinstance(text, str)
        prompt_ids = tuple(scheduler.tokenizer.encode(text))
        prompt_text = text
    else:
        assert isinstance(input_ids, list)
        if not input_ids:
            raise BadRequest("input_ids cannot be empty.")
        if not all(is_int(t) and t >= 0 for t in input_ids):
            raise BadRequest("input_ids should be a list of non-negative integers.")
        prompt_ids = tuple(input_ids)
        prompt_text = scheduler.tokenizer.decode(input_ids)
    max_new_tokens, stop = sampling_params(scheduler, sampling, default_max_new_tokens=128)
    return new_request(
        scheduler,
        rid=rid if rid is not None else uuid.uuid4().hex,
        endpoint="generate",
        priority=priority if priority is not None else 0,
        prompt_ids=prompt_ids,
        prompt_text=prompt_text,
        max_new_tokens=max_new_tokens,
        stop=stop,
        stream=stream,
        headers=headers,
        routing_key=routing_key,
        namespace="&".join(namespace_parts) or None,
        max_prefix=max_prefix,
        logprobs=logprobs,
    )


def sampling_params(
    scheduler: Scheduler, sampling: dict[str, Any], *, default_max_new_tokens: int
) -> tuple[int, tuple[str, ...]]:
    max_new_tokens = sampling.get("max_new_tokens", default_max_new_tokens)
    if max_new_tokens is None:
        max_new_tokens = scheduler.config.context_length
    if not is_int(max_new_tokens) or max_new_tokens < 0:
        raise BadRequest(f"max_new_tokens must be at least 0, got {max_new_tokens}.")
    temperature = sampling.get("temperature", 1.0)
    if temperature is not None and (not is_number(temperature) or temperature < 0):
        raise BadRequest(f"temperature must be non-negative, got {temperature}.")
    top_p = sampling.get("top_p", 1.0)
    if top_p is not None and (not is_number(top_p) or not 0 < top_p <= 1):
        raise BadRequest(f"top_p must be in (0, 1], got {top_p}.")
    stop_raw = sampling.get("stop")
    stop: tuple[str, ...]
    if stop_raw is None:
        stop = ()
    elif isinstance(stop_raw, str):
        stop = (stop_raw,) if stop_raw else ()
    elif isinstance(stop_raw, list) and all(isinstance(s, str) for s in stop_raw):
        stop = tuple(s for s in stop_raw if s)
    else:
        raise BadRequest("stop must be a string or a list of strings.")
    return max_new_tokens, stop


def new_request(
    scheduler: Scheduler,
    *,
    rid: str,
    endpoint: str,
    priority: int,
    prompt_ids: tuple[int, ...],
    prompt_text: str,
    max_new_tokens: int,
    stop: tuple[str, ...],
    stream: bool,
    headers: Mapping[str, str],
    routing_key: str | None,
    namespace: str | None = None,
    max_prefix: int | None = None,
    logprobs: LogprobRequest | None = None,
    force_tool: bool = False,
    force_name: str | None = None,
) -> SimRequest:
    if rid in scheduler.requests:
        raise BadRequest(f"Duplicate request ID: {rid} is already in flight.")
    if len(prompt_ids) > scheduler.config.context_length:
        raise BadRequest(
            f"The input ({len(prompt_ids)} tokens) is longer than the model's context length "
            f"({scheduler.config.context_length} tokens)."
        )
    reply_text = tool_reply(prompt_text, force=force_tool, force_name=force_name)
    reply = scheduler.tokenizer.encode_pieces(reply_text if reply_text is not None else canned_reply(prompt_text))
    reply.append(("", IM_END_ID))
    if logprobs is not None:
        # a prompt that ends inside the user's turn: the first token is the made-up distribution's
        # most likely one, so the sampled token and its logprobs agree (logprobs.py)
        first = first_token(prompt_text)
        if first is not None:
            reply = [first] if first[1] == IM_END_ID else [first, *reply]
    request_obj = SimRequest(
        rid=rid,
        endpoint=endpoint,
        priority=priority,
        prompt_ids=prompt_ids,
        max_new_tokens=max_new_tokens,
        stop=stop,
        stream=stream,
        reply=reply,
        headers=headers_of_interest(headers),
        routing_key=routing_key,
        arrival=asyncio.get_running_loop().time(),
        seq=scheduler.next_seq(),
        namespace=namespace,
        max_prefix=max_prefix,
        logprobs=logprobs,
        prompt_text=prompt_text if logprobs is not None else "",
    )
    request_obj.last_user_turn = last_user_turn(prompt_text)
    return request_obj


def parse_chat(body: Any, scheduler: Scheduler, headers: Mapping[str, str]) -> tuple[SimRequest, str, bool]:
    if not isinstance(body, dict):
        raise BadRequest("Input should be a valid dictionary", kind="validation")
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise BadRequest("messages: Field required (a list of messages)", kind="validation")
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest("messages: each message needs a string 'role'", kind="validation")
    model = _field(body, "model", str, "a valid string", default="default", nullable=False)
    stream = _field(body, "stream", bool, "a valid boolean", default=False, nullable=False)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise BadRequest("stream_options: Input should be a valid dictionary", kind="validation")
    include_usage = bool(options.get("include_usage", False))
    template_kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(template_kwargs, dict):
        raise BadRequest("chat_template_kwargs: Input should be a valid dictionary", kind="validation")
    rid = _field(body, "rid", str, "a valid string")
    priority = _field(body, "priority", int, "a valid integer")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not is_int(max_tokens) or max_tokens <= 0):
        raise BadRequest("max_tokens must be positive", kind="validation")
    if not messages:
        raise BadRequest("Messages cannot be empty.", kind="openai")
    tools, tool_choice = _chat_tools(body)
    try:
        prompt = render_chatml(
            messages,
            enable_thinking=template_kwargs.get("enable_thinking", True) is not False,
            tools=tools if tool_choice != "none" else None,
        )
    except ValueError as exc:
        raise BadRequest(str(exc), kind="openai") from exc
    sampling = {
        "max_new_tokens": max_tokens,
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "stop": body.get("stop"),
    }
    try:
        max_new_tokens, stop = sampling_params(
            scheduler, sampling, default_max_new_tokens=scheduler.config.context_length
        )
    except BadRequest as exc:
        raise BadRequest(exc.message, kind="openai") from exc
    req = new_request(
        scheduler,
        rid=rid if rid is not None else f"chatcmpl-{uuid.uuid4().hex}",
        endpoint="chat",
        priority=priority if priority is not None else 0,
        prompt_ids=tuple(scheduler.tokenizer.encode(prompt)),
        prompt_text=prompt,
        max_new_tokens=max_new_tokens,
        stop=stop,
        stream=stream,
        headers=headers,
        routing_key=None,
        force_tool=bool(tools) and tool_choice != "auto" and tool_choice != "none",
        force_name=tool_choice if tools and tool_choice not in ("auto", "none", "required") else None,
    )
    req.tool_parsing = bool(tools) and tool_choice != "none"
    return req, model, include_usage


def _chat_tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """`tools` (OpenAI's nested function shape) and `tool_choice` as "auto", "none", "required" or
    the forced function's name; refused as SGLang's OpenAI layer refuses them."""
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise BadRequest("tools: Input should be a valid list", kind="validation")
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise BadRequest(
                "tools: each tool needs type 'function' and a function with a string name", kind="validation"
            )
    choice = body.get("tool_choice")
    if choice is None:
        return tools, "auto" if tools else "none"
    if choice in ("auto", "none", "required"):
        return tools, str(choice)
    function = choice.get("function") if isinstance(choice, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise BadRequest("tool_choice: 'auto', 'none', 'required' or {'type': 'function', 'function': {'name'}}")
    if function["name"] not in {t["function"]["name"] for t in tools}:
        raise BadRequest(f"Tool '{function['name']}' not found in 'tools'.", kind="openai")
    return tools, str(function["name"])
