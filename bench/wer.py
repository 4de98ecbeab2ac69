"""Word error rate, for the ASR accuracy test and the decoder-settings benchmark."""

from __future__ import annotations

import re

import numpy as np

_SPOKEN_FORMS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


def normalize(text: str) -> list[str]:
    """Lowercase words without punctuation, abbreviations as spoken (references spell them out)."""
    words = re.sub(r"[^a-z' ]", " ", text.lower().replace(".", "")).split()
    return [_SPOKEN_FORMS.get(w, w) for w in words]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    d = np.arange(len(hyp) + 1)
    for i, r in enumerate(ref, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hyp, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return int(d[-1])
