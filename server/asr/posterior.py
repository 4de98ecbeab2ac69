"""pocketsphinx's confidence in a final transcript: the mean word posterior from its word lattice.

pocketsphinx computes word posteriors only when its `bestpath` pass runs (without it every
`Segment.prob` and `Hypothesis.prob` is 1.0, which says nothing). These settings turn that pass on
and keep what it costs and changes small:

- `bestpathlw` equal to the first pass's `lw` (6.5), so the lattice's best path is the first pass's
  words rescored with the same weights rather than a differently weighted guess;
- `maxwpf` 10 word exits per frame bounds the lattice: on a long noisy utterance an unbounded one
  took 0.4-3.6 s to search at end of utterance, while the user waits; bounded, it stays within tens
  of ms, as the first pass alone did (bench/asr_confidence.py);
- `ascale` 10 is the acoustic scale of the posterior: with pocketsphinx's 20 the clean LibriVox clips'
  mean posterior was ~0.57 while ~77% of their words were right; at 10 it is ~0.78, i.e. the number
  reads as the share of words the decoder expects to be right.

The confidence of an utterance is the mean posterior of its words (fillers and silences left out):
the expected share of right words, which a single unsure word in a long sentence does not sink (a
geometric mean would). An utterance without words has no confidence (None): there is nothing to
answer anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

CONFIDENCE_OPTIONS: dict[str, Any] = {"bestpath": True, "bestpathlw": 6.5, "maxwpf": 10, "ascale": 10.0}


def is_filler(word: str) -> bool:
    """<s>, </s>, <sil> and the noise models ([NOISE], [SPEECH], ...): not words a person said."""
    return word.startswith(("<", "["))


def mean_word_posterior(segments: Iterable[Any]) -> float | None:
    """The mean `prob` (a linear posterior) of the words among pocketsphinx `Segment`s."""
    posteriors = [min(1.0, max(0.0, float(seg.prob))) for seg in segments if not is_filler(seg.word)]
    if not posteriors:
        return None
    return sum(posteriors) / len(posteriors)
