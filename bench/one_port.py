"""Issue 16 part 1: the ingest path's sessions per core and the turn latency, before and after the
one-port front (server/http/front.py), in one run, back to back.

Each tree (a `git worktree` of the commit before the front, and one after) gets its own servers,
started from that tree (cwd and PYTHONPATH; checked: `hark.server.app` must resolve inside it) and
pinned to CPU 0. The clients are this checkout's, identical for both, pinned to CPU 1: the harness
(`hark.loadtest.cli --url ... --find-capacity`) for ingest capacity, `bench.latency` for turns.
Short runs on a shared 2-core machine: noisy. Give the trees in an ABBA order (before, after,
after, before) so a load that drifts during the run weighs on both alike.

    python -m bench.one_port --tree before=/tmp/before --tree after=/tmp/after --tree after=/tmp/after \
        --tree before=/tmp/before --write docs/performance.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from bench.sections import write_section
from hark.loadtest.spawn import ServerProcess

REPO = Path(__file__).resolve().parents[1]
INGEST_SERVER = ["--asr", "none", "--max-sessions", "5000", "--turn-detection", "silence"]
LATENCY_SERVER = ["--turn-detection", "silence"]
CAPACITY = ["--find-capacity", "--step-ramp", "4", "--sessions", "25", "--step", "25", "--step-hold", "8"]
CAPACITY += ["--max-sessions", "600", "--client-cpus", "1"]
HANDSHAKES = 300
LATENCY = ["--sessions", "2", "--turns", "6", "--concurrency", "4", "--concurrent-turns", "1"]


def check_tree(tree: Path) -> str:
    """The commit a tree is at, after checking that its server is what `python -m` would run there."""
    probe = "import hark.server.app as a; print(a.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", probe], cwd=tree, env=_env(tree), capture_output=True, text=True, check=True
    ).stdout.strip()
    if not Path(where).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"{tree}: hark.server.app resolves to {where}, not inside the tree")
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True
    ).stdout.strip()


def _env(tree: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(tree)}


def server(tree: Path, args: list[str], log: Path) -> ServerProcess:
    return ServerProcess(args, log_path=log, cpus={0}, env=_env(tree), cwd=tree)


async def handshakes(url: str, count: int = HANDSHAKES) -> list[float]:
    """Milliseconds from TCP connect to `session.created`, one session after another: the one place
    the front sits in a WebSocket's path (after the hand-over the socket feeds websockets directly)."""
    took = []
    for _ in range(count):
        started = time.perf_counter()
        async with connect(url, open_timeout=30) as ws:
            await ws.recv()
            took.append((time.perf_counter() - started) * 1000.0)
    return took


def ingest(tree: Path, out: Path) -> dict[str, Any]:
    with server(tree, INGEST_SERVER, out / "ingest-server.log") as srv:
        connects = sorted(asyncio.run(handshakes(srv.url)))
        cmd = [sys.executable, "-m", "hark.loadtest.cli", "--url", srv.url, "--report", str(out / "ingest"), *CAPACITY]
        subprocess.run(cmd, cwd=REPO, check=False)
    report: dict[str, Any] = json.loads((out / "ingest" / "report.json").read_text())
    report["_connects_ms"] = connects
    return report


def latency(tree: Path, out: Path) -> dict[str, Any]:
    path = out / "latency.json"
    with server(tree, LATENCY_SERVER, out / "latency-server.log") as srv:
        cmd = [sys.executable, "-m", "bench.latency", "--url", srv.url, "--json", str(path), *LATENCY]
        subprocess.run(cmd, cwd=REPO, check=True, preexec_fn=lambda: os.sched_setaffinity(0, {1}))
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def _step_cost(report: dict[str, Any], sessions: int) -> float | None:
    for step in (report.get("capacity") or {}).get("steps", []):
        seconds = step["end"] - step["start"]
        if step["sessions"] == sessions and step.get("cpu_seconds") is not None and seconds > 0:
            return float(step["cpu_seconds"]) / float(seconds) / sessions * 1000.0
    return None


def _p(result: dict[str, Any], phase: str, metric: str, q: str) -> str:
    values = result[phase]["metrics"].get(metric) or {}
    return f"{values[q]:.0f}" if q in values else "-"


def _connects(report: dict[str, Any]) -> str:
    took = report.get("_connects_ms") or []
    if not took:
        return "-"
    return f"{took[len(took) // 2]:.2f} / {took[int(len(took) * 0.95)]:.2f} ms"


def _pair(result: dict[str, Any], phase: str) -> str:
    return f"{_p(result, phase, 'first_audio_ms', 'p50')} / {_p(result, phase, 'first_audio_ms', 'p90')} ms"


def render(rows: list[tuple[str, str, dict[str, Any], dict[str, Any]]], wall_s: float, command: str) -> str:
    held = [(r[2].get("capacity") or {}).get("held") or 0 for r in rows]
    common = int(CAPACITY[CAPACITY.index("--sessions") + 1])  # the first step: every run measured it
    lines = [
        "## One port (issue 16): ingest sessions per core and turn latency, before and after the HTTP front",
        "",
        f"`python -m bench.one_port {command}` ({wall_s / 60:.1f} min, back to back, in this order).",
        "Each tree's own server (cwd and PYTHONPATH in the tree, checked),",
        "pinned to CPU 0; the same clients for both (this checkout's), pinned to CPU 1. Ingest: `hark-loadtest --url",
        f"URL {shlex.join(CAPACITY)}` against `hark-server {shlex.join(INGEST_SERVER)}`. Turns: `python -m",
        f"bench.latency {shlex.join(LATENCY)}` against `hark-server {shlex.join(LATENCY_SERVER)}` (the embedded",
        f"pipeline). Connect: {HANDSHAKES} WebSocket sessions opened one after another on the ingest server"
        " before its capacity run. Short steps on a 2-core machine shared with other work (load average"
        f" {os.getloadavg()[1]:.1f} over the last 5 min at the end): **noisy**; compare the two runs of one tree.",
        "",
        f"| tree | commit | ingest sessions held (1 core) | broke at | CPU ms per session-second at {common}"
        " | loop lag p99 | connect to session.created p50 / p95 | first audio p50 / p90, sequential"
        " | first audio p50 / p90, 4 at once | final p50 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (name, commit, report, turns), n in zip(rows, held, strict=True):
        cap = report.get("capacity") or {}
        cost = _step_cost(report, common)
        lag = report["summary"]["server"].get("loop_lag_p99_ms")
        lines.append(
            f"| {name} | `{commit}` | {n} | {cap.get('broke_at') or '-'} | "
            f"{'-' if cost is None else f'{cost:.2f}'} | {'-' if lag is None else f'{lag:.1f} ms'} | "
            f"{_connects(report)} | {_pair(turns, 'sequential')} | {_pair(turns, 'concurrent')} | "
            f"{_p(turns, 'sequential', 'final_ms', 'p50')} ms |"
        )
    return "\n".join(lines) + "\n"


async def front_micro(count: int = HANDSHAKES, rounds: int = 2) -> list[tuple[str, float, float]]:
    """The front's own cost per connection, nothing else: one websockets server on a trivial handler,
    with and without `Front` before it (this process, one core); (name, p50 ms, p95 ms) per round."""
    from aiohttp import web
    from websockets.asyncio.server import ServerConnection, serve

    from hark.server.http.front import Front
    from hark.server.transport.ws_connection import guarded_connection

    async def hello(conn: ServerConnection) -> None:
        await conn.send("hello")
        await conn.wait_closed()

    runner = web.AppRunner(web.Application(), access_log=None)
    await runner.setup()
    assert runner.server is not None
    guarded = guarded_connection(10.0, lambda: None)
    rows = []
    for _ in range(rounds):
        for name, create in (("direct", guarded), ("front", Front(guarded, runner.server))):
            async with serve(hello, "127.0.0.1", 0, create_connection=create, compression=None) as ws_server:  # type: ignore[arg-type]
                port = ws_server.sockets[0].getsockname()[1]
                took = sorted(await handshakes(f"ws://127.0.0.1:{port}/", count))
            rows.append((name, took[len(took) // 2], took[int(len(took) * 0.95)]))
    await runner.cleanup()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.one_port", description=__doc__)
    p.add_argument("--tree", action="append", default=[], metavar="NAME=PATH", help="a worktree to measure")
    p.add_argument("--out", type=Path, default=Path("loadtest-report/one-port"))
    p.add_argument("--write", metavar="PATH", help="write the section into this page (docs/performance.md)")
    p.add_argument("--micro", action="store_true", help="only the front's own cost per connection (no trees)")
    args = p.parse_args()
    if args.micro:
        for name, p50, p95 in asyncio.run(front_micro()):
            print(f"{name}: {HANDSHAKES} connects to a first message, p50 {p50:.2f} ms, p95 {p95:.2f} ms")
        return
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})  # the clients' core; the servers pin themselves to CPU 0
    trees = [(name, Path(path)) for name, _, path in (t.partition("=") for t in args.tree)]
    commits = {name: check_tree(tree) for name, tree in trees}
    started = time.monotonic()
    rows = []
    for i, (name, tree) in enumerate(trees):
        out = (args.out / f"{i + 1}-{name}").resolve()
        print(f"== {name} ({commits[name]}): ingest capacity", flush=True)
        report = ingest(tree, out)
        print(f"== {name}: turn latency", flush=True)
        rows.append((name, commits[name], report, latency(tree, out)))
    markdown = render(rows, time.monotonic() - started, shlex.join(sys.argv[1:]))
    print("\n" + markdown)
    if args.write:
        write_section(args.write, "one-port", markdown)


if __name__ == "__main__":
    main()
