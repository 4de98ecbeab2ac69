"""What the transcript's last word says about whether the turn is finished (the embedded default's text evidence).

An utterance that stops on an article, a preposition or a conjunction ("turn left at the",
"coffee and") is almost never a finished turn, whatever its intonation; in Mandarin the same holds
for a trailing conjunction, preposition, or a measure word that waits for its noun (一个, 那个).
The audio model alone scores some of these cuts as complete (a pause after a comma, a falling pitch),
so the semantic endpointer multiplies its audio probability by `UNFINISHED_FACTOR` when the words end
like this. Nothing here says a turn *is* finished: the signal only ever delays.

Small, hand-made lists, one per language; the language is read from the text itself (CJK characters
or not), so no setting is needed. Whether the signal pays off is for `make bench-turns` to say
(`turn_detection.text_signal` switches it).
"""

from __future__ import annotations

import re
from typing import Final

UNFINISHED_FACTOR: Final = 0.3

_ENGLISH: Final = frozenset(
    # articles and determiners that need a noun (not this / that / some: they also stand alone)
    "a an the my your our their every each".split()
    # prepositions that rarely end a request ("turn it on", "log me out" do: in / on / out / up stay out)
    + "of to at for with from into onto between during than toward towards per via upon".split()
    # conjunctions that open a clause (not so / though / that: "I think so" ends a sentence)
    + "and or but nor because if when while although unless until whether".split()
    # fillers: the person is still thinking
    + "um uh erm".split()
)
# Mandarin: conjunctions, prepositions and measure words that wait for what follows. 的 / 了 / 吗 are
# left out: they end many finished sentences (好的, 是的, 走了, 对吗).
_MANDARIN: Final = (
    "和",
    "跟",
    "与",
    "或者",
    "还是",
    "但是",
    "可是",
    "而且",
    "并且",
    "因为",
    "所以",
    "如果",
    "然后",
    "就是",
    "或",
    "在",
    "把",
    "被",
    "给",
    "对",
    "从",
    "向",
    "比",
    "让",
    "关于",
    "一个",
    "这个",
    "那个",
    "哪个",
    "一些",
    "一下",
    "的话",
)
_CJK: Final = re.compile(r"[\u3400-\u9fff]")
_TRAILING_PUNCTUATION: Final = re.compile(r"[\s,;:\-—…，、；：]+$")  # noqa: RUF001 - CJK punctuation on purpose
_SENTENCE_END: Final = re.compile(r"[.!?。！？]$")  # noqa: RUF001
_WORD: Final = re.compile(r"[A-Za-z']+$")


def unfinished_word(text: str) -> str | None:
    """The trailing word that marks `text` as unfinished, or None (no such word, or a sentence end)."""
    stripped = _TRAILING_PUNCTUATION.sub("", text)
    if not stripped or _SENTENCE_END.search(stripped):
        return None
    if _CJK.search(stripped[-1]):
        return next((word for word in _MANDARIN if stripped.endswith(word)), None)
    match = _WORD.search(stripped)
    if match is None:
        return None
    word = match.group(0).lower()
    return word if word in _ENGLISH else None


def text_factor(text: str) -> float:
    """What the audio probability is multiplied by: `UNFINISHED_FACTOR` for an unfinished ending, else 1."""
    return UNFINISHED_FACTOR if unfinished_word(text) is not None else 1.0
