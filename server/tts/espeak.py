"""espeak-ng through ctypes, using the shared library and data shipped in the espeakng-loader wheel.

espeak-ng keeps its state in process globals and is not thread-safe, so every call into it runs on one
worker thread that all `EspeakEngine` instances in the process share (two engines with a thread each
would corrupt each other's synthesis).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
import unicodedata
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import espeakng_loader
import numpy as np

from hark.server.tts.base import Pcm16, TTSEngine

log = logging.getLogger(__name__)

DEFAULT_VOICE = "en-us"
DEFAULT_RATE_WPM = 175  # espeakRATE_NORMAL
ESPEAK_SAMPLE_RATE = 22050  # what espeak_Initialize reports for every voice in the shipped data

# Values from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
# Without this flag a missing or broken data dir makes espeak_Initialize call exit() on the whole server.
_ESPEAK_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_EE_OK = 0
# Length of each buffer handed to the callback; longer buffers mean fewer Python callbacks (GIL round trips).
_BUFFER_MS = 500

# int SynthCallback(short *wav, int numsamples, espeak_EVENT *events); events are not used.
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _has_speech(text: str) -> bool:
    """False for text made only of whitespace, punctuation and control characters."""
    return any(unicodedata.category(ch)[0] not in "ZPC" for ch in text)


class _Job:
    """One synthesis request; `cancelled` is set from the event loop and read by the callback."""

    __slots__ = ("cancelled", "chunks")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.cancelled = False


class _EspeakRuntime:
    """Owns the process-global espeak-ng state. Everything but `__init__` runs on `executor`'s thread."""

    def __init__(self, previous_teardown: Future[None] | None) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")
        self.users = 0
        self._previous_teardown = previous_teardown
        self._lib: ctypes.CDLL | None = None
        self._sample_rate = 0
        # Kept on the instance so the C function pointer outlives every espeak call that may use it.
        self._callback = _SynthCallback(self._on_audio)
        self._job: _Job | None = None
        self._voice: str | None = None
        self._rate: int | None = None
        self._unknown_voices: set[str] = set()

    def initialize(self) -> int:
        if self._lib is not None:
            return self._sample_rate
        if self._previous_teardown is not None:
            # A runtime released just before this one was created may still be inside espeak_Terminate.
            self._previous_teardown.result()
            self._previous_teardown = None
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Terminate.argtypes = []
        lib.espeak_Terminate.restype = ctypes.c_int

        data_path = espeakng_loader.get_data_path().encode()
        flags = _ESPEAK_INITIALIZE_DONT_EXIT
        sample_rate = int(lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, flags))
        # On failure it returns 0 (not the documented -1) once DONT_EXIT is set, and only prints to stderr.
        if sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed (data path {data_path.decode()!r})")
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib
        self._sample_rate = sample_rate
        return sample_rate

    def terminate(self) -> None:
        lib, self._lib = self._lib, None
        if lib is not None:
            lib.espeak_Terminate()
        self._voice = None
        self._rate = None

    def synthesize(self, text: str, voice: str, rate: int, job: _Job) -> tuple[Pcm16, bool]:
        """Returns the audio and whether `voice` was unknown and replaced by the default."""
        lib = self._lib
        if lib is None:
            raise RuntimeError("espeak-ng is not initialized")
        if job.cancelled:
            return np.zeros(0, dtype=np.int16), False
        fell_back = not self._select_voice(lib, voice)
        # Set on every change, not left implicit: engines sharing this runtime may want different rates.
        if rate != self._rate:
            self._check(lib.espeak_SetParameter(_ESPEAK_RATE, rate, 0), "espeak_SetParameter")
            self._rate = rate
        data = text.encode("utf-8") + b"\0"
        self._job = job
        try:
            status = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
        finally:
            self._job = None
        self._check(status, "espeak_Synth")
        return np.frombuffer(b"".join(job.chunks), dtype=np.int16), fell_back

    def _select_voice(self, lib: ctypes.CDLL, voice: str) -> bool:
        # Voice selection reads voice files from disk, so it only happens when the voice changes.
        known = voice not in self._unknown_voices and "\0" not in voice
        wanted = voice if known else DEFAULT_VOICE
        if wanted == self._voice:
            return known
        if lib.espeak_SetVoiceByName(wanted.encode("utf-8")) != _EE_OK:
            self._unknown_voices.add(voice)
            known, wanted = False, DEFAULT_VOICE
            if wanted != self._voice:
                self._check(lib.espeak_SetVoiceByName(wanted.encode()), "espeak_SetVoiceByName")
        self._voice = wanted
        return known

    def _on_audio(self, wav: Any, num_samples: int, _events: Any) -> int:
        job = self._job
        if job is None or job.cancelled:
            return 1  # non-zero aborts the synthesis: nobody is waiting for this audio any more
        if wav and num_samples > 0:
            job.chunks.append(ctypes.string_at(wav, num_samples * 2))
        return 0

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != _EE_OK:
            raise RuntimeError(f"{what} failed with espeak_ERROR {status}")


_runtime_lock = threading.Lock()
_runtime: _EspeakRuntime | None = None
_last_teardown: Future[None] | None = None


def _acquire_runtime() -> _EspeakRuntime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = _EspeakRuntime(_last_teardown)
        _runtime.users += 1
        return _runtime


def _release_runtime(runtime: _EspeakRuntime) -> Future[None] | None:
    """Drops one user; the last one tears espeak down and returns the future of that teardown."""
    global _runtime, _last_teardown
    with _runtime_lock:
        runtime.users -= 1
        if runtime.users > 0:
            return None
        if _runtime is runtime:
            _runtime = None
        teardown = runtime.executor.submit(runtime.terminate)
        runtime.executor.shutdown(wait=False)
        _last_teardown = teardown
        return teardown


class EspeakEngine(TTSEngine):
    """espeak-ng formant synthesis: robotic but very cheap (well over 1000x real time on one core)."""

    name = "espeak"

    def __init__(self, *, rate_wpm: int = DEFAULT_RATE_WPM, max_pending: int = 64) -> None:
        """`rate_wpm` is the speaking rate in words per minute; `max_pending` bounds waiting requests."""
        self.sample_rate = ESPEAK_SAMPLE_RATE
        self._rate = rate_wpm
        self._slots = asyncio.Semaphore(max_pending)
        self._runtime: _EspeakRuntime | None = None
        self._warned_voices: set[str] = set()

    async def start(self) -> None:
        if self._runtime is not None:
            return
        runtime = _acquire_runtime()
        try:
            self.sample_rate = await asyncio.get_running_loop().run_in_executor(runtime.executor, runtime.initialize)
        except BaseException:
            _release_runtime(runtime)
            raise
        self._runtime = runtime

    async def synthesize(self, text: str, voice: str) -> Pcm16:
        runtime = self._runtime
        if runtime is None:
            raise RuntimeError("EspeakEngine.start() must be awaited before synthesize()")
        text = text.replace("\0", " ")  # espeak reads a C string: a NUL would silently cut the text short
        if not _has_speech(text):
            return np.zeros(0, dtype=np.int16)
        voice = voice or DEFAULT_VOICE
        job = _Job()
        async with self._slots:
            loop = asyncio.get_running_loop()
            try:
                audio, fell_back = await loop.run_in_executor(
                    runtime.executor, runtime.synthesize, text, voice, self._rate, job
                )
            except asyncio.CancelledError:
                # A queued job is dropped by the executor; a running one stops at its next audio buffer.
                job.cancelled = True
                raise
        if fell_back and voice not in self._warned_voices:
            self._warned_voices.add(voice)
            log.warning("espeak-ng has no voice %r; using %r", voice, DEFAULT_VOICE)
        return audio

    async def aclose(self) -> None:
        runtime, self._runtime = self._runtime, None
        if runtime is None:
            return
        teardown = _release_runtime(runtime)
        if teardown is not None:
            await asyncio.wrap_future(teardown)
