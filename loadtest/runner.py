"""Drives a run: starts devices on a linear ramp, holds, stops them gracefully, scrapes the server.

Two shapes: a fixed run (`--sessions N --duration S`) and a capacity search (capacity.py), which
adds sessions in steps to the same running population.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from .device import Device
from .recorder import Recorder
from .scenario import Scenario
from .scrape import Scraper

MAX_SESSIONS = 10_000  # one task per device: a typo must not start a million


@dataclass(slots=True)
class Load:
    """The population of devices of one run."""

    url: str
    scenario: Scenario
    clips: dict[str, bytes]
    rec: Recorder
    stop: asyncio.Event = field(default_factory=asyncio.Event)  # devices finish their turn and close
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    device_class: type[Device] = Device  # hark.v1, or realtime_device.RealtimeDevice

    @property
    def count(self) -> int:
        return len(self.tasks)

    async def add(self, n: int, ramp_s: float) -> None:
        """Start `n` more devices, spread linearly over `ramp_s` (stops early when the run stops)."""
        n = max(0, min(n, MAX_SESSIONS - self.count))
        for i in range(n):
            if self.stop.is_set():
                return
            device = self.device_class(self.count, self.url, self.scenario, self.clips, self.rec, self.stop)
            self.tasks.append(asyncio.create_task(device.run(), name=f"device-{device.index}"))
            if ramp_s > 0 and i < n - 1:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), ramp_s / max(n - 1, 1))

    async def finish(self, grace_s: float) -> None:
        """Ask every device to end its current turn and close; cancel what is still running after `grace_s`."""
        self.stop.set()
        if not self.tasks:
            return
        _, pending = await asyncio.wait(self.tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def grace_s(scenario: Scenario, clips: dict[str, bytes]) -> float:
    """Bound on how long a device may need to end: its longest clip, a turn timeout, the close."""
    longest = max((len(p) for p in clips.values()), default=0) / 32000.0
    return longest + scenario.turn_timeout_s + 40.0


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, seconds))


async def run_fixed(load: Load, scraper: Scraper, sessions: int, ramp_s: float, duration_s: float) -> None:
    """Ramp to `sessions`, keep talking until `duration_s` after the first session started, then stop."""
    started = load.rec.now()
    ramp = asyncio.create_task(load.add(sessions, ramp_s), name="ramp")
    try:
        await sleep_or_stop(load.stop, duration_s - (load.rec.now() - started))
    finally:
        load.stop.set()
        await asyncio.gather(ramp, return_exceptions=True)
        await load.finish(grace_s(load.scenario, load.clips))
        await scraper.scrape()  # every session has closed: the counters are final
