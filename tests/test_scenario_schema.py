"""Load scenarios are checked by their declaration: every number bounded, strict types, clear messages."""

from __future__ import annotations

from typing import Any

import pytest

from hark.loadtest.scenario import Scenario, parse_scenario


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ({"turns_per_session": 10**400}, "turns_per_session"),
        ({"barge_in_after_ms": 10**12}, "barge_in_after_ms"),
        ({"turn_timeout_s": float("inf")}, "turn_timeout_s"),
        ({"turn_timeout_s": float("nan")}, "turn_timeout_s"),
        ({"barge_in_probability": True}, "barge_in_probability"),
        ({"turns_per_session": 1.5}, "turns_per_session"),
        ({"seed": 2**70}, "seed"),
        ({"pause_ms": [1, 10**9]}, "pause_ms"),
        ({"pause_ms": [1, 2, 3]}, "pause_ms"),
        ({"clips": ["a", ""]}, "clips"),
        ({"clips": "a"}, "clips"),
        ({"session": {"min_silence_ms": 10**400}}, "min_silence_ms"),
    ],
)
def test_scenario_values_out_of_range_name_their_key(bad: dict[str, Any], key: str) -> None:
    with pytest.raises(ValueError, match=key):
        parse_scenario(bad, "s.toml")


def test_scenario_converts_toml_values_to_the_declared_types() -> None:
    s = parse_scenario({"clips": ["a", "b"], "pause_ms": [0, 600_000], "turn_timeout_s": 5, "barge_in_probability": 1})
    assert s == Scenario(clips=("a", "b"), pause_ms=(0, 600_000), turn_timeout_s=5.0, barge_in_probability=1.0)
    assert isinstance(s.turn_timeout_s, float) and isinstance(s.clips, tuple)
