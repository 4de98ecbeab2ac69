"""Speech end -> first audio for a spoken turn that calls one fast MCP tool, against the same turn
with no tools (issue 15, "Measure"), on the SGLang simulator (its latency model, not a GPU).

Two hark-servers (`--llm sglang` on one simulator process), the same request spoken in each:
"go forward ten meters" (corpus clip en_goforward_command), one fresh session per turn, paced at
real time (bench.latency.run_session):

- `mcp tool`: with `--mcp-server robot=python standins/mcp_tools.py` (stdio). The simulator calls
  `forward` (named in the words, meters=10: standins/sglang/tools.py), the server runs it on the
  MCP server, and a second LLM round answers from its result.
- `no tools`: the same server without it: the first round answers.

Where the time goes, per turn: the server's `response.done.metrics` (first_token_ms, first_audio_ms,
tool_ms: the MCP call as the reply waited for it) and the simulator's request records (the first
round's time to its complete call, `e2e_ms`; the second round's time to its first token,
`ttft_ms`). Prefill-only speculative requests are left out of the rounds.

    python -m bench.tools --turns 8 --write docs/performance.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.latency import records, run_session
from bench.sections import write_section
from hark.loadtest.scenario import load_clip
from hark.loadtest.spawn import ServerProcess
from standins.process import launched
from standins.sglang.cli import parse_ready_line

REPO = Path(__file__).resolve().parents[1]
CLIP = "en_goforward_command"
SECTION = "tools"


@dataclass(frozen=True, slots=True)
class ToolTurn:
    config: str
    status: str
    text: str
    final_ms: float | None
    first_token_ms: float | None
    first_audio_ms: float | None
    tool_ms: int
    round1_ttft_ms: float | None  # simulator: arrival -> first token of the first streamed round
    round1_ms: float | None  # simulator: arrival -> last token of the first streamed round
    round2_ttft_ms: float | None  # simulator: arrival -> first token of the second round
    rounds: int


def sim_requests(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/sim/stats", timeout=10) as resp:
        return list(json.loads(resp.read())["requests"])


@contextmanager
def hark_server(args: Sequence[str], log_dir: Path, name: str) -> Iterator[ServerProcess]:
    server = ServerProcess(args, log_path=log_dir / f"{name}.log", cwd=REPO, stop_timeout_s=20)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_mcp_up(server: ServerProcess, name: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    sample = f'hark_mcp_server_up{{server="{name}"}} 1.0'
    while True:
        with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=10) as resp:
            if sample in resp.read().decode():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"MCP server {name} not up after {timeout_s:g} s:\n{server.log_tail()}")
        time.sleep(0.2)


async def run_turns(config: str, url: str, sim_url: str, turns: int, pcm: bytes) -> list[ToolTurn]:
    out: list[ToolTurn] = []
    for i in range(turns):
        seen = len(sim_requests(sim_url))
        trace = await run_session(url, i, [(CLIP, pcm)])
        rounds = [r for r in sim_requests(sim_url)[seen:] if r["stream"] and r["completion_tokens"] > 0]
        for record, turn in zip(records(trace, 0.0), trace.spoken(), strict=True):
            done = turn[0].response.done if turn[0].response is not None else None
            metrics = done.metrics if done is not None else {}
            out.append(
                ToolTurn(
                    config=config,
                    status=record.status,
                    text=done.text if done is not None else "",
                    final_ms=metrics.get("final_ms"),
                    first_token_ms=metrics.get("first_token_ms"),
                    first_audio_ms=metrics.get("first_audio_ms"),
                    tool_ms=int(metrics.get("tool_ms") or 0),
                    round1_ttft_ms=rounds[0]["ttft_ms"] if rounds else None,
                    round1_ms=rounds[0]["e2e_ms"] if rounds else None,
                    round2_ttft_ms=rounds[1]["ttft_ms"] if len(rounds) > 1 else None,
                    rounds=len(rounds),
                )
            )
    return out


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def report(results: dict[str, list[ToolTurn]], command: str) -> str:
    rows = [
        "| run | turns | final | first token | first audio | final -> first audio | round 1 TTFT | round 1 end "
        "| tool_ms | round 2 TTFT |"
    ]
    rows.append("|---|---|---|---|---|---|---|---|---|---|")
    medians: dict[str, float | None] = {}
    after_final: dict[str, float | None] = {}
    for config, turns in results.items():
        ok = [t for t in turns if t.status == "completed"]
        medians[config] = median([t.first_audio_ms for t in ok])
        after_final[config] = median([_minus(t.first_audio_ms, t.final_ms) for t in ok])
        rows.append(
            f"| {config} | {len(ok)}/{len(turns)} | {fmt(median([t.final_ms for t in ok]))} | "
            f"{fmt(median([t.first_token_ms for t in ok]))} | {fmt(medians[config])} | {fmt(after_final[config])} | "
            f"{fmt(median([t.round1_ttft_ms for t in ok]))} | {fmt(median([t.round1_ms for t in ok]))} | "
            f"{fmt(median([t.tool_ms for t in ok]))} | {fmt(median([t.round2_ttft_ms for t in ok]))} |"
        )
    with_tool, without = after_final.get("mcp tool"), after_final.get("no tools")
    spoken_with, spoken_without = medians.get("mcp tool"), medians.get("no tools")
    tool_turns = [t for t in results.get("mcp tool", []) if t.status == "completed"]
    tool_ms = median([t.tool_ms for t in tool_turns])
    round1, round2 = median([t.round1_ms for t in tool_turns]), median([t.round2_ttft_ms for t in tool_turns])
    lines = [
        "## Tools (issue 15): one fast MCP tool in a spoken turn",
        "",
        f"Command: `{command}` (hark-server on the SGLang simulator, `--asr pocketsphinx`, espeak, "
        f"`--turn-detection silence`; the clip "
        f"`{CLIP}` spoken in a fresh session per turn at real-time pace; the MCP server is "
        "`standins/mcp_tools.py` over stdio, its `forward` tool answers at once).",
        "",
        "p50 over the turns, ms. final, first token and first audio: from the end of speech (the",
        "server's `response.done.metrics`); final -> first audio: per turn, the part after the transcript",
        "(the endpointing and the recognizer before it are the same work in both runs, and vary on a",
        "shared machine); round 1 TTFT / end: the first LLM request's first and last token from its",
        "arrival (the simulator's records; without tools round 1 is the whole answer); tool_ms: the MCP",
        "call as the reply waited for it; round 2 TTFT: the request with the tool result, to its first",
        "token.",
        "",
        *rows,
        "",
    ]
    if with_tool is not None and without is not None and tool_ms is not None:
        extra = with_tool - without
        lines.append(
            f"One fast MCP tool adds {extra:.0f} ms between the final transcript and the first audio (p50 "
            f"{with_tool:.0f} against {without:.0f} ms; speech end -> first audio {fmt(spoken_with)} against "
            f"{fmt(spoken_without)} ms): {tool_ms:.0f} ms is the MCP call itself (`tool_ms`: JSON-RPC over the "
            f"stdio pipe and the tool), the other {extra - tool_ms:.0f} ms the extra LLM round: the first round "
            f"writes the call's tokens before anything can be said (its last token at {fmt(round1)} ms), then "
            f"the second round's prefill to its first token ({fmt(round2)} ms)."
        )
    texts = sorted({t.text for turns in results.values() for t in turns})
    lines += ["", "Answers: " + "; ".join(f"`{t}`" for t in texts)]
    return "\n".join(lines) + "\n"


async def measure(turns: int, log_dir: Path) -> dict[str, list[ToolTurn]]:
    pcm = load_clip(CLIP)
    results: dict[str, list[ToolTurn]] = {}
    with launched("standins.sglang", ["--host", "127.0.0.1", "--port", "0"], parse_ready_line) as (_, sim_url):
        # silence endpointing: the semantic turn model's wait varies by more than a tool costs
        base = ["--port", "0", "--llm", "sglang", "--llm-url", sim_url, "--max-sessions", "4"]
        base += ["--turn-detection", "silence"]
        mcp = ["--mcp-server", f"robot={sys.executable} {REPO / 'standins' / 'mcp_tools.py'}"]
        for config, args in (("no tools", base), ("mcp tool", base + mcp)):
            with hark_server(args, log_dir, config.replace(" ", "-")) as server:
                if config == "mcp tool":
                    wait_mcp_up(server, "robot")
                await run_turns(config, server.url, sim_url, 1, pcm)  # warm-up: caches, first imports
                results[config] = await run_turns(config, server.url, sim_url, turns, pcm)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tools", description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=8, help="measured turns per configuration (default 8)")
    parser.add_argument("--write", metavar="FILE", help=f"write the section '{SECTION}' into this markdown file")
    parser.add_argument("--json", metavar="FILE", help="every turn as JSON")
    args = parser.parse_args(argv)
    command = "python -m bench.tools" + (f" --turns {args.turns}" if args.turns != 8 else "")
    with tempfile.TemporaryDirectory(prefix="bench-tools-") as tmp:
        results = asyncio.run(measure(args.turns, Path(tmp)))
    markdown = report(results, command)
    print(markdown)
    if args.json:
        Path(args.json).write_text(json.dumps({k: [asdict(t) for t in v] for k, v in results.items()}, indent=1))
    if args.write:
        write_section(args.write, SECTION, markdown)


if __name__ == "__main__":
    main()
