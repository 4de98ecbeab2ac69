"""WebRTC offers by POST (`/v1/webrtc/offer`) and WHIP ingest (`/v1/whip`) against a real server process,
with aiortc as the client: a spoken turn and its reply, slots taken and given back, every bad input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import numpy as np
import pytest
from conftest import RunningServer, load_pcm, metric, start_server, stop_server

try:
    from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
except ImportError as exc:  # a failure, not a skip: make install installs the extra
    raise ImportError(f"{exc}: install the webrtc extra (make install, or pip install -e '.[webrtc]')") from exc
from test_webrtc_aiortc import WavTrack
from websockets.asyncio.client import connect

KEY_A, KEY_B = "key-a-0123456789", "key-b-0123456789"
CONNECT_TIMEOUT_S = 3.0  # the slot server's webrtc_connect_timeout_s


@pytest.fixture(scope="module")
def slot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One session slot, two API keys, and a short bound on peers that never connect."""
    running = start_server(
        tmp_path_factory.mktemp("webrtc-post"),
        "--max-sessions",
        "1",
        "--api-key",
        KEY_A,
        "--api-key",
        KEY_B,
        "--metrics-public",
        env={"HARK_WEBRTC_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S)},
    )
    yield running
    running.assert_alive()
    stop_server(running)
    assert running.process.returncode == 0, running.log()[-3000:]


@pytest.fixture(autouse=True)
def loopback_ice() -> None:
    from hark.server.transport.webrtc import allow_loopback_candidates

    allow_loopback_candidates()  # our aiortc peer is on loopback too


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _offer(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())  # aiortc gathers all candidates here
    return str(pc.localDescription.sdp)


async def _wait_sessions_open(server: RunningServer, expected: float, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s * 10)):
        if metric(server, "hark_sessions_open") == expected:
            return
        await asyncio.sleep(0.1)
    assert metric(server, "hark_sessions_open") == expected, f"sessions_open not {expected} after {timeout_s:g} s"


async def _post_sdp(
    http: aiohttp.ClientSession, url: str, sdp: str | bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    async with http.post(url, data=sdp, headers={"Content-Type": "application/sdp", **(headers or {})}) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def _error_of(resp: aiohttp.ClientResponse) -> tuple[int, str]:
    assert resp.content_type == "application/json", (resp.status, await resp.text())
    body = await resp.json()
    assert set(body) == {"error"} and body["error"]["message"], body
    return resp.status, str(body["error"]["code"])


async def test_offer_by_post_turn_with_events_on_data_channel(server: RunningServer) -> None:
    events: list[dict[str, Any]] = []
    got_done = asyncio.Event()
    reply_frames = 0
    reply_energy = 0.0

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(WavTrack(load_pcm("en_goforward_command") + b"\0" * 64000))
    channel = pc.createDataChannel("hark.v1")
    ignored = pc.createDataChannel("oai-events")  # not served here: the server closes it
    ignored_closed = asyncio.Event()
    ignored.on("close", ignored_closed.set)

    @channel.on("message")  # type: ignore[misc]
    def on_message(message: str) -> None:
        events.append(json.loads(message))
        if events[-1]["type"] == "response.done":
            got_done.set()

    async def count_reply(track: MediaStreamTrack) -> None:
        nonlocal reply_frames, reply_energy
        while True:
            frame = await track.recv()
            reply_frames += 1
            reply_energy += float(np.abs(frame.to_ndarray()).mean())

    readers: list[asyncio.Task[None]] = []
    pc.on("track", lambda track: readers.append(asyncio.ensure_future(count_reply(track))))

    async with aiohttp.ClientSession() as http:
        page = {"Origin": "http://page.example"}  # a page's fetch can read the session's headers
        status, headers, answer = await _post_sdp(http, f"{server.http}/v1/webrtc/offer", await _offer(pc), page)
        assert status == 201, answer
        assert headers["Content-Type"].startswith("application/sdp")
        assert "Hark-Session-Id" in headers["Access-Control-Expose-Headers"]
        session_id = headers["Hark-Session-Id"]
        assert headers["Location"] == f"/v1/webrtc/sessions/{session_id}"
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await asyncio.wait_for(got_done.wait(), 60)
        await asyncio.wait_for(ignored_closed.wait(), 10)
        assert metric(server, "hark_sessions_open") == 1

        # DELETE ends it and frees the slot before it answers; a second DELETE finds nothing
        async with http.delete(f"{server.http}{headers['Location']}") as resp:
            assert resp.status == 204, await resp.text()
        assert metric(server, "hark_sessions_open") == 0
        async with http.delete(f"{server.http}{headers['Location']}") as resp:
            assert await _error_of(resp) == (404, "unknown_session")
    for reader in readers:
        reader.cancel()
    await pc.close()

    types = [e["type"] for e in events]
    assert types[0] == "session.created" and events[0]["session_id"] == session_id
    final = next(e for e in events if e["type"] == "transcript.final")
    assert final["text"].startswith("go forward")  # through Opus at 48 kHz and back to 16 kHz
    done = next(e for e in events if e["type"] == "response.done")
    assert done["status"] == "completed" and done["metrics"]["audio_ms"] >= 500
    assert reply_frames > 50 and reply_energy > 0  # the reply was heard on the audio track
    server.assert_alive()


async def test_offer_as_json_and_peer_closing_frees_the_slot(server: RunningServer) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")  # no microphone, no data channel: audio out only
    connected = asyncio.Event()
    pc.on("connectionstatechange", lambda: connected.set() if pc.connectionState == "connected" else None)
    async with aiohttp.ClientSession() as http:
        offer = {"type": "offer", "sdp": await _offer(pc)}
        async with http.post(f"{server.http}/v1/webrtc/offer", json=offer) as resp:
            assert resp.status == 201, await resp.text()
            answer = await resp.json()
            assert resp.headers["Hark-Session-Id"] == answer["session_id"]
    assert answer["type"] == "answer"
    await pc.setRemoteDescription(RTCSessionDescription(**{k: answer[k] for k in ("sdp", "type")}))
    await asyncio.wait_for(connected.wait(), 20)
    assert metric(server, "hark_sessions_open") == 1
    await pc.close()  # the peer goes away: the server ends the session on its own
    await _wait_sessions_open(server, 0)
    assert f"session {answer['session_id']} closed (WebRTC offer: peer_gone)" in server.log()
    server.assert_alive()


async def test_session_close_on_the_data_channel_ends_a_posted_session(server: RunningServer) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(WavTrack(b"\0" * 320000))
    channel = pc.createDataChannel("hark")
    created = asyncio.Event()
    channel.on("message", lambda message: created.set() if '"session.created"' in message else None)
    async with aiohttp.ClientSession() as http:
        status, headers, answer = await _post_sdp(http, f"{server.http}/v1/webrtc/offer", await _offer(pc))
        assert status == 201, answer
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(created.wait(), 20)  # queued before the channel opened, delivered once it did
    channel.send(json.dumps({"type": "session.close"}))
    await _wait_sessions_open(server, 0)
    await pc.close()
    assert f"session {headers['Hark-Session-Id']} closed (WebRTC offer: closed)" in server.log()


async def test_whip_takes_a_slot_like_a_websocket_and_delete_frees_it(slot_server: RunningServer) -> None:
    base = slot_server.http
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(WavTrack(b"\0" * 32000))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/whip", data=await _offer(pc), headers={"Content-Type": "text/plain"}) as r:
            assert await _error_of(r) == (401, "unauthorized")  # keys first, as on the WebSocket
        status, headers, answer = await _post_sdp(http, f"{base}/v1/whip", await _offer(pc), _auth(KEY_A))
        assert status == 201, answer
        location = headers["Location"]
        assert location == f"/v1/whip/{headers['Hark-Session-Id']}"
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        assert metric(slot_server, "hark_sessions_open") == 1

        # the one slot is taken: another POST and a WebSocket session are both refused
        other = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        other.addTrack(WavTrack(b"\0" * 32000))
        status, headers_busy, body = await _post_sdp(http, f"{base}/v1/webrtc/offer", await _offer(other), _auth(KEY_A))
        assert status == 503 and json.loads(body)["error"]["code"] == "server_busy", body
        assert headers_busy.get("Retry-After")
        await other.close()
        ws_url = slot_server.url + f"?token={KEY_A}"
        async with connect(ws_url) as ws:
            refusal = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert refusal["code"] == "server_busy" and refusal["fatal"], refusal

        # another key, the other route's location, PATCH (no trickle ICE): none of them touch it
        async with http.delete(f"{base}{location}", headers=_auth(KEY_B)) as r:
            assert await _error_of(r) == (404, "unknown_session")
        wrong_route = location.replace("/v1/whip/", "/v1/webrtc/sessions/")
        async with http.delete(f"{base}{wrong_route}", headers=_auth(KEY_A)) as r:
            assert await _error_of(r) == (404, "unknown_session")
        async with http.patch(f"{base}{location}", data="a=candidate:x", headers=_auth(KEY_A)) as r:
            assert await _error_of(r) == (405, "method_not_allowed")
        assert metric(slot_server, "hark_sessions_open") == 1

        async with http.delete(f"{base}{location}", headers=_auth(KEY_A)) as r:
            assert r.status == 204, await r.text()
        assert metric(slot_server, "hark_sessions_open") == 0
        async with http.delete(f"{base}{location}", headers=_auth(KEY_A)) as r:
            assert await _error_of(r) == (404, "unknown_session")

        # the slot is free again: a new WHIP session is admitted (and closed)
        again = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        again.addTrack(WavTrack(b"\0" * 32000))
        status, headers, answer = await _post_sdp(http, f"{base}/v1/whip", await _offer(again), _auth(KEY_A))
        assert status == 201, answer
        async with http.delete(f"{base}{headers['Location']}", headers=_auth(KEY_A)) as r:
            assert r.status == 204
        await again.close()
    await pc.close()
    slot_server.assert_alive()


async def test_a_peer_that_never_connects_is_reaped(slot_server: RunningServer) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(WavTrack(b"\0" * 32000))
    async with aiohttp.ClientSession() as http:
        status, headers, answer = await _post_sdp(http, f"{slot_server.http}/v1/whip", await _offer(pc), _auth(KEY_A))
        assert status == 201, answer
        await pc.close()  # the answer is never applied: no ICE ever completes
        assert metric(slot_server, "hark_sessions_open") == 1
        await _wait_sessions_open(slot_server, 0, timeout_s=CONNECT_TIMEOUT_S + 10)
        assert "closed (WebRTC whip: never_connected)" in slot_server.log()  # our bound, not aiortc's ICE timeout
        async with http.delete(f"{slot_server.http}{headers['Location']}", headers=_auth(KEY_A)) as r:
            assert await _error_of(r) == (404, "unknown_session")  # gone on its own
    slot_server.assert_alive()


def _sdp(*media: str) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0", *media]
    return "\r\n".join(lines) + "\r\n"


async def test_bad_offers_get_json_errors_and_hold_no_slot(server: RunningServer) -> None:
    offer_url, whip_url = f"{server.http}/v1/webrtc/offer", f"{server.http}/v1/whip"
    oversized = _sdp("m=audio 9 UDP/TLS/RTP/SAVPF 111", *["a=x-padding:" + "p" * 1000] * 70)
    sdp_cases: list[tuple[str, bytes | str, int, str]] = [
        (offer_url, "hello, not sdp", 400, "invalid_sdp"),
        (whip_url, "", 400, "invalid_sdp"),
        (offer_url, b"v=0\r\n\xff\xfe m=audio", 400, "invalid_sdp"),
        (offer_url, _sdp("m=video 9 UDP/TLS/RTP/SAVPF 96"), 400, "sdp_no_audio"),
        (whip_url, _sdp("m=application 9 UDP/DTLS/SCTP webrtc-datachannel"), 400, "sdp_no_audio"),
        (offer_url, _sdp("m=audio 9 UDP/TLS/RTP/SAVPF 111"), 400, "invalid_sdp"),  # aiortc: no ICE, no DTLS
        (whip_url, oversized, 413, "payload_too_large"),
    ]
    async with aiohttp.ClientSession() as http:
        for url, body, status, code in sdp_cases:
            async with http.post(url, data=body, headers={"Content-Type": "application/sdp"}) as resp:
                assert await _error_of(resp) == (status, code), (url, body[:60])

        async def chunked() -> Any:  # no Content-Length: the cap holds while reading
            for _ in range(80):
                yield b"a=x-padding:" + b"p" * 1000 + b"\r\n"

        async with http.post(whip_url, data=chunked(), headers={"Content-Type": "application/sdp"}) as resp:
            assert await _error_of(resp) == (413, "payload_too_large")

        for url, content_type in ((offer_url, "text/plain"), (whip_url, "application/json"), (offer_url, "")):
            headers = {"Content-Type": content_type} if content_type else {}
            async with http.post(url, data=_sdp("m=audio 9 RTP/AVP 0"), headers=headers) as resp:
                assert await _error_of(resp) == (415, "unsupported_media_type"), content_type

        for body, code in (
            ("{not json", "invalid_json"),
            ("[1, 2]", "invalid_json"),
            (json.dumps({"type": "answer", "sdp": _sdp("m=audio 9 RTP/AVP 0")}), "invalid_field"),
            (json.dumps({"type": "offer", "sdp": 5}), "invalid_field"),
            (json.dumps({"type": "offer", "sdp": _sdp("m=audio 9 RTP/AVP 0"), "extra": 1}), "invalid_field"),
            (json.dumps({"type": "offer", "sdp": "hello"}), "invalid_sdp"),
        ):
            async with http.post(offer_url, data=body, headers={"Content-Type": "application/json"}) as resp:
                assert await _error_of(resp) == (400, code), body

        for path in ("/v1/whip/nope", "/v1/webrtc/sessions/nope", "/v1/whip/" + "x" * 300):
            async with http.delete(f"{server.http}{path}") as resp:
                assert await _error_of(resp) == (404, "unknown_session"), path
    assert metric(server, "hark_sessions_open") == 0
    server.assert_alive()


async def test_shutdown_ends_posted_sessions(tmp_path_factory: pytest.TempPathFactory) -> None:
    running = start_server(tmp_path_factory.mktemp("webrtc-post-shutdown"))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(WavTrack(b"\0" * 320000))
    connected = asyncio.Event()
    pc.on("connectionstatechange", lambda: connected.set() if pc.connectionState == "connected" else None)
    async with aiohttp.ClientSession() as http:
        status, headers, answer = await _post_sdp(http, f"{running.http}/v1/webrtc/offer", await _offer(pc))
        assert status == 201, answer
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    await asyncio.wait_for(connected.wait(), 20)
    assert metric(running, "hark_sessions_open") == 1
    await asyncio.to_thread(stop_server, running)  # SIGTERM with the session live
    await pc.close()
    assert running.process.returncode == 0, running.log()[-3000:]
    assert f"session {headers['Hark-Session-Id']} closed (WebRTC offer: stopped)" in running.log()


async def test_delete_reaches_the_worker_that_holds_the_session(tmp_path_factory: pytest.TempPathFactory) -> None:
    """--workers 2: each DELETE on a new connection may land on either process; the session still ends."""
    running = start_server(
        tmp_path_factory.mktemp("webrtc-post-workers"),
        "--workers",
        "2",
        "--api-key",
        KEY_A,
        "--api-key",
        KEY_B,
        "--metrics-public",
    )
    try:
        for _ in range(6):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTrack(WavTrack(b"\0" * 32000))
            async with aiohttp.ClientSession() as http:
                status, headers, answer = await _post_sdp(
                    http, f"{running.http}/v1/whip", await _offer(pc), _auth(KEY_A)
                )
                assert status == 201, answer
            location = f"{running.http}{headers['Location']}"
            for key, expected in ((KEY_B, 404), (KEY_A, 204), (KEY_A, 404)):  # new connections each time
                async with aiohttp.ClientSession() as http, http.delete(location, headers=_auth(key)) as resp:
                    assert resp.status == expected, (key, await resp.text())
            await pc.close()
        await _wait_sessions_open(running, 0)
    finally:
        await asyncio.to_thread(stop_server, running)
    assert running.process.returncode == 0, running.log()[-3000:]
