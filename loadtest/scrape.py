"""Polls the server's GET /metrics (Prometheus text) once a second during the run.

Metric names are the server's contract (README "Load testing"); any of them may be absent (an
older server): the value is then None and the report says "not reported".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .recorder import Recorder

log = logging.getLogger(__name__)

CPU = "hark_server_cpu_seconds_total"
RSS = "hark_server_resident_memory_bytes"
SESSIONS = "hark_sessions_open"
FRAMES = "hark_audio_frames_total"
PROCESSED = "hark_audio_frames_processed_total"
DROPPED = "hark_audio_frames_dropped_total"
LAG = "hark_event_loop_lag_seconds"
ERRORS = "hark_errors_total"
MAX_SAMPLES = 36_000  # 10 h at 1 Hz: bounded however long a capacity search runs


@dataclass(slots=True)
class Sample:
    """One scrape. Counters are cumulative since the server started (summed over label sets)."""

    at: float  # seconds since the run started
    frames_sent: int  # the harness's own count at that moment, for the frames plot
    cpu_seconds: float | None = None
    rss_bytes: float | None = None
    sessions_open: float | None = None
    frames: float | None = None
    processed: float | None = None
    dropped: dict[str, float] | None = None  # by reason
    lag_buckets: dict[float, float] | None = None  # le -> cumulative count
    lag_sum: float | None = None
    lag_count: float | None = None
    errors: dict[str, float] = field(default_factory=dict)  # by code


def parse_metrics(text: str, at: float = 0.0, frames_sent: int = 0) -> Sample:
    sample = Sample(at=at, frames_sent=frames_sent)
    totals: dict[str, float] = {}
    dropped: dict[str, float] = {}
    buckets: dict[float, float] = {}
    families: set[str] = set()
    for family in text_string_to_metric_families(text):
        families.add(family.name)
        for s in family.samples:
            name, labels, value = s.name, s.labels, float(s.value)
            if name == f"{LAG}_bucket":
                le = labels.get("le", "+Inf")
                buckets[math.inf if le in ("+Inf", "Inf") else float(le)] = value
            elif name == DROPPED:
                reason = labels.get("reason", "")
                dropped[reason] = dropped.get(reason, 0.0) + value
            elif name == ERRORS:
                code = labels.get("code", "")
                sample.errors[code] = sample.errors.get(code, 0.0) + value
            else:
                totals[name] = totals.get(name, 0.0) + value  # sums per-worker series if any
    sample.cpu_seconds = totals.get(CPU)
    sample.rss_bytes = totals.get(RSS)
    sample.sessions_open = totals.get(SESSIONS)
    sample.frames = totals.get(FRAMES)
    sample.processed = totals.get(PROCESSED)
    # a labelled counter nobody incremented yet has no samples, only its family: that is zero, not absent
    sample.dropped = dropped if dropped or DROPPED.removesuffix("_total") in families else None
    sample.lag_buckets = buckets or None
    sample.lag_sum = totals.get(f"{LAG}_sum")
    sample.lag_count = totals.get(f"{LAG}_count")
    return sample


def metrics_url(ws_url: str) -> str:
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}/metrics"


class Scraper:
    def __init__(self, ws_url: str, recorder: Recorder, interval_s: float = 1.0) -> None:
        self.url = metrics_url(ws_url)
        self.rec = recorder
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self.failures = 0
        self._session: aiohttp.ClientSession | None = None

    async def scrape(self) -> Sample | None:
        """One scrape now (also used at the run's start and end and at capacity-step boundaries)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        try:
            async with self._session.get(self.url) as resp:
                resp.raise_for_status()
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.failures += 1
            log.debug("scrape of %s failed: %r", self.url, exc)
            return None
        sample = parse_metrics(text, self.rec.now(), self.rec.frames_sent)
        if len(self.samples) < MAX_SAMPLES:
            self.samples.append(sample)
        return sample

    async def run(self) -> None:
        """Scrape every interval until cancelled."""
        while True:
            await self.scrape()
            await asyncio.sleep(self.interval_s)

    async def aclose(self) -> None:
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
            self._session = None


def counter_delta(first: float | None, last: float | None) -> float | None:
    if first is None or last is None:
        return None
    return last - first if last >= first else last  # a reset (restart) counts from zero


def dict_delta(first: Mapping[str, float] | None, last: Mapping[str, float] | None) -> dict[str, float] | None:
    if first is None or last is None:
        return None
    out = {k: v - first.get(k, 0.0) for k, v in last.items()}
    return {k: v for k, v in out.items() if v > 0}
