"""`--asr none`: no recognizer. Sessions still get speech.started / speech.stopped from the VAD and
an empty transcript.final per utterance (so no reply): the ingest path alone, for capacity tests
and for clients that only want endpointing."""

from __future__ import annotations

from .base import ASREngine, ASRStream


class _NoStream(ASRStream):
    async def begin(self) -> None:
        return None

    async def accept(self, pcm: bytes) -> str:
        return ""

    async def finalize(self) -> str:
        return ""

    async def close(self) -> None:
        return None


class NoASREngine(ASREngine):
    name = "none"

    def open_stream(self, session_id: str) -> ASRStream:
        return _NoStream()
