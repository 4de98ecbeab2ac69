"""Ingest sessions per core with semantic turn detection on, beside silence (issue 11, item 7).

The capacity suite's ingest run (`--asr none`: VAD and endpointing only, batched VAD; the server
pinned to CPU 0, the harness to CPU 1, so a session count is per core), as fixed runs of N
sessions each on a fresh server, N growing until one fails, once per policy:
- the server's `--turn-detection` sets the policy; the scenario is the default one without its
  session settings (they pin `min_silence_ms`, which selects `silence` for every session);
- a run holds when it passes the ingest verdict (server event-loop lag p99 <= 20 ms, no error, no
  dropped frame, p95 speech end -> transcript.final within the SLO: `max_silence_ms` + 500 ms for
  semantic, which waits up to `max_silence_ms` by design, 500 + 500 ms for silence) **and**, for
  semantic, at most FALLBACK_SHARE of its turns ended by the silence fallback. A busy turn detector
  (its bounded queue full) leaves a pause to the silence rule, so a semantic server past its
  capacity still passes the harness's verdict while doing silence's work; the server's turn
  counters by reason, read after each run (why this starts the server itself), show it.

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


FALLBACK_SHARE = 0.05
# a semantic turn that ends at max_silence_ms on this scenario's finished sentences means the
# detector's answer came too late (it refuses checks past 1 s of queued model time, so few get there)
CAP_SHARE = 0.10
SESSIONS = (10, 20, 30, 40, 60, 80, 120, 160, 240, 320, 400)  # 400: the target
RUN_S, RAMP_S = 30, 5


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    turn_detection: dict[str, Any]
    slo_ms: int


POLICIES = (
    Policy("semantic", {"type": "semantic"}, MAX_SILENCE_MS + SLO_MARGIN_MS),
    Policy("silence", {"type": "silence", "silence_ms": 500}, 500 + SLO_MARGIN_MS),
)


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


def run_once(policy: Policy, sessions: int, out: Path, run_s: int) -> dict[str, Any]:
    """`sessions` sessions for `run_s` seconds on a fresh pinned server."""
    folder = out / policy.name / str(sessions)
    folder.mkdir(parents=True, exist_ok=True)
    scenario = folder / "scenario.toml"
    scenario.write_text(scenario_text())
    pinned = (os.cpu_count() or 1) > 1
    server_args = ["--asr", "none", "--max-sessions", "5000", "--turn-detection", json.dumps(policy.turn_detection)]
    server = ServerProcess(server_args, log_path=folder / "server.log", cpus={0} if pinned else None, cwd=REPO)
    harness = ["--scenario", str(scenario), "--report", str(folder), "--sessions", str(sessions)]
    harness += ["--ramp", str(RAMP_S), "--duration", str(run_s), "--slo-ms", str(policy.slo_ms)]
    harness += ["--client-cpus", "1"] if pinned else []
    with server:
        before = turn_reasons(server.http_url)
        cmd = [sys.executable, "-m", "hark.loadtest.cli", "--url", server.url, *harness]
        print(f"== {policy.name} x {sessions}: {shlex.join(cmd)}", flush=True)
        rc = subprocess.run(cmd, cwd=REPO, check=False, stdout=subprocess.DEVNULL).returncode
        after = turn_reasons(server.http_url)
    report: dict[str, Any] = json.loads((folder / "report.json").read_text())
    reasons = {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}
    turns = sum(reasons.values())
    fallback = reasons.get("silence", 0.0) / turns if policy.name == "semantic" and turns else 0.0
    verdict = report["verdict"]
    final = report["summary"]["client_ms"]["final_ms"]
    cpu = report["summary"].get("cpu_per_session_second")
    result = {
        "policy": policy.name,
        "sessions": sessions,
        "rc": rc,
        "passed": verdict["passed"],
        "failures": [f"{c['name']} {c['value']}" for c in verdict["checks"] if not c["ok"]],
        "turns_by_reason": reasons,
        "fallback_share": fallback,
        "cap_share": reasons.get("max_silence", 0.0) / turns if turns else 0.0,
        "final_p50_ms": final.get("p50"),
        "final_p95_ms": final.get("p95"),
        "cpu_ms_per_session_second": None if cpu is None else cpu * 1000.0,
        "server_args": server_args,
        "harness": ["hark-loadtest", "--url", "URL", *harness],
    }
    result["held"] = holds(result)
    print(
        f"   {'held' if result['held'] else 'BROKE'}: reasons {reasons}, fallback {100 * fallback:.0f} %, "
        f"final p50 {final.get('p50')} ms, CPU {result['cpu_ms_per_session_second']} ms/session-s",
        flush=True,
    )
    return result


def holds(result: dict[str, Any]) -> bool:
    """The ingest verdict, and semantic still deciding: few fallbacks, few turns left to the cap."""
    share = result.get("cap_share", 0.0)
    return bool(result["passed"]) and result["fallback_share"] <= FALLBACK_SHARE and share <= CAP_SHARE


def run_all(out: Path, counts: Sequence[int], run_s: int) -> list[dict[str, Any]]:
    """Semantic until its detector is saturated (the harness's verdict fails or turns fall back to
    silence: past the count that holds, to show how it degrades), then silence at the same counts."""
    results: list[dict[str, Any]] = []
    semantic, silence = POLICIES
    tried = []
    for n in counts:
        tried.append(n)
        results.append(run_once(semantic, n, out, run_s))
        last = results[-1]
        if not last["passed"] or last["fallback_share"] > FALLBACK_SHARE:
            break
    results += [run_once(silence, n, out, run_s) for n in tried]
    return results


def render(results: Sequence[dict[str, Any]], when: str) -> str:
    runs = {(r["policy"], r["sessions"]): r for r in results}
    counts = sorted({r["sessions"] for r in results})

    def held(policy: str) -> int:
        ok = [n for n in counts if (policy, n) in runs and holds(runs[(policy, n)])]
        return max(ok, default=0)

    first = results[0]
    lines = [
        "## Turn detection under load (ingest sessions per core, semantic against silence)",
        "",
        f"Measured by `python -m bench.turncapacity --write docs/performance.md`, {when}, on {os.cpu_count()} "
        "CPUs shared with other work: fixed runs of N sessions (the default scenario's speech, its session "
        f"settings left out; {RAMP_S} s ramp, {RUN_S} s) on a fresh ingest server each (`--asr none`, batched "
        "VAD, pinned to CPU 0; the harness on CPU 1: a session count is per core), the policy set by the "
        "server's `--turn-detection`. A run holds when it passes the harness's ingest verdict (loop lag p99 "
        f"<= 20 ms, no error or dropped frame, p95 speech end -> final <= {MAX_SILENCE_MS} + {SLO_MARGIN_MS} ms "
        f"for semantic, 500 + {SLO_MARGIN_MS} ms for silence) and, for semantic, at most "
        f"{100 * FALLBACK_SHARE:.0f} % of its turns ended by the silence fallback of a busy detector and at "
        f"most {100 * CAP_SHARE:.0f} % at `max_silence_ms` (the scenario's sentences are finished: a turn "
        "left to the cap means the detector answered too late; it refuses a check once those ahead of it "
        "hold 1 s of model time, and that pause falls back to the silence rule). Both come from the "
        "server's turn counters by reason: the harness's verdict cannot "
        "see them. Semantic's runs go on until its detector is saturated (verdict failed or fallbacks), "
        "to show how it degrades; silence ran the same counts, for the cost beside it.",
        "",
        f"Sessions per core held: semantic {held('semantic')}, silence {held('silence')} (or more: silence's "
        "capacity is in the 'loadtest' section); the issue's target for semantic is >= 400.",
        "",
        "| sessions | policy | held | turns by reason | fallback / cap | final p50 / p95 | CPU ms per session-second"
        " | semantic's extra | failed checks |",
        "|---:|---|---|---|---:|---:|---:|---:|---|",
    ]
    for n in counts:
        for policy in ("semantic", "silence"):
            r = runs.get((policy, n))
            if r is None:
                continue
            base = runs.get(("silence", n), {}).get("cpu_ms_per_session_second")
            cpu = r["cpu_ms_per_session_second"]
            extra = "-" if policy != "semantic" or base is None or cpu is None else f"{cpu - base:.2f}"
            reasons = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["turns_by_reason"].items())) or "-"
            lines.append(
                f"| {n} | {policy} | {'yes' if holds(r) else '**no**'} | {reasons} "
                f"| {100 * r['fallback_share']:.0f} % / {100 * r.get('cap_share', 0.0):.0f} % "
                f"| {_f(r['final_p50_ms'])} / {_f(r['final_p95_ms'])} ms | {_f(cpu, 2)} | {extra} "
                f"| {'; '.join(r['failures']) or '-'} |"
            )
    lines += [
        "",
        "Commands: the server `python -m hark.server.app --host 127.0.0.1 --port 0 "
        f"{shlex.join(first['server_args'])}` "
        f"(silence: the same with its policy), the harness `{shlex.join(first['harness'])}` with N in place of the "
        "session count.",
    ]
    return "\n".join(lines)


def _f(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--write", type=Path, help="write the section 'turn-load' into this page")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="reports of both runs")
    parser.add_argument("--quick", action="store_true", help="5 and 10 sessions, 8 s: checks this command only")
    parser.add_argument("--render", action="store_true", help="run nothing: rewrite the section from --out")
    args = parser.parse_args(argv)
    results_path = args.out / "results.json"
    if args.render:
        saved = json.loads(results_path.read_text())
    else:
        counts, run_s = ((5, 10), 8) if args.quick else (SESSIONS, RUN_S)
        when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        saved = {"when": when, "results": run_all(args.out, counts, run_s)}
        results_path.write_text(json.dumps(saved, indent=1))
    text = render(saved["results"], saved["when"])
    print(text)
    if args.write:
        write_section(args.write, "turn-load", text)


if __name__ == "__main__":
    main()
