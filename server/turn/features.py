"""Whisper log-mel features of the last 8 s of an utterance: the input of the Smart Turn model.

Written from the Whisper front end's definition (not copied from any implementation): the audio is
the last 8 s at 16 kHz, zero-padded at the front; the 8 s waveform is normalized to zero mean and
unit variance (`do_normalize`, over all 8 s, padding included, as the model was trained); then a
400-point periodic-Hann STFT every 160 samples with reflect padding (Whisper's `center=True`),
power spectrum, 80 Slaney-scale mel filters with Slaney area normalization over 0-8 kHz, log10
floored at 1e-10, clamped to (max - 8), and (x + 4) / 4. The STFT gives 801 frames; the last is
dropped, as Whisper does, leaving [80, 800].

tests/test_turn_model.py checks this against values transformers' WhisperFeatureExtractor computed.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 16000
SECONDS = 8
N_SAMPLES = SAMPLE_RATE * SECONDS  # 128000
N_FFT = 400
HOP = 160
N_MELS = 80
N_FRAMES = N_SAMPLES // HOP  # 800

Float32Array = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]
AudioArray = npt.NDArray[np.int16] | npt.NDArray[np.float32] | npt.NDArray[np.float64]


def _hz_to_mel(hz: Float64Array) -> Float64Array:
    # Slaney's scale: linear up to 1 kHz (3 mel per 200 Hz), logarithmic above (27 mel per factor 6.4)
    linear = 3.0 * hz / 200.0
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * (27.0 / np.log(6.4))
    result: Float64Array = np.where(hz >= 1000.0, log_part, linear)
    return result


def _mel_to_hz(mel: Float64Array) -> Float64Array:
    linear = 200.0 * mel / 3.0
    log_part = 1000.0 * np.exp((mel - 15.0) * (np.log(6.4) / 27.0))
    result: Float64Array = np.where(mel >= 15.0, log_part, linear)
    return result


@cache
def mel_filters() -> Float32Array:
    """[N_MELS, N_FFT // 2 + 1]: triangles evenly spaced in mel, each scaled to unit area in Hz."""
    bin_hz = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(SAMPLE_RATE / 2.0)), N_MELS + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None, :] - lower) / (center - lower)
    falling = (upper - bin_hz[None, :]) / (upper - center)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    weights = triangles * (2.0 / (upper - lower))
    return weights.astype(np.float32)


@cache
def _filter_bands() -> tuple[npt.NDArray[np.intp], Float32Array, npt.NDArray[np.intp]]:
    """The filters as bands: every filter's nonzero bins are one contiguous run (1-14 of the 201)."""
    filters = mel_filters()
    bins = [np.flatnonzero(row) for row in filters]
    if any(len(b) == 0 or b[-1] - b[0] + 1 != len(b) for b in bins):
        raise AssertionError("a mel filter is empty or not one contiguous band")
    starts = np.cumsum([0] + [len(b) for b in bins[:-1]])
    index = np.concatenate(bins)
    weights = np.concatenate([filters[m, b] for m, b in enumerate(bins)]).astype(np.float32)
    return index, weights, starts.astype(np.intp)


def _mel_power(power: Float32Array) -> Float32Array:
    """[frames, 201] power -> [frames, N_MELS]: the filter product over each band's ~5 bins (391 of the
    16080 weights are nonzero). A dense matmul would call BLAS, whose threads then spin on both cores
    beside onnxruntime's (the features cost 2x their wall time in CPU that way)."""
    index, weights, starts = _filter_bands()
    mel: Float32Array = np.add.reduceat(power[:, index] * weights, starts, axis=1)
    return mel


@cache
def _window() -> Float64Array:
    n = np.arange(N_FFT)
    window: Float64Array = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)  # periodic Hann
    return window


def last_window(audio: AudioArray) -> Float32Array:
    """The last 8 s as float32 in [-1, 1], zero-padded at the front to exactly N_SAMPLES."""
    tail = audio[-N_SAMPLES:]
    samples = tail.astype(np.float32) / 32768.0 if tail.dtype == np.int16 else tail.astype(np.float32)
    if len(samples) == N_SAMPLES:
        return samples
    padded = np.zeros(N_SAMPLES, dtype=np.float32)
    padded[N_SAMPLES - len(samples) :] = samples
    return padded


def log_mel(audio: AudioArray) -> Float32Array:
    """[N_MELS, N_FRAMES] features of the last 8 s of 16 kHz `audio` (int16 or float in [-1, 1])."""
    x = last_window(audio).astype(np.float64)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP][:N_FRAMES]
    spectrum = np.fft.rfft(frames * _window(), axis=-1)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)  # [N_FRAMES, 201]
    mel = _mel_power(power)  # [N_FRAMES, N_MELS]
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    features: Float32Array = np.ascontiguousarray(((log_spec + 4.0) / 4.0).T, dtype=np.float32)
    return features


def log_mel_batch(audios: list[AudioArray]) -> Float32Array:
    """[len(audios), N_MELS, N_FRAMES]: the model's input for several utterances."""
    return np.stack([log_mel(audio) for audio in audios])
