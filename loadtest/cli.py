"""hark-loadtest: many virtual devices against one hark-server, a JSON + HTML report, an SLO verdict.

Exit status: 0 the SLO held (with --find-capacity: some session count held), 1 it did not,
2 bad usage or the server could not be started, 130 interrupted (Ctrl-C; the partial report is written).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import os
import platform
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import progress
from .analysis import run_summary, series
from .capacity import CapacityPlan, CapacityResult, find_capacity
from .realtime_device import RealtimeDevice, realtime_url
from .recorder import Recorder
from .report import write_html, write_json
from .runner import Load, run_fixed
from .scenario import Scenario, load_clips, load_scenario
from .scrape import Scraper
from .slo import DEFAULT_MAX_LOOP_LAG_MS, Verdict, default_slo_ms, evaluate
from .spawn import ServerProcess, parse_cpus

DEFAULT_URL = "ws://127.0.0.1:8765/v1/stream"
PROTOCOLS = ("hark.v1", "openai-realtime")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hark-loadtest",
        description="Load-test a hark-server with virtual devices streaming real-time audio over hark.v1.",
    )
    p.add_argument("--url", help=f"server to test (default {DEFAULT_URL}); not with --spawn-server")
    p.add_argument(
        "--spawn-server",
        metavar="ARGS",
        help='run "python -m hark.server.app --host 127.0.0.1 --port 0 ARGS" for the test, stop it after '
        '("": defaults)',
    )
    p.add_argument("--server-cpus", help="pin the spawned server (and its workers) to these CPUs, e.g. 0 or 0-1")
    p.add_argument("--client-cpus", help="pin this harness to these CPUs, e.g. 1")
    p.add_argument("--sessions", type=int, default=10, help="virtual devices (capacity search: the first step)")
    p.add_argument("--ramp", type=float, default=10.0, help="seconds over which sessions start, linearly")
    p.add_argument("--duration", type=float, default=60.0, help="seconds from the first session until devices stop")
    p.add_argument("--scenario", type=Path, help="scenario TOML (default loadtest/scenarios/default.toml)")
    p.add_argument("--report", type=Path, default=Path("loadtest-report"), help="directory for report.json/.html")
    p.add_argument("--slo-ms", type=float, help="p95 speech end -> first audio budget (default min_silence_ms + 500)")
    p.add_argument(
        "--max-loop-lag-ms",
        type=float,
        default=DEFAULT_MAX_LOOP_LAG_MS,
        help="ingest mode (--asr none) SLO: server event-loop lag p99",
    )
    p.add_argument("--find-capacity", action="store_true", help="add sessions in steps until the SLO breaks")
    p.add_argument(
        "--allow-refusals",
        action="store_true",
        help="an overload run: sessions refused with server_busy are counted, not failures; the SLO "
        "applies to the sessions admitted",
    )
    p.add_argument("--step", type=int, default=4, help="capacity search: sessions added per step")
    p.add_argument("--step-hold", type=float, default=30.0, help="capacity search: seconds each step is measured")
    p.add_argument("--step-ramp", type=float, default=5.0, help="capacity search: seconds to ramp in a step")
    p.add_argument("--max-sessions", type=int, default=500, help="capacity search: stop here even if it holds")
    p.add_argument("--scrape-interval", type=float, default=1.0, help="seconds between GET /metrics")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="hark.v1",
        help="what the devices speak: hark.v1 (/v1/stream) or the OpenAI Realtime API (/v1/realtime, same server)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.url and args.spawn_server is not None:
        parser.error("--url and --spawn-server are exclusive")
    if args.allow_refusals and args.find_capacity:  # a step the server refused sessions of did not hold
        parser.error("--allow-refusals and --find-capacity are exclusive")
    if args.sessions < 1 or args.duration <= 0 or args.ramp < 0:
        parser.error("--sessions must be >= 1, --duration > 0, --ramp >= 0")
    try:
        client_cpus = parse_cpus(args.client_cpus)
        parse_cpus(args.server_cpus)
        scenario = load_scenario(args.scenario)
        clips = load_clips(scenario)
    except (ValueError, OSError) as exc:
        print(f"hark-loadtest: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if client_cpus is not None:
        os.sched_setaffinity(0, client_cpus)
    argv_text = shlex.join(["hark-loadtest", *(sys.argv[1:] if argv is None else argv)])
    runner = _loop_factory()
    with asyncio.Runner(loop_factory=runner) as loop:
        code = loop.run(run(args, scenario, clips, argv_text))
    raise SystemExit(code)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop  # the harness must be cheaper than the server it loads
    except ImportError:
        return None
    return uvloop.new_event_loop


async def run(args: argparse.Namespace, scenario: Scenario, clips: dict[str, bytes], command: str) -> int:
    args.report.mkdir(parents=True, exist_ok=True)
    started_utc = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    server: ServerProcess | None = None
    if args.spawn_server is not None:
        try:
            server = ServerProcess(
                shlex.split(args.spawn_server), log_path=args.report / "server.log", cpus=parse_cpus(args.server_cpus)
            )
            await server.start_async()
        except (RuntimeError, OSError, ValueError) as exc:  # ServerStartError is a RuntimeError
            print(f"hark-loadtest: could not start the server: {exc}", file=sys.stderr)
            return 2
        print(f"hark-loadtest: server ready on {server.url} (log {args.report / 'server.log'})", flush=True)
    url = server.url if server is not None else (args.url or DEFAULT_URL)
    rec = Recorder()
    scraper = Scraper(url, rec, args.scrape_interval)
    load = Load(url, scenario, clips, rec)
    if args.protocol == "openai-realtime":  # --url names the server; its /v1/realtime is used
        load.device_class = RealtimeDevice
    interrupted = _install_signals(load)
    capacity: CapacityResult | None = None
    background: list[asyncio.Task[None]] = []
    server_rc: int | None = None
    wall = time.monotonic()
    try:
        await scraper.scrape()  # the baseline every counter delta starts from
        background = [
            asyncio.create_task(scraper.run(), name="scrape"),
            asyncio.create_task(progress.show(rec, lambda: load.count), name="progress"),
        ]
        if args.find_capacity:
            plan = CapacityPlan(args.sessions, args.step, args.step_hold, args.step_ramp, args.max_sessions)
            capacity = await find_capacity(
                load, scraper, plan, lambda s: _judge(s, rec, args, frame_balance=False), _say
            )
        else:
            await run_fixed(load, scraper, args.sessions, args.ramp, args.duration)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await scraper.aclose()
        if server is not None:
            server_rc = await server.stop_async()
    summary = run_summary(rec, scraper.samples, rec.frames_sent)
    verdict = _judge(summary, rec, args, frame_balance=True)
    meta = {
        "command": command,
        "started_utc": started_utc,
        "wall_s": round(time.monotonic() - wall, 1),
        "url": realtime_url(url) if args.protocol == "openai-realtime" else url,
        "protocol": args.protocol,
        "sessions": args.sessions,
        "ramp_s": args.ramp,
        "duration_s": args.duration,
        "find_capacity": args.find_capacity,
        "interrupted": bool(interrupted[0]),
        "scenario_file": str(args.scenario or "default"),
        "scenario": dataclasses.asdict(scenario),
        "slo_ms": _slo_ms(rec, args),
        "max_loop_lag_ms": args.max_loop_lag_ms,
        "engines": rec.engines,
        "session_config": rec.session_config,
        "spawned_server_args": args.spawn_server,
        "server_cpus": args.server_cpus,
        "client_cpus": args.client_cpus,
        "server_exit_code": server_rc,
        "host": f"{platform.node()} ({os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()})",
        "scrapes": len(scraper.samples),
        "scrape_failures": scraper.failures,
    }
    result: dict[str, Any] = {
        "meta": meta,
        "verdict": verdict.to_dict(),
        "capacity": capacity.to_dict() if capacity is not None else None,
        "summary": summary,
        "series": series(scraper.samples),
        "errors": [dataclasses.asdict(e) for e in rec.errors],
        "turns": [dataclasses.asdict(t) for t in rec.turns],
    }
    write_json(args.report / "report.json", result)
    write_html(args.report / "report.html", result)
    _print_summary(result, args.report)
    if interrupted[0]:
        return 130  # a partial run: its report is written, but it is no verdict on the full run
    if capacity is not None:
        return 0 if capacity.held is not None else 1
    return 0 if verdict.passed else 1


def _slo_ms(rec: Recorder, args: argparse.Namespace) -> float:
    return float(args.slo_ms) if args.slo_ms is not None else default_slo_ms(rec.session_config)


def _judge(summary: dict[str, Any], rec: Recorder, args: argparse.Namespace, frame_balance: bool) -> Verdict:
    reply_mode = rec.engines.get("asr") != "none"
    return evaluate(summary, reply_mode, _slo_ms(rec, args), args.max_loop_lag_ms, frame_balance, args.allow_refusals)


def _say(text: str) -> None:
    print(f"hark-loadtest: {text}", flush=True)


def _install_signals(load: Load) -> list[int]:
    """First Ctrl-C: devices end their turn and close (a partial report is still written);
    second: devices are cancelled at once. Returns the press counter (a one-element list)."""
    loop = asyncio.get_running_loop()
    presses = [0]

    def on_signal() -> None:
        presses[0] += 1
        if presses[0] == 1:
            _say("stopping: devices finish their turn and close (Ctrl-C again to abort)")
            load.stop.set()
        else:
            for task in load.tasks:
                task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    return presses


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


def _print_summary(result: dict[str, Any], report_dir: Path) -> None:
    s, v, meta = result["summary"], result["verdict"], result["meta"]
    server = s["server"]
    fa = s["client_ms"]["first_audio_ms"]
    statuses = ", ".join(f"{k} {n}" for k, n in sorted(s["statuses"].items()))
    print(f"\nhark-loadtest: {'PASS' if v['passed'] else 'FAIL'} ({v['mode']} mode, engines {meta['engines'] or '?'})")
    print(
        f"  sessions {s['sessions_started']} (refused {s['sessions_refused']}), "
        f"turns {s['turns']} ({statuses or 'none'})"
    )
    if v["mode"] == "reply":
        print(
            f"  speech end -> first audio: p50 {_ms(fa.get('p50'))}, p95 {_ms(fa.get('p95'))} "
            f"(SLO {meta['slo_ms']:.0f} ms)"
        )
    fin = s["client_ms"]["final_ms"]
    print(f"  speech end -> transcript.final: p50 {_ms(fin.get('p50'))}, p95 {_ms(fin.get('p95'))}")
    print(
        f"  frames sent {s['frames_sent']}, received {_n(server.get('frames_received'))}, "
        f"processed {_n(server.get('frames_processed'))}, dropped {_n(server.get('frames_dropped'))}"
    )
    cps = s.get("cpu_per_session_second")
    print(
        f"  server loop lag p99 {_ms(server.get('loop_lag_p99_ms'))}, "
        f"CPU per session-second {'not reported' if cps is None else f'{cps:.3f} s'}; "
        f"errors {s['errors_by_code'] or 0}, disconnects {s['disconnects'] or 0}"
    )
    for failure in [c for c in v["checks"] if not c["ok"]]:
        print(f"  failed: {failure['name']}: {failure['value']} (limit {failure['limit']}) {failure['note']}")
    capacity = result.get("capacity")
    if capacity is not None:
        print(f"  capacity: {capacity['held'] or 0} sessions held (broke at {capacity['broke_at'] or '-'})")
    print(f"  report: {report_dir / 'report.html'} and {report_dir / 'report.json'}")


def _n(v: float | None) -> str:
    return "not reported" if v is None else f"{v:.0f}"


if __name__ == "__main__":
    main()
