"""Cloned voices: reference clips with their transcripts, checked once and kept on disk.

Two kinds, both under `--voices-dir`:
- server voices, named in `voices.toml` (`[voices.NAME]` with `clip = "file.wav"` and
  `transcript = "..."`), visible to every session by their name;
- client voices, registered at run time (`voice.create`), stored as `clients/<id>/clip.wav` (PCM16
  mono at the clip's own rate) and `voice.json`. Their id, `clone-` and 128 random bits, is what
  `voice.created` answers and what `session.update {"voice": id}` names: only a client that was
  given the id can use the voice (there are no accounts to own it by), and nothing lists them.

A clip must decode (WAV, MP3, FLAC/OGG, or raw PCM16 with its rate), last 3-30 s, be sampled at
16-48 kHz and not be silence; each failure has its own error code and nothing is stored.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import secrets
import shutil
import tomllib
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from hark.protocol import ErrorCode

from ..audio import wav_bytes
from .base import Pcm16
from .streaming import ReferenceClip, VoiceChoice

log = logging.getLogger(__name__)

CLONE_PREFIX = "clone-"
MANIFEST = "voices.toml"
ClipFormat = Literal["wav", "mp3", "flac", "ogg", "pcm_s16le"]
_SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_CLONE_ID = re.compile(r"^clone-[A-Za-z0-9_-]{22}$")
_SILENCE_RMS = 30.0  # int16 RMS below this is silence (a real voice clip is in the thousands)


@dataclass(frozen=True, slots=True)
class VoiceLimits:
    min_seconds: float = 3.0
    max_seconds: float = 30.0
    min_rate: int = 16000  # CosyVoice reads its prompt at 16 kHz; less loses what a clone needs
    max_rate: int = 48000
    max_clip_bytes: int = 8 << 20  # the encoded clip as received
    max_transcript_chars: int = 1000
    max_voices: int = 200  # client voices on disk, all clients together
    max_per_session: int = 8


class VoiceError(Exception):
    """A refused clip or voice; `code` is the hark.v1 error code a client gets."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Voice:
    id: str
    transcript: str
    sample_rate: int
    duration_ms: int


def decode_clip(data: bytes, fmt: ClipFormat, sample_rate: int | None, limits: VoiceLimits) -> tuple[Pcm16, int]:
    """PCM16 mono and its rate, or VoiceError saying what is wrong with the clip."""
    if len(data) > limits.max_clip_bytes:
        raise VoiceError(
            ErrorCode.VOICE_CLIP_TOO_LONG, f"the clip is {len(data)} bytes; at most {limits.max_clip_bytes}"
        )
    if fmt == "pcm_s16le":
        if sample_rate is None:
            raise VoiceError(ErrorCode.VOICE_CLIP_INVALID, "a pcm_s16le clip needs its sample_rate")
        if len(data) % 2:
            raise VoiceError(ErrorCode.VOICE_CLIP_INVALID, "a pcm_s16le clip has an even number of bytes")
        rate = sample_rate
        _check_rate_and_length(rate, len(data) // 2, limits)
        pcm: Pcm16 = np.frombuffer(data, dtype="<i2").astype(np.int16)
    else:
        decoded = _read_pcm16_wav(data, limits) if fmt == "wav" else None
        if decoded is None:
            decoded = _read_with_soundfile(data, fmt, limits)
        frames, rate = decoded
        mono = frames.astype(np.float32).mean(axis=1) if frames.shape[1] > 1 else frames[:, 0].astype(np.float32)
        pcm = np.clip(np.rint(mono), -32768, 32767).astype(np.int16)
        _check_rate_and_length(rate, len(pcm), limits)  # the decoded length, whatever the header said
    if len(pcm) == 0 or float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) < _SILENCE_RMS:
        raise VoiceError(ErrorCode.VOICE_CLIP_INVALID, "the clip is silence: record the voice to clone")
    return pcm, rate


def _read_pcm16_wav(data: bytes, limits: VoiceLimits) -> tuple[npt.NDArray[np.int16], int] | None:
    """A PCM16 WAV with the standard library (frames x channels); None for any other WAV."""
    try:
        with wave.open(io.BytesIO(data), "rb") as clip:
            if clip.getsampwidth() != 2:
                return None
            channels, rate = clip.getnchannels(), clip.getframerate()
            # the header's length first: a 10-minute clip is refused without decoding it
            _check_rate_and_length(rate, clip.getnframes(), limits)
            raw = clip.readframes(clip.getnframes())
    except (wave.Error, EOFError):
        return None
    usable = len(raw) - len(raw) % (2 * channels)
    return np.frombuffer(raw[:usable], dtype="<i2").astype(np.int16).reshape(-1, channels), rate


def _read_with_soundfile(data: bytes, fmt: str, limits: VoiceLimits) -> tuple[npt.NDArray[np.int16], int]:
    try:
        import soundfile  # type: ignore[import-untyped]  # optional: MP3, FLAC, OGG, non-16-bit WAV
    except ImportError:
        message = f"this server decodes only PCM16 WAV clips; {fmt} needs `pip install soundfile` on it"
        raise VoiceError(ErrorCode.VOICE_CLIP_INVALID, message) from None
    try:
        info = soundfile.info(io.BytesIO(data))
        _check_rate_and_length(int(info.samplerate), int(info.frames), limits)
        frames = soundfile.read(io.BytesIO(data), dtype="int16", always_2d=True)[0]
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        message = f"the clip is not {fmt} audio Hark can decode: {exc}"
        raise VoiceError(ErrorCode.VOICE_CLIP_INVALID, message) from None
    return np.asarray(frames, dtype=np.int16), int(info.samplerate)


def _check_rate_and_length(rate: int, frames: int, limits: VoiceLimits) -> None:
    if not limits.min_rate <= rate <= limits.max_rate:
        raise VoiceError(
            ErrorCode.VOICE_CLIP_INVALID,
            f"the clip is sampled at {rate} Hz; a voice needs {limits.min_rate}-{limits.max_rate} Hz",
        )
    seconds = frames / rate
    if seconds < limits.min_seconds:
        message = f"the clip lasts {seconds:.1f} s; a voice needs at least {limits.min_seconds:g} s"
        raise VoiceError(ErrorCode.VOICE_CLIP_TOO_SHORT, message)
    if seconds > limits.max_seconds:
        message = f"the clip lasts {seconds:.1f} s; a voice takes at most {limits.max_seconds:g} s"
        raise VoiceError(ErrorCode.VOICE_CLIP_TOO_LONG, message)


def check_transcript(transcript: str, limits: VoiceLimits) -> str:
    text = transcript.strip()
    if not text:
        raise VoiceError(ErrorCode.INVALID_FIELD, "voice.create.transcript must say what is spoken in the clip")
    if len(text) > limits.max_transcript_chars:
        raise VoiceError(
            ErrorCode.INVALID_FIELD, f"voice.create.transcript is longer than {limits.max_transcript_chars} characters"
        )
    return text


def _file_format(name: str) -> ClipFormat:
    suffix = Path(name).suffix.lower()
    return "mp3" if suffix == ".mp3" else "flac" if suffix == ".flac" else "ogg" if suffix == ".ogg" else "wav"


class VoiceStore:
    """The voices under `root`. Decoding and disk I/O run in a thread, never on the event loop."""

    def __init__(self, root: str | Path, limits: VoiceLimits | None = None) -> None:
        self.root = Path(root)
        self.limits = limits or VoiceLimits()
        self._server: dict[str, ReferenceClip] = {}
        self._clients: set[str] = set()
        self._lock = asyncio.Lock()
        self._loaded = False

    @property
    def clients_dir(self) -> Path:
        return self.root / "clients"

    def server_voices(self) -> list[str]:
        return sorted(self._server)

    async def load(self) -> None:
        """Read the manifest (a bad server voice stops the server, naming it) and the client voices."""
        if self._loaded:
            return
        self._server, self._clients = await asyncio.to_thread(self._load_sync)
        self._loaded = True
        log.info("voices: %d server voices, %d client voices in %s", len(self._server), len(self._clients), self.root)

    def _load_sync(self) -> tuple[dict[str, ReferenceClip], set[str]]:
        server: dict[str, ReferenceClip] = {}
        manifest = self.root / MANIFEST
        if manifest.exists():
            with manifest.open("rb") as fh:
                table = tomllib.load(fh).get("voices", {})
            for name, entry in table.items():
                where = f"{manifest}: voices.{name}"
                if not _SERVER_NAME.match(name) or name.startswith(CLONE_PREFIX):
                    raise ValueError(f"{where}: a voice name is 1-64 of A-Z a-z 0-9 _ . - (not starting 'clone-')")
                if not isinstance(entry, dict) or not isinstance(entry.get("clip"), str):
                    raise ValueError(f'{where}: needs clip = "file.wav" and transcript = "..."')
                try:
                    transcript = check_transcript(str(entry.get("transcript", "")), self.limits)
                    data = (self.root / entry["clip"]).read_bytes()
                    pcm, rate = decode_clip(data, _file_format(entry["clip"]), None, self.limits)
                except (VoiceError, OSError) as exc:
                    raise ValueError(f"{where}: {exc}") from None
                server[name] = ReferenceClip(wav_bytes(pcm, rate), transcript, rate, len(pcm) * 1000 // rate)
        clients: set[str] = set()
        if self.clients_dir.is_dir():
            for entry_dir in self.clients_dir.iterdir():
                if _CLONE_ID.match(entry_dir.name) and (entry_dir / "voice.json").is_file():
                    clients.add(entry_dir.name)
        return server, clients

    def knows(self, name: str) -> bool:
        return name in self._server or name in self._clients

    async def resolve(self, name: str) -> VoiceChoice:
        """The voice a reply is spoken in: a server or client clip, else the engine's voice `name`."""
        if name in self._server:
            return VoiceChoice(name, self._server[name])
        if not name.startswith(CLONE_PREFIX):
            return VoiceChoice(name)
        if name not in self._clients:
            raise VoiceError(ErrorCode.UNKNOWN_VOICE, f"no voice {name!r}: create it with voice.create")
        return VoiceChoice(name, await asyncio.to_thread(self._read_clip, name))

    def _read_clip(self, voice_id: str) -> ReferenceClip:
        folder = self.clients_dir / voice_id
        meta = json.loads((folder / "voice.json").read_text(encoding="utf-8"))
        return ReferenceClip(
            (folder / "clip.wav").read_bytes(), meta["transcript"], int(meta["sample_rate"]), int(meta["duration_ms"])
        )

    async def create(self, audio: bytes, fmt: ClipFormat, sample_rate: int | None, transcript: str) -> Voice:
        """Check the clip and store it; VoiceError (nothing stored) when it or the limits refuse."""
        text = check_transcript(transcript, self.limits)
        pcm, rate = await asyncio.to_thread(decode_clip, audio, fmt, sample_rate, self.limits)
        voice = Voice(CLONE_PREFIX + secrets.token_urlsafe(16), text, rate, len(pcm) * 1000 // rate)
        async with self._lock:  # the count and the write together: two creates cannot both take the last place
            if len(self._clients) >= self.limits.max_voices:
                raise VoiceError(
                    ErrorCode.VOICE_LIMIT_REACHED, f"the server holds {self.limits.max_voices} client voices already"
                )
            await asyncio.to_thread(self._write, voice, wav_bytes(pcm, rate))
            self._clients.add(voice.id)
        return voice

    def _write(self, voice: Voice, wav: bytes) -> None:
        self.clients_dir.mkdir(parents=True, exist_ok=True)
        staging = self.clients_dir / f".staging-{voice.id}"
        try:
            staging.mkdir()
            (staging / "clip.wav").write_bytes(wav)
            meta: dict[str, Any] = {
                "id": voice.id,
                "transcript": voice.transcript,
                "sample_rate": voice.sample_rate,
                "duration_ms": voice.duration_ms,
            }
            (staging / "voice.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
            os.replace(staging, self.clients_dir / voice.id)  # whole or not at all, across a crash too
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
