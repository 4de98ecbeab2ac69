"""Qwen tool-call markup parsed out of streamed text (server/llm/tool_parser.py), in every chunking."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from hark.server.llm.base import ToolCall
from hark.server.llm.tool_parser import ToolCallParser, parse_call_body

WEATHER = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TIMER = '<tool_call>\n{"name": "set_timer", "arguments": {"minutes": 5}}\n</tool_call>'


def _ids() -> ToolCallParser:
    counter = itertools.count(1)
    return ToolCallParser(call_id=lambda: f"call_{next(counter)}")


def run(chunks: list[str]) -> list[str | ToolCall]:
    """Feed the chunks; merge adjacent text deltas (how they are split is the parser's business)."""
    parser = _ids()
    items: list[str | ToolCall] = []
    for chunk in chunks:
        items += parser.feed(chunk)
    items += parser.finish()
    merged: list[str | ToolCall] = []
    for item in items:
        assert item != "", "no empty text deltas"
        if isinstance(item, str) and merged and isinstance(merged[-1], str):
            merged[-1] += item
        else:
            merged.append(item)
    return merged


def split_at(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(max(c, 0), len(text)) for c in cuts})
    return [text[a:b] for a, b in itertools.pairwise([0, *points, len(text)]) if b > a]


def test_text_then_a_call_then_text() -> None:
    text = f"Let me check.\n{WEATHER}\nOne moment."
    assert run([text]) == [
        "Let me check.",
        ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
        "One moment.",
    ]


def test_several_calls_in_one_reply() -> None:
    assert run([f"{WEATHER}\n{TIMER}"]) == [
        ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_2", "set_timer", '{"minutes": 5}'),
    ]


def test_text_streams_before_the_reply_ends() -> None:
    parser = _ids()
    assert parser.feed("Sure, ") == ["Sure,"]  # the space may precede a marker: held
    assert parser.feed("I can") == [" I can"]
    assert parser.feed(" help.\n<tool") == [" help."]  # a partial marker and the newline are held
    assert parser.feed('_call>\n{"name": "x", ') == []
    assert parser.feed('"arguments": {}}\n</tool_call>') == [ToolCall("call_1", "x", "{}")]
    assert parser.finish() == []


def test_a_partial_marker_that_is_not_one_is_text_after_all() -> None:
    assert run(["a <tool", "box> b <", "tools"]) == ["a <toolbox> b <tools"]
    assert run(["x <tool_"]) == ["x <tool_"]  # the stream ended: what was held is text


def test_plain_text_is_unchanged_in_any_chunking() -> None:
    text = "Hello there.\n\nTwo lines, and a < sign, <tool and </tool_call> alone.  "
    for cut in range(len(text) + 1):
        assert run([text[:cut], text[cut:]]) == [text]


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_any_chunking_gives_the_same_items(cuts: list[int]) -> None:
    text = f"Checking both.\n{WEATHER}\n{TIMER}\nDone, <b>really</b>."
    assert run(split_at(text, cuts)) == [
        "Checking both.",
        ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_2", "set_timer", '{"minutes": 5}'),
        "Done, <b>really</b>.",
    ]


def test_character_by_character_never_leaks_markup() -> None:
    text = f"Ok.\n{WEATHER}"
    items = run(list(text))
    assert items == ["Ok.", ToolCall("call_1", "get_weather", '{"city": "Paris"}')]


def test_invalid_json_keeps_the_raw_text_and_what_name_could_be_read() -> None:
    body = '{"name": "get_weather", "arguments": {"city": "Par'
    assert run([f"<tool_call>\n{body}}}\n</tool_call>"]) == [ToolCall("call_1", "get_weather", body + "}")]
    assert run(["<tool_call>not json at all</tool_call>"]) == [ToolCall("call_1", "", "not json at all")]


def test_a_call_cut_off_by_the_end_of_the_stream_still_comes_out() -> None:
    assert run(['<tool_call>\n{"name": "set_timer", "arguments": {"min']) == [
        ToolCall("call_1", "set_timer", '{"name": "set_timer", "arguments": {"min')
    ]
    # complete JSON without the closing marker (a stop string ate it) is a valid call
    assert run([TIMER.removesuffix("</tool_call>")]) == [ToolCall("call_1", "set_timer", '{"minutes": 5}')]


def test_arguments_shapes() -> None:
    assert parse_call_body('{"name": "f", "parameters": {"a": 1}}', "c") == ToolCall("c", "f", '{"a": 1}')
    assert parse_call_body('{"name": "f"}', "c") == ToolCall("c", "f", "{}")
    assert parse_call_body('{"name": "f", "arguments": "{\\"a\\": 1}"}', "c") == ToolCall("c", "f", '{"a": 1}')
    unicode = parse_call_body('{"name": "f", "arguments": {"city": "Zürich"}}', "c")
    assert json.loads(unicode.arguments) == {"city": "Zürich"} and "Zürich" in unicode.arguments
    assert parse_call_body('{"name": "say_\\"hi\\"", "arguments": ', "c").name == 'say_"hi"'


def test_the_forced_opening_primes_the_parser() -> None:
    parser = _ids()
    assert parser.feed('<tool_call>\n{"name": "set_timer", "arguments": ') == []
    assert parser.feed('{"minutes": 3}}\n</tool_call>') == [ToolCall("call_1", "set_timer", '{"minutes": 3}')]


def test_default_call_ids_are_unique() -> None:
    parser = ToolCallParser()
    items = parser.feed(WEATHER + TIMER)
    ids = [item.call_id for item in items if isinstance(item, ToolCall)]
    assert len(set(ids)) == 2 and all(i.startswith("call_") and len(i) == 37 for i in ids)
