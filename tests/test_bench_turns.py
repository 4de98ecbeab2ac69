"""The turn-taking set of `make bench-turns` (bench/turnset.py) and its scoring (bench/turnscore.py).

The set: pauses go in at real word boundaries inside the sentence (English: between two
consecutive words of the transcript as pocketsphinx aligns them; Mandarin: at a dip of the signal),
never near its start or end, and are exactly as long as asked, with the audio around them untouched.
The scoring: a turn ended inside the inserted pause is a false cut-off, a natural pause is told
apart from it, and dead air runs from the last speech sample to the decision's arrival.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

import numpy as np
import pytest
from conftest import corpus_path

from bench import turnset
from bench.turnscore import score, summarize
from bench.turnstream import FRAME_SAMPLES, SAMPLE_RATE, ItemTrace, Reply, Stop

ENGLISH, MANDARIN = "en_librivox_sense_0920", "zh_funasr_asr_example"
PAUSES = turnset.PAUSES_MS


@pytest.fixture(scope="module")
def recordings() -> dict[str, turnset.Recording]:
    for name in (ENGLISH, MANDARIN):
        corpus_path(name)  # a clear failure when the corpus is not there
    return {name: turnset.load_recording(name) for name in (ENGLISH, MANDARIN)}


@pytest.fixture(scope="module")
def items(recordings: dict[str, turnset.Recording]) -> list[turnset.TurnItem]:
    return [item for rec in recordings.values() for item in turnset.items_of(rec, PAUSES, boundaries=4)]


def pcm_of(item: turnset.TurnItem) -> np.ndarray:
    return np.frombuffer(item.pcm, dtype=np.int16)


def test_each_clip_gives_the_recording_and_each_pause_length_once_at_its_own_boundary(
    items: list[turnset.TurnItem],
) -> None:
    for name in (ENGLISH, MANDARIN):
        mine = [i for i in items if i.clip == name]
        assert mine[0].pause is None and sorted(i.pause_ms for i in mine[1:]) == sorted(PAUSES)
        assert len({i.pause[0] for i in mine if i.pause is not None}) == len(PAUSES)
        assert len({i.id for i in mine}) == len(mine)


def test_a_sentence_with_few_boundaries_shares_them_and_the_lengths_rotate_between_clips(
    recordings: dict[str, turnset.Recording],
) -> None:
    rec = recordings[ENGLISH]
    two = turnset.items_of(rec, PAUSES, boundaries=2)
    at = {i.pause_ms: i.pause[0] - i.lead_in for i in two if i.pause is not None}
    assert len(set(at.values())) == 2 and at[PAUSES[0]] == at[PAUSES[2]] and at[PAUSES[1]] == at[PAUSES[3]]
    rotated = {
        i.pause_ms: i.pause[0] - i.lead_in for i in turnset.items_of(rec, PAUSES, boundaries=2, rotate=1) if i.pause
    }
    assert rotated[PAUSES[0]] == at[PAUSES[1]] and rotated[PAUSES[1]] == at[PAUSES[0]]


def test_a_pause_is_exactly_that_much_silence_and_the_rest_is_the_recording(
    recordings: dict[str, turnset.Recording], items: list[turnset.TurnItem]
) -> None:
    for item in items:
        original = recordings[item.clip]
        lead_in = item.lead_in
        assert not pcm_of(item)[:lead_in].any()
        pcm = pcm_of(item)[lead_in:]
        if item.pause is None:
            assert np.array_equal(pcm, original.pcm) and item.true_end == original.true_end + lead_in
            continue
        at, end = item.pause[0] - lead_in, item.pause[1] - lead_in
        length = item.pause_ms * SAMPLE_RATE // 1000
        assert end - at == length and item.pause_ms in PAUSES
        assert len(pcm) == len(original.pcm) + length
        assert np.array_equal(pcm[:at], original.pcm[:at])
        assert not pcm[at:end].any()
        assert np.array_equal(pcm[end:], original.pcm[at:])
        assert item.true_end == original.true_end + length + lead_in
        assert item.duration_ms == (lead_in + len(pcm)) * 1000 // SAMPLE_RATE


def test_a_clips_endings_meet_the_streamers_frames_at_as_many_phases_as_it_has_items(
    items: list[turnset.TurnItem],
) -> None:
    frame = turnset.FRAME_SAMPLES
    for name in (ENGLISH, MANDARIN):
        mine = [i for i in items if i.clip == name]
        # the inserted pauses are whole frames: without the lead-in every ending had one phase
        assert len({i.true_end % frame for i in mine}) == len(mine)
        assert sorted(i.lead_in for i in mine) == [k * frame // len(mine) for k in range(len(mine))]


def test_the_lead_in_moves_every_position_on_the_items_clock(recordings: dict[str, turnset.Recording]) -> None:
    plain = dataclasses.replace(turnset.items_of(recordings[MANDARIN], PAUSES, 4)[1], natural_pauses=((800, 4800),))
    assert plain.pause is not None
    moved = turnset.delayed(plain, 555)
    assert moved.lead_in == plain.lead_in + 555 and moved.true_end == plain.true_end + 555
    assert moved.pause == (plain.pause[0] + 555, plain.pause[1] + 555)
    assert moved.natural_pauses == tuple((s + 555, e + 555) for s, e in plain.natural_pauses)
    assert moved.pcm == bytes(2 * 555) + plain.pcm and moved.id == plain.id
    assert turnset.delayed(plain, 0) is plain


def test_pauses_sit_inside_the_sentence_away_from_its_ends_and_its_natural_pauses(
    recordings: dict[str, turnset.Recording], items: list[turnset.TurnItem]
) -> None:
    edge = turnset.EDGE_MS * SAMPLE_RATE // 1000 - turnset.SNAP_MS * SAMPLE_RATE // 1000
    for item in items:
        if item.pause is None:
            continue
        original = recordings[item.clip]
        at = item.pause[0] - item.lead_in
        assert original.speech_start + edge <= at <= original.true_end - edge, item.id
        for start, end in original.natural_pauses:
            assert not start <= at <= end, item.id


def test_english_pauses_go_between_two_consecutive_words_of_the_transcript(
    recordings: dict[str, turnset.Recording], items: list[turnset.TurnItem]
) -> None:
    original = turnset.load_pcm(ENGLISH)  # aligned as recorded, before the set trimmed its lead
    lead = recordings[ENGLISH].lead
    transcript = str(turnset.manifest()[ENGLISH]["transcript"]).split()
    words = [(w, s, e) for w, s, e in turnset.aligned_words(original, " ".join(transcript)) if w != "<sil>"]
    assert [w for w, _, _ in words] == transcript
    snap = turnset.SNAP_MS * SAMPLE_RATE // 1000
    for item in items:
        if item.clip != ENGLISH or item.pause is None:
            continue
        at, boundary = lead + item.pause[0] - item.lead_in, item.boundary
        assert boundary is not None and boundary.source == "alignment"
        pairs = [(i, a, b) for i, (a, b) in enumerate(itertools.pairwise(words)) if b[1] - snap <= at <= a[2] + snap]
        assert pairs, f"{item.id}: {at} is not at a word boundary"
        _, left, right = pairs[0]
        assert (boundary.left, boundary.right) == (left[0], right[0])


def test_mandarin_pauses_go_into_a_dip_of_the_signal(
    recordings: dict[str, turnset.Recording], items: list[turnset.TurnItem]
) -> None:
    original = recordings[MANDARIN].pcm
    hop = SAMPLE_RATE // 100
    level = 10 * np.log10(
        np.mean((original[: len(original) // hop * hop].astype(np.float64) / 32768).reshape(-1, hop) ** 2, axis=1)
        + 1e-12
    )
    rec = recordings[MANDARIN]
    median = np.median(level[rec.speech_start // hop : rec.true_end // hop])
    for item in items:
        if item.clip != MANDARIN or item.pause is None:
            continue
        frame = (item.pause[0] - item.lead_in) // hop
        assert item.boundary is not None and item.boundary.source == "energy"
        assert level[frame - 3 : frame + 4].min() <= median - turnset.DIP_DB, item.id


def test_the_true_end_is_where_speech_last_is_heard(recordings: dict[str, turnset.Recording]) -> None:
    # zh_funasr_regression_sample's reference VAD says speech ends at 5980 ms
    rec = turnset.load_recording("zh_funasr_regression_sample")
    assert abs((rec.lead + rec.true_end) * 1000 / SAMPLE_RATE - 5980) <= 100
    assert any(rec.lead + s <= 2300 * 16 and rec.lead + e >= 3400 * 16 for s, e in rec.natural_pauses)  # 1.24 s
    # the silence before the first word is cut to about LEAD_MS (the VAD, run again on the cut
    # audio, finds the first speech window a little later or earlier)
    assert rec.lead > 0 and abs(rec.speech_start / 16 - turnset.LEAD_MS) <= 100
    # en_whisper_jfk is cut on the start of a noise: that blip is no speech of the sentence
    jfk = turnset.load_recording("en_whisper_jfk")
    assert 10400 <= (jfk.lead + jfk.true_end) * 1000 / SAMPLE_RATE <= 10700


# ---------------------------------------------------------------- scoring


def _trace(item: turnset.TurnItem, stops: list[tuple[int, float]], merge: int | None = None) -> ItemTrace:
    """A session that sent frames at exactly real time from t = 100 s and got `stops` (audio_ms,
    arrival), each answered by a reply; `merge`: every stop keeps that turn id (resumed speech
    joined the turn)."""
    trace = ItemTrace(item.id, item.true_end)
    frames = -(-len(item.pcm) // (2 * FRAME_SAMPLES)) + 20
    trace.frame_sent = [100.0 + (k + 1) * FRAME_SAMPLES / SAMPLE_RATE for k in range(frames)]
    for turn, (audio_ms, arrival) in enumerate(stops, start=1):
        stop = Stop(turn if merge is None else merge, audio_ms, arrival, "silence", None)
        trace.stops.append(stop)
        rid = f"resp_{turn}"
        trace.replies[rid] = Reply(rid, stop.turn_id, arrival + 0.05, status="cancelled")
        if trace.final_stop is None and trace.is_true_end(audio_ms):
            trace.final_stop, trace.final_reply = stop, rid
    trace.cancelled_by_bench = trace.final_reply
    return trace


def test_a_turn_ended_in_the_inserted_pause_is_a_false_cut_off_and_dead_air_runs_to_the_decision(
    items: list[turnset.TurnItem],
) -> None:
    item = next(i for i in items if i.clip == ENGLISH and i.pause_ms == 1500)
    assert item.pause is not None
    pause_ms, end_ms = item.pause[0] * 1000 // SAMPLE_RATE, item.true_end * 1000 // SAMPLE_RATE
    # cut 500 ms into the pause, then the real end decided 400 ms after the last speech sample
    trace = _trace(item, [(pause_ms, 100.0 + (pause_ms + 500) / 1000), (end_ms, 100.0 + (end_ms + 400) / 1000)])
    result = score(item, trace)
    assert result.inserted_cut and result.natural_cuts == 0 and result.other_cuts == 0
    assert result.dead_air_ms == pytest.approx(400, abs=1)
    assert (result.replies, result.cut_replies, result.cancelled, result.turns) == (2, 1, 1, 2)
    whole = next(i for i in items if i.clip == ENGLISH and i.pause is None)
    clean = score(
        whole, _trace(whole, [(whole.true_end * 1000 // SAMPLE_RATE, 100.0 + whole.true_end / SAMPLE_RATE + 0.25)])
    )
    assert not clean.inserted_cut and clean.dead_air_ms == pytest.approx(250, abs=1) and clean.cancelled == 0
    summary = summarize([result, clean])
    assert summary["false_cutoff"]["rate"] == 1.0 and summary["false_cutoff"]["items"] == 1
    assert summary["dead_air_ms"]["p50"] == pytest.approx(325, abs=1)
    assert summary["dead_air_ms"]["p50_interval"] is None  # two items say nothing about where the median is


def test_a_cut_at_a_natural_pause_is_not_a_false_cut_off_at_the_inserted_one() -> None:
    rec = turnset.load_recording("zh_funasr_regression_sample")
    item = turnset.items_of(rec, (600,), boundaries=1)[1]
    natural_start_ms = item.natural_pauses[0][0] * 1000 // SAMPLE_RATE
    end_ms = item.true_end * 1000 // SAMPLE_RATE
    trace = _trace(
        item, [(natural_start_ms, 100.0 + natural_start_ms / 1000 + 0.6), (end_ms, 100.0 + end_ms / 1000 + 0.3)]
    )
    result = score(item, trace)
    assert not result.inserted_cut and result.natural_cuts == 1 and result.natural_pauses == len(item.natural_pauses)


def test_a_cut_merged_back_into_its_turn_still_counts_and_the_real_end_is_the_later_stop(
    items: list[turnset.TurnItem],
) -> None:
    # the server joined the resumed speech to the same turn: both speech.stopped carry turn 1
    item = next(i for i in items if i.clip == ENGLISH and i.pause_ms == 300)
    assert item.pause is not None
    pause_ms, end_ms = item.pause[0] * 1000 // SAMPLE_RATE, item.true_end * 1000 // SAMPLE_RATE
    late = 100.0 + (pause_ms + 900) / 1000  # decided after the person had already gone on
    trace = _trace(item, [(pause_ms, late), (end_ms, 100.0 + (end_ms + 300) / 1000)], merge=1)
    result = score(item, trace)
    assert result.inserted_cut and result.dead_air_ms == pytest.approx(300, abs=1)
    assert (result.cut_replies, result.cancelled) == (1, 1)


def test_a_turn_that_never_ended_has_no_dead_air(items: list[turnset.TurnItem]) -> None:
    item = next(i for i in items if i.pause is None)
    result = score(item, _trace(item, []))
    assert result.dead_air_ms is None and summarize([result])["not_ended"] == 1


def test_item_ids_name_the_clip_boundary_and_pause(items: list[turnset.TurnItem]) -> None:
    for item in items:
        if item.pause is None:
            assert item.id == f"{item.clip}/whole"
        else:
            assert re.fullmatch(rf"{item.clip}/b[1-4]@\d+ms\+{item.pause_ms}", item.id)
