"""Response bodies in SGLang's shapes: the native `/generate` payload and the OpenAI chat objects."""

from __future__ import annotations

from typing import Any

from .logprobs import meta_logprobs
from .request import SimRequest
from .scheduler import Scheduler
from .tokens import IM_END_ID
from .tools import ToolCallSplitter


def native_payload(req: SimRequest) -> dict[str, Any]:
    """A `/generate` answer (or one stream event): cumulative text and output ids, and `meta_info`."""
    meta: dict[str, Any] = {
        "id": req.rid,
        "finish_reason": req.finish_reason,
        "prompt_tokens": len(req.prompt_ids),
        "completion_tokens": len(req.output_ids),
        "cached_tokens": req.cached_tokens,
    }
    if req.finished and req.t_finished is not None:
        meta["e2e_latency"] = round(req.t_finished - req.arrival, 6)
    if req.logprobs is not None:
        pieces = [req.reply[i] if i < len(req.reply) else ("", IM_END_ID) for i in range(len(req.output_ids))]
        meta.update(meta_logprobs(req.logprobs, req.prompt_text, pieces))
    return {"text": req.visible_text, "output_ids": list(req.output_ids), "meta_info": meta}


def chat_finish(reason: dict[str, Any] | None) -> str | None:
    return None if reason is None else str(reason["type"])


def chat_usage(req: SimRequest, *, cache_report: bool) -> dict[str, Any]:
    """OpenAI `usage`; `prompt_tokens_details` is null unless something was cached and reported."""
    prompt_tokens = len(req.prompt_ids)
    completion_tokens = len(req.output_ids)
    details = {"cached_tokens": req.cached_tokens} if cache_report and req.cached_tokens > 0 else None
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": details,
        "reasoning_tokens": 0,
    }


def tool_call_deltas(splitter: ToolCallSplitter, sent: dict[int, int]) -> list[dict[str, Any]]:
    """The `delta.tool_calls` entries that bring a client up to date, as SGLang streams them: the
    call's id, type and name (arguments "") once the name is known, then the arguments in pieces.
    `sent` (index -> arguments characters sent) is updated."""
    out: list[dict[str, Any]] = []
    for index, call in enumerate(splitter.calls):
        if call.name is None:
            break  # calls come out in order
        if index not in sent:
            function = {"name": call.name, "arguments": ""}
            out.append({"index": index, "id": call.call_id, "type": "function", "function": function})
            sent[index] = 0
        if len(call.arguments) > sent[index]:
            out.append({"index": index, "function": {"arguments": call.arguments[sent[index] :]}})
            sent[index] = len(call.arguments)
    return out


def chat_finish_with_tools(req: SimRequest, calls: int) -> str | None:
    """SGLang reports a natural end after tool calls as "tool_calls"."""
    finish = chat_finish(req.finish_reason)
    return "tool_calls" if calls and finish == "stop" else finish


def chat_completion(req: SimRequest, model: str, created: int, *, cache_report: bool) -> dict[str, Any]:
    """The whole (non-streaming) `chat.completion` object of a finished request."""
    reason = req.finish_reason or {}
    content: str | None = req.text
    tool_calls: list[dict[str, Any]] | None = None
    finish = chat_finish(req.finish_reason)
    if req.tool_parsing:
        splitter = ToolCallSplitter()
        content = splitter.split(req.text, True)
        if splitter.calls:
            tool_calls = [
                {
                    "id": c.call_id,
                    "index": i,
                    "type": "function",
                    "function": {"name": c.name or "", "arguments": c.arguments},
                }
                for i, c in enumerate(splitter.calls)
            ]
            content = content or None
            finish = chat_finish_with_tools(req, len(tool_calls))
    return {
        "id": req.rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content,
                    "reasoning_content": None,
                    "tool_calls": tool_calls,
                },
                "logprobs": None,
                "finish_reason": finish,
                "matched_stop": reason.get("matched"),
            }
        ],
        "usage": chat_usage(req, cache_report=cache_report),
    }


def chat_chunk(
    req: SimRequest, model: str, created: int, delta: dict[str, Any], finish: str | None = None, matched: Any = None
) -> dict[str, Any]:
    """One `chat.completion.chunk` of a stream."""
    return {
        "id": req.rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, "matched_stop": matched}],
    }


def chat_usage_chunk(req: SimRequest, model: str, created: int, *, cache_report: bool) -> dict[str, Any]:
    """The last chunk of a stream asked with `stream_options.include_usage`: no choices, the usage."""
    return {
        "id": req.rid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": chat_usage(req, cache_report=cache_report),
    }


def prometheus_text(scheduler: Scheduler, model_name: str) -> str:
    """`GET /metrics`: the sglang:* counters and gauges a client of SGLang may scrape."""
    totals = scheduler.totals
    labels = f'{{model_name="{model_name}"}}'
    hit_rate = totals["cached_tokens"] / totals["prompt_tokens"] if totals["prompt_tokens"] else 0.0
    usage = scheduler.cache.size / scheduler.cache.capacity if scheduler.cache.capacity else 0.0
    lines = [
        "# HELP sglang:prompt_tokens_total Number of prefill tokens processed.",
        "# TYPE sglang:prompt_tokens_total counter",
        f"sglang:prompt_tokens_total{labels} {float(totals['prompt_tokens'])}",
        "# HELP sglang:cached_tokens_total Number of prompt tokens served from the prefix cache.",
        "# TYPE sglang:cached_tokens_total counter",
        f"sglang:cached_tokens_total{labels} {float(totals['cached_tokens'])}",
        "# HELP sglang:generation_tokens_total Number of generation tokens processed.",
        "# TYPE sglang:generation_tokens_total counter",
        f"sglang:generation_tokens_total{labels} {float(totals['generation_tokens'])}",
        "# HELP sglang:num_requests_total Number of requests processed.",
        "# TYPE sglang:num_requests_total counter",
        f"sglang:num_requests_total{labels} {float(totals['requests'])}",
        "# HELP sglang:num_aborted_requests_total Number of aborted requests.",
        "# TYPE sglang:num_aborted_requests_total counter",
        f"sglang:num_aborted_requests_total{labels} {float(totals['aborted_requests'])}",
        "# HELP sglang:cache_hit_rate The prefix cache hit rate.",
        "# TYPE sglang:cache_hit_rate gauge",
        f"sglang:cache_hit_rate{labels} {hit_rate}",
        "# HELP sglang:token_usage The token usage of the cache.",
        "# TYPE sglang:token_usage gauge",
        f"sglang:token_usage{labels} {usage}",
        "# HELP sglang:num_running_reqs The number of running requests.",
        "# TYPE sglang:num_running_reqs gauge",
        f"sglang:num_running_reqs{labels} {float(len(scheduler.running()))}",
        "# HELP sglang:num_queue_reqs The number of requests in the waiting queue.",
        "# TYPE sglang:num_queue_reqs gauge",
        f"sglang:num_queue_reqs{labels} {float(len(scheduler.queued()))}",
    ]
    return "\n".join(lines) + "\n"
