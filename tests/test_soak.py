"""The short soak (issue 12, 5b): 4 sessions of real speech for a minute leak nothing (memory slope,
asyncio tasks, fds, frames in = processed + dropped); `make soak` is the long one (16 x 10 min)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO, corpus_path

from hark.loadtest.soak import Point, SoakResult, _judge, slope_per_min


def test_slope_is_per_minute() -> None:
    assert slope_per_min([0, 60, 120], [100, 101, 102]) == 1.0
    assert slope_per_min([0, 60], [1, 2]) is None  # too few points to call it a trend


def _result(rss: list[float], tasks_after: float, frames_dropped: float) -> SoakResult:
    result = SoakResult(sessions=4, minutes=1, warmup_s=0.0, turns=5)
    result.points = [Point(10.0 * i, r + 400, 30, 20, 4, r) for i, r in enumerate(rss)]
    result.baseline = Point(0.0, rss[0], 10, 20, 0)
    result.final = Point(100.0, rss[-1], tasks_after, 20, 0)
    result.frames_in, result.frames_processed, result.frames_dropped = 100, 90, {"session_ended": frames_dropped}
    return result


def test_the_verdict_names_each_leak() -> None:
    clean = _result([500.0] * 6, tasks_after=11, frames_dropped=10)
    _judge(clean, max_slope=2.0)
    assert clean.passed, clean.checks
    leaking = _result([500.0 + 5 * i for i in range(6)], tasks_after=40, frames_dropped=9)  # 30 MiB/min
    _judge(leaking, max_slope=2.0)
    failed = {name for name, ok, _ in leaking.checks if not ok}
    assert failed == {"RSS slope after warm-up", "asyncio tasks back to baseline", "frames in = processed + dropped"}


def test_short_soak_leaks_nothing(tmp_path: Path) -> None:
    corpus_path("en_librivox_sense_0870")  # fails with the install hint when the corpus is missing
    out = tmp_path / "soak.json"
    cmd = [sys.executable, "-m", "hark.loadtest.soak", "--sessions", "4", "--minutes", "1", "--warmup", "20"]
    # a minute is too short for a fine slope: this catches gross leaks (D5 was ~95 MiB per speaker)
    cmd += ["--max-rss-slope", "30", "--log", str(tmp_path / "server.log"), "--json", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["passed"] and result["turns"] > 0, result["checks"]
    assert result["final"]["tasks"] is not None, "hark_tasks missing from /metrics"
