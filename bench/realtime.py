"""What the OpenAI Realtime translation costs: /v1/realtime against /v1/stream, one server, the same clips.

    python -m bench.realtime [--sessions 4] [--rounds 3] [--capacity] [--write]

One spawned server (`--turn-detection silence`, so both protocols end turns alike); the load harness's
own devices (hark.loadtest) speak hark.v1 or, through its Realtime adaptor, the Realtime API. Each
round runs every device through the same clips once per protocol, the order alternating between
rounds, so the two protocols meet the same server state and the same load from the rest of the
machine. Measured:
- speech end -> first reply audio at the client (the harness's latency reference), and the
  difference between the protocols turn by turn (same device, same clip, same round);
- server CPU per session-second (the server's own process CPU counter over each run; base64,
  JSON and the translator are in it, the harness's resampling and encoding are not);
- with --capacity: ingest sessions per core (`--asr none`, a capacity search per protocol), the
  server pinned to CPU 0 and the harness to CPU 1 where there are two.
--write puts the numbers in the "realtime" section of docs/performance.md with this command line.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soxr
from websockets.asyncio.client import ClientConnection
from websockets.typing import DataLike

from bench.sections import write_section
from hark.loadtest.analysis import run_summary
from hark.loadtest.device import Device
from hark.loadtest.realtime_device import RealtimeDevice
from hark.loadtest.recorder import Recorder, TurnRecord
from hark.loadtest.runner import Load
from hark.loadtest.scenario import DEFAULT_CLIPS, Scenario, load_clips
from hark.loadtest.scrape import Scraper
from hark.loadtest.spawn import ServerProcess
from hark.loadtest.stats import summary

REPO = Path(__file__).resolve().parents[1]


class Mic24Connection(ClientConnection):
    """hark.v1 from a 24 kHz microphone: the device's 16 kHz frames resampled as the Realtime adaptor does,
    so the two differ in the protocol only (the server resamples 24 kHz input to 16 kHz for both)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resampler = soxr.ResampleStream(16000, 24000, 1, dtype="int16", quality="QQ")

    async def send(self, message: DataLike | Any, text: bool | None = None) -> None:
        if isinstance(message, bytes):
            message = self._resampler.resample_chunk(np.frombuffer(message, dtype="<i2")).astype("<i2").tobytes()
        await super().send(message, text=text)


class Mic24Device(Device):
    connection_class = Mic24Connection


# arm -> (device, session.update it sends first)
ARMS: dict[str, tuple[type[Device], dict[str, Any]]] = {
    "hark.v1": (Device, {}),
    "hark.v1 24k": (Mic24Device, {"input_sample_rate": 24000}),
    "openai-realtime": (RealtimeDevice, {}),
}
PROTOCOLS = ("hark.v1", "openai-realtime")  # the capacity searches
SERVER_ARGS = ("--turn-detection", "silence", "--max-sessions", "64")
PAGE = REPO / "docs" / "performance.md"


def pinning() -> tuple[set[int] | None, set[int] | None]:
    """(server CPUs, harness CPUs): a core each where there are two."""
    return ({0}, {1}) if (os.cpu_count() or 1) > 1 else (None, None)


async def one_run(url: str, arm: str, scenario: Scenario, clips: dict[str, bytes], sessions: int) -> dict[str, Any]:
    """Every device speaks the scenario's turns and closes; the harness's run summary and its turns."""
    rec = Recorder()
    scraper = Scraper(url, rec, 1.0)
    device, session = ARMS[arm]
    load = Load(url, dataclasses.replace(scenario, session=session), clips, rec, device_class=device)
    await scraper.scrape()
    background = asyncio.create_task(scraper.run())
    try:
        await load.add(sessions, ramp_s=1.0)
        await asyncio.gather(*load.tasks)
    finally:
        background.cancel()
        await asyncio.gather(background, return_exceptions=True)
    await scraper.scrape()  # every session has closed: the counters are final
    await scraper.aclose()
    return {"summary": run_summary(rec, scraper.samples, rec.frames_sent), "turns": rec.turns}


async def latency_rounds(sessions: int, rounds: int, log_dir: Path) -> dict[str, Any]:
    server_cpus, harness_cpus = pinning()
    if harness_cpus is not None:
        os.sched_setaffinity(0, harness_cpus)
    scenario = Scenario(clips=DEFAULT_CLIPS, turns_per_session=len(DEFAULT_CLIPS), pause_ms=(800, 800))
    clips = load_clips(scenario)
    server = ServerProcess(SERVER_ARGS, log_path=log_dir / "server.log", cpus=server_cpus)
    await server.start_async()
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    try:
        for n in range(rounds):
            order = list(ARMS) if n % 2 == 0 else list(reversed(ARMS))
            for arm in order:
                print(f"round {n + 1}/{rounds}: {arm}, {sessions} sessions", flush=True)
                runs[arm].append(await one_run(server.url, arm, scenario, clips, sessions))
    finally:
        await server.stop_async()
    return {"runs": runs, "scenario": dataclasses.asdict(scenario), "server_cpus": server_cpus}


def first_audio(turns: list[TurnRecord]) -> dict[tuple[int, int], float]:
    return {(t.session, t.turn): t.first_audio_ms for t in turns if t.first_audio_ms is not None}


def analyse(measured: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    per_protocol: dict[str, list[dict[tuple[int, int], float]]] = {}
    for protocol, runs in measured["runs"].items():
        per_protocol[protocol] = [first_audio(r["turns"]) for r in runs]
        latencies = [ms for r in per_protocol[protocol] for ms in r.values()]
        cpu = [r["summary"]["cpu_per_session_second"] for r in runs]
        statuses: dict[str, int] = {}
        for r in runs:
            for status, count in r["summary"]["statuses"].items():
                statuses[status] = statuses.get(status, 0) + count
        turns = [t for r in runs for t in r["turns"] if t.first_audio_ms is not None and t.final_ms is not None]
        out[protocol] = {
            "first_audio_ms": summary(latencies, (50, 90)),
            # where the time goes: the end of the turn and its transcript, then the reply path
            "final_ms": summary([t.final_ms for t in turns], (50, 90)),
            "reply_path_ms": summary([t.first_audio_ms - t.final_ms for t in turns], (50, 90)),
            "turns": len(latencies),
            "statuses": statuses,
            "cpu_per_session_second": cpu,
            "errors": sum(r["summary"]["error_events"] for r in runs),
            "frames_dropped": sum(r["summary"]["server"].get("frames_dropped") or 0 for r in runs),
        }
    for a, b in (("openai-realtime", "hark.v1"), ("hark.v1 24k", "hark.v1"), ("openai-realtime", "hark.v1 24k")):
        diffs = [
            after[key] - before[key]
            for before, after in zip(per_protocol[b], per_protocol[a], strict=True)
            for key in before.keys() & after.keys()
        ]
        out[f"{a} - {b}"] = {"ms": summary(diffs, (10, 50, 90)), "pairs": len(diffs)}
    return out


def capacity(out_dir: Path) -> dict[str, Any]:
    """An ingest capacity search per protocol (hark-loadtest --find-capacity, --asr none)."""
    results: dict[str, Any] = {}
    for protocol in PROTOCOLS:
        report = out_dir / f"capacity-{protocol}"
        cmd = [
            *("hark-loadtest", "--spawn-server", "--asr none --max-sessions 5000", "--protocol", protocol),
            *("--find-capacity", "--sessions", "20", "--step", "20", "--step-hold", "10", "--step-ramp", "4"),
            *("--max-sessions", "400", "--report", str(report)),
        ]
        server_cpus, harness_cpus = pinning()
        if server_cpus is not None and harness_cpus is not None:
            cmd += ["--server-cpus", "0", "--client-cpus", "1"]
        print(f"capacity, {protocol}: {shlex.join(cmd)}", flush=True)
        subprocess.run([sys.executable, "-m", "hark.loadtest.cli", *cmd[1:]], cwd=REPO, check=False)
        result = json.loads((report / "report.json").read_text())
        found = result.get("capacity") or {}
        steps = found.get("steps") or []
        held = [step for step in steps if step["passed"]]
        broke = [step for step in steps if not step["passed"]]
        results[protocol] = {
            "command": shlex.join(c for c in cmd if c not in ("--report", str(report))),  # the report is temporary
            "held": found.get("held"),
            "broke_at": found.get("broke_at"),
            "why": "; ".join(broke[0]["failures"]) if broke else "",
            # the ingest path's server CPU (VAD, protocol, framing) per session-second, at the largest held step
            "cpu_ms_per_session_second": _step_cpu_ms(held[-1]) if held else None,
        }
    return results


def _step_cpu_ms(step: dict[str, Any]) -> float | None:
    cpu, seconds = step.get("cpu_seconds"), step["end"] - step["start"]
    return None if cpu is None or seconds <= 0 else cpu / (step["sessions"] * seconds) * 1000.0


def _ms(stats: dict[str, float], q: int) -> str:
    value = stats.get(f"p{q}")
    return "-" if value is None else f"{value:.0f}"


def markdown(command: str, measured: dict[str, Any], result: dict[str, Any], caps: dict[str, Any] | None) -> str:
    arms = list(ARMS)

    def cpu(protocol: str) -> str:
        values = [v for v in result[protocol]["cpu_per_session_second"] if v is not None]
        return ", ".join(f"{v * 1000:.0f}" for v in values) if values else "not reported"

    def row(label: str, cell: Callable[[str], str]) -> str:
        return f"| {label} | " + " | ".join(cell(a) for a in arms) + " |"

    scenario = measured["scenario"]
    lines = [
        "## OpenAI Realtime (`/v1/realtime`) against hark.v1 (`/v1/stream`)",
        "",
        f"Command: `{command}`",
        "",
        f"One server (`python -m hark.server.app {' '.join(SERVER_ARGS)}`, embedded engines: pocketsphinx, "
        f"echo, espeak-ng{', pinned to CPU 0, harness on CPU 1' if measured['server_cpus'] else ''}). "
        f"{len(measured['runs']['hark.v1'])} rounds; each round runs every device once per arm (the order "
        f"alternating between rounds), each device speaking {', '.join(scenario['clips'])} at real time, one "
        "turn each. Arms: hark.v1 at 16 kHz (no resampling anywhere); hark.v1 at 24 kHz (the same device "
        "with a 24 kHz microphone); the OpenAI Realtime API (the same device through the harness's Realtime "
        "adaptor: 24 kHz base64 appends, Realtime events). The last two differ in the protocol only; the first "
        "two in the input rate only (the server resamples 24 kHz to the 16 kHz its VAD and ASR run at).",
        "",
        "| | " + " | ".join(arms) + " |",
        "|---" * (len(arms) + 1) + "|",
        row("speech end -> first reply audio, p50 (ms)", lambda a: _ms(result[a]["first_audio_ms"], 50)),
        row("speech end -> first reply audio, p90 (ms)", lambda a: _ms(result[a]["first_audio_ms"], 90)),
        row("turns measured (statuses)", lambda a: f"{result[a]['turns']} ({result[a]['statuses']})"),
        row("server CPU per session-second, per round (ms)", cpu),
        row("of which speech end -> transcript.final, p50 (ms)", lambda a: _ms(result[a]["final_ms"], 50)),
        row(
            "of which transcript.final -> first reply audio, p50 / p90 (ms)",
            lambda a: f"{_ms(result[a]['reply_path_ms'], 50)} / {_ms(result[a]['reply_path_ms'], 90)}",
        ),
        row("error events, frames dropped", lambda a: f"{result[a]['errors']}, {result[a]['frames_dropped']}"),
        "",
        "Differences turn by turn (same device, clip and round), in ms:",
        "",
        "| | pairs | p10 | median | p90 |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {d['pairs']} | {_ms(d['ms'], 10)} | {_ms(d['ms'], 50)} | {_ms(d['ms'], 90)} |"
            for name, d in result.items()
            if " - " in name
        ),
    ]
    lines += [
        "",
        "Reading it. The reply path (transcript.final -> first reply audio) is where the translation's own work "
        "shows: JSON events, base64 audio, the translator. Speech end -> transcript.final is not the protocol's: "
        "hark.v1 at 24 kHz pays the same. It is the server's input resampler (server/audio.py, a soxr HQ "
        'stream), which holds back 20-36 ms of every 100 ms frame (`python -c "import numpy, soxr; '
        "s = soxr.ResampleStream(24000, 16000, 1, dtype='float32'); "
        "print([len(s.resample_chunk(numpy.zeros(2400, 'float32'))) for _ in range(5)])\"` prints 1468 where "
        "1600 samples are due), so the silence that ends a turn is often complete only one frame later. Every "
        "client sending another rate than 16 kHz pays it, and the Realtime API has only 24 kHz PCM (and 8 kHz "
        "G.711). The p90s are the machine's as much as the server's: two cores, shared with other work.",
    ]
    if caps is not None:
        intro = (
            "Ingest capacity (`--asr none`: VAD, framing and the protocol; no ASR, LLM or TTS), a capacity search "
            "per protocol on a server of its own (steps of 20 sessions held 10 s)."
        )
        v1_cpu, rt_cpu = (caps[p]["cpu_ms_per_session_second"] for p in PROTOCOLS)
        if v1_cpu and rt_cpu:
            intro += (
                f" The Realtime protocol's ingest costs {rt_cpu / v1_cpu:.1f}x the server CPU per session-second "
                "(every 100 ms of audio is a JSON event with base64 inside); each figure is at its own last held step."
            )
        lines += [
            "",
            intro,
            "",
            "| protocol | sessions held | broke at (why) | server CPU per session-second, last held step | command |",
            "|---|---|---|---|---|",
        ]
        for protocol, cap in caps.items():
            cpu_ms = cap["cpu_ms_per_session_second"]
            lines.append(
                f"| {protocol} | {cap['held'] or 0} | {cap['broke_at'] or '-'} ({cap['why'] or '-'}) | "
                f"{'-' if cpu_ms is None else f'{cpu_ms:.1f} ms'} | `{cap['command']}` |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.realtime", description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=4, help="devices per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of both protocols")
    parser.add_argument("--capacity", action="store_true", help="also an ingest capacity search per protocol")
    parser.add_argument("--write", action="store_true", help="write the 'realtime' section of docs/performance.md")
    args = parser.parse_args()
    command = shlex.join(["python", "-m", "bench.realtime", *sys.argv[1:]])
    with tempfile.TemporaryDirectory(prefix="bench-realtime-") as tmp:
        measured = asyncio.run(latency_rounds(args.sessions, args.rounds, Path(tmp)))
        result = analyse(measured)
        caps = capacity(Path(tmp)) if args.capacity else None
    text = markdown(command, measured, result, caps)
    print(text)
    if args.write:
        write_section(PAGE, "realtime", text)
        print(f"\nwrote the 'realtime' section of {PAGE}")


if __name__ == "__main__":
    main()
