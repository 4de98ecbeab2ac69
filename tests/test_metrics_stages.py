"""The latency stages: the help text names exactly the stages observed, and nothing else gets in."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hark.server.metrics import STAGES, Metrics

SERVER = Path(__file__).resolve().parents[1] / "server"


def test_the_help_text_lists_the_stages_and_an_unknown_stage_is_refused() -> None:
    metrics = Metrics()
    text = metrics.render().decode()
    help_line = next(line for line in text.splitlines() if line.startswith("# HELP hark_stage_latency_seconds"))
    assert re.findall(r"(\w+) \(", help_line.split(":", 1)[1]) == list(STAGES)
    assert "llm_first_token" not in help_line  # named once, never observed
    metrics.observe("asr", 0.01)
    with pytest.raises(ValueError, match="llm_first_token"):
        metrics.observe("llm_first_token", 0.01)


def test_every_stage_named_is_observed_somewhere_in_the_server() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in SERVER.rglob("*.py") if p.name != "metrics.py")
    unobserved = [stage for stage in STAGES if f'"{stage}"' not in source]
    assert not unobserved, f"STAGES names stages nothing observes: {unobserved}"
