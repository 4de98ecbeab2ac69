"""The simulator's stand-in tokenizer: deterministic BPE-like pieces, Qwen's special-token ids."""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterable
from functools import lru_cache
from typing import Final

# Qwen2/Qwen3 special-token ids, so that `input_ids` built for Qwen line up where it matters.
ENDOFTEXT_ID: Final = 151643
IM_START_ID: Final = 151644
IM_END_ID: Final = 151645  # the chat models' EOS: a natural end reports {"type": "stop", "matched": 151645}
TOOL_CALL_ID: Final = 151657
END_TOOL_CALL_ID: Final = 151658
TOOL_RESPONSE_ID: Final = 151665
END_TOOL_RESPONSE_ID: Final = 151666
THINK_ID: Final = 151667
END_THINK_ID: Final = 151668
SPECIAL_TOKENS: Final[dict[str, int]] = {
    "<|endoftext|>": ENDOFTEXT_ID,
    "<|im_start|>": IM_START_ID,
    "<|im_end|>": IM_END_ID,
    "<think>": THINK_ID,
    "</think>": END_THINK_ID,
    # added tokens of Qwen's vocabulary (not "special": they stay in the output text)
    "<tool_call>": TOOL_CALL_ID,
    "</tool_call>": END_TOOL_CALL_ID,
    "<tool_response>": TOOL_RESPONSE_ID,
    "</tool_response>": END_TOOL_RESPONSE_ID,
}
_ORDINARY_VOCAB: Final = ENDOFTEXT_ID  # ordinary pieces get ids in [0, 151643)

# An approximation of Qwen's (GPT-style) BPE pre-tokenization. Special tokens are split out first,
# as real tokenizers do; the rest becomes: English contractions; a word with one leading non-letter
# (a space, usually); single digits; a run of punctuation with an optional leading space; newlines
# with the whitespace before them; whitespace not followed by a word; any other character. Every
# character of the input lands in exactly one piece.
_SPECIAL_SPLIT_RE: Final = re.compile(r"(<\|[A-Za-z0-9_]{1,40}\|>|</?think>|</?tool_call>|</?tool_response>)")
_PIECE_RE: Final = re.compile(
    r"'(?:s|t|re|ve|m|ll|d)\b"
    r"|[^\r\n\w]?[^\W\d_]+"
    r"|\d"
    r"| ?[^\s\w]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
    r"|[\s\S]"
)


def _pieces(text: str) -> list[str]:
    out: list[str] = []
    for index, part in enumerate(_SPECIAL_SPLIT_RE.split(text)):
        if index % 2:
            out.append(part)
        elif part:
            out.extend(_PIECE_RE.findall(part))
    return out


@lru_cache(maxsize=65_536)
def _piece_id(piece: str) -> int:
    special = SPECIAL_TOKENS.get(piece)
    if special is not None:
        return special
    digest = hashlib.blake2b(piece.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _ORDINARY_VOCAB


class StandInTokenizer:
    """Deterministic stand-in for a BPE tokenizer: one token per pre-tokenization piece.

    `encode` is stable across processes (ids are hashes of the pieces). `decode` knows the pieces
    this process has encoded lately (a bounded map) and the special tokens; other ids decode to "".
    """

    def __init__(self, remember: int = 262_144) -> None:
        self._remember = remember
        self._pieces: OrderedDict[int, str] = OrderedDict((token_id, text) for text, token_id in SPECIAL_TOKENS.items())

    @staticmethod
    def pieces(text: str) -> list[str]:
        return _pieces(text)

    def encode_pieces(self, text: str) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for piece in _pieces(text):
            token_id = _piece_id(piece)
            out.append((piece, token_id))
            if token_id not in SPECIAL_TOKENS.values():
                self._pieces[token_id] = piece
                self._pieces.move_to_end(token_id)
        while len(self._pieces) > self._remember:
            self._pieces.popitem(last=False)
        return out

    def encode(self, text: str) -> list[int]:
        return [token_id for _, token_id in self.encode_pieces(text)]

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self._pieces.get(token_id, "") for token_id in ids)
