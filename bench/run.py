"""`make bench`: stage CPU costs in-process, then turn latency against a real hark-server process.

The server runs as its own process (`python -m hark.server.app` on a free loopback port), exactly as a
user starts it, so the latency numbers include the event loop, the ASR worker process and the
WebSocket transport. Its CPU time (with its worker processes) is read from /proc around each
phase, and its event-loop lag from its own /metrics, so the load numbers can be checked against the
in-process stage costs. With `--write PATH` a markdown report is written with everything measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import re
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.sections import write_section
from hark.loadtest.spawn import ServerProcess

from . import latency

REPO = Path(__file__).resolve().parents[1]
PHASE_LIMIT_S = 180  # per latency phase: a stuck server fails the bench instead of hanging it


# ---------------------------------------------------------------- the server process


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of `pid` and all its descendants, from /proc (Linux only)."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (ppid, cpu s)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        fields = raw[raw.rfind(")") + 2 :].split()  # the command name may hold spaces and parens
        # fields[0] is field 3 of proc(5): ppid is 4, utime 14, stime 15, cutime 16, cstime 17
        cpu = sum(int(f) for f in fields[11:15]) / ticks
        stats[int(entry.name)] = (int(fields[1]), cpu)
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, _) in stats.items():
            if ppid == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(stats[p][1] for p in tree if p in stats)


def loop_lag_buckets(port: int) -> dict[float, float]:
    """Cumulative counts of the server's event-loop-lag histogram, by upper bound in seconds."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    buckets: dict[float, float] = {}
    for match in re.finditer(r'^hark_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M):
        buckets[float(match.group(1))] = float(match.group(2))
    return buckets


def lag_summary(before: dict[float, float], after: dict[float, float]) -> dict[str, float]:
    """Bucket bound under which 99% of the phase's loop-lag samples fell, and how many exceeded 50 ms."""
    delta = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in sorted(after)}
    total = delta.get(float("inf"), 0.0)
    if total <= 0:
        return {}
    p99_le = next(le for le, count in delta.items() if count >= 0.99 * total)
    over_50ms = total - delta.get(0.05, total)
    return {"samples": total, "p99_le_ms": p99_le * 1000.0, "over_50ms": over_50ms}


# ---------------------------------------------------------------- the run


async def _latency_phases(server: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    latency.check_loopback(server.url)
    phases = {
        "sequential": (latency.sequential_plans(args.sessions, args.turns), False),
        "concurrent": (latency.concurrent_plans(args.concurrency, args.concurrent_turns), True),
    }
    result: dict[str, Any] = {"url": server.url}
    for name, (plans, concurrent) in phases.items():
        lag0, cpu0 = loop_lag_buckets(server.port), tree_cpu_s(server.process.pid)
        async with asyncio.timeout(PHASE_LIMIT_S):
            phase = await latency.run_phase(server.url, name, plans, concurrent)
        cpu = tree_cpu_s(server.process.pid) - cpu0
        phase["server_cpu_s"] = cpu
        phase["server_cpu_per_audio_s"] = cpu / phase["audio_sent_s"] if phase["audio_sent_s"] else float("nan")
        phase["server_cores_busy"] = cpu / phase["wall_s"]
        phase["loop_lag"] = lag_summary(lag0, loop_lag_buckets(server.port))
        result[name] = phase
    return result


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_before": os.getloadavg(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Stage CPU costs and end-to-end turn latency of hark-server.")
    parser.add_argument("--write", metavar="PATH", help="write the markdown report here (e.g. docs/performance.md)")
    parser.add_argument("--sessions", type=int, default=4, help="sessions of the sequential run")
    parser.add_argument("--turns", type=int, default=10, help="clips sent in the sequential run, over all sessions")
    parser.add_argument("--concurrency", type=int, default=8, help="sessions at once in the concurrent run")
    parser.add_argument("--concurrent-turns", type=int, default=2, help="clips per session in the concurrent run")
    parser.add_argument("--json", metavar="PATH", help="also write every measurement (per turn) as JSON")
    parser.add_argument(
        "--asr-workers",
        type=int,
        default=0,
        help="passed to the server (default 0: its own default, one per CPU, max 4)",
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    machine = machine_info()
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"machine: {machine['nproc']} CPUs, {machine['cpu_model']}, Python {machine['python']}")

    print("\n== stage CPU cost (in-process) ==")
    from bench.stages import run_stages  # imports the server's engines: only this half of the bench needs them

    stages = run_stages()

    print("\n== speculative prefill (SGLang simulator's latency model) ==")
    from bench import speculation

    spec_rows = speculation.main(["--repeats", "3"])

    print("\n== turn latency (real server process, real-time audio) ==")
    with (
        tempfile.TemporaryDirectory(prefix="hark-bench-") as tmp,
        ServerProcess(["--asr-workers", str(args.asr_workers)], log_path=Path(tmp) / "server.log", cwd=REPO) as server,
    ):
        try:
            lat = asyncio.run(_latency_phases(server, args))
        except BaseException:
            print(f"server log tail:\n{server.log_tail()}", file=sys.stderr)
            raise
        if server.process.poll() is not None:
            raise RuntimeError(f"hark-server exited during the bench:\n{server.log_tail()}")
    latency.print_rows(latency.latency_rows(lat))
    latency.print_phase_notes(lat)
    for name in ("sequential", "concurrent"):
        p = lat[name]
        print(
            f"{name}: server CPU {p['server_cpu_s']:.1f} s for {p['audio_sent_s']:.1f} s of audio "
            f"({p['server_cpu_per_audio_s']:.3f} CPU s / audio s, {p['server_cores_busy']:.2f} cores busy), "
            f"loop lag {p['loop_lag']}"
        )

    print("\n== the browser page (headless Chromium, WebRTC and WebSocket) ==")
    from bench import browser

    browser_result = browser.main([])
    machine["loadavg_after"] = os.getloadavg()
    elapsed = time.monotonic() - started
    print(f"\nbench took {elapsed:.0f} s")
    if args.write:
        path = Path(args.write)
        write_section(
            path,
            "bench",
            render_report(machine, date, elapsed, stages, lat, args)
            + speculation_section(spec_rows)
            + browser.browser_section(browser_result),
        )
        print(f"wrote {path}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "date": date, "stages": stages, "latency": lat}))
        print(f"wrote {args.json}")


# ---------------------------------------------------------------- the report


def speculation_section(rows: Sequence[dict[str, Any]]) -> str:
    from bench import speculation

    table = _md_table(speculation.format_rows(rows), left=2)
    cold = [r for r in rows if r["start"] == "cold"]
    biggest = max(cold, key=lambda r: r["history_tokens"]) if cold else None
    headline = (
        f"With a {biggest['history_tokens']}-token conversation not yet in the cache, the first token comes "
        f"{biggest['ratio']:.1f}x sooner with speculation ({biggest['without_ms']:.0f} ms against "
        f"{biggest['with_ms']:.0f} ms)."
        if biggest
        else ""
    )
    return f"""
## Speculative prefill: speech end to first token

`python -m bench.speculation` (also `make bench-speculation`): Hark's SGLang engine, prompt builder and
speculator against **the SGLang simulator** (`standins/sglang/`), whose latency model is cited
there (Qwen3-8B on one H100: 18 ms + 0.04 ms per uncached prompt token, 7.2 ms per output token). These
are the simulator's numbers, not a GPU's: they show the mechanism, and `make sglang-check` measures the
same on a real SGLang. The user speaks a 19-word sentence, one word every 250 ms; the stable transcript
trails by a word; with speculation, a prefill goes out every 2 stable words. Medians of 3 turns each.
`warm`: the conversation so far is in the radix cache when the user starts (the usual case, left there by
the previous turn); `cold`: it is not (evicted, a restored session, a long first system prompt).

{table}

{headline} With a warm cache the gain is only the user's own words (a few ms on this latency model):
speculation pays off when the prompt's uncached part is long, which is exactly when a reply would
otherwise start late.
"""


def _md_table(rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Markdown table; the first `left` columns are text, the rest numbers (right-aligned)."""
    align = ["---" if i < left else "---:" for i in range(len(rows[0]))]
    lines = [rows[0], align, *rows[1:]]
    return "\n".join("| " + " | ".join(row) + " |" for row in lines)


def _sessions(n: int) -> str:
    return f"{n} session{'' if n == 1 else 's'}"


def _p(phase: dict[str, Any], metric: str, key: str) -> float:
    return float(phase["metrics"][metric].get(key, float("nan")))


def render_report(
    machine: dict[str, Any],
    date: str,
    elapsed: float,
    stages: dict[str, Any],
    lat: dict[str, Any],
    args: argparse.Namespace,
) -> str:
    by_stage = {s["stage"].split()[0]: s for s in stages["stages"]}
    vad, asr, tts = by_stage["vad"], by_stage["asr"], by_stage["tts"]
    seq, conc = lat["sequential"], lat["concurrent"]
    silence = seq["min_silence_ms"] or 500
    load = ", ".join(f"{x:.2f}" for x in machine["loadavg_before"])
    load_after = ", ".join(f"{x:.2f}" for x in machine["loadavg_after"])
    asr_frame = asr["extra_ms"].get("accept per 100 ms frame", {})

    stage_rows = stages["table"]
    asr_workers = args.asr_workers or min(4, os.cpu_count() or 1)
    asr_rows = [["decoder setting", "WER", "errors / words", "finalize p50 ms", "finalize max ms"]] + [
        [
            r["setting"],
            f"{r['wer']:.3f}",
            f"{r['errors']} / {r['words']}",
            f"{r['finalize_ms']['p50']:.0f}",
            f"{r['finalize_ms']['max']:.0f}",
        ]
        for r in stages["asr_settings"]
    ]
    latency_rows = latency.latency_rows(lat)
    header = "run|clips|utterances|responses by status|audio sent s|wall s|server CPU s / audio s|server cores busy"
    phase_rows = [[*header.split("|"), "loop lag p99 <=", "lag > 50 ms", "errors"]]
    for name, p in (("sequential", seq), ("concurrent", conc)):
        statuses = ", ".join(f"{k} {v}" for k, v in sorted(p["statuses"].items()))
        lag = p["loop_lag"]
        phase_rows.append(
            [
                f"{name} ({_sessions(p['sessions'])})",
                str(p["clips_sent"]),
                str(p["utterances"]),
                statuses,
                f"{p['audio_sent_s']:.0f}",
                f"{p['wall_s']:.0f}",
                f"{p['server_cpu_per_audio_s']:.3f}",
                f"{p['server_cores_busy']:.2f}",
                f"{lag['p99_le_ms']:g} ms" if lag else "-",
                f"{lag['over_50ms']:.0f}" if lag else "-",
                ", ".join(p["errors"]) or "none",
            ]
        )

    def beyond(phase: dict[str, Any], metric: str) -> float:
        return _p(phase, metric, "p50") - silence

    problems = [
        f"the {name} run had {p['timeouts']} turn timeouts and error events {p['errors']}"
        for name, p in (("sequential", seq), ("concurrent", conc))
        if p["timeouts"] or p["errors"]
    ]
    warning = (
        "\n**Warning: " + "; ".join(problems) + ". The percentiles above leave those turns out.**\n" if problems else ""
    )
    asr_capacity = asr["streams_per_core"]
    client_gap = max(
        abs(_p(phase, f"client_{m}", k) - _p(phase, m, k))
        for phase in (seq, conc)
        for m in latency.METRICS
        for k in ("p50", "p90", "p99")
    )
    costliest = max(stages["stages"], key=lambda s: float(s["cpu_per_audio_s"]))["stage"].split()[0].upper()
    return f"""## Single sessions: stage costs, turn latency, speculation, browsers

Measured by `make bench` (`python -m bench.run --write docs/performance.md`), one run, on {date}.
Every number in this section comes from that one run; the command rewrites only this section.

- Machine: {machine["nproc"]} CPUs ({machine["cpu_model"]}), Python {machine["python"]}, {machine["platform"]}
- Load average before / after the run: {load} / {load_after} (other work on the machine skews the numbers)
- Bench wall time: {elapsed:.0f} s
- Engines: the embedded defaults (Silero VAD, pocketsphinx, echo LLM, espeak-ng), server started with
  `python -m hark.server.app --host 127.0.0.1 --port 0 --asr-workers {args.asr_workers}` and default settings
  ({silence} ms endpointing silence; {asr_workers} ASR worker processes)

## Stage cost per second of audio

In-process (`bench/stages.py`), each stage fed the corpus clips {", ".join(stages["clips"])}
({stages["passes"]} passes; TTS: reply-sized sentences) the way the server feeds it: 100 ms frames.
CPU time is `time.process_time()` (all threads of the process), so it is what a core spends, not what
a clock shows. "Real-time streams / core" is the inverse: how many live streams one core could keep up
with for that stage alone. Latency columns are wall-clock times of the single call named.

{_md_table(stage_rows, left=1)}

The ASR's per-frame `accept` (decode 100 ms and read the partial) took p50 {asr_frame.get("p50", float("nan")):.2f} ms,
p99 {asr_frame.get("p99", float("nan")):.2f} ms, max {asr_frame.get("max", float("nan")):.2f} ms.

## ASR settings: accuracy against what the user waits for

pocketsphinx's second search pass (fwdflat) and lattice rescoring (bestpath) run at the end of the
utterance, while the user waits for the reply. Word error rate over {", ".join(stages["wer_clips"])}
(human reference transcripts), each clip streamed in 100 ms frames from a fresh cepstral mean, and the
wall time of that end-of-utterance step:

{_md_table(asr_rows, left=1)}

## Turn latency, end to end

`bench/latency.py` against the server process, over the WebSocket on loopback. Each session
streams clips ({", ".join(latency.CLIPS)}) in 100 ms frames at real-time pace, then streams silence as a live
microphone would until every utterance has its `transcript.final` and every reply its `response.done`.
Sequential: {seq["clips_sent"]} clips over {_sessions(seq["sessions"])}, one session after another. Concurrent:
{_sessions(conc["sessions"])} at once (starts staggered by 0.37 s), {args.concurrent_turns} clips each.
The server segments utterances itself, so one clip can be several turns (the digits clip pauses between
number groups; the reply to a group is cut by barge-in when the next group starts, and counts as cancelled).

The first three metrics of each run are the server's own `response.done.metrics`, in ms from the end of
user speech (the arrival of the audio where speech stopped): `final_ms` to `transcript.final`,
`first_token_ms` to the first reply text, `first_audio_ms` to the first reply audio frame. The `client_`
rows measure the same from the client: from sending the frame that carried the end of speech (the
`speech.stopped` position) to the arrival of `transcript.final`, the first `response.text.delta`, the first
binary audio frame. Percentiles are over every response that got that far (completed or cancelled).

{_md_table(latency_rows, left=2)}

{_md_table(phase_rows, left=1)}
{warning}
## What these numbers mean

- **{costliest} is the stage that costs CPU.** pocketsphinx spends {asr["cpu_per_audio_s"]:.3f} CPU s per
  second of audio, so one core keeps up with about {asr_capacity:.0f} people talking at once; Silero VAD
  ({vad["cpu_per_audio_s"]:.4f}, ~{vad["streams_per_core"]:.0f} streams/core) and espeak-ng
  ({tts["cpu_per_audio_s"]:.4f} CPU s per second of speech produced) are noise next to it. The ASR only runs
  while someone speaks; each ASR worker process decodes on one core, so a server holds about
  {asr_capacity:.0f} simultaneous talkers per `--asr-workers` process (the default is one per CPU).
- **Most of `final_ms` is waiting, not computing.** The endpoint is the VAD seeing {silence} ms of silence, so
  `final_ms` is about {silence} ms plus work; the sequential p50 of {_p(seq, "final_ms", "p50"):.0f} ms leaves
  {beyond(seq, "final_ms"):.0f} ms beyond the wait: the ASR finalize (in-process over whole 3-11 s clips:
  p50 {asr["latency_ms"].get("p50", float("nan")):.0f} ms, max {asr["latency_ms"].get("max", float("nan")):.0f} ms),
  the round trip to the ASR worker process, and rounding to 100 ms frames and 32 ms VAD windows.
  Lowering `min_silence_ms` (`session.update`) buys latency directly, at the price of cutting people off at pauses.
- **After the transcript, the offline pipeline adds almost nothing.** `first_token_ms` equals `final_ms` because
  the echo LLM answers at once; with a real model add its time to first token. `first_audio_ms` is
  {_p(seq, "first_audio_ms", "p50") - _p(seq, "first_token_ms", "p50"):.0f} ms after the first token at p50
  (espeak-ng synthesizes a sentence in ~{tts["latency_ms"].get("p50", float("nan")):.0f} ms).
- **Under load.** With {conc["sessions"]} concurrent sessions on {machine["nproc"]} CPUs, `first_audio_ms` p50/p99 went
  from {_p(seq, "first_audio_ms", "p50"):.0f}/{_p(seq, "first_audio_ms", "p99"):.0f} ms (sequential) to
  {_p(conc, "first_audio_ms", "p50"):.0f}/{_p(conc, "first_audio_ms", "p99"):.0f} ms, while the server process tree
  kept only {conc["server_cores_busy"]:.2f} cores busy on average and its event loop stayed responsive (loop lag
  above). So the tail is queueing rather than a full machine: each ASR worker process runs its sessions' decode
  calls one at a time (a 100 ms frame costs up to {asr_frame.get("max", float("nan")):.0f} ms), so an endpoint
  can wait behind other talkers' frames. More `--asr-workers` (here {asr_workers}) shorten that queue.
  Server CPU per second of input audio ({seq["server_cpu_per_audio_s"]:.3f} sequential,
  {conc["server_cpu_per_audio_s"]:.3f} concurrent) is below the ASR's in-process {asr["cpu_per_audio_s"]:.3f}
  because the ASR only runs on speech, and the harness streams silence while replies play.
- **The client sees what the server reports.** The `client_` percentiles differ from the server's by at most
  {client_gap:.0f} ms: loopback WebSocket transport adds nothing measurable; on a real network add one round trip.
"""


if __name__ == "__main__":
    main()
