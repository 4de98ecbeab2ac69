"""The 2-pass final for several utterances at once: FunASR's offline Paraformer over a padded batch.

FunASR's own batch (`generate(input=[...], batch_size=B)`) is not token-equal to decoding each
utterance alone. The cause: `SANMEncoder.forward` ends with `after_norm` and does not mask, so its
output at an utterance's padded frames is a LayerNorm of the padding (norm about sqrt(d)), not zero;
`Paraformer.calc_predictor` hands that to `CifPredictorV2.forward`, which reads the first padded
frame twice: (a) its 3-tap `cif_conv1d` (l_order = r_order = 1) at the last real frame sees it where
an utterance alone sees the conv's zero padding, so the last frame's alpha moves; (b) with
`tail_mask` its `tail_process_fn` puts `tail_threshold` at that first padded position (the right
place) but integrates the hidden vector there, where alone it integrates the zero frame it appends,
so the last token's acoustic embedding moves. The front end (fbank, LFR, CMVN per utterance, padded
with zeros), the encoder's own frames (its attention and FSMN masks) and the decoder (its masks) are
not affected: zeroing the encoder output past each utterance's length makes the batch equal.

So `BatchedOfflineParaformer.decode` runs FunASR's modules with that one change: the front end per
utterance (a failing one fails alone), `Paraformer.encode` batched with the lengths, the encoder
output zeroed past each length, `calc_predictor` and `cal_decoder_with_predictor` batched, then the
greedy search and text post-processing of `Paraformer.inference`. Utterances share a pass only
with others of about their length (padding costs what batching saves), and the passes run shortest
first, each answered when done. A pass that still raises is retried one utterance at a time
through `generate`, so one bad utterance fails only itself. Models this does not cover (another
class or predictor, beam search) decode one at a time via `generate`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .paraformer_batch import AutoModelBatcher

Float32Array = np.ndarray[Any, np.dtype[np.float32]]

# a pass is padded to its longest utterance; utterances join a pass while at most a fifth of it would
# be padding. Measured on the full-size model (bench/funasr_twopass.py, 1 thread): utterances of
# about one length cost 0.75-0.85x the CPU in one pass, but 2.4-6.3 s together (half padding
# allowed) cost 1.1x: the padded frames ate the gain.
MAX_PADDED_RATIO = 1.25


@dataclass
class OfflineJob:
    """One ended utterance's whole audio; `text` becomes the offline transcript or its error."""

    audio: Float32Array
    text: str | BaseException = ""
    _feats: Any = None


class BatchedOfflineParaformer(AutoModelBatcher):
    """FunASR's offline Paraformer (an AutoModel) decoding several whole utterances in one pass."""

    def __init__(self, auto_model: Any, max_batch: int) -> None:
        from funasr.models.paraformer.cif_predictor import CifPredictorV2
        from funasr.models.paraformer.model import Paraformer

        super().__init__(auto_model, max_batch)
        # exactly the class whose `inference` this follows (subclasses such as BiCifParaformer or
        # SeacoParaformer change the predictor or the search), greedy, a tokenizer that writes text
        self.batchable = (
            type(self.net) is Paraformer
            and type(self.net.predictor) is CifPredictorV2
            and self.net.beam_search is None
            and self._tokenizer is not None
            and self._frontend is not None
        )

    def decode(self, jobs: Sequence[OfflineJob]) -> None:
        """Set every job's `text` (the offline transcript, without punctuation) or its error."""
        for _ in self.decode_passes(jobs):
            pass

    def decode_passes(self, jobs: Sequence[OfflineJob]) -> Iterator[list[OfflineJob]]:
        """As `decode`, yielding the jobs of each pass as soon as they are done (those whose front
        end failed first, then the passes shortest first), so their finals need not wait for the
        longer utterances' passes."""
        if not self.batchable:
            for job in jobs:
                self._alone(job)
                yield [job]
            return
        live = [job for job in jobs if self._features(job)]
        if failed := [job for job in jobs if isinstance(job.text, BaseException)]:
            yield failed
        for group in reversed(_passes(live, self.max_batch)):
            self.largest_batch = max(self.largest_batch, len(group))
            try:
                with self._torch.no_grad():  # not held across the yield: the caller's code is its own
                    self._decode_pass(group)
            except Exception:  # which utterance broke the pass is unknown: each alone
                for job in group:
                    self._alone(job)
            yield group

    def _alone(self, job: OfflineJob) -> None:
        """FunASR's own one-utterance decode (the reference the batch equals)."""
        try:
            result = self._auto.generate(input=job.audio)
            job.text = str(result[0]["text"]) if result else ""
        except Exception as exc:
            job.text = exc

    def _features(self, job: OfflineJob) -> bool:
        """`Paraformer.inference`'s front end for this utterance alone: (frames, 560) or its error."""
        from funasr.utils.load_utils import extract_fbank, load_audio_text_image_video

        try:
            audio = load_audio_text_image_video([job.audio], fs=self._frontend.fs, audio_fs=16000, data_type="sound")
            with self._torch.no_grad():
                feats, _ = extract_fbank(audio, data_type="sound", frontend=self._frontend)
            job._feats = feats[0]
            return True
        except Exception as exc:
            job.text = exc
            return False

    def _decode_pass(self, group: list[OfflineJob]) -> None:
        from funasr.models.transformer.utils.nets_utils import make_pad_mask
        from funasr.utils import postprocess_utils

        torch = self._torch
        net = self.net
        # WavFrontend pads a batch's features with zeros, as here
        speech = torch.nn.utils.rnn.pad_sequence([job._feats for job in group], batch_first=True, padding_value=0.0)
        lengths = torch.tensor([len(job._feats) for job in group], dtype=torch.int32)
        encoder_out, encoder_lens = net.encode(speech, lengths)
        if isinstance(encoder_out, tuple):
            encoder_out = encoder_out[0]
        # the one change from FunASR's batch: padded frames read as zeros, as alone (module docstring)
        real = ~make_pad_mask(encoder_lens, maxlen=encoder_out.size(1))[:, :, None]
        encoder_out = encoder_out * real.to(encoder_out.dtype)
        embeds, token_lens, _, _ = net.calc_predictor(encoder_out, encoder_lens)
        token_lens = token_lens.round().long()
        for job in group:
            job.text = ""
        if int(token_lens.max()) < 1:
            return  # as `inference`: no tokens anywhere, nothing to decode
        scores, _ = net.cal_decoder_with_predictor(encoder_out, encoder_lens, embeds, token_lens)
        tokenizer = self._tokenizer
        for b, job in enumerate(group):
            ids = scores[b, : int(token_lens[b])].argmax(dim=-1).tolist()
            ids = [i for i in ids if i not in (net.eos, net.sos, net.blank_id)]
            tokens = tokenizer.ids2tokens(ids)
            text = tokenizer.tokens2text(tokens)
            if not hasattr(tokenizer, "bpemodel"):
                text, _ = postprocess_utils.sentence_postprocess(tokens)
            job.text = str(text)


def _passes(jobs: Sequence[OfflineJob], cap: int) -> list[list[OfflineJob]]:
    """Longest first, at most `cap` to a pass, while the padding stays within MAX_PADDED_RATIO."""
    passes: list[list[OfflineJob]] = []
    frames = 0
    for job in sorted(jobs, key=lambda j: -len(j._feats)):
        group = passes[-1] if passes else None
        n = len(job._feats)
        if group and len(group) < cap and (len(group) + 1) * len(group[0]._feats) <= MAX_PADDED_RATIO * (frames + n):
            group.append(job)
            frames += n
        else:
            passes.append([job])
            frames = n
    return passes
