"""One request on the simulated GPU: what it asked for, where it stands, and how it ended."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .logprobs import LogprobRequest
from .radix import RadixNode


class BadRequest(Exception):
    """A request the real server refuses. `kind` picks the error body SGLang would send."""

    def __init__(self, message: str, *, kind: str = "value") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind  # "value": {"error": {"message"}}; "validation"/"openai": ErrorResponse


@dataclass(eq=False)
class SimRequest:
    """A generation request as the scheduler sees it: the prompt's tokens, the canned reply it will
    decode, its timings, and `changed`, set whenever a handler waiting on it has news."""

    rid: str
    endpoint: str  # "generate" | "chat"
    priority: int
    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    stop: tuple[str, ...]
    stream: bool
    reply: list[tuple[str, int]]  # the canned reply's pieces, then EOS
    headers: dict[str, str]
    routing_key: str | None
    arrival: float
    seq: int
    last_user_turn: str = ""  # for tests: what the client asked, as the prompt's last user turn
    namespace: str | None = None  # extra_key / cache_salt: a separate corner of the radix cache
    max_prefix: int | None = None  # logprob_start_len caps the reusable prefix when logprobs are asked
    logprobs: LogprobRequest | None = None  # return_logprob: what meta_info reports per output token
    prompt_text: str = ""  # kept only when logprobs are asked (they are computed from it)
    tool_parsing: bool = False  # the OpenAI route was given tools: the output's calls become tool_calls
    state: str = "queued"  # queued | prefilling | decoding | finished
    cached_tokens: int = 0
    output_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: dict[str, Any] | None = None
    prefill_done: bool = False
    prefill_order: int | None = None
    t_prefill_start: float | None = None
    t_prefill_end: float | None = None
    t_first_token: float | None = None
    t_finished: float | None = None
    lock_node: RadixNode | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def cache_key(self, tokens: Sequence[int]) -> tuple[int, ...]:
        """Radix-tree key: the tokens, behind a namespace pseudo-token when extra_key/cache_salt is set."""
        if self.namespace is None:
            return tuple(tokens)
        return (namespace_token(self.namespace), *tokens)

    @property
    def visible_text(self) -> str:
        """The text a stream may show: while running, a tail that could begin a stop string is held back,
        so that the cumulative text never shrinks when a stop string completes."""
        if self.finished or not self.stop:
            return self.text
        hold = 0
        for stop in self.stop:
            for k in range(min(len(stop) - 1, len(self.text)), hold, -1):
                if self.text.endswith(stop[:k]):
                    hold = k
                    break
        return self.text[: len(self.text) - hold]


def namespace_token(namespace: str) -> int:
    """A negative pseudo-token no real token id can equal, one per cache namespace."""
    digest = hashlib.blake2b(namespace.encode("utf-8"), digest_size=7).digest()
    return -1 - int.from_bytes(digest, "big")


def abort_reason(message: str) -> dict[str, Any]:
    return {"type": "abort", "message": message, "status_code": None, "err_type": None}
