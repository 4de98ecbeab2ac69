"""The simulated GPU: a priority scheduler with one prefill at a time and batched decode, on a radix cache."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections import deque
from typing import Any

from .config import SimConfig
from .radix import RadixCache
from .request import BadRequest, SimRequest, abort_reason
from .tokens import IM_END_ID, StandInTokenizer

log = logging.getLogger("standins.sglang")


class Scheduler:
    """Scheduler, radix cache and bookkeeping of one simulated GPU."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.tokenizer = StandInTokenizer()
        self.cache = RadixCache(config.cache_capacity_tokens)
        self.requests: dict[str, SimRequest] = {}  # in flight
        self._heap: list[tuple[int, int, SimRequest]] = []
        self._queued: dict[str, SimRequest] = {}
        self._decoding: dict[str, SimRequest] = {}
        self.prefilling: SimRequest | None = None
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

    def submit(self, req: SimRequest) -> None:
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
                    self._finish(victim, abort_reason("Internal simulator error."))

    def _pop_queued(self) -> SimRequest | None:
        while self._heap:
            _, _, req = heapq.heappop(self._heap)
            if self._queued.get(req.rid) is req and not req.finished:
                del self._queued[req.rid]
                return req
        return None

    async def _prefill(self, req: SimRequest) -> None:
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

    def _emit_token(self, req: SimRequest) -> None:
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

    def _finish(self, req: SimRequest, reason: dict[str, Any]) -> None:
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

    def _record(self, req: SimRequest) -> dict[str, Any]:
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
            self._finish(req, abort_reason(reason))
        return [req.rid for req in victims]

    def running(self) -> list[str]:
        out = [self.prefilling.rid] if self.prefilling is not None and not self.prefilling.finished else []
        return out + list(self._decoding)

    def queued(self) -> list[str]:
        return [req.rid for _, _, req in sorted(self._heap, key=lambda item: item[:2]) if req.rid in self._queued]
