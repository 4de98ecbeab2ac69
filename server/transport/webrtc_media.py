"""WebRTC media for a Session: the reply speech track, the microphone pump, loopback ICE candidates.

Independent of signalling: the WebSocket flow and the POSTed offers (WHIP too) use the same parts.
"""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from ..session import Session

TRACK_RATE = 48000
TRACK_FRAME = 960  # 20 ms, what Opus packs
INPUT_FRAME_BYTES = 3200  # 100 ms at 16 kHz: the session's recommended frame


def allow_loopback_candidates() -> None:
    """aioice leaves 127.0.0.1 out of its host candidates; a server bound to loopback needs it."""
    import aioice.ice

    original = aioice.ice.get_host_addresses
    if getattr(original, "_hark_loopback", False):
        return

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4, use_ipv6)
        return (["127.0.0.1"] if use_ipv4 else []) + addresses

    with_loopback._hark_loopback = True  # type: ignore[attr-defined]
    aioice.ice.get_host_addresses = with_loopback


class ReplyAudioTrack(MediaStreamTrack):
    """Reply speech as 20 ms stereo frames at 48 kHz; silence when there is nothing to say."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pcm = bytearray()  # mono int16 at 48 kHz, waiting to be sent
        self._start: float | None = None
        self._pts = 0

    def push(self, pcm_mono_48k: bytes) -> None:
        self._pcm += pcm_mono_48k

    def clear(self) -> None:
        self._pcm.clear()

    def buffered_ms(self) -> float:
        return len(self._pcm) / 2 * 1000.0 / TRACK_RATE

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        # pace by the track's clock, as aiortc's own AudioStreamTrack does
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += TRACK_FRAME
            wait = self._start + self._pts / TRACK_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        need = TRACK_FRAME * 2
        chunk = bytes(self._pcm[:need])
        del self._pcm[:need]
        mono = np.zeros(TRACK_FRAME, dtype="<i2")
        mono[: len(chunk) // 2] = np.frombuffer(chunk, dtype="<i2")
        frame = av.AudioFrame.from_ndarray(np.repeat(mono, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = TRACK_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, TRACK_RATE)
        return frame


async def pump_microphone(remote: MediaStreamTrack, session: Session) -> None:
    """The peer's audio track, resampled to 16 kHz mono, into the session in 100 ms frames."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
    pending = bytearray()
    try:
        while True:
            frame = await remote.recv()
            assert isinstance(frame, av.AudioFrame)
            for out in resampler.resample(frame):
                pending += out.to_ndarray().astype("<i2").tobytes()
            while len(pending) >= INPUT_FRAME_BYTES:
                await session.on_binary(bytes(pending[:INPUT_FRAME_BYTES]))
                del pending[:INPUT_FRAME_BYTES]
    except MediaStreamError:
        return
