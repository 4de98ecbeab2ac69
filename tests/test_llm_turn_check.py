"""bench/llm_turn_check.py, the LLM end-of-turn measurement of `make sglang-check`, run here
against the SGLang simulator (its probabilities are made up: these tests check the script and the
client's request and parsing, not a model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.llm_turn_check import Reading, main, problems, separation, spoken_units, utterances


def test_the_users_words_are_a_recognizers_no_punctuation_and_mandarin_by_character() -> None:
    assert spoken_units("And so, my fellow Americans: ask not!", "en") == "and so my fellow americans ask not".split()
    assert spoken_units("Don't stop.", "en") == ["don't", "stop"]
    assert spoken_units("欢迎大家，来体验。", "zh") == list("欢迎大家来体验")  # noqa: RUF001 - the CJK comma on purpose


def test_each_sentence_is_asked_whole_and_cut_at_every_inner_boundary() -> None:
    items = utterances(("en_goforward_command",))
    assert [(u.text, u.finished) for u in items] == [
        ("go forward ten meters", True),
        ("go forward", False),
        ("go forward ten", False),
    ]


def test_the_check_passes_on_the_simulator_with_its_made_up_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "readings.json"
    assert main(["--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "SIMULATOR" in out and "PASS" in out and "FAIL" not in out
    readings = json.loads(out_json.read_text())
    assert len(readings) == len(utterances())
    assert all(r["p_cold"] == pytest.approx(r["p_warm"]) for r in readings)
    by_text = {r["text"]: r for r in readings}
    # the simulator's rule (standins/sglang/logprobs.py): words that need more 0.03, else 0.6
    assert by_text["and so my fellow americans ask not what your country can do for"]["p_warm"] == pytest.approx(0.03)
    assert by_text["go forward ten meters"]["p_warm"] == pytest.approx(0.6)
    assert "en: finished above its own cuts in" in out and "request time warm: p50" in out


def _reading(text: str, finished: bool, cold: float | None, warm: float | None) -> Reading:
    return Reading("clip", "en", text, finished, cold, warm, 1.0, 1.0)


def test_a_missing_probability_or_two_answers_at_temperature_0_fail_the_check() -> None:
    assert problems([_reading("a", True, 0.5, 0.5)]) == []
    assert "no probability" in problems([_reading("a", True, None, 0.5)])[0]
    assert "cold" in problems([_reading("a", True, 0.5, 0.9)])[0]


def test_separation_counts_pairs_of_one_sentence_with_ties_as_half() -> None:
    readings = [_reading("x y z", True, 0.8, 0.8), _reading("x y", False, 0.1, 0.1), _reading("x", False, 0.8, 0.8)]
    assert separation(readings) == pytest.approx(0.75)
    assert separation([_reading("x", True, 0.8, 0.8)]) is None
