"""The capacity measurements of docs/performance.md ("Many sessions"), in one command.

Runs `hark-loadtest` several times against servers it spawns, reads each report.json and writes
the "loadtest" section of docs/performance.md with every command line used. On a 2-core machine
the server is pinned to CPU 0 and the harness (and the SGLang simulator, standing in for a GPU
host) to CPU 1, so "sessions per core" is measured, not inferred. `--quick` shrinks every run (to
check the suite itself, not to measure).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.sections import write_section
from standins.sglang.cli import parse_ready_line

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    name: str
    what: str
    server_args: str
    args: tuple[str, ...]
    pinned: bool = True


def plan(quick: bool, sim_url: str) -> list[Run]:
    hold = "4" if quick else "15"
    long_hold = "6" if quick else "30"
    ingest_step = "20" if quick else "100"
    ingest_max = "40" if quick else "900"
    capacity = ("--find-capacity", "--step-ramp", "5")
    ingest = "--asr none --max-sessions 5000"
    step, workers_max = ("20", "40") if quick else ("200", "1600")
    ingest_capacity: tuple[str, ...] = (*capacity, "--sessions", ingest_step, "--step", ingest_step)
    ingest_capacity += ("--step-hold", hold, "--max-sessions", ingest_max)
    embedded = "--asr-workers 1 --max-sessions 500"
    return [
        Run("ingest", "ingest path (`--asr none`), batched VAD", ingest, ingest_capacity),
        Run(
            "ingest-no-batch",
            "ingest path, per-session VAD (`--no-vad-batching`)",
            f"{ingest} --no-vad-batching",
            ingest_capacity,
        ),
        Run("ingest-1", "ingest path, 1 session", ingest, ("--sessions", "1", "--ramp", "0", "--duration", hold)),
        Run(
            "embedded",
            "embedded pipeline (pocketsphinx, echo, espeak-ng; 1 ASR process)",
            embedded,
            (*capacity, "--sessions", "2", "--step", "2", "--step-hold", long_hold, "--max-sessions", "24"),
        ),
        Run(
            "embedded-1",
            "embedded pipeline, 1 session",
            embedded,
            ("--sessions", "1", "--ramp", "0", "--duration", long_hold),
        ),
        Run(
            "simulator",
            "embedded pipeline with the SGLang simulator in place of echo",
            f"{embedded} --llm sglang --llm-url {sim_url}",
            (*capacity, "--sessions", "2", "--step", "2", "--step-hold", long_hold, "--max-sessions", "24"),
        ),
        # on 2 cores the harness cannot have a core of its own here: both runs share the machine
        # with it alike, so they compare with each other, not with the pinned rows
        *(
            Run(
                f"workers-{n}",
                f"ingest path, {n} server process{'es' if n > 1 else ''}, unpinned (harness on the same 2 cores)",
                f"{ingest} --workers {n}",
                (*capacity, "--sessions", step, "--step", step, "--step-hold", hold, "--max-sessions", workers_max),
                pinned=False,
            )
            for n in (1, 2)
        ),
    ]


@contextmanager
def simulator() -> Iterator[str]:
    """The SGLang simulator on CPU 1 (it stands in for the GPU host, not for the server)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "standins.sglang", "--host", "127.0.0.1", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, {1})) if (os.cpu_count() or 1) > 1 else None,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    url = parse_ready_line(line)
    try:
        if url is None:
            raise RuntimeError(f"the SGLang simulator did not start: {line!r}")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def command(run: Run, report: Path) -> list[str]:
    cmd = ["hark-loadtest", "--spawn-server", run.server_args, "--report", str(report), *run.args]
    if run.pinned and (os.cpu_count() or 1) > 1:
        cmd += ["--server-cpus", "0", "--client-cpus", "1"]
    return cmd


def execute(run: Run, out: Path) -> dict[str, Any]:
    report = out / run.name
    cmd = command(run, report)
    print(f"\n== {run.name}: {shlex.join(cmd)}", flush=True)
    started = time.monotonic()
    rc = subprocess.run([sys.executable, "-m", "hark.loadtest.cli", *cmd[1:]], cwd=REPO, check=False).returncode
    (report / "suite.json").write_text(
        json.dumps({"rc": rc, "cmd": shlex.join(cmd), "wall_s": time.monotonic() - started})
    )
    result = load_result(run, out)
    if result is None:
        raise RuntimeError(f"{run.name}: hark-loadtest wrote no report (exit {rc})")
    return result


def load_result(run: Run, out: Path) -> dict[str, Any] | None:
    """A run's report.json with how it was run, or None if it has not run in `out`."""
    report = out / run.name
    if not (report / "report.json").exists():
        return None
    result: dict[str, Any] = json.loads((report / "report.json").read_text())
    how_path = report / "suite.json"
    if how_path.exists():
        how = json.loads(how_path.read_text())
    else:  # a report written by hand with the same command
        how = {"rc": 0 if result["verdict"]["passed"] else 1, "cmd": shlex.join(command(run, report))}
        how["wall_s"] = result["meta"]["wall_s"]
    result["_rc"], result["_cmd"], result["_wall_s"] = how["rc"], how["cmd"], how["wall_s"]
    return result


def _f(v: Any, digits: int = 0, unit: str = "") -> str:
    return "-" if v is None else f"{v:.{digits}f}{unit}"


def _p95_final(turns: Sequence[dict[str, Any]], start: float, end: float) -> float | None:
    """Reports from before steps recorded it: from the turns whose speech ended in the step."""
    values = sorted(
        t["final_ms"]
        for t in turns
        if t.get("final_ms") is not None and t.get("speech_end_at") is not None and start <= t["speech_end_at"] <= end
    )
    return values[min(len(values) - 1, int(0.95 * len(values)))] if values else None


def render(results: dict[str, dict[str, Any]], runs: Sequence[Run], quick: bool) -> str:
    starts = sorted(str(r["meta"]["started_utc"]) for r in results.values())
    when = f"runs started {starts[0]} to {starts[-1]}" if starts else "no runs"
    lines = [
        "## Many sessions: capacity, cost per session, batched VAD, worker processes",
        "",
        f"Measured by `make loadtest-suite` (`python -m bench.capacity_suite --write docs/performance.md`), {when},"
        f" on {os.cpu_count()} CPUs shared with other work (noisy: a step near the limit can go either way)."
        + (" **--quick: shortened runs, not measurements.**" if quick else "")
        + " The server is pinned to CPU 0 and the harness (and the SGLang simulator) to CPU 1 unless a row"
        " says otherwise, so a session count is per core. Every number comes from the harness's report.json"
        " of the run named.",
        "",
        "Capacity: `--find-capacity` adds sessions step by step, each step held for the time in its command;",
        "a step holds when p95 speech end → first reply audio ≤ min_silence_ms + 500 ms (1000 ms) with no",
        "errors or dropped frames (ingest path: server event-loop lag p99 ≤ 20 ms, p95 speech end → final ≤ 1000 ms,",
        "no dropped frames: a server behind real time processes frames late rather than dropping them).",
        "",
        "| run | what | sessions held (one core when pinned) | broke at | CPU s per session-second | memory per session"
        " | loop lag p99 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        r = results.get(run.name)
        if r is None:
            continue
        s = r["summary"]
        cap = r.get("capacity") or {}
        held = cap.get("held") if r["meta"]["find_capacity"] else f"({r['meta']['sessions']} run)"
        mem = s.get("memory_per_session_mib")
        lines.append(
            f"| {run.name} | {run.what} | {held if held is not None else 0} | {cap.get('broke_at') or '-'} | "
            f"{_f(s.get('cpu_per_session_second'), 4)} | {_f(mem, 1, ' MiB')} | "
            f"{_f(s['server'].get('loop_lag_p99_ms'), 1, ' ms')} |"
        )
    lines += ["", "### Cost as sessions grow (each capacity step)", ""]
    lines += [
        "| run | sessions | p50 / p95 first audio | p95 final | loop lag p99 | server CPU cores"
        " | CPU ms per session-second | held |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        r = results.get(run.name)
        if r is None or not r.get("capacity"):
            continue
        for step in r["capacity"]["steps"]:
            seconds = step["end"] - step["start"]
            cpu = step.get("cpu_seconds")
            cores = None if cpu is None or seconds <= 0 else cpu / seconds
            per = None if cores is None else cores / step["sessions"] * 1000.0
            fa = f"{_f(step.get('p50_first_audio_ms'))} / {_f(step.get('p95_first_audio_ms'))} ms"
            fa = fa if step.get("p95_first_audio_ms") is not None else "-"
            final = step.get("p95_final_ms", _p95_final(r["turns"], step["start"], step["end"]))
            lag = _f(step.get("loop_lag_p99_ms"), 1, " ms")
            held = "yes" if step["passed"] else "no: " + "; ".join(step["failures"])
            lines.append(
                f"| {run.name} | {step['sessions']} | {fa} | {_f(final, 0, ' ms')} | {lag} | {_f(cores, 2)} | "
                f"{_f(per, 2)} | {held} |"
            )
    lines += ["", "### Reading", "", *reading(results)]
    lines += ["", "### Commands", ""]
    lines += [
        f"- {run.name}: `{r['_cmd']}` (exit {r['_rc']}, {r['_wall_s']:.0f} s)"
        for run in runs
        if (r := results.get(run.name)) is not None
    ]
    return "\n".join(lines) + "\n"


def _held(results: dict[str, dict[str, Any]], name: str) -> int | None:
    r = results.get(name)
    held = (r.get("capacity") or {}).get("held") if r is not None else None
    return held if isinstance(held, int) else None


def _step_cost(results: dict[str, dict[str, Any]], name: str, sessions: int) -> float | None:
    """CPU ms per session-second at one capacity step of a run."""
    r = results.get(name)
    for step in (r.get("capacity") or {}).get("steps", []) if r is not None else []:
        seconds = step["end"] - step["start"]
        if step["sessions"] == sessions and step.get("cpu_seconds") is not None and seconds > 0:
            return float(step["cpu_seconds"]) / float(seconds) / sessions * 1000.0
    return None


def reading(results: dict[str, dict[str, Any]]) -> list[str]:
    """The comparisons the issue asks for, computed from the runs above."""
    out = []
    batched, single = _held(results, "ingest"), _held(results, "ingest-no-batch")
    if batched and single:
        cost_b, cost_s = _step_cost(results, "ingest", single), _step_cost(results, "ingest-no-batch", single)
        costs = (
            f"; at {single} sessions the server spent {cost_b:.2f} against {cost_s:.2f} CPU ms per session-second"
            if cost_b is not None and cost_s is not None
            else ""
        )
        out.append(
            f"- Batched VAD: {batched} sessions on one core against {single} with per-session VAD "
            f"({batched / single:.1f}x){costs}. Per-session VAD falls behind (late endpoints) before the loop lags."
        )
    w1, w2 = _held(results, "workers-1"), _held(results, "workers-2")
    if w1 and w2:
        out.append(
            f"- Worker processes, harness sharing the same 2 cores: 1 process held {w1}, `--workers 2` held {w2} "
            f"({w2 / w1:.2f}x). One process already uses more than a core (the VAD batches run on a pool thread, "
            "outside the GIL); a second process adds the rest of the machine, less what the harness takes."
        )
    one, many = results.get("ingest-1"), _step_cost(results, "ingest", batched or 0)
    if one is not None and many is not None:
        solo = one["summary"].get("cpu_per_session_second")
        if solo is not None:
            out.append(
                f"- Cost per session falls as sessions grow: {solo * 1000:.1f} CPU ms per session-second for one "
                f"ingest session (the server's own timers dominate), {many:.2f} at {batched} (fuller VAD batches)."
            )
    emb, sim = _held(results, "embedded"), _held(results, "simulator")
    if emb is not None and sim is not None:
        out.append(
            f"- Embedded pipeline: {emb} sessions per core with echo, {sim} with the SGLang simulator in its place "
            "(the ASR worker sharing the core is the limit; the simulator's modelled GPU latency adds ~100 ms to "
            "first audio but its replies cost less to synthesize than echo's). Memory per session there is "
            "mostly a pocketsphinx decoder per active stream (~85 MiB)."
        )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.capacity_suite", description=__doc__)
    p.add_argument("--write", metavar="PATH", help="write the section into this page (docs/performance.md)")
    p.add_argument("--out", type=Path, default=Path("loadtest-report/suite"), help="reports of every run")
    p.add_argument("--only", nargs="*", help="run only these (names from the plan)")
    p.add_argument("--quick", action="store_true", help="short runs: checks the suite, measures nothing")
    p.add_argument("--render", action="store_true", help="run nothing: rewrite the section from the reports in --out")
    args = p.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    with simulator() as sim_url:
        runs = plan(args.quick, sim_url)
        for run in runs:
            if args.render or (args.only and run.name not in args.only):
                continue
            results[run.name] = execute(run, args.out)
    for run in runs:  # with --only, the other runs' last reports in --out stay in the table
        if run.name not in results and (earlier := load_result(run, args.out)) is not None:
            results[run.name] = earlier
    markdown = render(results, runs, args.quick)
    print("\n" + markdown)
    if args.write:
        write_section(args.write, "loadtest", markdown)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
