"""Pure numerics of the harness: percentiles, playback underruns, histogram quantiles."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_EXACT_UP_TO = 1000  # samples: the exact binomial sums stay cheap up to here


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between ranks (numpy's default); None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float], quantiles: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    """n, the percentiles `quantiles` (keys p50, p95, ...) and max of `values` ({} when empty)."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {"n": float(len(ordered))}
    for q in quantiles:
        p = percentile(ordered, q)
        assert p is not None
        out[f"p{q}"] = p
    out["max"] = float(ordered[-1])
    return out


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval that holds the true median with at least `confidence`: the order
    statistics x(j), x(n+1-j) with the largest j whose binomial(n, 1/2) tail keeps that coverage
    (past `_EXACT_UP_TO` samples, j from the binomial's normal approximation). None when n is too
    small for any such pair (n < 6 at 95 %), or empty. It says how far a median of this many samples
    can move by the draw of the samples alone, not by the machine's noise."""
    n = len(values)
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    ordered = sorted(values)
    if n > _EXACT_UP_TO:
        z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2.0)
        j = max(1, math.floor(n / 2.0 - z * math.sqrt(n) / 2.0))
        return ordered[j - 1], ordered[n - j]
    total = 2**n  # integers: 2.0**n overflows a float past n = 1023
    tail = 0  # binomial(n, 1/2) counts of X <= j - 1: the median lies below x(j)
    best: int | None = None
    for j in range(1, n // 2 + 1):
        tail += math.comb(n, j - 1)
        if (total - 2 * tail) / total < confidence:
            break
        best = j
    if best is None:
        return None
    return ordered[best - 1], ordered[n - best]


@dataclass(frozen=True, slots=True)
class Playback:
    """Reply audio played at real time from its first byte, as a device without a jitter buffer would."""

    underruns: int  # times the player ran dry before the next frame came
    underrun_ms: float  # total silence those gaps inserted
    max_gap_ms: float
    end_at: float  # when playback of the last frame finishes (same clock as the arrivals)


# gaps shorter than this are timer jitter, not an audible dropout
UNDERRUN_TOLERANCE_MS = 2.0


def playback(arrivals: Iterable[tuple[float, float]], tolerance_ms: float = UNDERRUN_TOLERANCE_MS) -> Playback:
    """Simulate playback of audio chunks `(arrival_time_s, duration_s)`, in arrival order.

    Playback starts when the first chunk arrives; each chunk plays right after the previous one,
    or when it arrives if that is later: that wait is an underrun (a gap the user hears).
    """
    end: float | None = None
    count = 0
    total = 0.0
    biggest = 0.0
    for at, duration in arrivals:
        if end is None:
            end = at
        gap = at - end
        if gap * 1000.0 > tolerance_ms:
            count += 1
            total += gap
            biggest = max(biggest, gap)
        end = max(end, at) + duration
    return Playback(count, total * 1000.0, biggest * 1000.0, end if end is not None else 0.0)


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """Prometheus' histogram_quantile: `buckets` maps upper bound (le, +inf included) to cumulative count.

    Linear interpolation inside the bucket that holds the quantile; a quantile in the +Inf bucket
    returns the largest finite bound (as Prometheus does). None when there are no observations.
    """
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                finite = [b for b in bounds if not math.isinf(b)]
                return finite[-1] if finite else None
            if count == prev_count:
                return bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return None


def bucket_delta(after: Mapping[float, float], before: Mapping[float, float]) -> dict[float, float]:
    """Observations between two scrapes of one cumulative histogram (a counter reset counts from zero)."""
    delta = {le: after[le] - before.get(le, 0.0) for le in after}
    if any(v < 0 for v in delta.values()):  # the server restarted: its counts began again
        return dict(after)
    return delta
