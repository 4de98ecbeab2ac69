"""The turn-taking set of `make bench-turns`: real recordings, where each one truly ends, and
copies with a pause inserted inside the sentence.

For each clip of the speech corpus that is one spoken sentence with a transcript:
- its true end: the end of the last 32 ms window Silero VAD scores as speech (>= 0.5), the same
  model and threshold the server's VAD uses;
- its natural pauses: runs of non-speech (< 0.35, the server's hysteresis) of >= 200 ms between
  the first and last speech window, where a person paused while still speaking;
- word boundaries inside the sentence, away from its start, its end and its natural pauses.
  English: pocketsphinx's forced alignment of the manifest transcript (the start of a word that
  directly follows another). Mandarin, which the pocketsphinx model cannot align: the quietest
  points of the signal inside speech (>= 12 dB below the utterance's median level and the
  quietest within +-100 ms): syllable boundaries, each one a character boundary, not checked to
  be a word boundary (no Mandarin aligner runs here).

Each clip gives one item as recorded and one copy per pause length with that much digital silence
inserted, each length at a different one of up to `BOUNDARIES` boundaries spread over the sentence
(which length goes where rotates from clip to clip), at the quietest 5 ms within +-30 ms of the
boundary, then the nearest zero crossing, so the cut does not click. The silence before the first
word is cut to `LEAD_MS`: it is only waiting time. A clip's items then start up to a frame apart
(0, 20, ... 80 ms for five; digital silence first), so that their endings meet the streamer's
100 ms frames at different phases. The trailing silence a live microphone would go on sending is
the streamer's business, not the set's.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import wave
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt

from hark.server.vad import CONTEXT, WINDOW, SileroVad, VadStream

REPO = Path(__file__).resolve().parents[1]
SAMPLE_RATE = 16000
# the sentences of the corpus with a transcript, five English and two Mandarin
# (zh_wenetspeech_net_S00000 is left out: its dataset's terms keep it to tests)
CLIPS = (
    "en_goforward_command",
    "en_librivox_sense_0870",
    "en_librivox_sense_0920",
    "en_whisper_jfk",
    "en_vosk_digits",
    "zh_funasr_regression_sample",
    "zh_funasr_asr_example",
)
PAUSES_MS = (300, 600, 1000, 1500)
BOUNDARIES = 4  # per clip, where it has that many: each pause length goes in at a different one
LEAD_MS = 300  # silence kept before the first speech
# the streamer's frame: a clip's items start up to one frame apart (see `items_of`)
FRAME_SAMPLES = SAMPLE_RATE // 10
SPEECH_THRESHOLD = 0.5  # the server's VAD threshold
SILENCE_THRESHOLD = 0.35  # and its hysteresis: below this after speech is silence
NATURAL_PAUSE_MS = 200
EDGE_MS = 400  # no pause is inserted this close to the sentence's first or last speech
NEAR_PAUSE_MS = 150  # nor this close to a natural pause (that would only lengthen it)
SNAP_MS = 30  # the insertion point is the quietest 5 ms within this of the boundary
DIP_DB = 12.0  # Mandarin: a dip is this far below the utterance's median level
DIP_SPAN_MS = 100  # and the quietest point within this on either side

Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float64]


def corpus_dir() -> Path:
    return Path(os.environ.get("HARK_CORPUS", REPO.parent / "shared" / "corpus"))


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


def _samples(ms: float) -> int:
    return round(ms * SAMPLE_RATE / 1000)


@dataclass(frozen=True, slots=True)
class Boundary:
    """A point between two words (or, for Mandarin, syllables) where a pause can be inserted."""

    sample: int  # where the silence goes in
    left: str  # the word before ('' where the boundary is an energy dip)
    right: str  # the word after
    source: str  # "alignment" (pocketsphinx forced alignment) or "energy" (a dip of the signal)


@dataclass(frozen=True, slots=True)
class Recording:
    """One corpus clip with what the set needs to know about it."""

    name: str
    language: str  # "en" or "zh"
    transcript: str
    pcm: Int16Array  # from `lead` samples into the corpus file on
    lead: int
    speech_start: int  # first sample of the first speech window
    true_end: int  # end of the last speech window (exclusive)
    natural_pauses: tuple[tuple[int, int], ...]  # [start, end) samples of silences inside the speech
    boundaries: tuple[Boundary, ...]  # every candidate, in order


@dataclass(frozen=True, slots=True)
class TurnItem:
    """One stream of the benchmark: a whole sentence, maybe with one pause inserted."""

    id: str
    clip: str
    language: str
    pcm: bytes  # 16 kHz mono PCM16
    true_end: int  # samples: where the person stopped speaking for good
    natural_pauses: tuple[tuple[int, int], ...]  # on this item's clock
    pause: tuple[int, int] | None = None  # the inserted pause [start, end) in samples
    boundary: Boundary | None = None
    lead_in: int = 0  # samples of digital silence before the recording (its frame phase)

    @property
    def pause_ms(self) -> int:
        return 0 if self.pause is None else _ms(self.pause[1] - self.pause[0])

    @property
    def duration_ms(self) -> int:
        return _ms(len(self.pcm) // 2)


# ------------------------------------------------------------------------------ the recordings


def manifest() -> dict[str, dict[str, object]]:
    path = corpus_dir() / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the benchmark needs ../shared/corpus (or HARK_CORPUS)")
    with open(path) as fh:
        return {item["name"]: item for item in json.load(fh)}


def load_pcm(name: str) -> Int16Array:
    path = corpus_dir() / "audio" / f"{name}.wav"
    if not path.is_file():
        raise FileNotFoundError(f"corpus clip {path} is missing (set HARK_CORPUS to the corpus directory)")
    with wave.open(str(path)) as wav:
        if (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) != (SAMPLE_RATE, 1, 2):
            raise ValueError(f"{path}: expected 16 kHz mono PCM16")
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).copy()


@cache
def _vad() -> SileroVad:
    return SileroVad()


def speech_probabilities(pcm: Int16Array) -> npt.NDArray[np.float32]:
    """Silero's probability per 512-sample window, as the server's VAD computes it."""
    stream = VadStream(_vad())
    windows = stream.take_windows(pcm.astype(np.float32) / 32768.0)
    assert windows.shape[1] == CONTEXT + WINDOW
    state = np.zeros((2, 1, 128), dtype=np.float32)
    probs = np.empty(len(windows), dtype=np.float32)
    for i, window in enumerate(windows):
        prob, state = _vad().run(window[None, :], state)
        probs[i] = prob[0]
    return probs


def speech_extent(probs: npt.NDArray[np.float32]) -> tuple[int, int, tuple[tuple[int, int], ...]]:
    """(first speech sample, true end, natural pauses) from the window probabilities."""
    speech = np.flatnonzero(probs >= SPEECH_THRESHOLD)
    if len(speech) == 0:
        raise ValueError("no speech in the clip")
    first, last = int(speech[0]), int(speech[-1])
    pauses: list[tuple[int, int]] = []
    run_start: int | None = None
    for i in range(first, last + 1):  # the server's hysteresis: speech again only at >= threshold
        if probs[i] >= SPEECH_THRESHOLD:
            if run_start is not None and (i - run_start) * WINDOW >= _samples(NATURAL_PAUSE_MS):
                pauses.append((run_start * WINDOW, i * WINDOW))
            run_start = None
        elif probs[i] < SILENCE_THRESHOLD and run_start is None:
            run_start = i
    return first * WINDOW, (last + 1) * WINDOW, tuple(pauses)


def _frame_db(pcm: Int16Array, hop: int) -> FloatArray:
    """Level in dBFS of consecutive `hop`-sample frames."""
    n = len(pcm) // hop
    frames = pcm[: n * hop].astype(np.float64).reshape(n, hop) / 32768.0
    db: FloatArray = 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    return db


def aligned_words(pcm: Int16Array, transcript: str) -> list[tuple[str, int, int]]:
    """pocketsphinx forced alignment of `transcript`: (word, start, end) samples, '<sil>' included."""
    from pocketsphinx import Decoder

    words = re.sub(r"[^a-z' ]", " ", transcript.lower()).split()
    decoder = Decoder(bestpath=False, fwdflat=False, loglevel="FATAL")
    decoder.set_align_text(" ".join(words))
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), full_utt=True)
    decoder.end_utt()
    hop = SAMPLE_RATE // 100  # pocketsphinx frames are 10 ms
    segments = [(s.word, s.start_frame * hop, (s.end_frame + 1) * hop) for s in decoder.seg()]
    found = [re.sub(r"\(\d+\)$", "", w) for w, _, _ in segments if w != "<sil>"]
    if found != words:
        raise ValueError(f"forced alignment did not cover the transcript: {found} != {words}")
    return [(re.sub(r"\(\d+\)$", "", w), start, end) for w, start, end in segments]


def alignment_boundaries(pcm: Int16Array, transcript: str) -> list[Boundary]:
    """Starts of words that directly follow another word (no silence segment between them)."""
    segments = aligned_words(pcm, transcript)
    out: list[Boundary] = []
    for (left, _, left_end), (right, right_start, _) in itertools.pairwise(segments):
        if "<sil>" in (left, right) or right_start - left_end > _samples(20):
            continue
        out.append(Boundary(right_start, left, right, "alignment"))
    return out


def energy_boundaries(pcm: Int16Array, speech_start: int, true_end: int) -> list[Boundary]:
    """The quietest points inside speech: >= DIP_DB below the median level and the quietest within
    +-DIP_SPAN_MS (10 ms frames)."""
    hop = SAMPLE_RATE // 100
    db = _frame_db(pcm, hop)
    lo, hi = speech_start // hop, min(true_end // hop, len(db))
    median = float(np.median(db[lo:hi]))
    span = DIP_SPAN_MS * SAMPLE_RATE // 1000 // hop
    out: list[Boundary] = []
    for i in range(lo + span, hi - span):
        around = db[i - span : i + span + 1]
        if db[i] <= median - DIP_DB and db[i] == around.min() and np.argmin(around) == span:
            out.append(Boundary(i * hop + hop // 2, "", "", "energy"))
    return out


def trim_cut_edge(pcm: Int16Array, probs: npt.NDArray[np.float32]) -> Int16Array:
    """Drop a blip of 'speech' (<= 96 ms) in the very last windows after a natural pause: the
    recording was cut there (en_whisper_jfk ends on the start of a noise), nobody speaks in it."""
    speech = np.flatnonzero(probs >= SPEECH_THRESHOLD)
    if len(speech) == 0 or (len(probs) - 1 - speech[-1]) * WINDOW > _samples(64):
        return pcm
    run_start = int(speech[-1])
    while run_start > 0 and probs[run_start - 1] >= SILENCE_THRESHOLD:
        run_start -= 1
    quiet = probs[max(0, run_start - NATURAL_PAUSE_MS * SAMPLE_RATE // 1000 // WINDOW) : run_start]
    if (speech[-1] + 1 - run_start) * WINDOW > _samples(96) or len(quiet) == 0 or quiet.max() >= SILENCE_THRESHOLD:
        return pcm
    return pcm[: run_start * WINDOW]


def load_recording(name: str) -> Recording:
    info = manifest()[name]
    pcm = load_pcm(name)
    probs = speech_probabilities(pcm)
    trimmed = trim_cut_edge(pcm, probs)
    # the silence before the first word is only waiting time (up to 1 s in some clips): keep LEAD_MS
    lead = max(0, speech_extent(probs)[0] - _samples(LEAD_MS)) // WINDOW * WINDOW
    if lead or len(trimmed) < len(pcm):
        pcm = trimmed[lead:]
        probs = speech_probabilities(pcm)
    speech_start, true_end, pauses = speech_extent(probs)
    language = "zh" if name.startswith("zh_") else "en"
    transcript = str(info["transcript"])
    if language == "en":
        candidates = alignment_boundaries(pcm, transcript)
    else:
        candidates = energy_boundaries(pcm, speech_start, true_end)
    return Recording(name, language, transcript, pcm, lead, speech_start, true_end, pauses, tuple(candidates))


# ------------------------------------------------------------------------------ building items


def usable(recording: Recording, boundary: Boundary) -> bool:
    """Inside the sentence: away from its first and last speech and from its natural pauses."""
    at = boundary.sample
    if at < recording.speech_start + _samples(EDGE_MS) or at > recording.true_end - _samples(EDGE_MS):
        return False
    near = _samples(NEAR_PAUSE_MS)
    return all(not (start - near <= at <= end + near) for start, end in recording.natural_pauses)


def choose_boundaries(recording: Recording, count: int) -> list[Boundary]:
    """Up to `count` distinct usable boundaries spread evenly over them (the middles of `count`
    equal shares): by order, not by time, so a long natural pause does not pull two together."""
    pool = sorted((b for b in recording.boundaries if usable(recording, b)), key=lambda b: b.sample)
    if not pool:
        raise ValueError(f"{recording.name}: no usable word boundary")
    count = min(count, len(pool))
    picks = sorted({round((len(pool) - 1) * (k + 0.5) / count) for k in range(count)})
    return [pool[i] for i in picks]


def snap(pcm: Int16Array, sample: int) -> int:
    """The start of the quietest 5 ms within +-SNAP_MS of `sample`, moved to the nearest zero crossing."""
    hop = SAMPLE_RATE // 200
    reach = _samples(SNAP_MS)
    lo = max(0, sample - reach)
    hi = min(len(pcm) - hop, sample + reach)
    starts = np.arange(lo, hi + 1, hop)
    energy = [float(np.sum(pcm[s : s + hop].astype(np.float64) ** 2)) for s in starts]
    quiet = int(starts[int(np.argmin(energy))])
    signs = np.signbit(pcm[max(0, quiet - hop) : quiet + hop + 1])
    crossings = np.flatnonzero(signs[1:] != signs[:-1]) + 1 + max(0, quiet - hop)
    if len(crossings) == 0:
        return quiet
    return int(crossings[np.argmin(np.abs(crossings - quiet))])


def insert_pause(pcm: Int16Array, at: int, pause_ms: int) -> Int16Array:
    silence = np.zeros(_samples(pause_ms), dtype=np.int16)
    return np.concatenate([pcm[:at], silence, pcm[at:]])


def _shift(pauses: Sequence[tuple[int, int]], at: int, by: int) -> tuple[tuple[int, int], ...]:
    return tuple((s + by, e + by) if s >= at else (s, e) for s, e in pauses)


def items_of(recording: Recording, pauses_ms: Sequence[int], boundaries: int, rotate: int = 0) -> list[TurnItem]:
    """The recording as it is, and one copy per pause length, each length at one of up to
    `boundaries` boundaries (length i at boundary (i + rotate) mod their number: `rotate` varies
    which length meets which part of the sentence from clip to clip).

    The k-th of a clip's n items starts k / n of a streamer frame late (digital silence before
    the recording, `lead_in`), so its endings fall at n different phases of the 100 ms frame, as a
    device's frame clock would put them. Without it every item of a clip shares one phase (the
    pauses are whole frames), the set has one phase per clip, and the time a turn waits for the
    frame that completes its pause, 0-100 ms of the dead air, is whatever those few phases are."""
    whole = TurnItem(
        id=f"{recording.name}/whole",
        clip=recording.name,
        language=recording.language,
        pcm=recording.pcm.tobytes(),
        true_end=recording.true_end,
        natural_pauses=recording.natural_pauses,
    )
    out = [whole]
    if pauses_ms:
        chosen = [replace(b, sample=snap(recording.pcm, b.sample)) for b in choose_boundaries(recording, boundaries)]
    for i, ms in enumerate(pauses_ms):
        n = (i + rotate) % len(chosen)
        boundary, at, length = chosen[n], chosen[n].sample, _samples(ms)
        out.append(
            TurnItem(
                id=f"{recording.name}/b{n + 1}@{_ms(at)}ms+{ms}",
                clip=recording.name,
                language=recording.language,
                pcm=insert_pause(recording.pcm, at, ms).tobytes(),
                true_end=recording.true_end + length,
                natural_pauses=_shift(recording.natural_pauses, at, length),
                pause=(at, at + length),
                boundary=boundary,
            )
        )
    out = [delayed(item, k * FRAME_SAMPLES // len(out)) for k, item in enumerate(out)]
    return sorted(out, key=lambda item: (item.pause is not None, item.pause or (0, 0)))


def delayed(item: TurnItem, samples: int) -> TurnItem:
    """`item` after `samples` more of digital silence: every position on its clock moves with it."""
    if samples <= 0:
        return item
    return replace(
        item,
        pcm=bytes(2 * samples) + item.pcm,
        true_end=item.true_end + samples,
        natural_pauses=tuple((s + samples, e + samples) for s, e in item.natural_pauses),
        pause=None if item.pause is None else (item.pause[0] + samples, item.pause[1] + samples),
        lead_in=item.lead_in + samples,
    )


def build_set(
    clips: Sequence[str] = CLIPS, pauses_ms: Sequence[int] = PAUSES_MS, boundaries: int = BOUNDARIES
) -> list[TurnItem]:
    """Every clip as recorded, plus one copy per pause length, spread over `boundaries` boundaries."""
    return [item for n, name in enumerate(clips) for item in items_of(load_recording(name), pauses_ms, boundaries, n)]


def describe(items: Sequence[TurnItem]) -> str:
    """One line per item: what a reader of the report needs to find it again."""
    lines = []
    for item in items:
        where = ""
        if item.pause is not None and item.boundary is not None:
            words = f" ({item.boundary.left} | {item.boundary.right})" if item.boundary.left else " (energy dip)"
            where = f", {item.pause_ms} ms pause at {_ms(item.pause[0])} ms{words}"
        lead_in = f", {_ms(item.lead_in)} ms of silence first" if item.lead_in else ""
        lines.append(f"{item.id}: {item.duration_ms} ms, true end {_ms(item.true_end)} ms{where}{lead_in}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe(build_set()))
