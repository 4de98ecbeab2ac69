"""An SGLang simulator: SGLang's HTTP API on a radix (prefix) cache and a latency model, without a GPU.

Real SGLang needs a GPU, so tests and benchmarks talk to this simulator instead. It is not SGLang and
computes nothing: it answers with canned, deterministic replies, but it reproduces the parts of the
server that Hark's speculative prefill depends on, with the request and response shapes of SGLang's
own HTTP server (`python/sglang/srt/entrypoints/http_server.py`, `GenerateReqInput` in
`managers/io_struct.py`, the OpenAI chat serving code):

- `POST /generate` (native API): `text` or `input_ids`, `rid`, `priority`, `sampling_params`
  (`max_new_tokens` default 128, 0 = prefill only; `temperature`, `top_p`, `stop`), `stream`.
  Streaming sends `data: <json>` events with cumulative `text` and `output_ids`, then `data: [DONE]`.
- `POST /abort_request` (`{"rid": ...}` or `{"abort_all": true}`), `GET /health`,
  `GET /get_model_info`, `GET /metrics`, `POST /flush_cache`, `GET /v1/models`,
  `POST /v1/chat/completions` (rendered with Qwen's ChatML template).
- A token-level radix cache: the longest cached prefix of a prompt is reused,
  `cached_tokens = min(matched, prompt_tokens - 1)`, a request's prompt is inserted when its prefill
  completes (prefill-only requests too), its prompt plus output when it finishes; LRU eviction by
  token capacity, nodes inserted by low-priority requests first (`--radix-eviction-policy priority`).
- A scheduler on one simulated GPU: prefills run one at a time, highest priority first, then by
  arrival (`--enable-priority-scheduling`); a prefill costs
  `prefill_overhead_ms + uncached_tokens * prefill_ms_per_token`; every running request then decodes
  one token per `decode_ms_per_token` step (batched decode). A prefill is never interrupted.
- Simulator-only endpoints for tests: `GET /sim/stats`, `POST /sim/faults`, `POST /sim/reset`.

Tokens come from a deterministic stand-in tokenizer: an approximation of BPE pre-tokenization
(a word with its leading space or punctuation, single digits, runs of punctuation, newlines and
whitespace; Qwen's special tokens such as `<|im_start|>` are one token each), one token per piece,
with ids derived from a hash of the piece. Token counts are close to, not equal to, Qwen's.

Behaviours copied from real SGLang that may surprise a client:
- `/abort_request` is a no-op unless `rid` names a request in flight, and then aborts every request
  whose rid *starts with* it (the scheduler matches by prefix): use prefix-free rids.
- Closing a streaming response aborts the request only after a delay (SGLang's background abort
  task sleeps 2 s): abort by rid to free the GPU at once.
- A semantically bad streaming request (no `text` nor `input_ids`) gets HTTP 200 with one
  `data: {"error": {"message": ...}}` event and `[DONE]`; the same non-streaming request gets 400
  `{"error": {"message": ...}}`. Type errors get 400 `{"object": "error", ...}` either way.
- `usage.prompt_tokens_details` is null when nothing was cached (and needs `--enable-cache-report`).

Run it: `python -m standins.sglang_sim --host 127.0.0.1 --port 30000`. In-process:
`async with SGLangSimulator(SimConfig(port=0)) as sim: ... sim.url ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import heapq
import itertools
import json
import logging
import re
import signal
import socket
import sys
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any, Final

from aiohttp import web

__all__ = [
    "SIMULATOR_NAME",
    "SGLangSimulator",
    "SimConfig",
    "StandInTokenizer",
    "canned_reply",
    "render_chatml",
]

log = logging.getLogger("standins.sglang_sim")

SIMULATOR_NAME: Final = "hark-sglang-simulator"
SERVER_HEADER: Final = "hark-sglang-simulator/0.1 (SGLang simulator, not SGLang)"

# Qwen2/Qwen3 special-token ids, so that `input_ids` built for Qwen line up where it matters.
ENDOFTEXT_ID: Final = 151643
IM_START_ID: Final = 151644
IM_END_ID: Final = 151645  # the chat models' EOS: a natural end reports {"type": "stop", "matched": 151645}
THINK_ID: Final = 151667
END_THINK_ID: Final = 151668
SPECIAL_TOKENS: Final[dict[str, int]] = {
    "<|endoftext|>": ENDOFTEXT_ID,
    "<|im_start|>": IM_START_ID,
    "<|im_end|>": IM_END_ID,
    "<think>": THINK_ID,
    "</think>": END_THINK_ID,
}
_ORDINARY_VOCAB: Final = ENDOFTEXT_ID  # ordinary pieces get ids in [0, 151643)

_POLL_S: Final = 0.05  # how often a waiting handler checks for a vanished client
_SSE_DONE: Final = b"data: [DONE]\n\n"
_ROUTING_HEADERS: Final = ("X-SMG-Routing-Key", "X-Request-Id", "X-Session-Id")
FAULT_MODES: Final = ("none", "http_500", "hang", "drop_mid_stream", "slow_first_byte")


@dataclass
class SimConfig:
    """Latency model, cache and server settings of the simulator. All times are configurable.

    Defaults come from a published measurement of SGLang on one H100, for the closest model size we
    could cite (no published SGLang/H100 figure for Qwen3-4B was found, so these are for Qwen3-8B,
    roughly twice the weights of a 4B; a 4B model decodes and prefills faster, so the defaults are
    on the slow side):

    GPUStack performance lab, "Optimizing Qwen3-8B Latency on NVIDIA H100 GPUs",
    https://docs.gpustack.ai/latest/performance-lab/qwen3-8b/h100-latency
    (source: github.com/gpustack/gpustack, docs/performance-lab/qwen3-8b/h100-latency.md).
    Setup: one H100 SXM, Qwen/Qwen3-8B BF16, SGLang v0.5.3.post3 (`sglang.launch_server
    --model-path Qwen/Qwen3-8B`), `vllm bench serve` on ShareGPT, 100 prompts, max concurrency 4:
    Mean TTFT 27.70 ms (median 27.25) for 23260 / 100 = 232.6 input tokens per request on average,
    Mean TPOT 7.19 ms (median 7.14), Mean ITL 7.08 ms.

    So `decode_ms_per_token` = 7.2. The page gives one prompt length only, so the split of TTFT into
    a fixed part and a per-token part is ours: 0.04 ms per prompt token (25k tokens/s, about 40 %
    of the H100's 989 TFLOPS dense BF16 at 2 x 8e9 FLOP per token) and 18 ms of fixed cost
    (HTTP, tokenization, scheduling, one forward pass), which together give 18 + 232.6 x 0.04 =
    27.3 ms, the measured TTFT.
    """

    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port (the command line defaults to SGLang's 30000)
    prefill_overhead_ms: float = 18.0
    prefill_ms_per_token: float = 0.04
    decode_ms_per_token: float = 7.2
    cache_capacity_tokens: int = 200_000
    context_length: int = 40_960  # Qwen3-4B's max_position_embeddings
    enable_priority_scheduling: bool = True  # --enable-priority-scheduling
    enable_cache_report: bool = True  # --enable-cache-report (OpenAI usage.prompt_tokens_details)
    disconnect_abort_delay_s: float = 2.0  # SGLang aborts a closed stream's request after 2 s
    request_timeout_s: float = 600.0  # no request lives longer than this
    hang_max_s: float = 300.0  # the "hang" fault holds a request at most this long
    max_request_records: int = 10_000  # finished requests kept for /sim/stats
    model_path: str = SIMULATOR_NAME
    served_model_name: str = SIMULATOR_NAME


# --------------------------------------------------------------------------------------------
# Tokens
# --------------------------------------------------------------------------------------------

# An approximation of Qwen's (GPT-style) BPE pre-tokenization. Special tokens are split out first,
# as real tokenizers do; the rest becomes: English contractions; a word with one leading non-letter
# (a space, usually); single digits; a run of punctuation with an optional leading space; newlines
# with the whitespace before them; whitespace not followed by a word; any other character. Every
# character of the input lands in exactly one piece.
_SPECIAL_SPLIT_RE: Final = re.compile(r"(<\|[A-Za-z0-9_]{1,40}\|>|</?think>)")
_PIECE_RE: Final = re.compile(
    r"'(?:s|t|re|ve|m|ll|d)\b"
    r"|[^\r\n\w]?[^\W\d_]+"
    r"|\d"
    r"| ?[^\s\w]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
    r"|[\s\S]"
)


def _pieces(text: str) -> list[str]:
    out: list[str] = []
    for index, part in enumerate(_SPECIAL_SPLIT_RE.split(text)):
        if index % 2:
            out.append(part)
        elif part:
            out.extend(_PIECE_RE.findall(part))
    return out


@lru_cache(maxsize=65_536)
def _piece_id(piece: str) -> int:
    special = SPECIAL_TOKENS.get(piece)
    if special is not None:
        return special
    digest = hashlib.blake2b(piece.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _ORDINARY_VOCAB


class StandInTokenizer:
    """Deterministic stand-in for a BPE tokenizer: one token per pre-tokenization piece.

    `encode` is stable across processes (ids are hashes of the pieces). `decode` knows the pieces
    this process has encoded lately (a bounded map) and the special tokens; other ids decode to "".
    """

    def __init__(self, remember: int = 262_144) -> None:
        self._remember = remember
        self._pieces: OrderedDict[int, str] = OrderedDict((token_id, text) for text, token_id in SPECIAL_TOKENS.items())

    @staticmethod
    def pieces(text: str) -> list[str]:
        return _pieces(text)

    def encode_pieces(self, text: str) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for piece in _pieces(text):
            token_id = _piece_id(piece)
            out.append((piece, token_id))
            if token_id not in SPECIAL_TOKENS.values():
                self._pieces[token_id] = piece
                self._pieces.move_to_end(token_id)
        while len(self._pieces) > self._remember:
            self._pieces.popitem(last=False)
        return out

    def encode(self, text: str) -> list[int]:
        return [token_id for _, token_id in self.encode_pieces(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self._pieces.get(token_id, "") for token_id in ids)


# --------------------------------------------------------------------------------------------
# Chat template and canned replies
# --------------------------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    """OpenAI message content (a string, a list of text parts, or null) as plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise ValueError("only text content parts are supported by the simulator")
        return "".join(parts)
    raise ValueError("message content must be a string, a list of text parts, or null")


def render_chatml(messages: Sequence[dict[str, Any]], *, enable_thinking: bool = True) -> str:
    """Render messages the way Qwen3's chat template does, with the generation prompt.

    `<|im_start|>{role}\\n{content}<|im_end|>\\n` per message, then `<|im_start|>assistant\\n`; with
    `enable_thinking=False` (passed as `chat_template_kwargs`) Qwen3's template also appends an empty
    `<think>\\n\\n</think>\\n\\n`. A past assistant turn keeps only what follows its `</think>`.
    """
    out: list[str] = []
    for message in messages:
        role = message["role"]
        content = _content_text(message.get("content"))
        if role == "assistant" and "</think>" in content:
            content = content.rsplit("</think>", 1)[1].lstrip("\n")
        out.append(f"<|im_start|>{role}\n{content}<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    if not enable_thinking:
        out.append("<think>\n\n</think>\n\n")
    return "".join(out)


_USER_TURN_RE: Final = re.compile(r"<\|im_start\|>user\n(.*?)(?:<\|im_end\|>|\Z)", re.DOTALL)
_SPECIAL_RE: Final = re.compile(r"<\|[A-Za-z0-9_]{1,40}\|>|</?think>")
_REPLY_SENTENCES: Final = (
    "The short version is that it depends on what matters most to you.",
    "A good first step is to start small and check the result.",
    "Most people find that a little planning saves a lot of time.",
    "If you want more detail, just ask and I will go deeper.",
    "The key idea is simple once you look at it from the right angle.",
    "It helps to compare a few options before you decide.",
    "That is a common question, and there is a clear answer.",
    "I would keep it simple and adjust as you learn more.",
)


def last_user_turn(prompt: str) -> str:
    """The last ChatML user turn of a prompt, or the prompt without special tokens if it has none."""
    turns = _USER_TURN_RE.findall(prompt)
    if turns:
        return str(turns[-1]).strip()
    return _SPECIAL_RE.sub(" ", prompt).strip()


def canned_reply(prompt: str) -> str:
    """A deterministic reply of a few sentences derived from the last user turn of `prompt`."""
    user = last_user_turn(prompt)
    words = user.split()
    topic = " ".join(words[:6]).rstrip(".,;:!?") or "nothing in particular"
    seed = int.from_bytes(hashlib.blake2b(user.encode("utf-8"), digest_size=8).digest(), "big")
    first = seed % len(_REPLY_SENTENCES)
    second = (first + 1 + (seed // len(_REPLY_SENTENCES)) % (len(_REPLY_SENTENCES) - 1)) % len(_REPLY_SENTENCES)
    return (
        f"You asked about {topic}. Here is a short spoken answer. {_REPLY_SENTENCES[first]} {_REPLY_SENTENCES[second]}"
    )


# --------------------------------------------------------------------------------------------
# Radix cache
# --------------------------------------------------------------------------------------------


class _Node:
    __slots__ = ("children", "key", "last_access", "lock_ref", "parent", "priority")

    def __init__(self, key: tuple[int, ...], parent: _Node | None, priority: int, tick: int) -> None:
        self.key = key
        self.parent = parent
        self.children: dict[int, _Node] = {}
        self.priority = priority
        self.last_access = tick
        self.lock_ref = 0


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class RadixCache:
    """Token-level radix tree with a token capacity, like SGLang's RadixCache.

    Nodes on the path of a running request are locked and never evicted. Eviction removes unlocked
    leaves, lowest priority first, then least recently used (`--radix-eviction-policy priority`);
    a node's priority is the highest priority of the requests that inserted or matched it.
    """

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity = capacity_tokens
        self._tick = itertools.count(1)
        self.root = _Node((), None, 0, 0)
        self.size = 0
        self.node_count = 0
        self.evicted_tokens = 0
        self.inserted_tokens = 0

    def clear(self) -> None:
        self.root = _Node((), None, 0, 0)
        self.size = 0
        self.node_count = 0

    def _split(self, child: _Node, at: int) -> _Node:
        parent = child.parent
        assert parent is not None
        mid = _Node(child.key[:at], parent, child.priority, child.last_access)
        mid.lock_ref = child.lock_ref
        parent.children[mid.key[0]] = mid
        child.key = child.key[at:]
        child.parent = mid
        mid.children[child.key[0]] = child
        self.node_count += 1
        return mid

    def match(self, tokens: Sequence[int], priority: int | None = None) -> tuple[int, _Node]:
        """Length of the longest cached prefix of `tokens`, and the node where it ends."""
        tick = next(self._tick)
        node = self.root
        i = 0
        while i < len(tokens):
            child = node.children.get(tokens[i])
            if child is None:
                break
            common = _common_prefix(child.key, tokens[i : i + len(child.key)])
            if common < len(child.key):
                child = self._split(child, common)
            child.last_access = tick
            if priority is not None:
                child.priority = max(child.priority, priority)
            node = child
            i += common
        return i, node

    def insert(self, tokens: Sequence[int], priority: int) -> _Node:
        """Insert `tokens`; returns the node where they end. Does not evict: call `evict`."""
        matched, node = self.match(tokens, priority)
        if matched < len(tokens):
            leaf = _Node(tuple(tokens[matched:]), node, priority, next(self._tick))
            node.children[leaf.key[0]] = leaf
            self.size += len(leaf.key)
            self.inserted_tokens += len(leaf.key)
            self.node_count += 1
            node = leaf
        return node

    @staticmethod
    def lock(node: _Node | None) -> None:
        while node is not None and node.parent is not None:
            node.lock_ref += 1
            node = node.parent

    @staticmethod
    def unlock(node: _Node | None) -> None:
        while node is not None and node.parent is not None:
            node.lock_ref -= 1
            node = node.parent

    def evict(self) -> None:
        if self.size <= self.capacity:
            return
        order = itertools.count()
        heap: list[tuple[int, int, int, _Node]] = []

        def push_if_evictable(node: _Node) -> None:
            if node.parent is not None and not node.children and node.lock_ref == 0:
                heapq.heappush(heap, (node.priority, node.last_access, next(order), node))

        stack = [self.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children.values())
            push_if_evictable(node)
        while self.size > self.capacity and heap:
            _, _, _, node = heapq.heappop(heap)
            parent = node.parent
            if parent is None or node.children or node.lock_ref:
                continue
            del parent.children[node.key[0]]
            node.parent = None
            self.size -= len(node.key)
            self.evicted_tokens += len(node.key)
            self.node_count -= 1
            push_if_evictable(parent)


# --------------------------------------------------------------------------------------------
# Requests, faults, scheduler
# --------------------------------------------------------------------------------------------


class BadRequest(Exception):
    """A request the real server refuses. `kind` picks the error body SGLang would send."""

    def __init__(self, message: str, *, kind: str = "value") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind  # "value": {"error": {"message"}}; "validation"/"openai": ErrorResponse


@dataclass(eq=False)
class _Request:
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
    lock_node: _Node | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def cache_key(self, tokens: Sequence[int]) -> tuple[int, ...]:
        """Radix-tree key: the tokens, behind a namespace pseudo-token when extra_key/cache_salt is set."""
        if self.namespace is None:
            return tuple(tokens)
        return (_namespace_token(self.namespace), *tokens)

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


@dataclass
class _Faults:
    mode: str = "none"
    remaining: int | None = None  # None: every request
    after_tokens: int = 3
    delay_s: float | None = None

    def take(self) -> _Faults:
        """The fault for the next generation request (and count it): a snapshot, mode "none" if none."""
        hit = _Faults(mode=self.mode, after_tokens=self.after_tokens, delay_s=self.delay_s)
        if self.mode == "none":
            return hit
        if self.remaining is not None:
            if self.remaining <= 0:
                self.mode = hit.mode = "none"
                return hit
            self.remaining -= 1
            if self.remaining == 0:
                self.mode = "none"  # that was the last affected request: /sim/stats shows it used up
        return hit


def _namespace_token(namespace: str) -> int:
    """A negative pseudo-token no real token id can equal, one per cache namespace."""
    digest = hashlib.blake2b(namespace.encode("utf-8"), digest_size=7).digest()
    return -1 - int.from_bytes(digest, "big")


def _abort_reason(message: str) -> dict[str, Any]:
    return {"type": "abort", "message": message, "status_code": None, "err_type": None}


class _Engine:
    """Scheduler, radix cache and bookkeeping of one simulated GPU."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.tokenizer = StandInTokenizer()
        self.cache = RadixCache(config.cache_capacity_tokens)
        self.requests: dict[str, _Request] = {}  # in flight
        self._heap: list[tuple[int, int, _Request]] = []
        self._queued: dict[str, _Request] = {}
        self._decoding: dict[str, _Request] = {}
        self.prefilling: _Request | None = None
        self._seq = itertools.count()
        self._prefill_seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._clock = 0.0
        self.records: deque[dict[str, Any]] = deque(maxlen=config.max_request_records)
        self.totals: dict[str, int] = {}
        self.reset_totals()

    def reset_totals(self) -> None:
        self.totals = {
            "requests": 0,
            "aborted_requests": 0,
            "prompt_tokens": 0,
            "cached_tokens": 0,
            "generation_tokens": 0,
        }

    # --- intake -------------------------------------------------------------------------

    def submit(self, req: _Request) -> None:
        if req.rid in self.requests:
            raise BadRequest(f"Duplicate request ID: {req.rid} is already in flight.")
        self.requests[req.rid] = req
        self._queued[req.rid] = req
        priority = req.priority if self.config.enable_priority_scheduling else 0
        heapq.heappush(self._heap, (-priority, req.seq, req))
        self._wakeup.set()

    def next_seq(self) -> int:
        return next(self._seq)

    # --- the GPU loop ---------------------------------------------------------------------

    async def _busy(self, ms: float) -> None:
        """Occupy the simulated GPU for `ms` (on a running clock, so small delays do not add up)."""
        now = asyncio.get_running_loop().time()
        self._clock = max(self._clock, now) + ms / 1000.0
        await asyncio.sleep(max(0.0, self._clock - now))

    async def run(self) -> None:
        while True:
            try:
                req = self._pop_queued()
                if req is not None:
                    await self._prefill(req)
                elif self._decoding:
                    await self._decode_step()
                else:
                    self._wakeup.clear()
                    await self._wakeup.wait()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep the simulated GPU alive; the failing request ends as aborted
                log.exception("simulator scheduler error")
                for victim in list(self._decoding.values()):
                    self._finish(victim, _abort_reason("Internal simulator error."))

    def _pop_queued(self) -> _Request | None:
        while self._heap:
            _, _, req = heapq.heappop(self._heap)
            if self._queued.get(req.rid) is req and not req.finished:
                del self._queued[req.rid]
                return req
        return None

    async def _prefill(self, req: _Request) -> None:
        loop = asyncio.get_running_loop()
        req.state = "prefilling"
        req.prefill_order = next(self._prefill_seq)
        req.t_prefill_start = loop.time()
        self.prefilling = req
        # The last prompt token is always recomputed, so at most len - 1 tokens are reused
        # (Req.adjust_max_prefix_ids), fewer if input logprobs from logprob_start_len are asked.
        limit = len(req.prompt_ids) - 1
        if req.max_prefix is not None:
            limit = min(limit, req.max_prefix)
        matched, node = self.cache.match(req.cache_key(req.prompt_ids[: max(limit, 0)]), req.priority)
        if req.namespace is not None:
            matched = max(0, matched - 1)  # the namespace pseudo-token is not a prompt token
        req.cached_tokens = matched
        RadixCache.lock(node)
        uncached = len(req.prompt_ids) - matched
        try:
            await self._busy(self.config.prefill_overhead_ms + uncached * self.config.prefill_ms_per_token)
        finally:
            RadixCache.unlock(node)
            self.prefilling = None
        req.t_prefill_end = loop.time()
        if req.finished:  # aborted during its prefill: nothing computed is kept
            return
        req.prefill_done = True
        req.lock_node = self.cache.insert(req.cache_key(req.prompt_ids), req.priority)
        RadixCache.lock(req.lock_node)
        self.cache.evict()
        if req.max_new_tokens == 0:
            self._finish(req, {"type": "length", "length": 0})
            return
        req.state = "decoding"
        self._decoding[req.rid] = req
        self._emit_token(req)  # the prefill's forward pass yields the first token

    async def _decode_step(self) -> None:
        await self._busy(self.config.decode_ms_per_token)
        for req in list(self._decoding.values()):
            if not req.finished:
                self._emit_token(req)

    def _emit_token(self, req: _Request) -> None:
        index = len(req.output_ids)
        piece, token_id = req.reply[index] if index < len(req.reply) else ("", IM_END_ID)
        req.output_ids.append(token_id)
        if req.t_first_token is None:
            req.t_first_token = asyncio.get_running_loop().time()
        before = len(req.text)
        if token_id != IM_END_ID:
            req.text += piece
        # In the order of SGLang's Req.check_finished: length, then the EOS token, then stop strings.
        reason: dict[str, Any] | None = None
        if len(req.output_ids) >= req.max_new_tokens:
            reason = {"type": "length", "length": req.max_new_tokens}
        elif token_id == IM_END_ID:
            reason = {"type": "stop", "matched": IM_END_ID}
        else:
            best: tuple[int, str] | None = None
            for stop in req.stop:
                at = req.text.find(stop, max(0, before - len(stop) + 1))
                if at >= 0 and (best is None or at < best[0]):
                    best = (at, stop)
            if best is not None:
                req.text = req.text[: best[0]]
                reason = {"type": "stop", "matched": best[1]}
        if reason is not None:
            self._finish(req, reason)
        else:
            req.changed.set()

    # --- endings --------------------------------------------------------------------------

    def _finish(self, req: _Request, reason: dict[str, Any]) -> None:
        if req.finished:
            return
        req.finish_reason = reason
        req.state = "finished"
        req.t_finished = asyncio.get_running_loop().time()
        self._queued.pop(req.rid, None)
        self._decoding.pop(req.rid, None)
        if self.requests.get(req.rid) is req:
            del self.requests[req.rid]
        if req.prefill_done:
            RadixCache.unlock(req.lock_node)
            req.lock_node = None
            # Like cache_finished_req: the prompt and the output, less the last token (no KV yet).
            if len(req.output_ids) > 1:
                self.cache.insert(req.cache_key(req.prompt_ids + tuple(req.output_ids[:-1])), req.priority)
                self.cache.evict()
            self.totals["prompt_tokens"] += len(req.prompt_ids)
            self.totals["cached_tokens"] += req.cached_tokens
            self.totals["generation_tokens"] += len(req.output_ids)
        self.totals["requests"] += 1
        if reason["type"] == "abort":
            self.totals["aborted_requests"] += 1
        self.records.append(self._record(req))
        req.changed.set()

    def _record(self, req: _Request) -> dict[str, Any]:
        def ms(start: float | None, end: float | None) -> float | None:
            return None if start is None or end is None else round((end - start) * 1000.0, 3)

        assert req.finish_reason is not None
        return {
            "rid": req.rid,
            "endpoint": req.endpoint,
            "priority": req.priority,
            "stream": req.stream,
            "prompt_tokens": len(req.prompt_ids),
            "cached_tokens": req.cached_tokens,
            "max_new_tokens": req.max_new_tokens,
            "completion_tokens": len(req.output_ids),
            "finish_reason": req.finish_reason["type"],
            "prefill_order": req.prefill_order,
            "queue_ms": ms(req.arrival, req.t_prefill_start),
            "prefill_ms": ms(req.t_prefill_start, req.t_prefill_end),
            "ttft_ms": ms(req.arrival, req.t_first_token),
            "e2e_ms": ms(req.arrival, req.t_finished),
            "headers": dict(req.headers),
            "routing_key": req.routing_key,
            "last_user_turn": req.last_user_turn,
        }

    def abort(self, rid: str = "", *, abort_all: bool = False, message: str = "Aborted by AbortReq.") -> list[str]:
        """SGLang's semantics: a no-op unless `rid` is in flight; then every rid starting with it."""
        if not abort_all and (not rid or rid not in self.requests):
            return []
        victims = [r for r in self.requests.values() if abort_all or r.rid.startswith(rid)]
        for req in victims:
            reason = "Abort before prefill" if req.state == "queued" else message
            self._finish(req, _abort_reason(reason))
        return [req.rid for req in victims]

    def running(self) -> list[str]:
        out = [self.prefilling.rid] if self.prefilling is not None and not self.prefilling.finished else []
        return out + list(self._decoding)

    def queued(self) -> list[str]:
        return [req.rid for _, _, req in sorted(self._heap, key=lambda item: item[:2]) if req.rid in self._queued]


# --------------------------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------------------------


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _sse(obj: Any) -> bytes:
    return b"data: " + _dumps(obj).encode("utf-8") + b"\n\n"


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(text=_dumps(obj), status=status, content_type="application/json")


def _value_error(message: str) -> web.Response:
    """SGLang's `_create_error_response`: a ValueError in the native API."""
    return _json({"error": {"message": message}}, status=400)


def _error_response(message: str, *, err_type: str = "Bad Request", code: int = 400) -> web.Response:
    """SGLang's ErrorResponse body, as sent for request-validation errors and by the OpenAI API."""
    return _json({"object": "error", "message": message, "type": err_type, "param": None, "code": code}, status=code)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _close_connection(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


def _chat_finish(reason: dict[str, Any] | None) -> str | None:
    return None if reason is None else str(reason["type"])


class SGLangSimulator:
    """The SGLang simulator as an aiohttp server, usable in-process or from the command line."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config if config is not None else SimConfig()
        self.engine = _Engine(self.config)
        self.faults = _Faults()
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._scheduler: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self._started = time.time()

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the simulator is not started")
        host = self.config.host
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    async def start(self) -> int:
        """Start listening; returns the port (a free one when `config.port` is 0)."""
        if self._runner is not None:
            raise RuntimeError("the simulator is already started")
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.on_response_prepare.append(self._server_header)
        self._routes(app)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        infos = socket.getaddrinfo(self.config.host, self.config.port, type=socket.SOCK_STREAM)
        family, socktype, proto, _, address = infos[0]
        sock = socket.socket(family, socktype, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.setblocking(False)
            site = web.SockSite(runner, sock)
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(sock.getsockname()[1])
        self._scheduler = asyncio.create_task(self.engine.run(), name="sglang-sim-scheduler")
        log.info("sglang simulator (not SGLang) listening on %s", self.url)
        return self.port

    async def stop(self) -> None:
        """Abort everything in flight, stop the scheduler and close the server."""
        self._closing.set()
        self.engine.abort(abort_all=True, message="Simulator shutting down")
        for task in list(self._background):
            task.cancel()
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
            self._scheduler = None
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SGLangSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- Python API for tests -------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        engine = self.engine
        cache = engine.cache
        return {
            "running": engine.running(),
            "queued": engine.queued(),
            "prefilling": engine.prefilling.rid if engine.prefilling is not None else None,
            "requests": list(engine.records),
            "cache": {
                "tokens": cache.size,
                "capacity": cache.capacity,
                "nodes": cache.node_count,
                "inserted_tokens": cache.inserted_tokens,
                "evicted_tokens": cache.evicted_tokens,
            },
            "totals": dict(engine.totals),
            "faults": asdict(self.faults),
        }

    def set_faults(
        self, mode: str, *, count: int | None = None, after_tokens: int = 3, delay_s: float | None = None
    ) -> None:
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {', '.join(FAULT_MODES)}")
        if count is not None and count < 0:
            raise ValueError("count must be >= 0")
        if after_tokens < 0:
            raise ValueError("after_tokens must be >= 0")
        if delay_s is not None and not 0 <= delay_s <= self.config.hang_max_s:
            raise ValueError(f"delay_s must be between 0 and {self.config.hang_max_s}")
        self.faults = _Faults(mode=mode, remaining=count, after_tokens=after_tokens, delay_s=delay_s)

    def reset(self) -> None:
        """Abort everything in flight, then clear the cache, the records, the totals and the faults."""
        self.engine.abort(abort_all=True, message="Simulator reset")
        self.engine.cache = RadixCache(self.config.cache_capacity_tokens)
        self.engine.records.clear()
        self.engine.reset_totals()
        self.faults = _Faults()

    # --- plumbing -------------------------------------------------------------------------

    def _routes(self, app: web.Application) -> None:
        app.router.add_route("POST", "/generate", self._generate)
        app.router.add_route("PUT", "/generate", self._generate)
        app.router.add_post("/abort_request", self._abort_request)
        app.router.add_get("/health", self._health)
        app.router.add_get("/health_generate", self._health)
        app.router.add_get("/get_model_info", self._model_info)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_route("*", "/flush_cache", self._flush_cache)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/sim/stats", self._sim_stats)
        app.router.add_post("/sim/faults", self._sim_faults)
        app.router.add_post("/sim/reset", self._sim_reset)

    @staticmethod
    async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = SERVER_HEADER

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _abort_after_disconnect(self, rid: str) -> None:
        """What SGLang's background abort task does for a vanished client."""

        async def later() -> None:
            await asyncio.sleep(self.config.disconnect_abort_delay_s)
            self.engine.abort(rid, message="Aborted by AbortReq.")

        req = self.engine.requests.get(rid)
        if req is not None and not req.finished:
            self._spawn(later(), f"sglang-sim-abort-{rid}")

    async def _wait_update(self, request: web.Request, req: _Request, deadline: float) -> str:
        """Wait for the request to change: "changed", "gone" (client vanished) or "timeout"."""
        loop = asyncio.get_running_loop()
        while True:
            if req.changed.is_set():
                req.changed.clear()
                return "changed"
            if _client_gone(request):
                return "gone"
            remaining = deadline - loop.time()
            if remaining <= 0:
                return "timeout"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(req.changed.wait(), timeout=min(_POLL_S, remaining))

    async def _read_json(self, request: web.Request) -> Any:
        try:
            return await request.json(loads=json.loads)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadRequest(f"JSON decode error: {exc}", kind="validation") from exc

    async def _read_object(self, request: web.Request, not_an_object: str) -> dict[str, Any] | web.StreamResponse:
        """The JSON object body, or the 400 response to send instead."""
        try:
            body = await self._read_json(request)
        except BadRequest as exc:
            return _error_response(exc.message)
        return body if isinstance(body, dict) else _error_response(not_an_object)

    def _headers_of_interest(self, request: web.Request) -> dict[str, str]:
        return {name: request.headers[name] for name in _ROUTING_HEADERS if name in request.headers}

    async def _admit(self, request: web.Request, req: _Request) -> tuple[web.StreamResponse | None, int | None]:
        """Apply the injected fault, if any, then queue the request.

        Returns a response to send instead (a 500, or nothing at all for a hang or a dropped
        connection), or None and, for "drop_mid_stream", after how many stream events to drop.
        """
        fault = self.faults.take()
        if fault.mode == "http_500":
            return _error_response(
                "Internal server error (simulated fault).", err_type="InternalServerError", code=500
            ), None
        if fault.mode == "slow_first_byte":
            await asyncio.sleep(fault.delay_s if fault.delay_s is not None else 2.0)
        if fault.mode == "hang":
            loop = asyncio.get_running_loop()
            end = loop.time() + (fault.delay_s if fault.delay_s is not None else self.config.hang_max_s)
            while loop.time() < end and not _client_gone(request) and not self._closing.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), timeout=min(_POLL_S, end - loop.time()))
            _close_connection(request)
            return web.Response(status=500), None  # never delivered: the connection is closed
        if fault.mode == "drop_mid_stream" and not req.stream:
            _close_connection(request)
            return web.Response(status=500), None  # never delivered
        if self._closing.is_set():
            return _error_response("The simulator is shutting down.", err_type="ServiceUnavailable", code=503), None
        try:
            self.engine.submit(req)
        except BadRequest as exc:  # the rid went in flight meanwhile
            return _value_error(exc.message), None
        return None, fault.after_tokens if fault.mode == "drop_mid_stream" else None

    # --- native API -----------------------------------------------------------------------

    def _parse_generate(self, body: Any, request: web.Request) -> _Request:
        if not isinstance(body, dict):
            raise BadRequest("Input should be a valid dictionary or instance of GenerateReqInput", kind="validation")
        text = body.get("text")
        input_ids = body.get("input_ids")
        if text is not None and not isinstance(text, str | list):
            raise BadRequest("text: Input should be a valid string or list of strings", kind="validation")
        if input_ids is not None and not isinstance(input_ids, list):
            raise BadRequest("input_ids: Input should be a valid list of integers", kind="validation")
        rid = body.get("rid")
        if rid is not None and not isinstance(rid, str):
            raise BadRequest("rid: Input should be a valid string (batch rids are not simulated)", kind="validation")
        priority = body.get("priority")
        if priority is not None and not _is_int(priority):
            raise BadRequest("priority: Input should be a valid integer", kind="validation")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise BadRequest("stream: Input should be a valid boolean", kind="validation")
        sampling = body.get("sampling_params")
        if sampling is None:
            sampling = {}
        if not isinstance(sampling, dict):
            raise BadRequest("sampling_params: Input should be a valid dictionary", kind="validation")
        routing_key = body.get("routing_key")
        if routing_key is not None and not isinstance(routing_key, str):
            raise BadRequest("routing_key: Input should be a valid string", kind="validation")
        namespace_parts: list[str] = []
        for name in ("extra_key", "cache_salt"):
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                raise BadRequest(f"{name}: Input should be a valid string", kind="validation")
            if value:  # "" means unset, as in SGLang
                namespace_parts.append(f"{name}={value}")
        return_logprob = body.get("return_logprob", False)
        logprob_start_len = body.get("logprob_start_len")
        if not isinstance(return_logprob, bool | None) or (
            logprob_start_len is not None and not _is_int(logprob_start_len)
        ):
            raise BadRequest("return_logprob: bool, logprob_start_len: int", kind="validation")
        max_prefix = (
            logprob_start_len if return_logprob and logprob_start_len is not None and logprob_start_len >= 0 else None
        )

        # From here on, what SGLang raises as ValueError while normalizing the request.
        if text is None and input_ids is None:
            raise BadRequest("Either text, input_ids or input_embeds should be provided.")
        if isinstance(text, list) or (isinstance(input_ids, list) and input_ids and isinstance(input_ids[0], list)):
            raise BadRequest("Batch requests are not supported by the simulator.")
        prompt_text: str
        if text is not None:
            assert isinstance(text, str)
            prompt_ids = tuple(self.engine.tokenizer.encode(text))
            prompt_text = text
        else:
            assert isinstance(input_ids, list)
            if not input_ids:
                raise BadRequest("input_ids cannot be empty.")
            if not all(_is_int(t) and t >= 0 for t in input_ids):
                raise BadRequest("input_ids should be a list of non-negative integers.")
            prompt_ids = tuple(input_ids)
            prompt_text = self.engine.tokenizer.decode(input_ids)
        max_new_tokens, stop = self._sampling(sampling, default_max_new_tokens=128)
        return self._new_request(
            rid=rid if rid is not None else uuid.uuid4().hex,
            endpoint="generate",
            priority=priority if priority is not None else 0,
            prompt_ids=prompt_ids,
            prompt_text=prompt_text,
            max_new_tokens=max_new_tokens,
            stop=stop,
            stream=stream,
            request=request,
            routing_key=routing_key,
            namespace="&".join(namespace_parts) or None,
            max_prefix=max_prefix,
        )

    def _sampling(self, sampling: dict[str, Any], *, default_max_new_tokens: int) -> tuple[int, tuple[str, ...]]:
        max_new_tokens = sampling.get("max_new_tokens", default_max_new_tokens)
        if max_new_tokens is None:
            max_new_tokens = self.config.context_length
        if not _is_int(max_new_tokens) or max_new_tokens < 0:
            raise BadRequest(f"max_new_tokens must be at least 0, got {max_new_tokens}.")
        temperature = sampling.get("temperature", 1.0)
        if temperature is not None and (not _is_number(temperature) or temperature < 0):
            raise BadRequest(f"temperature must be non-negative, got {temperature}.")
        top_p = sampling.get("top_p", 1.0)
        if top_p is not None and (not _is_number(top_p) or not 0 < top_p <= 1):
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

    def _new_request(
        self,
        *,
        rid: str,
        endpoint: str,
        priority: int,
        prompt_ids: tuple[int, ...],
        prompt_text: str,
        max_new_tokens: int,
        stop: tuple[str, ...],
        stream: bool,
        request: web.Request,
        routing_key: str | None,
        namespace: str | None = None,
        max_prefix: int | None = None,
    ) -> _Request:
        if rid in self.engine.requests:
            raise BadRequest(f"Duplicate request ID: {rid} is already in flight.")
        if len(prompt_ids) > self.config.context_length:
            raise BadRequest(
                f"The input ({len(prompt_ids)} tokens) is longer than the model's context length "
                f"({self.config.context_length} tokens)."
            )
        reply = self.engine.tokenizer.encode_pieces(canned_reply(prompt_text))
        reply.append(("", IM_END_ID))
        request_obj = _Request(
            rid=rid,
            endpoint=endpoint,
            priority=priority,
            prompt_ids=prompt_ids,
            max_new_tokens=max_new_tokens,
            stop=stop,
            stream=stream,
            reply=reply,
            headers=self._headers_of_interest(request),
            routing_key=routing_key,
            arrival=asyncio.get_running_loop().time(),
            seq=self.engine.next_seq(),
            namespace=namespace,
            max_prefix=max_prefix,
        )
        request_obj.last_user_turn = last_user_turn(prompt_text)
        return request_obj

    def _native_payload(self, req: _Request) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "id": req.rid,
            "finish_reason": req.finish_reason,
            "prompt_tokens": len(req.prompt_ids),
            "completion_tokens": len(req.output_ids),
            "cached_tokens": req.cached_tokens,
        }
        if req.finished and req.t_finished is not None:
            meta["e2e_latency"] = round(req.t_finished - req.arrival, 6)
        return {"text": req.visible_text, "output_ids": list(req.output_ids), "meta_info": meta}

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await self._read_json(request)
            stream = isinstance(body, dict) and body.get("stream") is True
            try:
                req = self._parse_generate(body, request)
            except BadRequest as exc:
                if exc.kind == "value" and stream:
                    return await self._stream_error(request, exc.message)
                raise
        except BadRequest as exc:
            if exc.kind == "value":
                return _value_error(exc.message)
            return _error_response(exc.message)
        early, drop_after = await self._admit(request, req)
        if early is not None:
            return early
        if req.stream:
            return await self._stream_native(request, req, drop_after)
        return await self._wait_whole(request, req, self._native_payload)

    async def _stream_error(self, request: web.Request, message: str) -> web.StreamResponse:
        response = self._sse_response()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            await response.write(_sse({"error": {"message": message}}))
            await response.write(_SSE_DONE)
            await response.write_eof()
        return response

    @staticmethod
    def _sse_response() -> web.StreamResponse:
        return web.StreamResponse(
            status=200, headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )

    async def _wait_whole(self, request: web.Request, req: _Request, payload: Any) -> web.StreamResponse:
        deadline = asyncio.get_running_loop().time() + self.config.request_timeout_s
        while not req.finished:
            outcome = await self._wait_update(request, req, deadline)
            if outcome == "gone":
                self._abort_after_disconnect(req.rid)
                return web.Response(status=499)  # nobody is listening
            if outcome == "timeout":
                self.engine.abort(req.rid, message="Request timed out in the simulator.")
        return _json(payload(req))

    async def _stream_native(self, request: web.Request, req: _Request, drop_after: int | None) -> web.StreamResponse:
        response = self._sse_response()
        deadline = asyncio.get_running_loop().time() + self.config.request_timeout_s
        sent_tokens = 0
        chunks = 0
        try:
            await response.prepare(request)
            while True:
                if len(req.output_ids) != sent_tokens or req.finished:
                    sent_tokens = len(req.output_ids)
                    await response.write(_sse(self._native_payload(req)))
                    chunks += 1
                if req.finished:
                    break
                if drop_after is not None and chunks >= drop_after:
                    self.engine.abort(req.rid, message="Connection dropped (simulated fault).")
                    _close_connection(request)
                    return response
                outcome = await self._wait_update(request, req, deadline)
                if outcome == "gone":
                    self._abort_after_disconnect(req.rid)
                    return response
                if outcome == "timeout":
                    self.engine.abort(req.rid, message="Request timed out in the simulator.")
            await response.write(_SSE_DONE)
            await response.write_eof()
        except ConnectionError:
            self._abort_after_disconnect(req.rid)
        return response

    async def _abort_request(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_object(request, "Input should be a valid dictionary or instance of AbortReq")
        if isinstance(body, web.StreamResponse):
            return body
        rid = body.get("rid", "")
        abort_all = body.get("abort_all", False)
        if rid is None:
            rid = ""
        if not isinstance(rid, str) or not isinstance(abort_all, bool):
            return _error_response("rid must be a string and abort_all a boolean")
        aborted = self.engine.abort(rid, abort_all=abort_all)
        if aborted:
            log.info("aborted %s", ", ".join(aborted))
        return web.Response(status=200)

    async def _health(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    async def _model_info(self, request: web.Request) -> web.StreamResponse:
        return _json(
            {
                "model_path": self.config.model_path,
                "tokenizer_path": None,
                "is_generation": True,
                "preferred_sampling_params": None,
                "weight_version": "default",
                "simulator": True,
            }
        )

    async def _models(self, request: web.Request) -> web.StreamResponse:
        name = self.config.served_model_name
        card = {
            "id": name,
            "object": "model",
            "created": int(self._started),
            "owned_by": "sglang",
            "root": name,
            "parent": None,
            "max_model_len": self.config.context_length,
        }
        return _json({"object": "list", "data": [card]})

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        engine = self.engine
        totals = engine.totals
        labels = f'{{model_name="{self.config.served_model_name}"}}'
        hit_rate = totals["cached_tokens"] / totals["prompt_tokens"] if totals["prompt_tokens"] else 0.0
        usage = engine.cache.size / engine.cache.capacity if engine.cache.capacity else 0.0
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
            f"sglang:num_running_reqs{labels} {float(len(engine.running()))}",
            "# HELP sglang:num_queue_reqs The number of requests in the waiting queue.",
            "# TYPE sglang:num_queue_reqs gauge",
            f"sglang:num_queue_reqs{labels} {float(len(engine.queued()))}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")

    async def _flush_cache(self, request: web.Request) -> web.StreamResponse:
        text = (
            "Cache flushed.\nPlease check backend logs for more details. "
            "(When there are running or waiting requests, the operation will not be performed.)\n"
        )
        if self.engine.requests:
            return web.Response(text=text, status=400)
        self.engine.cache.clear()
        return web.Response(text=text, status=200)

    # --- OpenAI chat ------------------------------------------------------------------------

    def _parse_chat(self, body: Any, request: web.Request) -> tuple[_Request, str, bool]:
        if not isinstance(body, dict):
            raise BadRequest("Input should be a valid dictionary", kind="validation")
        messages = body.get("messages")
        if not isinstance(messages, list):
            raise BadRequest("messages: Field required (a list of messages)", kind="validation")
        for message in messages:
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise BadRequest("messages: each message needs a string 'role'", kind="validation")
        model = body.get("model", "default")
        if not isinstance(model, str):
            raise BadRequest("model: Input should be a valid string", kind="validation")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise BadRequest("stream: Input should be a valid boolean", kind="validation")
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            raise BadRequest("stream_options: Input should be a valid dictionary", kind="validation")
        include_usage = bool(options.get("include_usage", False))
        template_kwargs = body.get("chat_template_kwargs") or {}
        if not isinstance(template_kwargs, dict):
            raise BadRequest("chat_template_kwargs: Input should be a valid dictionary", kind="validation")
        rid = body.get("rid")
        if rid is not None and not isinstance(rid, str):
            raise BadRequest("rid: Input should be a valid string", kind="validation")
        priority = body.get("priority")
        if priority is not None and not _is_int(priority):
            raise BadRequest("priority: Input should be a valid integer", kind="validation")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is not None and (not _is_int(max_tokens) or max_tokens <= 0):
            raise BadRequest("max_tokens must be positive", kind="validation")
        if not messages:
            raise BadRequest("Messages cannot be empty.", kind="openai")
        try:
            prompt = render_chatml(messages, enable_thinking=template_kwargs.get("enable_thinking", True) is not False)
        except ValueError as exc:
            raise BadRequest(str(exc), kind="openai") from exc
        sampling = {
            "max_new_tokens": max_tokens,
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "stop": body.get("stop"),
        }
        try:
            max_new_tokens, stop = self._sampling(sampling, default_max_new_tokens=self.config.context_length)
        except BadRequest as exc:
            raise BadRequest(exc.message, kind="openai") from exc
        req = self._new_request(
            rid=rid if rid is not None else f"chatcmpl-{uuid.uuid4().hex}",
            endpoint="chat",
            priority=priority if priority is not None else 0,
            prompt_ids=tuple(self.engine.tokenizer.encode(prompt)),
            prompt_text=prompt,
            max_new_tokens=max_new_tokens,
            stop=stop,
            stream=stream,
            request=request,
            routing_key=None,
        )
        return req, model, include_usage

    def _usage(self, req: _Request) -> dict[str, Any]:
        prompt_tokens = len(req.prompt_ids)
        completion_tokens = len(req.output_ids)
        details = (
            {"cached_tokens": req.cached_tokens} if self.config.enable_cache_report and req.cached_tokens > 0 else None
        )
        return {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
            "prompt_tokens_details": details,
            "reasoning_tokens": 0,
        }

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        media_type = request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            return _error_response("Unsupported Media Type: Only 'application/json' is allowed")
        try:
            body = await self._read_json(request)
            req, model, include_usage = self._parse_chat(body, request)
        except BadRequest as exc:
            err_type = "BadRequestError" if exc.kind in ("openai", "value") else "Bad Request"
            return _error_response(exc.message, err_type=err_type)
        early, drop_after = await self._admit(request, req)
        if early is not None:
            return early
        created = int(time.time())
        if req.stream:
            return await self._stream_chat(request, req, model, created, include_usage, drop_after)

        def whole(r: _Request) -> dict[str, Any]:
            reason = r.finish_reason or {}
            return {
                "id": r.rid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": r.text,
                            "reasoning_content": None,
                            "tool_calls": None,
                        },
                        "logprobs": None,
                        "finish_reason": _chat_finish(r.finish_reason),
                        "matched_stop": reason.get("matched"),
                    }
                ],
                "usage": self._usage(r),
            }

        return await self._wait_whole(request, req, whole)

    async def _stream_chat(
        self,
        request: web.Request,
        req: _Request,
        model: str,
        created: int,
        include_usage: bool,
        drop_after: int | None,
    ) -> web.StreamResponse:
        def chunk(delta: dict[str, Any], finish: str | None = None, matched: Any = None) -> dict[str, Any]:
            return {
                "id": req.rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, "matched_stop": matched}
                ],
            }

        response = self._sse_response()
        deadline = asyncio.get_running_loop().time() + self.config.request_timeout_s
        sent_text = 0
        sent_role = False
        tokens_seen = 0
        try:
            await response.prepare(request)
            while True:
                if drop_after is not None and tokens_seen >= drop_after and not req.finished:
                    self.engine.abort(req.rid, message="Connection dropped (simulated fault).")
                    _close_connection(request)
                    return response
                if len(req.output_ids) > 0 or req.finished:
                    if not sent_role:
                        await response.write(_sse(chunk({"role": "assistant", "content": ""})))
                        sent_role = True
                    visible = req.visible_text
                    if len(visible) > sent_text:
                        await response.write(_sse(chunk({"content": visible[sent_text:]})))
                        sent_text = len(visible)
                    tokens_seen = len(req.output_ids)
                if req.finished:
                    break
                outcome = await self._wait_update(request, req, deadline)
                if outcome == "gone":
                    self._abort_after_disconnect(req.rid)
                    return response
                if outcome == "timeout":
                    self.engine.abort(req.rid, message="Request timed out in the simulator.")
            reason = req.finish_reason or {}
            await response.write(_sse(chunk({}, _chat_finish(req.finish_reason), reason.get("matched"))))
            if include_usage:
                usage_chunk = {
                    "id": req.rid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": self._usage(req),
                }
                await response.write(_sse(usage_chunk))
            await response.write(_SSE_DONE)
            await response.write_eof()
        except ConnectionError:
            self._abort_after_disconnect(req.rid)
        return response

    # --- simulator-only endpoints --------------------------------------------------------------

    async def _sim_stats(self, request: web.Request) -> web.StreamResponse:
        return _json(self.stats())

    async def _sim_faults(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_object(request, "body must be a JSON object")
        if isinstance(body, web.StreamResponse):
            return body
        mode = body.get("mode", "none")
        count = body.get("count")
        after_tokens = body.get("after_tokens", 3)
        delay_s = body.get("delay_s")
        if (
            not isinstance(mode, str)
            or (count is not None and not _is_int(count))
            or not _is_int(after_tokens)
            or (delay_s is not None and not _is_number(delay_s))
        ):
            return _error_response("mode: str, count: int|null, after_tokens: int, delay_s: number|null")
        try:
            self.set_faults(
                mode, count=count, after_tokens=after_tokens, delay_s=float(delay_s) if delay_s is not None else None
            )
        except ValueError as exc:
            return _error_response(str(exc))
        return _json({"faults": asdict(self.faults)})

    async def _sim_reset(self, request: web.Request) -> web.StreamResponse:
        self.reset()
        return _json({"reset": True})


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> SimConfig:
    defaults = SimConfig(port=30000)
    parser = argparse.ArgumentParser(
        prog="python -m standins.sglang_sim",
        description="SGLang simulator: SGLang's HTTP API with a radix cache and a latency model, no GPU.",
    )
    parser.add_argument("--host", default=defaults.host, help="address to listen on (default: loopback)")
    parser.add_argument("--port", type=int, default=defaults.port, help="port (0 picks a free one)")
    parser.add_argument("--prefill-overhead-ms", type=float, default=defaults.prefill_overhead_ms)
    parser.add_argument("--prefill-ms-per-token", type=float, default=defaults.prefill_ms_per_token)
    parser.add_argument("--decode-ms-per-token", type=float, default=defaults.decode_ms_per_token)
    parser.add_argument("--cache-capacity-tokens", type=int, default=defaults.cache_capacity_tokens)
    parser.add_argument("--context-length", type=int, default=defaults.context_length)
    parser.add_argument("--disconnect-abort-delay-s", type=float, default=defaults.disconnect_abort_delay_s)
    parser.add_argument("--request-timeout-s", type=float, default=defaults.request_timeout_s)
    parser.add_argument(
        "--disable-priority-scheduling", action="store_true", help="ignore `priority` (first come, first served)"
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name, value in (
        ("--prefill-overhead-ms", args.prefill_overhead_ms),
        ("--prefill-ms-per-token", args.prefill_ms_per_token),
        ("--decode-ms-per-token", args.decode_ms_per_token),
        ("--disconnect-abort-delay-s", args.disconnect_abort_delay_s),
    ):
        if value < 0:
            parser.error(f"{name} must be >= 0")
    if args.cache_capacity_tokens < 1 or args.context_length < 1 or args.request_timeout_s <= 0:
        parser.error("--cache-capacity-tokens, --context-length and --request-timeout-s must be positive")
    return SimConfig(
        host=args.host,
        port=args.port,
        prefill_overhead_ms=args.prefill_overhead_ms,
        prefill_ms_per_token=args.prefill_ms_per_token,
        decode_ms_per_token=args.decode_ms_per_token,
        cache_capacity_tokens=args.cache_capacity_tokens,
        context_length=args.context_length,
        disconnect_abort_delay_s=args.disconnect_abort_delay_s,
        request_timeout_s=args.request_timeout_s,
        enable_priority_scheduling=not args.disable_priority_scheduling,
    )


async def _serve(config: SimConfig) -> None:
    sim = SGLangSimulator(config)
    await sim.start()
    print(f"sglang simulator ready on {sim.url}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        await sim.stop()


def main(argv: Sequence[str] | None = None) -> int:
    config = _parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
