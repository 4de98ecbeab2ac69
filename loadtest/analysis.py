"""Turns and scrapes into numbers: per-stage latency summaries, server deltas over a window, time series."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

from .recorder import BAD, Recorder, TurnRecord
from .scrape import Sample, counter_delta, dict_delta
from .stats import bucket_delta, histogram_quantile, summary

# client-measured stages, from speech end (see device.py)
STAGES = ("final_ms", "first_token_ms", "first_audio_ms")


def in_window(turns: Sequence[TurnRecord], start: float | None = None, end: float | None = None) -> list[TurnRecord]:
    """Turns whose speech ended inside [start, end] (turns without a speech end: by their start)."""
    out = []
    for t in turns:
        at = t.speech_end_at if t.speech_end_at is not None else t.started_at
        if (start is None or at >= start) and (end is None or at <= end):
            out.append(t)
    return out


def turn_summary(turns: Sequence[TurnRecord], quantiles: Sequence[int] = (50, 95, 99)) -> dict[str, Any]:
    """Statuses, latency percentiles per stage (client-measured and as the server reported), barge-ins, underruns."""
    statuses = Counter(t.status for t in turns)
    client = {s: summary([v for t in turns if (v := getattr(t, s)) is not None], quantiles) for s in STAGES}
    server = {
        s: summary([float(v) for t in turns if isinstance(v := t.server_metrics.get(s), int | float)], quantiles)
        for s in STAGES
    }
    barge = [t for t in turns if t.barge_in]
    return {
        "turns": len(turns),
        "statuses": dict(statuses),
        "bad_turns": sum(statuses[s] for s in BAD),
        "turn_errors": sum(1 for t in turns if t.errors),
        "client_ms": client,
        "server_ms": server,
        "barge_ins": len(barge),
        "barge_in_cancelled": sum(1 for t in barge if t.status == "cancelled"),
        "barge_in_stop_ms": summary([t.barge_in_stop_ms for t in barge if t.barge_in_stop_ms is not None]),
        "turns_with_underruns": sum(1 for t in turns if t.underruns),
        "underruns": sum(t.underruns for t in turns),
        "underrun_ms": sum(t.underrun_ms for t in turns),
        "reply_audio_s": sum(t.reply_audio_ms for t in turns) / 1000.0,
        "max_active_sessions": max((t.active_sessions for t in turns), default=0),
    }


def _edge(samples: Sequence[Sample], start: float | None, end: float | None) -> tuple[Sample | None, Sample | None]:
    inside = [s for s in samples if (start is None or s.at >= start) and (end is None or s.at <= end)]
    return (inside[0], inside[-1]) if len(inside) >= 2 else (None, None)


def server_window(samples: Sequence[Sample], start: float | None = None, end: float | None = None) -> dict[str, Any]:
    """What the server's counters say happened between the first and last scrape inside the window.

    None means the server did not report that metric (or fewer than two scrapes fell inside).
    """
    first, last = _edge(samples, start, end)
    if first is None or last is None:
        return {"scrapes": 0}
    lag_p99 = lag_mean = None
    if first.lag_buckets is not None and last.lag_buckets is not None:
        delta = bucket_delta(last.lag_buckets, first.lag_buckets)
        p99 = histogram_quantile(0.99, delta)
        lag_p99 = None if p99 is None else p99 * 1000.0
        count = counter_delta(first.lag_count, last.lag_count)
        total = counter_delta(first.lag_sum, last.lag_sum)
        if count and total is not None:
            lag_mean = total / count * 1000.0
    dropped = dict_delta(first.dropped, last.dropped)
    window = [s for s in samples if _between(s, first, last)]
    rss_values = [s.rss_bytes for s in window if s.rss_bytes is not None]
    return {
        "scrapes": len(window),
        "seconds": last.at - first.at,
        "cpu_seconds": counter_delta(first.cpu_seconds, last.cpu_seconds),
        "rss_start_bytes": first.rss_bytes,
        "rss_peak_bytes": max(rss_values) if rss_values else None,
        "frames_received": counter_delta(first.frames, last.frames),
        "frames_processed": counter_delta(first.processed, last.processed),
        "frames_dropped": None if dropped is None else sum(dropped.values()),
        "dropped_by_reason": dropped,
        "loop_lag_p99_ms": lag_p99,
        "loop_lag_mean_ms": lag_mean,
        "errors_by_code": dict_delta(first.errors, last.errors) or {},
        "sessions_open_peak": max((s.sessions_open for s in window if s.sessions_open is not None), default=None),
    }


def _between(s: Sample, first: Sample, last: Sample) -> bool:
    return first.at <= s.at <= last.at


def series(samples: Sequence[Sample]) -> dict[str, list[float | None]]:
    """Per-scrape time series for the plots; rates are over the interval ending at each scrape."""
    out: dict[str, list[float | None]] = {
        k: [] for k in ("t", "cpu_cores", "rss_mib", "sessions_open", "lag_p99_ms", "lag_mean_ms", "sent", "received")
    }
    out["processed"] = []
    for prev, cur in pairwise(samples):
        dt = cur.at - prev.at
        if dt < 0.25:  # the final scrape can follow a periodic one closely: its rate would be noise
            continue
        out["t"].append(cur.at)
        cpu = counter_delta(prev.cpu_seconds, cur.cpu_seconds)
        out["cpu_cores"].append(None if cpu is None else cpu / dt)
        out["rss_mib"].append(None if cur.rss_bytes is None else cur.rss_bytes / 2**20)
        out["sessions_open"].append(cur.sessions_open)
        p99 = mean = None
        if prev.lag_buckets is not None and cur.lag_buckets is not None:
            q = histogram_quantile(0.99, bucket_delta(cur.lag_buckets, prev.lag_buckets))
            p99 = None if q is None else q * 1000.0
            n = counter_delta(prev.lag_count, cur.lag_count)
            total = counter_delta(prev.lag_sum, cur.lag_sum)
            mean = total / n * 1000.0 if n and total is not None else None
        out["lag_p99_ms"].append(p99)
        out["lag_mean_ms"].append(mean)
        base = samples[0]
        out["sent"].append(float(cur.frames_sent - base.frames_sent))
        out["received"].append(counter_delta(base.frames, cur.frames))
        out["processed"].append(counter_delta(base.processed, cur.processed))
    return out


def run_summary(rec: Recorder, samples: Sequence[Sample], frames_sent: int) -> dict[str, Any]:
    """Everything the verdict and the report need about the whole run."""
    server = server_window(samples)
    cpu = server.get("cpu_seconds")
    peak = server.get("rss_peak_bytes")
    start_rss = server.get("rss_start_bytes")
    turns = turn_summary(rec.turns)
    max_active = max(turns["max_active_sessions"], 1)
    return {
        **turns,
        "sessions_started": rec.sessions_started,
        "sessions_refused": rec.refused,
        "clean_closes": rec.clean_closes,
        "disconnects": dict(rec.disconnects),
        "errors_by_code": dict(rec.error_counts),
        "error_events": sum(rec.error_counts.values()),
        "frames_sent": frames_sent,
        "session_seconds": rec.session_seconds,
        "max_client_send_lag_ms": rec.max_send_lag_ms,
        "server": server,
        "cpu_per_session_second": cpu / rec.session_seconds if cpu is not None and rec.session_seconds else None,
        "memory_per_session_mib": (peak - start_rss) / 2**20 / max_active
        if peak is not None and start_rss is not None
        else None,
    }
