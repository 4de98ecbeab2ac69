"""`make bench-turns`: how each endpointing setting takes turns, on real speech streamed at real
time through real hark-server processes (issue 11, the turn-taking benchmark).

The set (bench/turnset.py): corpus sentences in English and Mandarin, each as recorded and with a
pause of 300 / 600 / 1000 / 1500 ms inserted at word boundaries inside it. Every setting streams
every item in its own session (bench/turnstream.py), several sessions at once, one setting after
another, so the server's CPU time (with its ASR worker processes, from /proc) over a setting's
phase is that setting's. The sweep (`silence` at 300 / 500 / 800 ms, `semantic` at each
eagerness) runs on an ingest server (`--asr none`), the embedded pipeline (pocketsphinx, echo,
espeak-ng) then runs `silence` 500 and `semantic` medium with and without the text signal: see
INGEST_ARGS for why. Scored by bench/turnscore.py; the section "turns" of docs/performance.md gets
the table, a plot of dead air against false cut-offs (one point per setting, like LiveKit's
end-of-turn benchmark) and the issue's targets beside what was measured.

    python -m bench.turns [--write docs/performance.md] [--plot docs/bench-turns.png]
                          [--concurrency 6] [--pipeline-concurrency 2] [--settings NAME ...]
                          [--quick] [--render]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shlex
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench.run import tree_cpu_s
from bench.sections import write_section
from bench.turnscore import score, summarize
from bench.turnset import CLIPS, PAUSES_MS, TurnItem, build_set
from bench.turnstream import BenchError, ItemTrace, ServerBusy, stream_item
from hark.loadtest.spawn import ServerProcess
from hark.loadtest.stats import bucket_delta, histogram_quantile

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / ".cache" / "bench-turns"
DEFAULT_PLOT = REPO / "docs" / "bench-turns.png"
SERVER_ARGS = ("--max-sessions", "64")
STAGGER_S = 0.37  # sessions of a phase start apart, so their endpoints do not fall in lockstep
ITEM_LIMIT_S = 60.0  # one item's session: a stuck server fails the run instead of hanging it
BUSY_RETRIES, BUSY_WAIT_S = 30, 2.0
# p99 of a frame's wait (or the loop's lateness) past which a phase's turn ends came late: one
# session alone on a quiet machine waits ~110 ms at p99 (its recognizer's slowest chunks)
BEHIND_MS = 250
SILENCE_MS = (300, 500, 800)
EAGERNESS = ("low", "medium", "high")
COMMAND = "make bench-turns"


# The two servers of a run. "ingest" (`--asr none`: VAD and turn detection, no recognizer, no replies)
# carries the sweep: on 2 shared cores pocketsphinx, ~20 % of a core per talking session here, falls
# behind at 4 sessions at once, and a late recognizer makes every turn end late (the session feeds
# each frame to it before it decides), so the sweep would measure the machine. "pipeline" (the
# embedded default: pocketsphinx, echo, espeak-ng) runs fewer settings, fewer sessions at once: what
# needs the words (the text signal) or the replies (cancelled replies, first audio).
INGEST_ARGS = ("--asr", "none")
PIPELINE = "pipeline/"


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    turn_detection: dict[str, Any]

    @property
    def patch(self) -> dict[str, Any]:
        return {"turn_detection": self.turn_detection}

    @property
    def pipeline(self) -> bool:
        return self.name.startswith(PIPELINE)

    @property
    def family(self) -> str:
        """What the plot joins with a line: the silence and semantic sweeps; pipeline points alone."""
        td = self.turn_detection
        if self.pipeline:
            return self.name
        if td["type"] != "semantic":
            return str(td["type"])
        return "semantic (audio only)" if td.get("text_signal", True) else "semantic, no text signal"


def _silence(ms: int) -> dict[str, Any]:
    return {"type": "silence", "silence_ms": ms}


# Each setting names its text signal itself, whatever the server's default: "semantic-medium" has it
# on, "-notext" off. The server's default is off now (protocol/turn_detection.py), so its own row is
# "-notext"; `targets` reads the default from the server and picks the row that matches.
def _semantic(eagerness: str, text_signal: bool = True) -> dict[str, Any]:
    return {"type": "semantic", "eagerness": eagerness, "text_signal": text_signal}


def standard_settings() -> list[Setting]:
    """The sweep on the ingest server, then the embedded pipeline at the defaults, with and without
    the text signal (the sweep cannot tell them apart: without a recognizer there are no words)."""
    out = [Setting(f"silence-{ms}", _silence(ms)) for ms in SILENCE_MS]
    out += [Setting(f"semantic-{e}", _semantic(e)) for e in EAGERNESS]
    out += [
        Setting(f"{PIPELINE}silence-500", _silence(500)),
        Setting(f"{PIPELINE}semantic-medium", _semantic("medium")),
        Setting(f"{PIPELINE}semantic-medium-notext", _semantic("medium", text_signal=False)),
    ]
    return out


def optional_settings() -> list[Setting]:
    """Not in the default run (time): the other eagernesses on the pipeline."""
    out = []
    for e in ("low", "high"):
        out += [
            Setting(f"{PIPELINE}semantic-{e}", _semantic(e)),
            Setting(f"{PIPELINE}semantic-{e}-notext", _semantic(e, text_signal=False)),
        ]
    return out


def pick_settings(names: Sequence[str] | None) -> list[Setting]:
    known = {s.name: s for s in (*standard_settings(), *optional_settings())}
    if not names:
        return standard_settings()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in names]


# ---------------------------------------------------------------- the server's side


def server_cpu_s(server: ServerProcess) -> float:
    return tree_cpu_s(server.process.pid)


# the server's histograms that say whether it kept up with real time: (sample name, label)
STAGE_BUCKET = "hark_stage_latency_seconds_bucket"
KEPT_UP = {
    "loop_lag": ("hark_event_loop_lag_seconds_bucket", ""),
    "frame_wait": (STAGE_BUCKET, 'stage="frame_wait"'),  # a frame's wait in its session's inbox
    "asr_frame": (STAGE_BUCKET, 'stage="asr"'),  # one chunk's recognition
}
# what a semantic check took, handed to the detector to scored: the part of dead air that is the model's
TURN_CHECK = ("hark_turn_check_seconds_bucket", "")


def scrape_metrics(http_url: str) -> dict[str, float]:
    """The server's hark_turn* samples (turns by reason, the turn detector's where it has them) and
    the buckets of the KEPT_UP and TURN_CHECK histograms."""
    with urllib.request.urlopen(f"{http_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    wanted = tuple(name for name, _ in (*KEPT_UP.values(), TURN_CHECK))
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("hark_turn", *wanted)) and " " in line and "_created" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def quantile_ms(
    q: float, histogram: tuple[str, str], before: dict[str, float], after: dict[str, float]
) -> float | None:
    """The q quantile of one histogram ((bucket sample name, label)) between two scrapes."""
    prefix, label = histogram

    def buckets(samples: dict[str, float]) -> dict[float, float]:
        found = {}
        for name, value in samples.items():
            if name.startswith(prefix + "{") and label in name and 'le="' in name:
                found[float(name.split('le="', 1)[1].split('"', 1)[0])] = value
        return found

    value = histogram_quantile(q, bucket_delta(buckets(after), buckets(before)))
    return None if value is None else value * 1000.0


async def patiently(make: Callable[[], Awaitable[ItemTrace]]) -> tuple[ItemTrace, int]:
    """Run a session, waiting and retrying while the server refuses it as busy (it is behind real
    time because of other work on the machine: nothing to measure then); returns the refusals too."""
    for refused in range(BUSY_RETRIES):
        try:
            return await asyncio.wait_for(make(), ITEM_LIMIT_S), refused
        except ServerBusy:
            await asyncio.sleep(BUSY_WAIT_S)
    raise BenchError(f"the server refused {BUSY_RETRIES} sessions in a row as busy")


async def probe(url: str, settings: Sequence[Setting]) -> dict[str, Any]:
    """Every setting is accepted by this server (fails now rather than after minutes of streaming),
    and what `semantic` means on it when nothing else is said (its default eagerness)."""
    silence = b"\0" * 3200
    for setting in settings:
        trace, _ = await patiently(partial(stream_item, url, "probe", silence, 0, setting.patch, max_tail_ms=0))
        if trace.config.get("turn_detection", {}).get("type") != setting.turn_detection["type"]:
            raise BenchError(f"{setting.name}: the server did not take {setting.patch}: {trace.config}")
    semantic = {"turn_detection": {"type": "semantic"}}
    default, _ = await patiently(partial(stream_item, url, "probe", silence, 0, semantic, max_tail_ms=0))
    return {"semantic_defaults": default.config.get("turn_detection", {})}


# ---------------------------------------------------------------- one setting's phase


async def run_phase(
    server: ServerProcess, setting: Setting, items: Sequence[TurnItem], concurrency: int, max_tail_ms: int
) -> dict[str, Any]:
    # longest first, so the phase does not end waiting on one long item; each worker starts a
    # little after the previous one, so the sessions' endpoints do not fall in lockstep
    pending = sorted(items, key=lambda i: (i.duration_ms, i.id))
    traces: dict[str, ItemTrace] = {}
    refused = 0

    async def worker(index: int) -> None:
        nonlocal refused
        await asyncio.sleep(index * STAGGER_S)
        while pending:
            item = pending.pop()
            traces[item.id], busy = await patiently(
                partial(stream_item, server.url, item.id, item.pcm, item.true_end, setting.patch, max_tail_ms)
            )
            refused += busy

    cpu_before, metrics_before = server_cpu_s(server), scrape_metrics(server.http_url)
    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    wall = time.monotonic() - started
    cpu = server_cpu_s(server) - cpu_before
    metrics_after = scrape_metrics(server.http_url)
    results = [score(item, traces[item.id]) for item in items]
    summary = summarize(results)
    turns = summary["turns"]
    summary.update(
        setting=setting.name,
        turn_detection=setting.turn_detection,
        family=setting.family,
        wall_s=wall,
        server_cpu_s=cpu,
        cpu_ms_per_turn=cpu * 1000.0 / turns if turns else None,
        # the same audio in every setting: differences are what the endpointing (and its replies) cost
        cpu_ms_per_item=cpu * 1000.0 / len(items),
        turn_metrics={
            k: v - metrics_before.get(k, 0.0) for k, v in metrics_after.items() if k.startswith("hark_turns")
        },
        **{f"{name}_p99_ms": quantile_ms(0.99, KEPT_UP[name], metrics_before, metrics_after) for name in KEPT_UP},
        turn_check_p50_ms=quantile_ms(0.5, TURN_CHECK, metrics_before, metrics_after),
        turn_check_p90_ms=quantile_ms(0.9, TURN_CHECK, metrics_before, metrics_after),
        max_send_lag_ms=max(t.max_send_lag_ms for t in traces.values()),
        sessions_refused_busy=refused,
    )
    return {
        "summary": summary,
        "items": [{**asdict(r), "trace": raw_trace(traces[r.item_id])} for r in results],
    }


def raw_trace(trace: ItemTrace) -> dict[str, Any]:
    """What the session saw, in ms from its first frame (to check a score by hand)."""
    t0 = trace.frame_sent[0] - 0.1 if trace.frame_sent else 0.0

    def ms(t: float | None) -> int | None:
        return None if t is None else round((t - t0) * 1000)

    return {
        "starts": trace.starts,
        "stops": [
            {"turn": s.turn_id, "audio_ms": s.audio_ms, "at_ms": ms(s.arrival), "reason": s.reason, "p": s.probability}
            for s in trace.stops
        ],
        "replies": [
            {"id": r.response_id, "turn": r.turn_id, "at_ms": ms(r.started), "status": r.status}
            for r in trace.replies.values()
        ],
        "final_stop": trace.stops.index(trace.final_stop) if trace.final_stop is not None else None,
        "final_reply": trace.final_reply,
        "tail_ms": trace.tail_ms,
    }


def estimate_s(items: Sequence[TurnItem], settings: Sequence[Setting], args: argparse.Namespace) -> float:
    per_item = sum(i.duration_ms + args.max_tail_ms / 3 for i in items) / 1000.0  # most tails end early
    return float(sum(per_item / (args.pipeline_concurrency if s.pipeline else args.concurrency) for s in settings))


def server_args_of(pipeline: bool, extra: str) -> list[str]:
    return [*SERVER_ARGS, *(() if pipeline else INGEST_ARGS), *shlex.split(extra)]


async def run_group(
    args: argparse.Namespace, items: Sequence[TurnItem], settings: Sequence[Setting], pipeline: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The phases of the settings that share one server."""
    concurrency = args.pipeline_concurrency if pipeline else args.concurrency
    log_path = Path(args.out) / ("pipeline-server.log" if pipeline else "ingest-server.log")
    phases = []
    async with ServerProcess(server_args_of(pipeline, args.server_args), log_path=log_path, cwd=REPO) as server:
        info = await probe(server.url, settings)
        # not measured: the first utterances build the ASR workers' decoders
        warm = [i for i in items if i.pause is None][:concurrency]
        await run_phase(server, Setting("warm-up", _silence(500)), warm, len(warm), 1000)
        for setting in settings:
            for attempt in range(1 + args.retries):
                print(f"== {setting.name}: {len(items)} items, {concurrency} at once", flush=True)
                phase = await run_phase(server, setting, items, concurrency, args.max_tail_ms)
                phase["summary"].update(attempt=attempt + 1, concurrency=concurrency)
                print(render_row(phase["summary"]), flush=True)
                if kept_up([phase]):
                    break
                # other work on the machine held the server back: its turn ends came late for that
                print(f"   the server fell behind real time ({health([phase])})", flush=True)
            phases.append(phase)
    return phases, info


async def run_all(args: argparse.Namespace, items: Sequence[TurnItem], settings: Sequence[Setting]) -> dict[str, Any]:
    phases: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    for pipeline in (False, True):
        group = [s for s in settings if s.pipeline == pipeline]
        if group:
            done, info = await run_group(args, items, group, pipeline)
            phases += done
    return {
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": host_info(),
        "server_args": {
            "ingest": server_args_of(False, args.server_args),
            "pipeline": server_args_of(True, args.server_args),
        },
        "concurrency": {"ingest": args.concurrency, "pipeline": args.pipeline_concurrency},
        "max_tail_ms": args.max_tail_ms,
        "items": len(items),
        "clips": sorted({i.clip for i in items}),
        "set": [
            {"id": i.id, "duration_ms": i.duration_ms, "true_end_ms": i.true_end // 16, "pause_ms": i.pause_ms}
            for i in items
        ],
        **info,
        "phases": phases,
    }


def host_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpus": os.cpu_count(), "load": os.getloadavg()[0], "python": platform.python_version()}


# ---------------------------------------------------------------- the report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def render_row(s: dict[str, Any]) -> str:
    dead, cut = s["dead_air_ms"], s["false_cutoff"]
    return (
        f"{s['setting']}: dead air p50 {_ms(dead['p50'])} ms{_interval(dead)} p90 {_ms(dead['p90'])} ms "
        f"(n {dead['n']}, "
        f"{s['not_ended']} not ended), false cut-offs {_pct(cut['rate'])} ({cut['cut']}/{cut['items']}), "
        f"natural pauses cut {s['natural_pauses']['cut']}/{s['natural_pauses']['pauses']}, "
        f"replies cancelled {s['cancelled']}, CPU {_ms(s['cpu_ms_per_turn'])} ms/turn, {s['wall_s']:.0f} s"
    )


def _interval(quantiles: dict[str, Any]) -> str:
    interval = quantiles.get("p50_interval")
    return "" if not interval else f" ({_ms(interval[0])}-{_ms(interval[1])})"


def table(phases: Sequence[dict[str, Any]]) -> list[str]:
    pauses = sorted({int(ms) for p in phases for ms in p["summary"]["false_cutoff"]["by_pause_ms"]})
    by_pause = " / ".join(str(ms) for ms in pauses)
    lines = [
        "| setting | dead air p50 (95 % interval) | p90 | not ended | false cut-offs"
        f" | by pause {by_pause} ms | natural pauses cut"
        " | true ends at the cap | replies to cut turns | replies cancelled | first audio p50 | CPU ms / turn"
        " | CPU ms / item | turns |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phase in phases:
        s = phase["summary"]
        cut, nat = s["false_cutoff"], s["natural_pauses"]
        per_pause = " / ".join(_pct(cut["by_pause_ms"].get(str(ms), {}).get("rate")) for ms in pauses)
        lines.append(
            f"| {s['setting']}{'' if kept_up([phase]) else ' *'}"
            f" | {_ms(s['dead_air_ms']['p50'])} ms{_interval(s['dead_air_ms'])} | {_ms(s['dead_air_ms']['p90'])} ms"
            f" | {s['not_ended']} | {_pct(cut['rate'])} ({cut['cut']}/{cut['items']}) | {per_pause}"
            f" | {nat['cut']}/{nat['pauses']} | {s['final_reasons'].get('max_silence', 0)} | {s['cut_replies']}"
            f" | {s['cancelled']}"
            f" | {_ms(s['first_audio_ms']['p50'])} ms"
            f" | {_ms(s['cpu_ms_per_turn'])} | {_ms(s.get('cpu_ms_per_item'))} | {s['turns']} |"
        )
    return lines


def health(phases: Sequence[dict[str, Any]]) -> str:
    """Whether the server kept up: a server behind real time makes every number above late."""
    parts = []
    for phase in phases:
        s = phase["summary"]
        parts.append(
            f"{s['setting']} {s['sessions_refused_busy']} refused, loop lag p99 {_ms(s['loop_lag_p99_ms'])} ms, "
            f"frame wait p99 {_ms(s.get('frame_wait_p99_ms'))} ms, "
            f"ASR per chunk p99 {_ms(s.get('asr_frame_p99_ms'))} ms, "
            + (
                f"turn check p50 / p90 {_ms(s['turn_check_p50_ms'])} / {_ms(s['turn_check_p90_ms'])} ms, "
                if s.get("turn_check_p50_ms") is not None
                else ""
            )
            + f"send lag max {_ms(s['max_send_lag_ms'])} ms, "
            f"{s['wall_s']:.0f} s" + (f" (attempt {s['attempt']})" if s.get("attempt", 1) > 1 else "")
        )
    behind = [p["summary"]["setting"] for p in phases if not kept_up([p])]
    verdict = (
        "the server kept up in every phase"
        if not behind
        else f"**behind real time in {', '.join(behind)}** (marked * in the table: some turn ends there came "
        f"late by a frame's wait in the inbox, p99 over {BEHIND_MS} ms, from the server's own load or other "
        "work on the machine: the load average at the start says which is likelier)"
    )
    return (
        f"Run health ({verdict}; sessions the server refused as busy and the benchmark retried 2 s later; "
        "the server's event-loop lag p99; a frame's wait in its session's inbox, p99; the recognizer's "
        "time per chunk, p99; a semantic check, handed to the detector to scored, p50 / p90 "
        "(interpolated in the histogram's buckets); the benchmark's own worst frame lateness; phase wall time): "
        + "; ".join(parts)
        + "."
    )


def kept_up(phases: Sequence[dict[str, Any]]) -> bool:
    """No session refused, no turn left undecided, no frame waiting (or the loop late) past BEHIND_MS."""
    for phase in phases:
        s = phase["summary"]
        slow = [s.get("loop_lag_p99_ms"), s.get("frame_wait_p99_ms")]
        if s["sessions_refused_busy"] or s["not_ended"] or any(v is not None and v > BEHIND_MS for v in slow):
            return False
    return True


def _by_name(phases: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {p["summary"]["setting"]: p["summary"] for p in phases}


def _verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("**met**" if ok else "**not met**")


def _pair(s: dict[str, dict[str, Any]], a: str, b: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    return (s[a], s[b]) if a in s and b in s else None


def _against(quantiles: dict[str, Any], target_ms: float) -> str:
    """Whether the median's 95 % interval lets this run tell the target met or not."""
    interval = quantiles.get("p50_interval")
    if not interval:
        return ""
    low, high = interval
    told = "" if low > target_ms or high <= target_ms else ", which this run cannot tell apart from the target"
    return f" (the median's 95 % interval over these items: {_ms(low)}-{_ms(high)} ms{told})"


def targets(result: dict[str, Any]) -> list[str]:
    """Issue 11's targets beside what this run measured (a setting not in the run says so)."""
    s = _by_name(result["phases"])
    eagerness = result.get("semantic_defaults", {}).get("eagerness", "medium")
    default = f"semantic-{'medium' if eagerness == 'auto' else eagerness}"
    # the pipeline row of the server's own default (the sweep has no words: the text signal is moot)
    text_on = result.get("semantic_defaults", {}).get("text_signal", True)
    pipeline_default = f"{PIPELINE}{default}{'' if text_on else '-notext'}"
    lines = []
    for prefix, what in ((PIPELINE, "the embedded pipeline"), ("", "the sweep (no recognizer: audio only)")):
        name = pipeline_default if prefix else default
        pair = _pair(s, name, prefix + "silence-500")
        if pair is None:
            lines.append(f"- ({what}: {name} or {prefix}silence-500 not in the run)")
            continue
        sem, base = pair
        dead, rate, base_rate = sem["dead_air_ms"]["p50"], sem["false_cutoff"]["rate"], base["false_cutoff"]["rate"]
        lower = None if rate is None or base_rate is None else rate < base_rate
        lines.append(
            f"- {what}: `semantic` at the server's default ({name}): median dead air {_ms(dead)} ms, target "
            f"<= 250 ms: {_verdict(None if dead is None else dead <= 250)}{_against(sem['dead_air_ms'], 250)}; "
            f"false cut-offs {_pct(rate)} against "
            f"{_pct(base_rate)} for `silence` 500 ms, target lower: {_verdict(lower)}."
        )
    sweep_base = s.get("silence-500")
    sweep = [
        (name, x)
        for name, x in s.items()
        if not name.startswith(PIPELINE)
        and x["turn_detection"]["type"] == "semantic"
        and None not in (x["false_cutoff"]["rate"], x["dead_air_ms"]["p50"])
    ]
    if (
        sweep_base is not None
        and sweep_base["dead_air_ms"]["p50"] is not None
        and sweep_base["false_cutoff"]["rate"] is not None
    ):
        no_worse = [(n, x) for n, x in sweep if x["false_cutoff"]["rate"] <= sweep_base["false_cutoff"]["rate"]]
        if no_worse:
            name, best = min(no_worse, key=lambda nx: nx[1]["dead_air_ms"]["p50"])
            saved = sweep_base["dead_air_ms"]["p50"] - best["dead_air_ms"]["p50"]
            lines.append(
                f"- The sweep, at a false cut-off rate no higher than `silence` 500 ms's: the least dead air is "
                f"{name}'s, {_ms(best['dead_air_ms']['p50'])} ms, {_ms(abs(saved))} ms "
                f"{'less' if saved >= 0 else 'more'} than silence's {_ms(sweep_base['dead_air_ms']['p50'])} ms; target "
                f">= 200 ms less: {_verdict(saved >= 200)}."
            )
        else:
            lines.append("- The sweep: no semantic setting cut off as rarely as `silence` 500 ms (target **not met**).")
    text = _pair(s, f"{PIPELINE}{default}", f"{PIPELINE}{default}-notext")
    if text is not None:
        on, off = text
        d_dead = (on["dead_air_ms"]["p50"] or 0.0) - (off["dead_air_ms"]["p50"] or 0.0)
        cuts_on, cuts_off = on["false_cutoff"]["cut"], off["false_cutoff"]["cut"]
        if cuts_on == cuts_off and abs(d_dead) <= 50:
            finding = "no difference measured (the same cut-offs, dead air within 50 ms)"
        elif cuts_on < cuts_off and d_dead <= 50:
            finding = "fewer cut-offs at about the same dead air"
        else:
            finding = "no gain at the same dead air"
        lines.append(
            f"- The text signal (pipeline, {default}): false cut-offs {_pct(on['false_cutoff']['rate'])} with it, "
            f"{_pct(off['false_cutoff']['rate'])} without; median dead air {_ms(on['dead_air_ms']['p50'])} against "
            f"{_ms(off['dead_air_ms']['p50'])} ms: {finding} (on {result['items']} items, one or two cut-offs "
            "either way are noise)."
        )
    fa = _pair(s, pipeline_default, f"{PIPELINE}silence-500")
    if fa is not None:
        sem_fa, base_fa = fa[0]["first_audio_ms"]["p50"], fa[1]["first_audio_ms"]["p50"]
        lines.append(
            f"- `first_audio_ms` p50 of the replies at the true ends (the server's, from its speech end): "
            f"{_ms(sem_fa)} ms with {pipeline_default}, {_ms(base_fa)} ms with `silence` 500; target <= 300 ms: "
            f"{_verdict(None if sem_fa is None else sem_fa <= 300)} (`make bench` measures its own turns)."
        )
    lines.append(
        "- LiveKit's published anchor (their 14-language set, not this one): 5 % false cut-offs at 543 ms of "
        "dead air; 9.9 % at a 300 ms budget."
    )
    return lines


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    families: dict[str, list[dict[str, Any]]] = {}
    for phase in result["phases"]:
        families.setdefault(phase["summary"]["family"], []).append(phase["summary"])
    styles = {
        "silence": ("tab:gray", "s"),
        "semantic (audio only)": ("tab:blue", "o"),
        "semantic, no text signal": ("tab:orange", "^"),
        f"{PIPELINE}silence-500": ("black", "P"),
        f"{PIPELINE}semantic-medium": ("tab:green", "D"),
        f"{PIPELINE}semantic-medium-notext": ("tab:olive", "v"),
    }
    for family, points in families.items():
        color, marker = styles.get(family, ("tab:purple", "X"))
        shown = [p for p in points if p["false_cutoff"]["rate"] is not None and p["dead_air_ms"]["p50"] is not None]
        xs = [100 * p["false_cutoff"]["rate"] for p in shown]
        ys = [p["dead_air_ms"]["p50"] for p in shown]
        ax.plot(xs, ys, color=color, marker=marker, linestyle="-", label=family)
        for p, x, y in zip(shown, xs, ys, strict=True):
            p90 = p["dead_air_ms"]["p90"]
            if p90 is not None:
                ax.vlines(x, y, p90, color=color, alpha=0.3, linewidth=3)
            label = "" if p["setting"].startswith(PIPELINE) else p["setting"].split("-", 1)[1]
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, -4), fontsize=8)
    ax.plot(
        [5.0], [543.0], marker="*", markersize=12, color="tab:red", linestyle="none", label="LiveKit v1 (their set)"
    )
    ax.set_xlabel("false cut-offs at inserted pauses (%)")
    ax.set_ylabel("dead air at true ends, p50 (ms); bar to p90")
    ax.set_title(f"Turn taking on {result['items']} streamed items ({len(result['clips'])} recordings)")
    ax.set_xlim(left=-2)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def section(result: dict[str, Any], plot_path: Path, page: Path, argv: Sequence[str]) -> str:
    host = result["host"]
    langs = sorted({c.split("_", 1)[0] for c in result["clips"]})
    pauses = " / ".join(str(p) for p in sorted({i["pause_ms"] for i in result["set"] if i["pause_ms"]}))
    invocation = shlex.join(["python", "-m", "bench.turns", *argv])
    rel_plot = os.path.relpath(plot_path, page.parent)
    lines = [
        "## Turn taking (dead air against false cut-offs)",
        "",
        f"Measured by `{COMMAND}` (`{invocation}`), {result['when']}, on {host['cpu']} ({host['cpus']} CPUs, "
        f"load {host['load']:.1f} at the start, shared with other work). Every item is streamed once per "
        "setting at real time in 100 ms frames, then silence until the turn at the true end was decided "
        f"and its reply sounded (at most {result['max_tail_ms']} ms). Two servers, one after the other: the "
        f"sweep on an ingest server (`{shlex.join(result['server_args']['ingest'])}`: VAD and turn detection, "
        f"no recognizer and so no words and no replies; {result['concurrency']['ingest']} sessions at once), "
        "and the `pipeline/` rows on the embedded default "
        f"(`{shlex.join(result['server_args']['pipeline'])}`: pocketsphinx, echo, espeak-ng; "
        f"{result['concurrency']['pipeline']} sessions at once). Why two: on 2 shared cores pocketsphinx "
        "(~20 % of a core per talking session here) fell behind real time at 4 sessions at once, and a "
        "session hands each frame to the recognizer before it decides, so a late recognizer makes every "
        "turn end late: a sweep through it measured the machine, not the policy. The text signal needs "
        "the recognizer's words, so it is measured on the pipeline only. Each setting ran in its own "
        "phase: CPU per turn is the server's CPU time (with its ASR worker processes) over the phase "
        "divided by the turns it ended, CPU per item the same over the items (every setting hears the "
        "same audio; the recognizer's cost follows the audio, not the turns).",
        "",
        " ".join(
            (
                f"The set (`bench/turnset.py`): {len(result['clips'])} recorded sentences",
                f"({', '.join(langs)}: {', '.join(result['clips'])}), each as recorded and with a pause of",
                f"{pauses} ms inserted at word boundaries inside it, each length at a different boundary",
                "where the sentence has enough (English: pocketsphinx forced alignment of the transcript;",
                "Mandarin: the signal's energy dips, syllable boundaries); the silence before the first",
                "word is cut to 300 ms, and a clip's items start 0, 20, ... 80 ms later (digital silence",
                "first), so that their endings fall at different phases of the 100 ms frames. The true",
                "end is where Silero VAD last hears speech. Dead air: from",
                "the last speech sample, as a live microphone would have captured it, to the arrival of",
                "the `speech.stopped` that ended the turn there. A false cut-off: a turn ended inside the",
                "inserted pause while the person went on. Natural pauses: the recordings' own silences",
                "(>= 200 ms) inside a sentence. True ends at the cap: turns that ended at `max_silence_ms`",
                "(semantic's detector kept calling the ending unfinished). Replies to cut turns: replies",
                "started for a turn that ended before the true end; replies cancelled: replies the",
                "server started and then cancelled (barge-in, a newer turn, a merge). First audio: the",
                "server's `first_audio_ms` of the reply at the true end. Every sentence ending is streamed",
                "once per item, so the",
                f"dead air quantiles are over {result['items']} streamed endings of only",
                f"{len(result['clips'])} sentences: indicative, not a population estimate. The interval",
                "beside each median holds the median of such endings with 95 % confidence (the order",
                "statistics of the binomial table, no distribution assumed): how far the draw of the",
                "items alone could move it. Run-to-run noise of the shared machine comes on top.",
            )
        ),
        "",
        *table(result["phases"]),
        "",
        health(result["phases"]),
        "",
        f"![dead air against false cut-offs]({rel_plot})",
        "",
        "Targets of issue 11, measured here:",
        "",
        *targets(result),
    ]
    defaults = result.get("semantic_defaults")
    if defaults:
        lines += ["", f"`semantic` with nothing else said, on this server: `{json.dumps(defaults)}`."]
    return "\n".join(lines)


# ---------------------------------------------------------------- the command


def build_items(quick: bool) -> list[TurnItem]:
    if quick:  # checks the benchmark itself, measures nothing
        return build_set(clips=(CLIPS[0], CLIPS[-1]), pauses_ms=(600, 1500), boundaries=2)
    return build_set(pauses_ms=PAUSES_MS)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--write", type=Path, help="write the section 'turns' into this page (docs/performance.md)")
    parser.add_argument("--plot", type=Path, default=DEFAULT_PLOT, help="the plot (png), with --write")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results.json and the server log")
    parser.add_argument("--concurrency", type=int, default=6, help="ingest server: sessions at once (default 6)")
    parser.add_argument(
        "--pipeline-concurrency", type=int, default=2, help="pipeline server: sessions at once (default 2)"
    )
    parser.add_argument("--settings", nargs="*", help="only these settings (default: all)")
    parser.add_argument("--max-tail-ms", type=int, default=4000, help="silence streamed after an item at most")
    parser.add_argument(
        "--retries", type=int, default=0, help="run a setting again this often when the server fell behind (default 0)"
    )
    parser.add_argument("--server-args", default="", help="extra hark-server options")
    parser.add_argument("--quick", action="store_true", help="2 clips, 2 settings: checks the benchmark only")
    parser.add_argument("--render", action="store_true", help="run nothing: rewrite the report from --out")
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.pipeline_concurrency < 1:
        parser.error("--concurrency and --pipeline-concurrency must be at least 1")
    results_path = Path(args.out) / "results.json"
    if args.render:
        result = json.loads(results_path.read_text())
    else:
        quick = ["silence-500", "semantic-medium", f"{PIPELINE}semantic-medium"]
        settings = pick_settings(args.settings or (quick if args.quick else None))
        items = build_items(args.quick)
        guess = estimate_s(items, settings, args)
        print(f"{len(items)} items x {len(settings)} settings, about {guess / 60:.0f} min", flush=True)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        result = asyncio.run(run_all(args, items, settings))
        result["argv"] = argv
        results_path.write_text(json.dumps(result, indent=1))
        print(f"results: {results_path}")
    print("\n".join(table(result["phases"])))
    print("\n".join(targets(result)))
    print(health(result["phases"]))
    if args.write:
        plot(result, args.plot)
        write_section(args.write, "turns", section(result, args.plot, args.write, result.get("argv", argv)))
        print(f"wrote the section 'turns' of {args.write} and {args.plot}")


if __name__ == "__main__":
    main()
