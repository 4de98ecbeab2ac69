"""`--find-capacity`: add sessions in steps until the SLO breaks; the largest count that held is the capacity.

Sessions are added to the running population (nobody reconnects between steps), each step is
ramped in, then held; only the hold counts (turns whose speech ended in it, server counters
scraped at its edges), so the ramp's transient does not blur the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .analysis import in_window, server_window, turn_summary
from .runner import Load, grace_s, sleep_or_stop
from .scrape import Scraper
from .slo import Verdict


@dataclass(frozen=True, slots=True)
class CapacityPlan:
    start: int
    step: int
    hold_s: float
    ramp_s: float
    max_sessions: int


@dataclass(slots=True)
class CapacityResult:
    held: int | None = None  # largest session count whose step met the SLO
    broke_at: int | None = None  # first count that did not (None: max_sessions held)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"held": self.held, "broke_at": self.broke_at, "steps": self.steps}


def step_summary(load: Load, scraper: Scraper, start: float, end: float) -> dict[str, Any]:
    """The run summary's shape (what slo.evaluate reads), restricted to one window."""
    rec = load.rec
    errors: dict[str, int] = {}
    for e in rec.errors:
        if start <= e.at <= end:
            errors[e.code] = errors.get(e.code, 0) + 1
    disconnects = sum(1 for at in rec.disconnect_times if start <= at <= end)
    return {
        **turn_summary(in_window(rec.turns, start, end)),
        "errors_by_code": errors,
        "error_events": sum(errors.values()),
        "disconnects": {"in step": disconnects} if disconnects else {},
        "frames_sent": rec.frames_sent,
        "server": server_window(scraper.samples, start, end),
    }


async def find_capacity(
    load: Load,
    scraper: Scraper,
    plan: CapacityPlan,
    judge: Callable[[dict[str, Any]], Verdict],
    report: Callable[[str], None],
) -> CapacityResult:
    result = CapacityResult()
    n = max(1, plan.start)
    try:
        while n <= plan.max_sessions and not load.stop.is_set():
            await load.add(n - load.count, plan.ramp_s)
            await scraper.scrape()
            start = load.rec.now()
            await sleep_or_stop(load.stop, plan.hold_s)
            await scraper.scrape()
            end = load.rec.now()
            if load.stop.is_set() and end - start < plan.hold_s * 0.9:
                break  # interrupted mid-step: its numbers would not be a full hold
            summary = step_summary(load, scraper, start, end)
            verdict = judge(summary)
            p95 = summary["client_ms"]["first_audio_ms"].get("p95")
            lag = summary["server"].get("loop_lag_p99_ms")
            result.steps.append(
                {
                    "sessions": n,
                    "start": start,
                    "end": end,
                    "passed": verdict.passed,
                    "failures": verdict.failures(),
                    "turns": summary["turns"],
                    "p50_first_audio_ms": summary["client_ms"]["first_audio_ms"].get("p50"),
                    "p95_first_audio_ms": p95,
                    "p95_final_ms": summary["client_ms"]["final_ms"].get("p95"),
                    "loop_lag_p99_ms": lag,
                    "cpu_seconds": summary["server"].get("cpu_seconds"),
                    "errors": summary["error_events"],
                    "bad_turns": summary["bad_turns"],
                    "frames_dropped": summary["server"].get("frames_dropped"),
                }
            )
            report(
                f"capacity step {n} sessions: {'held' if verdict.passed else 'BROKE'}"
                + (f" ({'; '.join(verdict.failures())})" if not verdict.passed else "")
            )
            if not verdict.passed:
                result.broke_at = n
                break
            result.held = n
            n += max(1, plan.step)
    finally:
        await load.finish(grace_s(load.scenario, load.clips))
        await scraper.scrape()
    return result
