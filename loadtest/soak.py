"""Soak: N sessions of real speech for M minutes against a spawned server, watching for leaks.

    python -m hark.loadtest.soak --sessions 16 --minutes 10      # `make soak`
    python -m hark.loadtest.soak --sessions 4 --minutes 1 --max-rss-slope 30   # the short one in `make test`

It spawns a hark-server (`spawn.ServerProcess`), drives it with the load harness's devices (the
default scenario: real corpus speech, turn after turn, at real time), and samples every few seconds:
the resident memory of the server process (/proc/PID/status) and of it with its ASR workers
(`hark_server_resident_memory_bytes`), the asyncio tasks of its loop (`hark_tasks`), its open file
descriptors (/proc/PID/fd) and the audio frame counters. After the devices have closed and the
server has settled it checks:

- the server process's RSS slope (least squares over the samples after the warm-up) <=
  --max-rss-slope MiB/min. The ASR workers' memory saw-tooths by hundreds of MiB as decoders are
  taken per utterance and freed after the reply, so their slope over minutes is noise; it is
  reported (the slope of each fifth's lowest sample, and what is kept once idle again), not judged;
- tasks and fds back to their idle baseline (a small allowance: keepalive timers, log files);
- frames in = processed + dropped (no frame lost unaccounted);
- sessions_open back to 0.

Verdict on stdout (and --json); exit 1 on a leak, 2 when the run itself could not happen or its
sessions ended before it did (a client starved off the CPU, say).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .recorder import Recorder
from .runner import Load, grace_s
from .scenario import load_clips, load_scenario
from .scrape import metrics_url, parse_metrics
from .spawn import ServerProcess, ServerStartError

TASKS = "hark_tasks"
TASK_ALLOWANCE = 3  # a timer or a metrics request in flight at the moment of the sample
FD_ALLOWANCE = 4
SETTLE_S = 30.0  # how long closed sessions get to release everything before the final sample


@dataclass(slots=True)
class Point:
    at: float  # seconds since the devices started
    rss_mib: float | None  # the server and its ASR workers (hark_server_resident_memory_bytes)
    tasks: float | None
    fds: int | None
    sessions_open: float | None
    server_rss_mib: float | None = None  # the server process alone (/proc): the slope the verdict checks


@dataclass(slots=True)
class SoakResult:
    sessions: int
    minutes: float
    warmup_s: float
    points: list[Point] = field(default_factory=list)
    baseline: Point | None = None
    final: Point | None = None
    frames_in: float | None = None
    frames_processed: float | None = None
    frames_dropped: dict[str, float] | None = None
    turns: int = 0
    refused: int = 0
    errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    first_refusal: str = ""  # why the server refused, when it did (server_busy says which signal)
    rss_slope_mib_per_min: float | None = None  # the server process, every sample after warm-up: the verdict's
    tree_floor_slope_mib_per_min: float | None = None  # server + ASR workers, floor_slope (reported)
    tree_retained_mib: float | None = None  # server + ASR workers: settled after the run minus idle before
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.checks)

    @property
    def fewest_open(self) -> float | None:
        """The fewest sessions open after the ramp: below the admitted count, the soak did not soak."""
        held = [p.sessions_open for p in self.points if p.at >= self.warmup_s and p.sessions_open is not None]
        return min(held) if held else None

    @property
    def held(self) -> bool:
        fewest = self.fewest_open
        return fewest is not None and fewest >= self.sessions - self.refused


def process_rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def slope_per_min(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Least-squares slope of ys over xs (seconds), per minute."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    return 60.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var


class _Sampler:
    def __init__(self, server: ServerProcess) -> None:
        self._server = server
        self._url = metrics_url(server.url)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.text = ""

    async def point(self, at: float) -> Point:
        async with self._http.get(self._url) as resp:
            resp.raise_for_status()
            self.text = await resp.text()
        sample = parse_metrics(self.text)
        tasks = next(
            (s.value for f in text_string_to_metric_families(self.text) for s in f.samples if s.name == TASKS), None
        )
        rss = sample.rss_bytes / 2**20 if sample.rss_bytes is not None else None
        pid = self._server.process.pid
        return Point(round(at, 1), rss, tasks, open_fds(pid), sample.sessions_open, process_rss_mib(pid))

    async def aclose(self) -> None:
        await self._http.close()


async def soak(args: argparse.Namespace) -> SoakResult:
    scenario = load_scenario(args.scenario)
    clips = load_clips(scenario)
    duration_s = args.minutes * 60.0
    result = SoakResult(
        args.sessions, args.minutes, args.warmup if args.warmup is not None else min(60.0, duration_s / 4)
    )
    server_args = ["--max-sessions", str(max(args.sessions, 1) * 2), *args.server_args]
    async with ServerProcess(server_args, log_path=args.log) as server:
        sampler = _Sampler(server)
        try:
            await asyncio.sleep(2.0)  # let the loop-lag sampler and the workers settle
            result.baseline = await sampler.point(0.0)
            rec = Recorder()
            load = Load(server.url, scenario, clips, rec)
            started = time.monotonic()
            ramp = asyncio.create_task(load.add(args.sessions, args.ramp))
            while (elapsed := time.monotonic() - started) < duration_s:
                result.points.append(await sampler.point(elapsed))
                _progress(result.points[-1], rec)
                await asyncio.sleep(min(args.sample_s, max(0.0, duration_s - elapsed)))
            await ramp
            await load.finish(grace_s(scenario, clips))
            result.turns, result.refused, result.errors = len(rec.turns), rec.refused, len(rec.errors)
            result.error_codes = dict(rec.error_counts)
            result.first_refusal = next((e.message for e in rec.errors if e.code == "server_busy"), "")
            settle_until = time.monotonic() + SETTLE_S
            while True:  # closed sessions release their tasks and sockets within a few seconds
                final = await sampler.point(time.monotonic() - started)
                if _settled(result.baseline, final) or time.monotonic() > settle_until:
                    break
                await asyncio.sleep(1.0)
            result.final = final
            sample = parse_metrics(sampler.text)
            result.frames_in, result.frames_processed = sample.frames, sample.processed
            result.frames_dropped = sample.dropped
        finally:
            await sampler.aclose()
    _judge(result, args.max_rss_slope)
    return result


def _settled(baseline: Point, now: Point) -> bool:
    return (
        now.sessions_open == 0
        and now.tasks is not None
        and baseline.tasks is not None
        and now.tasks <= baseline.tasks + TASK_ALLOWANCE
        and (now.fds or 0) <= (baseline.fds or 0) + FD_ALLOWANCE
    )


def floor_slope(points: Sequence[Point], windows: int = 5) -> float | None:
    """Slope of the lowest RSS in each of `windows` equal spans, per minute.

    The ASR workers' memory rises with every open utterance and falls when its decoder is freed
    after the reply (hundreds of MiB either way with a dozen speakers), so single samples saw-tooth;
    a leak is the floor between the teeth rising."""
    if len(points) < windows:
        return None
    start, end = points[0].at, points[-1].at
    span = (end - start) / windows or 1.0
    floors: dict[int, tuple[float, float]] = {}
    for p in points:
        i = min(int((p.at - start) / span), windows - 1)
        if p.rss_mib is not None and (i not in floors or p.rss_mib < floors[i][1]):
            floors[i] = (start + (i + 0.5) * span, p.rss_mib)
    return slope_per_min([x for x, _ in floors.values()], [y for _, y in floors.values()])


def _judge(result: SoakResult, max_slope: float) -> None:
    steady = [p for p in result.points if p.at >= result.warmup_s and p.rss_mib is not None]
    result.tree_floor_slope_mib_per_min = floor_slope(steady)
    own = [p for p in steady if p.server_rss_mib is not None]
    result.rss_slope_mib_per_min = slope_per_min([p.at for p in own], [p.server_rss_mib or 0.0 for p in own])
    base, final = result.baseline, result.final
    assert base is not None and final is not None
    if base.rss_mib is not None and final.rss_mib is not None:
        result.tree_retained_mib = final.rss_mib - base.rss_mib
    checks = result.checks
    slope = result.rss_slope_mib_per_min
    checks.append(
        (
            "RSS slope after warm-up",
            slope is not None and slope <= max_slope,
            f"server process {slope:.2f} MiB/min (limit {max_slope:g}); with the ASR workers: floor "
            f"{_num(result.tree_floor_slope_mib_per_min)} MiB/min, {_num(result.tree_retained_mib)} MiB kept after"
            if slope is not None
            else "too few samples",
        )
    )
    checks.append(
        (
            "asyncio tasks back to baseline",
            final.tasks is not None and base.tasks is not None and final.tasks <= base.tasks + TASK_ALLOWANCE,
            f"{base.tasks} before, {final.tasks} after",
        )
    )
    checks.append(
        (
            "open fds back to baseline",
            final.fds is not None and base.fds is not None and final.fds <= base.fds + FD_ALLOWANCE,
            f"{base.fds} before, {final.fds} after",
        )
    )
    checks.append(("sessions_open back to 0", final.sessions_open == 0, f"{final.sessions_open}"))
    dropped = sum((result.frames_dropped or {}).values())
    balanced = result.frames_in is not None and result.frames_processed is not None
    balanced = balanced and result.frames_in == (result.frames_processed or 0.0) + dropped
    checks.append(
        (
            "frames in = processed + dropped",
            balanced,
            f"{result.frames_in} = {result.frames_processed} + {dropped} {result.frames_dropped}",
        )
    )
    checks.append(("turns completed", result.turns > 0, f"{result.turns} turns"))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _progress(point: Point, rec: Recorder) -> None:
    print(
        f"[{point.at:7.1f} s] sessions {point.sessions_open} rss {_num(point.server_rss_mib)} MiB "
        f"(with ASR workers {_num(point.rss_mib)}) "
        f"tasks {point.tasks} fds {point.fds} turns {len(rec.turns)} refused {rec.refused}",
        flush=True,
    )


def report(result: SoakResult) -> str:
    lines = [
        f"soak: {result.sessions} sessions x {result.minutes:g} min, {result.turns} turns, "
        f"{result.refused} refused, {result.errors} errors {result.error_codes or ''}",
    ]
    if result.first_refusal:
        lines.append(f"  first refusal: {result.first_refusal}")
    for name, ok, detail in result.checks:
        lines.append(f"  {'ok  ' if ok else 'LEAK'} {name}: {detail}")
    if not result.held:
        lines.append(
            f"  NOTE sessions ended early: {result.fewest_open} open at the fewest of "
            f"{result.sessions - result.refused} admitted (the run is no soak; exit 2 unless a leak shows)"
        )
    lines.append(f"verdict: {'no leak' if result.passed else 'LEAK'}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m hark.loadtest.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=16)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--ramp", type=float, default=10.0, help="seconds over which sessions start")
    p.add_argument("--warmup", type=float, help="seconds left out of the RSS slope (default min(60, a quarter))")
    p.add_argument("--sample-s", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--max-rss-slope", type=float, default=2.0, help="MiB per minute past which memory leaks")
    p.add_argument("--scenario", type=Path, help="scenario TOML (default loadtest/scenarios/default.toml)")
    p.add_argument("--log", type=Path, default=Path("loadtest-report/soak-server.log"), help="the spawned server's log")
    p.add_argument("--json", type=Path, help="write the samples and the verdict here")
    p.add_argument("server_args", nargs="*", help="after --: more hark-server arguments")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.sessions < 1 or args.minutes <= 0:
        raise SystemExit("--sessions must be >= 1 and --minutes > 0")
    try:
        result = asyncio.run(soak(args))
    except (ServerStartError, OSError, ValueError, aiohttp.ClientError) as exc:
        print(f"soak: could not run: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(report(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {**dataclasses.asdict(result), "passed": result.passed, "held": result.held}
        args.json.write_text(json.dumps(record, indent=1))
    raise SystemExit(1 if not result.passed else 0 if result.held else 2)


if __name__ == "__main__":
    main()
