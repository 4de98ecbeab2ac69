"""What one streamed item says about an endpointing setting, and the totals over a setting's items.

Per item (its set entry and its trace):
- dead air: from the person's last speech sample (when a live microphone captured it, see
  `ItemTrace.spoken_at`) to the arrival of the `speech.stopped` that ended the turn at the true end;
  None when the turn had not ended by the end of the streamed silence;
- a false cut-off at the inserted pause: a turn ended with its speech end inside that pause
  (from TOLERANCE_MS before it: the VAD closes speech on window edges) while the person went on;
- cuts at natural pauses (the recording's own silences inside the sentence) and anywhere else;
- replies started for turns cut before the true end, and replies the server cancelled (barge-in,
  a newer turn, a merge; the one the benchmark cancels itself after the true end's reply started
  to sound is not counted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.turnset import SAMPLE_RATE, TurnItem
from bench.turnstream import ItemTrace
from hark.loadtest.stats import median_interval, percentile

TOLERANCE_MS = 300


@dataclass(frozen=True, slots=True)
class ItemResult:
    item_id: str
    clip: str
    language: str
    pause_ms: int  # the inserted pause; 0 for the recording as it is
    dead_air_ms: float | None
    endpoint_ms: float | None  # the server's own: speech end -> decision (response.done.metrics)
    first_audio_ms: float | None  # the server's: speech end -> first reply audio
    final_reason: str | None
    final_probability: float | None
    inserted_cut: bool
    natural_cuts: int  # natural pauses of the item a turn ended in
    natural_pauses: int
    other_cuts: int  # turn ends before the true end outside any pause
    turns: int  # speech.stopped events
    replies: int
    cut_replies: int  # replies started for a turn that ended before the true end
    cancelled: int
    errors: tuple[str, ...]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def score(item: TurnItem, trace: ItemTrace) -> ItemResult:
    tolerance = TOLERANCE_MS * SAMPLE_RATE // 1000
    final = trace.final_stop
    inserted, natural, other = False, set(), 0
    for stop in trace.stops:
        if stop is final:
            break
        at = stop.audio_ms * SAMPLE_RATE // 1000
        if item.pause is not None and item.pause[0] - tolerance <= at <= item.pause[1]:
            inserted = True
            continue
        pause = next((i for i, (a, b) in enumerate(item.natural_pauses) if a - tolerance <= at <= b), None)
        if pause is None:
            other += 1
        else:
            natural.add(pause)
    reply = trace.replies.get(trace.final_reply) if trace.final_reply is not None else None
    metrics = reply.metrics if reply is not None else {}
    return ItemResult(
        item_id=item.id,
        clip=item.clip,
        language=item.language,
        pause_ms=item.pause_ms,
        dead_air_ms=None if final is None else (final.arrival - trace.spoken_at(item.true_end)) * 1000.0,
        endpoint_ms=_number(metrics.get("endpoint_ms")),
        first_audio_ms=_number(metrics.get("first_audio_ms")),
        final_reason=None if final is None else final.reason,
        final_probability=None if final is None else final.probability,
        inserted_cut=inserted,
        natural_cuts=len(natural),
        natural_pauses=len(item.natural_pauses),
        other_cuts=other,
        turns=len(trace.stops),
        replies=len(trace.replies),
        cut_replies=len(trace.replies) - (reply is not None),
        cancelled=sum(
            r.status == "cancelled" and r.response_id != trace.cancelled_by_bench for r in trace.replies.values()
        ),
        errors=tuple(trace.errors),
    )


def _quantiles(values: Sequence[float]) -> dict[str, Any]:
    interval = median_interval(values)
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        # where the median of these items could lie (95 %): the items' draw alone, not run-to-run noise
        "p50_interval": None if interval is None else list(interval),
        "p90": percentile(values, 90),
        "max": max(values, default=None),
    }


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def summarize(results: Sequence[ItemResult]) -> dict[str, Any]:
    """The numbers of one setting (CPU is the driver's: it knows the server process)."""
    paused = [r for r in results if r.pause_ms]
    by_pause: dict[str, dict[str, Any]] = {}
    for ms in sorted({r.pause_ms for r in paused}):
        of_length = [r for r in paused if r.pause_ms == ms]
        cut = sum(r.inserted_cut for r in of_length)
        by_pause[str(ms)] = {"items": len(of_length), "cut": cut, "rate": _rate(cut, len(of_length))}
    cut = sum(r.inserted_cut for r in paused)
    natural_total = sum(r.natural_pauses for r in results)
    natural_cut = sum(r.natural_cuts for r in results)
    numbers = [r.dead_air_ms for r in results if r.dead_air_ms is not None]
    return {
        "items": len(results),
        "dead_air_ms": _quantiles(numbers),
        "not_ended": sum(r.dead_air_ms is None for r in results),
        "false_cutoff": {"items": len(paused), "cut": cut, "rate": _rate(cut, len(paused)), "by_pause_ms": by_pause},
        "natural_pauses": {"pauses": natural_total, "cut": natural_cut, "rate": _rate(natural_cut, natural_total)},
        "other_cuts": sum(r.other_cuts for r in results),
        "turns": sum(r.turns for r in results),
        "replies": sum(r.replies for r in results),
        "cut_replies": sum(r.cut_replies for r in results),
        "cancelled": sum(r.cancelled for r in results),
        "endpoint_ms": _quantiles([v for r in results if (v := r.endpoint_ms) is not None]),
        "first_audio_ms": _quantiles([v for r in results if (v := r.first_audio_ms) is not None]),
        "final_reasons": dict(Counter(r.final_reason or "none" for r in results)),
        "errors": sorted({e for r in results for e in r.errors}),
    }
