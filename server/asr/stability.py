"""Which prefix of a streaming hypothesis is safe to act on (LocalAgreement-2 at word level)."""

from __future__ import annotations


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
        return " ".join(self._stable)

    def reset(self) -> None:
        self._previous = None
        self._stable = []

    def update(self, hypothesis: str) -> str:
        words = hypothesis.split()
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
