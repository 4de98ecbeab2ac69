"""What a session does with voices: `voice.create` (check, store, answer) and the check that a
`session.update {"voice": ...}` names a voice the session may use. Kept here so the session's own
code only routes the events."""

from __future__ import annotations

import base64
import binascii
import logging

from hark.protocol import ErrorCode, VoiceCreate, VoiceCreated

from .base import TTSEngine
from .streaming import StreamingTTSEngine
from .voices import CLONE_PREFIX, VoiceError

log = logging.getLogger(__name__)


class SessionVoices:
    """One session's view of the engine's voice store: creates (at most `max_per_session`)."""

    def __init__(self, tts: TTSEngine) -> None:
        self._store = tts.voices if isinstance(tts, StreamingTTSEngine) else None
        self._engine = tts.name
        self.created = 0

    async def create(self, event: VoiceCreate) -> VoiceCreated:
        """Raises VoiceError with the code the client gets; nothing is stored then."""
        store = self._store
        if store is None:
            raise VoiceError(
                ErrorCode.VOICE_CLONING_UNSUPPORTED,
                f"the {self._engine} speech engine cannot clone voices (fish and cosyvoice can)",
            )
        if self.created >= store.limits.max_per_session:
            raise VoiceError(
                ErrorCode.VOICE_LIMIT_REACHED, f"a session may create {store.limits.max_per_session} voices"
            )
        try:
            audio = base64.b64decode(event.audio, validate=True)
        except (binascii.Error, ValueError):
            raise VoiceError(ErrorCode.INVALID_FIELD, "voice.create.audio must be base64") from None
        voice = await store.create(audio, event.format, event.sample_rate, event.transcript)
        self.created += 1
        log.info("voice %s created (%d ms at %d Hz)", voice.id[:12], voice.duration_ms, voice.sample_rate)
        return VoiceCreated(voice=voice.id, duration_ms=voice.duration_ms, sample_rate=voice.sample_rate, id=event.id)

    def refusal(self, name: str) -> str | None:
        """Why `name` cannot be this session's voice, or None. Only cloned-voice ids are checked here:
        other names are the engine's own voices (espeak falls back; a server refuses a bad one)."""
        if not name.startswith(CLONE_PREFIX):
            return None
        if self._store is None:
            return f"config.voice: {name!r} is a cloned voice, and the {self._engine} engine has none"
        if not self._store.knows(name):
            return f"config.voice: no voice {name!r} (ids come from voice.created)"
        return None
