"""Ingest capacity with semantic turn detection on, beside silence (issue 11, item 7).

The capacity suite's ingest run (`--asr none`: VAD and endpointing only, batched VAD; the server
pinned to CPU 0, the harness to CPU 1, so a session count is per core), once per policy:
- the server's `--turn-detection` sets the policy, and the scenario is the default one without its
  session settings (they pin `min_silence_ms`, which selects `silence` for every session);
- a capacity search from `--start` sessions in steps of as many (semantic costs a Smart Turn check per
  pause: its capacity is far below silence's, so the suite's steps of 100 would say nothing);
- the ingest verdict (server event-loop lag p99 <= 20 ms, no error, no dropped frame, and p95 speech
  end -> transcript.final within the SLO): the SLO is `max_silence_ms` + 500 ms for semantic, which
  waits up to `max_silence_ms` by design, and 500 + 500 ms for silence.
The server is started here rather than by the harness so that its turn counters can be read after
the run: a semantic session whose turn detector was busy ends the turn by silence (the fallback),
which the harness does not see; the share of those says whether the capacity found is semantic's.

    python -m bench.turncapacity [--write docs/performance.md] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.sections import write_section
from bench.turns import scrape_metrics
from hark.loadtest.scenario import load_scenario
from hark.loadtest.spawn import ServerProcess

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / ".cache" / "bench-turns" / "capacity"
MAX_SILENCE_MS = 2500  # the semantic policy's default cap (protocol/turn_detection.py)
SLO_MARGIN_MS = 500


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    turn_detection: dict[str, Any]
    slo_ms: int
    max_sessions: int


def policies(quick: bool) -> list[Policy]:
    return [
        Policy("silence", {"type": "silence", "silence_ms": 500}, 500 + SLO_MARGIN_MS, 20 if quick else 100),
        Policy("semantic", {"type": "semantic"}, MAX_SILENCE_MS + SLO_MARGIN_MS, 20 if quick else 400),
    ]


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)  # strings, numbers and booleans read the same in TOML


def scenario_text() -> str:
    """The default scenario without its session settings: the server's default policy applies."""
    base = load_scenario(None)
    keys = ("clips", "pause_ms", "turns_per_session", "barge_in_probability", "barge_in_after_ms")
    return "\n".join(f"{key} = {_toml(getattr(base, key))}" for key in (*keys, "turn_timeout_s", "seed")) + "\n"


def turn_reasons(http_url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in scrape_metrics(http_url).items():
        if name.startswith("hark_turns_total{"):
            out[name.split('source="', 1)[1].split('"', 1)[0]] = value
    return out


def run_policy(policy: Policy, out: Path, start: int, hold_s: int) -> dict[str, Any]:
    folder = out / policy.name
    folder.mkdir(parents=True, exist_ok=True)
    scenario = folder / "scenario.toml"
    scenario.write_text(scenario_text())
    pinned = (os.cpu_count() or 1) > 1
    server_args = ["--asr", "none", "--max-sessions", "5000", "--turn-detection", json.dumps(policy.turn_detection)]
    server = ServerProcess(server_args, log_path=folder / "server.log", cpus={0} if pinned else None, cwd=REPO)
    harness = ["--scenario", str(scenario), "--report", str(folder), "--find-capacity", "--step-ramp", "5"]
    harness += ["--sessions", str(start), "--step", str(start), "--step-hold", str(hold_s)]
    harness += ["--max-sessions", str(policy.max_sessions), "--slo-ms", str(policy.slo_ms)]
    harness += ["--client-cpus", "1"] if pinned else []
    with server:
        before = turn_reasons(server.http_url)
        cmd = [sys.executable, "-m", "hark.loadtest.cli", "--url", server.url, *harness]
        print(f"== {policy.name}: {shlex.join(cmd)}", flush=True)
        rc = subprocess.run(cmd, cwd=REPO, check=False).returncode
        after = turn_reasons(server.http_url)
    report: dict[str, Any] = json.loads((folder / "report.json").read_text())
    return {
        "policy": policy.name,
        "turn_detection": policy.turn_detection,
        "server_args": server_args,
        "pinned": pinned,
        "harness": ["hark-loadtest", "--url", "URL", *harness],
        "rc": rc,
        "turns_by_reason": {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)},
        "capacity": report.get("capacity"),
        "summary": {k: report["summary"].get(k) for k in ("cpu_per_session_second", "memory_per_session_mib")},
    }


def steps_cpu(result: dict[str, Any]) -> dict[int, float]:
    """CPU ms per session-second at each capacity step."""
    out: dict[int, float] = {}
    for step in (result.get("capacity") or {}).get("steps", []):
        seconds, cpu = step["end"] - step["start"], step.get("cpu_seconds")
        if cpu is not None and seconds > 0:
            out[step["sessions"]] = cpu / seconds / step["sessions"] * 1000.0
    return out


def render(results: Sequence[dict[str, Any]], when: str) -> str:
    by = {r["policy"]: r for r in results}
    lines = [
        "## Turn detection under load (ingest capacity, semantic against silence)",
        "",
        f"Measured by `python -m bench.turncapacity --write docs/performance.md`, {when}, on {os.cpu_count()} "
        "CPUs shared with other work. The ingest run of `make loadtest-suite` (`--asr none`, batched VAD, the "
        "default scenario's speech), server pinned to CPU 0 and harness to CPU 1 (a session count is per "
        "core), once per policy (the server's `--turn-detection`; the scenario without its session settings, "
        "which pin silence); the verdict is the ingest one (loop "
        "lag p99 <= 20 ms, p95 speech end -> final within the SLO, no error or dropped frame), with an SLO of "
        f"{MAX_SILENCE_MS} + {SLO_MARGIN_MS} ms for semantic (it waits up to max_silence_ms by design) and "
        f"500 + {SLO_MARGIN_MS} ms for silence.",
        "",
        "| policy | sessions held (one core) | broke at | why | turns by reason (server counters) | harness |",
        "|---|---:|---:|---|---|---|",
    ]
    for r in results:
        cap = r.get("capacity") or {}
        steps = cap.get("steps", [])
        why = "; ".join(steps[-1]["failures"]) if steps and not steps[-1]["passed"] else "-"
        reasons = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["turns_by_reason"].items())) or "-"
        harness = shlex.join(r["harness"])
        lines.append(
            f"| {r['policy']} | {cap.get('held') or 0} | {cap.get('broke_at') or '-'} | {why} | {reasons} "
            f"| `{harness}` (server: `{shlex.join(r['server_args'])}`) |"
        )
    sem, sil = steps_cpu(by.get("semantic", {})), steps_cpu(by.get("silence", {}))
    common = sorted(set(sem) & set(sil))
    lines += [
        "",
        "| sessions | silence CPU ms per session-second | semantic | semantic's extra |",
        "|---:|---:|---:|---:|",
    ]
    for n in sorted(set(sem) | set(sil)):
        a, b = sil.get(n), sem.get(n)
        extra = f"{b - a:.2f}" if a is not None and b is not None else "-"
        lines.append(f"| {n} | {'-' if a is None else f'{a:.2f}'} | {'-' if b is None else f'{b:.2f}'} | {extra} |")
    if common:
        mean_extra = sum(sem[n] - sil[n] for n in common) / len(common)
        lines += [
            "",
            f"Semantic detection costs {mean_extra:.2f} CPU ms per session-second more than silence here "
            f"(mean over {len(common)} common steps); the target of issue 11 is >= 400 sessions per core.",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--write", type=Path, help="write the section 'turn-load' into this page")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="reports of both runs")
    parser.add_argument("--quick", action="store_true", help="tiny steps: checks this command, measures nothing")
    parser.add_argument("--render", action="store_true", help="run nothing: rewrite the section from --out")
    args = parser.parse_args(argv)
    results_path = args.out / "results.json"
    if args.render:
        saved = json.loads(results_path.read_text())
    else:
        start, hold = (10, 4) if args.quick else (20, 15)
        when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        saved = {"when": when, "results": [run_policy(p, args.out, start, hold) for p in policies(args.quick)]}
        results_path.write_text(json.dumps(saved, indent=1))
    text = render(saved["results"], saved["when"])
    print(text)
    if args.write:
        write_section(args.write, "turn-load", text)


if __name__ == "__main__":
    main()
