"""espeak-ng through ctypes for the TTS stand-ins (labelled: formant synthesis, not a neural voice).

espeak-ng keeps process-global state and is not thread-safe, so all synthesis runs on one thread.
The stand-ins run in their own process: Hark's own espeak engine must never share this state.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import espeakng_loader
import numpy as np
import numpy.typing as npt
import soxr

ESPEAK_RATE = 22050
_SYNCHRONOUS = 2
_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
# espeak variants a cloned voice is mapped onto, so different references sound different
_VARIANTS = ("m1", "m3", "m7", "f1", "f2", "f4", "klatt", "croak")


def variant_for(reference: bytes) -> str:
    """The espeak voice that "clones" a reference clip: one variant per clip, stable across requests."""
    return "en-us+" + _VARIANTS[hashlib.sha256(reference).digest()[0] % len(_VARIANTS)]


class EspeakVoice:
    """`synthesize(text, voice, rate)` -> PCM16 mono at `rate`, on espeak-ng's one thread."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="standin-espeak")
        self._lib: Any = None
        self._chunks: list[bytes] = []
        self._callback = _Callback(self._on_audio)  # kept alive as long as espeak may call it
        self._lock = threading.Lock()

    def _init(self) -> Any:
        if self._lib is None:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
            lib.espeak_SetSynthCallback.argtypes = [_Callback]
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            lib.espeak_Synth.argtypes = [
                ctypes.c_void_p,
                ctypes.c_size_t,
                ctypes.c_uint,
                ctypes.c_int,
                ctypes.c_uint,
                ctypes.c_uint,
                ctypes.c_void_p,
                ctypes.c_void_p,
            ]
            if lib.espeak_Initialize(_SYNCHRONOUS, 200, espeakng_loader.get_data_path().encode(), _DONT_EXIT) <= 0:
                raise RuntimeError("espeak_Initialize failed")
            lib.espeak_SetSynthCallback(self._callback)
            self._lib = lib
        return self._lib

    def _on_audio(self, wav: Any, count: int, _events: Any) -> int:
        if wav and count > 0:
            self._chunks.append(ctypes.string_at(wav, count * 2))
        return 0

    def synthesize_sync(self, text: str, voice: str, rate: int) -> npt.NDArray[np.int16]:
        with self._lock:
            lib = self._init()
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                lib.espeak_SetVoiceByName(b"en-us")
            self._chunks = []
            data = text.replace("\0", " ").encode() + b"\0"
            lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            pcm = np.frombuffer(b"".join(self._chunks), dtype=np.int16)
        if rate != ESPEAK_RATE and len(pcm):
            pcm = soxr.resample(pcm, ESPEAK_RATE, rate)
        return np.ascontiguousarray(pcm, dtype=np.int16)
