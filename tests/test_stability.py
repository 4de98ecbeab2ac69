"""LocalAgreement-2: the stable prefix only grows, and only with words two hypotheses agree on."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hark.server.asr.stability import LocalAgreement

# the partials pocketsphinx gave for en_goforward_command, 100 ms apart
GOFORWARD_PARTIALS = [
    "go", "goes", "go for", "go for", "go former", "go forward", "go forward to", "go forward ten",
    "go forward can you", "go forward ten meter", "go forward ten meters", "go forward ten meters",
]  # fmt: skip


def test_goforward_partials() -> None:
    agreement = LocalAgreement()
    stables = [agreement.update(h) for h in GOFORWARD_PARTIALS]
    assert stables[-1] == "go forward ten"
    assert "go for" not in stables  # the half-heard word was never committed
    assert stables == sorted(stables, key=len)


def test_without_hold_back_it_is_the_plain_common_prefix() -> None:
    agreement = LocalAgreement(hold_back_last_word=False)
    agreement.update("a b c")
    assert agreement.update("a b d") == "a b"


def test_contradicting_agreement_does_not_shrink_it() -> None:
    agreement = LocalAgreement(hold_back_last_word=False)
    agreement.update("turn left now")
    assert agreement.update("turn left now") == "turn left now"
    agreement.update("turn right now please")
    assert agreement.update("turn right now please") == "turn left now"
    agreement.reset()
    assert agreement.stable_text == ""


@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "go", "to"]), max_size=8), max_size=20))
def test_stable_text_only_grows_and_was_agreed_on(hypotheses: list[list[str]]) -> None:
    agreement = LocalAgreement()
    previous = ""
    for words in hypotheses:
        stable = agreement.update(" ".join(words))
        assert stable.startswith(previous)
        previous = stable
