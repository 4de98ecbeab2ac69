"""Next-token logprobs in SGLang's shapes, with MADE-UP probabilities (the simulator has no model).

SGLang answers `return_logprob: true` with, in `meta_info`, `output_token_logprobs` (one
`[logprob, token_id, token_text]` per output token) and `output_top_logprobs` (per output token, the
`top_logprobs_num` most likely `[logprob, token_id, token_text]`, or null when none were asked);
`token_text` is null unless `return_text_in_logprobs` is true. Input logprobs (`input_token_logprobs`,
`input_top_logprobs`) are empty here: with the default `logprob_start_len` (-1) SGLang computes none.

The numbers are invented, not a language model's: after a prompt that ends inside an open ChatML
user turn, P(`<|im_end|>`) is high when the user's words end in sentence punctuation (0.9), low when
they end in a word that needs a continuation (an article, a preposition, a conjunction: 0.03), and
in between otherwise (0.6). That is enough to test a client's end-of-turn check end to end; the
real model's quality can only be measured on a GPU (`make sglang-check`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

from .tokens import IM_END_ID, StandInTokenizer

IM_END_TEXT: Final = "<|im_end|>"
_OPEN_USER_TURN: Final = re.compile(r"<\|im_start\|>user\n((?:(?!<\|im_end\|>).)*)\Z", re.DOTALL)
_NEEDS_MORE: Final = frozenset(
    "a an the my your our their of to for with at from into and or but because if when while than".split()
)
_SENTENCE_END: Final = tuple(".?!。？！")  # noqa: RUF001 - CJK punctuation on purpose
# made-up continuations of an unfinished user turn and of an assistant reply, with their share of
# the probability left after <|im_end|>
_CONTINUATIONS: Final = ((" and", 0.45), (",", 0.25), (" the", 0.15), (" to", 0.1), (" please", 0.05))
_TOKENS: Final = StandInTokenizer(remember=64)  # ids are hashes of the pieces: the same in every instance


@dataclass(frozen=True, slots=True)
class LogprobRequest:
    """What a request asked for: `top_logprobs_num` alternatives per position, texts or not."""

    top_n: int
    with_text: bool


def open_user_turn(prompt: str) -> str | None:
    """The user's words when `prompt` ends inside an unfinished ChatML user turn, else None."""
    match = _OPEN_USER_TURN.search(prompt)
    return match.group(1) if match else None


def made_up_end_probability(user_words: str) -> float:
    """The simulator's invented P(`<|im_end|>`) after the user's words (see the module doc)."""
    text = user_words.rstrip()
    if not text:
        return 0.05
    if text.endswith(_SENTENCE_END):
        return 0.9
    last = re.findall(r"[A-Za-z']+", text[-24:])
    if last and last[-1].lower() in _NEEDS_MORE:
        return 0.03
    return 0.6


def distribution(context: str, emitted: tuple[str, int] | None) -> list[tuple[float, int, str]]:
    """Made-up (probability, token id, text) of the next token after `context`, most likely first.
    `emitted` is the token the request actually produced there (it gets most of the rest)."""
    words = open_user_turn(context)
    if words is not None:
        p_end = made_up_end_probability(words)
        rest = [(share * (1.0 - p_end), piece) for piece, share in _CONTINUATIONS]
    else:
        p_end = 0.9 if emitted is not None and emitted[1] == IM_END_ID else 0.02
        kept = 0.8 if emitted is not None and emitted[1] != IM_END_ID else 0.0
        rest = [(kept, emitted[0])] if kept and emitted is not None else []
        rest += [(share * (1.0 - p_end - kept), piece) for piece, share in _CONTINUATIONS]
    entries = [(p_end, IM_END_ID, IM_END_TEXT)]
    seen = {IM_END_ID}
    for probability, piece in rest:
        (token_id,) = _TOKENS.encode(piece)
        if token_id not in seen:
            seen.add(token_id)
            entries.append((probability, token_id, piece))
    return sorted(entries, key=lambda entry: -entry[0])


def first_token(prompt: str) -> tuple[str, int] | None:
    """The token a greedy model would produce first after a prompt ending in an open user turn
    (None for any other prompt: the canned reply goes on as usual)."""
    if open_user_turn(prompt) is None:
        return None
    _, token_id, text = distribution(prompt, None)[0]
    return ("", IM_END_ID) if token_id == IM_END_ID else (text, token_id)


def meta_logprobs(spec: LogprobRequest, prompt: str, pieces: list[tuple[str, int]]) -> dict[str, Any]:
    """The `meta_info` logprob fields for the output tokens `pieces` (text, id) so far."""
    token_logprobs: list[list[Any]] = []
    top_logprobs: list[list[list[Any]] | None] = []
    context = prompt
    for piece, token_id in pieces:
        dist = distribution(context, (piece, token_id))
        own = next((p for p, tid, _ in dist if tid == token_id), 1e-4)
        token_logprobs.append([math.log(own), token_id, _text(piece, token_id, spec)])
        top = dist[: spec.top_n]
        top_logprobs.append([[math.log(p), tid, _text(t, tid, spec)] for p, tid, t in top] if spec.top_n else None)
        context += IM_END_TEXT if token_id == IM_END_ID else piece
    return {
        "input_token_logprobs": [],
        "input_top_logprobs": [],
        "output_token_logprobs": token_logprobs,
        "output_top_logprobs": top_logprobs,
    }


def _text(piece: str, token_id: int, spec: LogprobRequest) -> str | None:
    if not spec.with_text:
        return None
    return IM_END_TEXT if token_id == IM_END_ID else piece
