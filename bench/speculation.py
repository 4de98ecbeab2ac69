"""Speech end -> first token, with and without speculative prefill, for growing histories.

Runs Hark's own SGLang engine, prompt builder and speculator against an SGLang HTTP API: the
simulator by default (its latency model, not a GPU), or a real server with `--url` (see
`make sglang-check`). A turn is simulated the way the session drives it: the user speaks
`--words` words, the stable transcript grows by one word every `--word-ms`, the speculator sees
each growth; at the end of speech the final prompt is sent streaming, and the clock runs from
there to the first reply token.

Two starting states per history size: `warm`, the conversation so far is already in the radix
cache (the previous turn left it there: the usual case), and `cold`, it is not (evicted, a
restored session, a first turn with a long system prompt).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from hark.server.llm.base import LLMRequest, LLMUsage, Message, request_id
from hark.server.llm.http import LLMSettings
from hark.server.llm.prompt import ChatMLPrompt, estimate_tokens
from hark.server.llm.sglang import SGLangEngine
from hark.server.llm.speculation import Speculator
from hark.server.metrics import Metrics

UTTERANCE = "could you tell me how long it takes to drive from the old harbour to the airport on a friday"
FILLER_TURN = (
    "I was wondering about the schedule for the ferry on weekends and whether the last boat still "
    "leaves at half past nine or if they changed it for the winter season this year"
)


@dataclass(frozen=True, slots=True)
class TurnResult:
    history_tokens: int
    start: str
    speculation: bool
    first_token_ms: float
    prompt_tokens: int
    cached_tokens: int
    prefills: int


def make_history(tokens: int, salt: int) -> list[Message]:
    """Alternating turns adding up to about `tokens` (estimated); `salt` makes each run's text unique."""
    history: list[Message] = []
    n = 0
    while sum(estimate_tokens(m.content) for m in history) < tokens:
        history.append(Message("user", f"({salt}.{n}) {FILLER_TURN}"))
        history.append(Message("assistant", f"({salt}.{n}) The last ferry leaves at half past nine, all winter."))
        n += 1
    return history


async def _reset_cache(session: aiohttp.ClientSession, url: str) -> None:
    # real SGLang: /flush_cache; the simulator also offers /sim/reset
    for path in ("flush_cache", "sim/reset"):
        try:
            async with session.post(f"{url}/{path}") as resp:
                if resp.status < 400:
                    return
        except aiohttp.ClientError:
            continue


async def run_turn(
    engine: SGLangEngine,
    history: list[Message],
    speculation: bool,
    warm: bool,
    word_ms: float,
    turn_id: str,
) -> tuple[float, LLMUsage, int]:
    session_id = f"bench{turn_id}"
    if warm:  # what the previous turn left in the cache: the conversation up to this user turn
        await engine.prefill(engine.prompt.committed(history), request_id(session_id, 0), session_id)
    speculator = Speculator(engine, session_id, min_new_words=2, metrics=Metrics()) if speculation else None
    if speculator is not None:
        speculator.begin_turn()
    words = UTTERANCE.split()
    for i in range(1, len(words) + 1):
        await asyncio.sleep(word_ms / 1000.0)
        # LocalAgreement holds the newest word back, so the stable text trails the speech by a word
        if speculator is not None and i > 1:
            speculator.offer(history, " ".join(words[: i - 1]))
    messages = [*history, Message("user", UTTERANCE)]
    prefills = 0
    if speculator is not None:
        speculator.settle(engine.final_prompt(messages))
        prefills = speculator.turn_prefills
    usage = LLMUsage()
    speech_end = time.perf_counter()
    first_token = float("nan")
    request = LLMRequest(messages=messages, request_id=request_id(session_id, 1), session_id=session_id, max_tokens=8)
    async for _ in engine.stream(request, usage):
        if first_token != first_token:  # nan: first delta
            first_token = (time.perf_counter() - speech_end) * 1000.0
    if speculator is not None:
        await speculator.close()
    return first_token, usage, prefills


async def run_benchmark(url: str, history_sizes: Sequence[int], repeats: int, word_ms: float) -> list[TurnResult]:
    # a budget above the largest history, so a "16000-token history" really is in the prompt
    prompt = ChatMLPrompt(history_token_budget=max(history_sizes) * 2 + 1000)
    engine = SGLangEngine(LLMSettings(url=url, first_byte_timeout_s=120.0, idle_timeout_s=120.0), prompt)
    await engine.start()
    results: list[TurnResult] = []
    try:
        async with aiohttp.ClientSession() as session:
            salt = 0
            for size in history_sizes:
                for start in ("warm", "cold"):
                    for speculation in (False, True):
                        for _ in range(repeats):
                            salt += 1
                            await _reset_cache(session, url)
                            history = make_history(size, salt)
                            ms, usage, prefills = await run_turn(
                                engine, history, speculation, start == "warm", word_ms, str(salt)
                            )
                            results.append(
                                TurnResult(
                                    size, start, speculation, ms, usage.prompt_tokens, usage.cached_tokens, prefills
                                )
                            )
    finally:
        await engine.aclose()
    return results


def summarize(results: Sequence[TurnResult]) -> list[dict[str, Any]]:
    rows = []
    for size in sorted({r.history_tokens for r in results}):
        for start in ("warm", "cold"):
            off = [r for r in results if r.history_tokens == size and r.start == start and not r.speculation]
            on = [r for r in results if r.history_tokens == size and r.start == start and r.speculation]
            if not off or not on:
                continue
            off_ms = statistics.median(r.first_token_ms for r in off)
            on_ms = statistics.median(r.first_token_ms for r in on)
            rows.append(
                {
                    "history_tokens": size,
                    "start": start,
                    "prompt_tokens": round(statistics.median(r.prompt_tokens for r in on)),
                    "without_ms": off_ms,
                    "with_ms": on_ms,
                    "ratio": off_ms / on_ms if on_ms > 0 else float("inf"),
                    "cached_without": statistics.median(r.cached_tokens / max(1, r.prompt_tokens) for r in off),
                    "cached_with": statistics.median(r.cached_tokens / max(1, r.prompt_tokens) for r in on),
                    "prefills": statistics.median(r.prefills for r in on),
                }
            )
    return rows


def format_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    table = [["history tokens", "conversation at start", "prompt tokens", "first token without ms",
              "first token with ms", "ratio", "cached without", "cached with", "prefills"]]  # fmt: skip
    for r in rows:
        table.append(
            [
                str(r["history_tokens"]),
                r["start"],
                str(r["prompt_tokens"]),
                f"{r['without_ms']:.1f}",
                f"{r['with_ms']:.1f}",
                f"{r['ratio']:.1f}x",
                f"{r['cached_without']:.0%}",
                f"{r['cached_with']:.0%}",
                f"{r['prefills']:.0f}",
            ]
        )
    return table


async def _main(args: argparse.Namespace) -> list[dict[str, Any]]:
    sizes = [int(x) for x in args.histories.split(",")]
    if args.url:
        results = await run_benchmark(args.url, sizes, args.repeats, args.word_ms)
    else:
        from standins.sglang import SGLangSimulator, SimConfig

        async with SGLangSimulator(SimConfig()) as sim:
            results = await run_benchmark(sim.url, sizes, args.repeats, args.word_ms)
    rows = summarize(results)
    for line in format_rows(rows):
        print("  ".join(f"{cell:>12}" for cell in line))
    return rows


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description="speech end -> first token with and without speculative prefill")
    p.add_argument("--url", help="a real SGLang server (default: start the SGLang simulator in-process)")
    p.add_argument("--histories", default="0,1000,4000,16000", help="conversation sizes in tokens")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--word-ms", type=float, default=250.0, help="time between two spoken words")
    return asyncio.run(_main(p.parse_args(argv)))


if __name__ == "__main__":
    main()
