"""The LLM's P(end of turn) through Hark's SGLang engine: does the model tell a finished sentence
from the same sentence cut short, and how long does one such request take on a warm prefix?

The prompts are what a session sends (`SGLangEngine.partial_prompt`, then `end_of_turn`: one decoded
token, P(`<|im_end|>`) from its top logprobs): the user's words as a streaming recognizer gives
them (lower case, no punctuation), for each corpus sentence of `make bench-turns` (bench/turnset.py)
whole and cut at every word boundary (Mandarin: every character boundary) at least
`MIN_PREFIX_UNITS` in and one before its end, shortest cut first. Each prompt is asked twice: "cold"
(the radix cache holds only what earlier prompts share with it: the template, and for a cut the
shorter cut before it, as a session's earlier speculation would) and again warm (the whole prompt
is cached, as the speculative prefill leaves it when the person pauses); temperature 0, so both
answers must agree.

`make sglang-check` runs it against a real SGLang on a GPU host (`--url`). Without `--url` it runs
against the simulator in-process, whose probabilities are MADE UP by a fixed rule
(standins/sglang/logprobs.py): that checks the script and the client, not a model.

Reported: per language, P for finished and cut prompts (median, range); how often a finished
sentence scores above its own cuts (pairs, ties half: 0.5 is a coin); the share that would end
the turn at a few thresholds, LLM alone (the server averages it with the audio score, see
server/turn/semantic.py); cold and warm request time, p50 / p90. Exit status 1 when a request got no
probability (the answer lacked `output_top_logprobs`: client and server disagree on the shape) or
the two answers of one prompt differ.

    python -m bench.llm_turn_check [--url URL] [--instructions TEXT] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import unicodedata
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.turnset import CLIPS, manifest
from bench.wer import normalize
from hark.loadtest.stats import percentile
from hark.server.llm.base import Message
from hark.server.llm.http import LLMSettings
from hark.server.llm.prompt import ChatMLPrompt
from hark.server.llm.sglang import SGLangEngine

MIN_PREFIX_UNITS = 2  # a cut keeps at least this many words (Mandarin: characters)
THRESHOLDS = (0.3, 0.5, 0.7)
SAME_ANSWER = 1e-3  # two answers at temperature 0 may differ by float noise, not more
SESSION = "llmturncheck"


@dataclass(frozen=True, slots=True)
class Utterance:
    clip: str
    language: str
    text: str  # the user's words, as a streaming recognizer would give them
    finished: bool


@dataclass(frozen=True, slots=True)
class Reading:
    clip: str
    language: str
    text: str
    finished: bool
    p_cold: float | None
    p_warm: float | None
    cold_ms: float
    warm_ms: float


def spoken_units(transcript: str, language: str) -> list[str]:
    """The transcript as a recognizer's words: no punctuation, lower case; Mandarin by character."""
    if language == "zh":
        return [ch for ch in transcript if not ch.isspace() and not unicodedata.category(ch).startswith("P")]
    return normalize(transcript)


def utterances(clips: Sequence[str] = CLIPS) -> list[Utterance]:
    """Each sentence whole, then cut at each boundary from `MIN_PREFIX_UNITS` to one before its end."""
    info = manifest()
    out: list[Utterance] = []
    for clip in clips:
        language = "zh" if clip.startswith("zh_") else "en"
        units = spoken_units(str(info[clip]["transcript"]), language)
        joiner = "" if language == "zh" else " "
        out.append(Utterance(clip, language, joiner.join(units), True))
        out += [Utterance(clip, language, joiner.join(units[:k]), False) for k in range(MIN_PREFIX_UNITS, len(units))]
    return out


async def _timed(engine: SGLangEngine, prompt: str, rid: str) -> tuple[float | None, float]:
    started = time.perf_counter()
    p = await engine.end_of_turn(prompt, rid, SESSION)
    return p, (time.perf_counter() - started) * 1000.0


async def measure(engine: SGLangEngine, items: Sequence[Utterance], instructions: str) -> list[Reading]:
    history = [Message("system", instructions)] if instructions else []
    readings = []
    for n, item in enumerate(items):
        prompt = engine.partial_prompt(history, item.text)
        p_cold, cold_ms = await _timed(engine, prompt, f"{SESSION}_t{n:06d}_r0000")
        p_warm, warm_ms = await _timed(engine, prompt, f"{SESSION}_t{n:06d}_r0001")
        readings.append(Reading(item.clip, item.language, item.text, item.finished, p_cold, p_warm, cold_ms, warm_ms))
    return readings


def separation(readings: Sequence[Reading]) -> float | None:
    """Share of (finished, cut) pairs of the same sentence where the finished one scores higher."""
    wins, pairs = 0.0, 0
    for whole in (r for r in readings if r.finished and r.p_warm is not None):
        for cut in (r for r in readings if not r.finished and r.clip == whole.clip and r.p_warm is not None):
            assert whole.p_warm is not None and cut.p_warm is not None
            wins += 1.0 if whole.p_warm > cut.p_warm else 0.5 if whole.p_warm == cut.p_warm else 0.0
            pairs += 1
    return wins / pairs if pairs else None


def _stats(values: Sequence[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}, n {len(values)})"


def report(readings: Sequence[Reading]) -> list[str]:
    lines = []
    for language in sorted({r.language for r in readings}):
        mine = [r for r in readings if r.language == language]
        done = [r.p_warm for r in mine if r.finished and r.p_warm is not None]
        cut = [r.p_warm for r in mine if not r.finished and r.p_warm is not None]
        sep = separation(mine)
        lines.append(f"{language}: P(end) finished {_stats(done)}; cut {_stats(cut)}")
        lines.append(f"{language}: finished above its own cuts in {'-' if sep is None else f'{sep:.0%}'} of pairs")
        for t in THRESHOLDS:
            ends = sum(p >= t for p in done) / len(done) if done else 0.0
            cuts = sum(p >= t for p in cut) / len(cut) if cut else 0.0
            lines.append(f"{language}: at P >= {t}: {ends:.0%} of finished sentences end, {cuts:.0%} of cuts end")
    for kind in ("cold", "warm"):
        times = [getattr(r, f"{kind}_ms") for r in readings]
        lines.append(f"request time {kind}: p50 {percentile(times, 50):.1f} ms, p90 {percentile(times, 90):.1f} ms")
    return lines


def problems(readings: Sequence[Reading]) -> list[str]:
    out = []
    for r in readings:
        if r.p_cold is None or r.p_warm is None:
            out.append(f"no probability for {r.text!r} ({r.clip}): the answer had no output_top_logprobs")
        elif abs(r.p_cold - r.p_warm) > SAME_ANSWER:
            out.append(f"{r.text!r} ({r.clip}): {r.p_cold:.4f} cold, {r.p_warm:.4f} warm at temperature 0")
    return out


async def _main(args: argparse.Namespace) -> list[Reading]:
    async with AsyncExitStack() as stack:
        url = args.url
        if not url:
            from standins.sglang import SGLangSimulator, SimConfig

            sim = await stack.enter_async_context(SGLangSimulator(SimConfig(port=0, decode_ms_per_token=0.5)))
            url = sim.url
            print("llm-turn-check: against the SGLang SIMULATOR (made-up probabilities), not a model; pass --url")
        engine = SGLangEngine(LLMSettings(url=url, temperature=0.0, top_p=1.0, max_tokens=1), ChatMLPrompt())
        await engine.start()
        stack.push_async_callback(engine.aclose)
        return await measure(engine, utterances(), args.instructions)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="the LLM's P(end of turn) on finished and cut sentences, via SGLang")
    p.add_argument("--url", default="", help="SGLang's base URL (default: an in-process simulator)")
    p.add_argument("--instructions", default="", help="a system prompt before the user's words (default: none)")
    p.add_argument("--json", type=Path, help="write every reading here")
    args = p.parse_args(argv)
    readings = asyncio.run(_main(args))
    for line in report(readings):
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in readings], ensure_ascii=False, indent=1))
    found = problems(readings)
    for line in found:
        print(f"FAIL  {line}")
    print(f"{len(readings)} prompts, {'FAIL' if found else 'PASS'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
