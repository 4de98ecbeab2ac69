"""WebRTC end to end with aiortc as the browser: Opus both ways, hark.v1 on the data channel."""

from __future__ import annotations

import asyncio
import fractions
import json
import time
from typing import Any

import numpy as np
import pytest
from conftest import RunningServer, load_pcm

try:
    import av
    from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
except ImportError as exc:  # a failure, not a skip: make install installs the extra
    raise ImportError(f"{exc}: install the webrtc extra (make install, or pip install -e '.[webrtc]')") from exc
from websockets.asyncio.client import connect


class WavTrack(MediaStreamTrack):
    """A microphone that plays 16 kHz PCM as 48 kHz stereo 20 ms frames, then silence."""

    kind = "audio"

    def __init__(self, pcm16k: bytes) -> None:
        super().__init__()
        import soxr

        mono = soxr.resample(np.frombuffer(pcm16k, dtype="<i2"), 16000, 48000)
        self._samples = np.asarray(mono, dtype="<i2")
        self._pos = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pos / 48000 - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = np.zeros(960, dtype="<i2")
        part = self._samples[self._pos : self._pos + 960]
        chunk[: len(part)] = part
        frame = av.AudioFrame.from_ndarray(np.repeat(chunk, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = self._pos
        frame.time_base = fractions.Fraction(1, 48000)
        self._pos += 960
        return frame


def _sessions_open(server: RunningServer) -> float:
    import urllib.request

    body = urllib.request.urlopen(f"{server.http}/metrics", timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in body.splitlines() if line.startswith("hark_sessions_open "))


async def _offer(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers all candidates here
    return pc.localDescription.sdp


@pytest.fixture
def loopback_ice() -> None:
    from hark.server.transport.webrtc import allow_loopback_candidates

    allow_loopback_candidates()  # our aiortc peer is on loopback too


async def test_webrtc_turn_with_aiortc_peer(server: RunningServer, loopback_ice: None) -> None:
    events: list[dict[str, Any]] = []
    got_final = asyncio.Event()
    got_done = asyncio.Event()
    reply_frames = 0
    reply_energy = 0.0

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(WavTrack(load_pcm("en_goforward_command") + b"\0" * 64000))
    channel = pc.createDataChannel("hark")

    @channel.on("open")  # type: ignore[misc]
    def on_open() -> None:
        # the reply track runs at 48 kHz: another output rate is refused, so no reply is resampled
        channel.send(json.dumps({"type": "session.update", "config": {"output_sample_rate": 24000}}))

    @channel.on("message")  # type: ignore[misc]
    def on_message(message: str) -> None:
        event = json.loads(message)
        events.append(event)
        if event["type"] == "transcript.final":
            got_final.set()
        if event["type"] == "response.done":
            got_done.set()

    async def count_reply(track: MediaStreamTrack) -> None:
        nonlocal reply_frames, reply_energy
        while True:
            frame = await track.recv()
            reply_frames += 1
            reply_energy += float(np.abs(frame.to_ndarray()).mean())

    readers: list[asyncio.Task[None]] = []

    @pc.on("track")  # type: ignore[misc]
    def on_track(track: MediaStreamTrack) -> None:
        readers.append(asyncio.ensure_future(count_reply(track)))

    ws_url = server.url.replace("/v1/stream", "/v1/webrtc")
    async with connect(ws_url) as signalling:
        await signalling.send(json.dumps({"type": "webrtc.offer", "sdp": await _offer(pc)}))
        answer = json.loads(await asyncio.wait_for(signalling.recv(), 20))
        assert answer["type"] == "webrtc.answer"
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await asyncio.wait_for(got_final.wait(), 60)
        await asyncio.wait_for(got_done.wait(), 60)
        await pc.close()
    for reader in readers:
        reader.cancel()

    # closing the peer connection ended the session on the server and freed its slot
    for _ in range(100):
        if _sessions_open(server) == 0:
            break
        await asyncio.sleep(0.1)
    assert _sessions_open(server) == 0

    types = [e["type"] for e in events]
    assert types[0] == "session.created"
    refused = [e for e in events if e["type"] == "error"]
    assert len(refused) == 1 and refused[0]["code"] == "invalid_field" and not refused[0]["fatal"], refused
    assert "output_sample_rate is fixed at 48000" in refused[0]["message"]
    assert "session.updated" not in types
    final = next(e for e in events if e["type"] == "transcript.final")
    assert final["text"].startswith("go forward")  # through Opus at 48 kHz and back to 16 kHz
    done = next(e for e in events if e["type"] == "response.done")
    assert done["status"] == "completed" and done["metrics"]["audio_ms"] >= 500
    assert reply_frames > 50 and reply_energy > 0  # the reply was heard on the audio track


async def test_webrtc_signalling_rejects_bad_offers(server: RunningServer) -> None:
    ws_url = server.url.replace("/v1/stream", "/v1/webrtc")
    for message, code in (
        ("not json", "invalid_json"),
        (json.dumps({"type": "ping"}), "invalid_event"),
        (json.dumps({"type": "webrtc.offer", "sdp": ""}), "invalid_field"),
        (json.dumps({"type": "webrtc.offer", "sdp": "v=0 garbage"}), "invalid_field"),
    ):
        async with connect(ws_url) as signalling:
            await signalling.send(message)
            error = json.loads(await asyncio.wait_for(signalling.recv(), 20))
            assert error["type"] == "error" and error["code"] == code and error["fatal"]
            await signalling.wait_closed()
            assert signalling.close_code == 1008
    server.assert_alive()
