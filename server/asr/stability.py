"""Which prefix of a streaming hypothesis is safe to act on (LocalAgreement-2 at word level).

Words are split on spaces, except that each CJK character counts as a word of its own: Chinese
and Japanese text has no spaces, and holding back "the last word" must not hold back the sentence.
"""

from __future__ import annotations

import re

# one CJK ideograph / kana / hangul syllable, or a run of anything else that is not a space
_UNIT = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]|[^\s\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+"
)


def split_units(text: str) -> list[str]:
    return _UNIT.findall(text)


def unit_prefix(text: str, n: int) -> str:
    """The literal prefix of `text` that holds its first n units (spacing kept as it was)."""
    if n <= 0:
        return ""
    for i, match in enumerate(_UNIT.finditer(text), 1):
        if i == n:
            return text[: match.end()]
    return text


def _is_cjk(unit: str) -> bool:
    return len(unit) == 1 and _UNIT.fullmatch(unit) is not None and not unit.isascii() and unit.isalpha()


def join_units(units: list[str]) -> str:
    """Inverse of split_units: a space between two units only where neither is a CJK character."""
    out: list[str] = []
    for unit in units:
        if out and not (_is_cjk(out[-1]) or _is_cjk(unit)):
            out.append(" ")
        out.append(unit)
    return "".join(out)


class LocalAgreement:
    """`stable_text` is the longest common word prefix of the last two hypotheses.

    The last word of each hypothesis is held back: a decoder still hearing that word revises it
    ("for" -> "former" -> "forward"), and a word committed too early can never be taken back.
    The stable prefix only grows within a turn; a newer agreement that contradicts it is ignored.
    """

    def __init__(self, hold_back_last_word: bool = True) -> None:
        self._hold_back = hold_back_last_word
        self._previous: list[str] | None = None
        self._stable: list[str] = []

    @property
    def stable_text(self) -> str:
        return join_units(self._stable)

    @property
    def stable_units(self) -> int:
        return len(self._stable)

    def reset(self) -> None:
        self._previous = None
        self._stable = []

    def update(self, hypothesis: str) -> str:
        words = split_units(hypothesis)
        candidate = words[:-1] if self._hold_back else words
        if self._previous is not None:
            agreed = _common_prefix(self._previous, candidate)
            if len(agreed) > len(self._stable) and agreed[: len(self._stable)] == self._stable:
                self._stable = agreed
        self._previous = candidate
        return self.stable_text


def _common_prefix(a: list[str], b: list[str]) -> list[str]:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return a[:n]
