"""Every bad input gets an error event with a stable code; none crashes the server or touches others."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest
from conftest import RunningServer, load_pcm, metric
from websockets.asyncio.client import connect
from wsclient import Peer, silence


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("{this is not json", "invalid_json"),
        ("[]", "invalid_event"),
        ('{"type":"audio.launch"}', "unknown_event"),
        ('{"type":"input.text"}', "invalid_field"),
        ('{"type":"playback.position","response_id":"x","played_ms":"soon"}', "invalid_field"),
        ('{"type":"session.update","config":{"input_sample_rate":11}}', "invalid_field"),
        ('{"type":"audio.commit"}', "nothing_to_commit"),
        ("x" * ((1 << 20) + 10), "message_too_large"),
        (b"\x01" * 3201, "audio_odd_length"),
        (b"\0" * 100, "audio_frame_too_short"),
        (b"\0" * 64000, "audio_frame_too_long"),
        (b"\0" * ((1 << 20) + 2), "message_too_large"),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None,
)
async def test_bad_message_gets_error_and_session_goes_on(
    server: RunningServer, message: str | bytes, code: str
) -> None:
    peer = await Peer.open(server.url)
    await peer.conn.send(message)
    error = await peer.wait_for(lambda e: e["type"] == "error")
    assert error["code"] == code and error["fatal"] is False and error["message"]
    # the same session still works afterwards
    await peer.send_json({"type": "ping", "id": "after"})
    assert (await peer.wait_for(lambda e: e["type"] == "pong"))["id"] == "after"
    await peer.close()


async def test_hard_size_limit_closes_with_1009(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    await peer.conn.send(b"\0" * (9 << 20))
    await peer.wait_closed()
    assert peer.conn.close_code == 1009


async def test_invalid_utf8_text_frame_closes_with_1007(server: RunningServer) -> None:
    """RFC 6455 8.1: an endpoint that finds a text frame is not UTF-8 must fail the connection.
    PROTOCOL.md says so (1007), and the close reason says where the bad byte is."""
    peer = await Peer.open(server.url)
    await peer.conn.send(b'{"type":"ping","id":"\xff\xfe"}', text=True)
    await peer.wait_closed()
    assert peer.conn.close_code == 1007 and "position" in (peer.conn.close_reason or "")
    assert "error" not in peer.types()
    # valid UTF-8 that is not JSON is the non-fatal invalid_json
    other = await Peer.open(server.url)
    await other.conn.send("caf\u00e9 {".encode(), text=True)
    assert (await other.wait_for(lambda e: e["type"] == "error"))["code"] == "invalid_json"
    await other.close()


async def test_audio_flood_is_refused_and_others_unaffected(server: RunningServer) -> None:
    witness = await Peer.open(server.url)
    flooder = await Peer.open(server.url)
    witness_turn = asyncio.create_task(witness.send_pcm(load_pcm("en_goforward_command") + silence(1000)))
    for _ in range(200):  # 20 s of audio as fast as the socket takes it
        await flooder.conn.send(b"\0" * 3200)
    error = await flooder.wait_for(lambda e: e["type"] == "error")
    assert error["code"] == "audio_flood" and not error["fatal"]
    # errors about the flood are themselves throttled, not one per dropped frame
    await asyncio.sleep(0.3)
    assert len(flooder.errors()) < 20
    await witness_turn
    done = await witness.wait_for(lambda e: e["type"] == "response.done")
    assert done["status"] == "completed" and done["text"] == "You said: go forward ten meters."
    assert "error" not in witness.types()
    await flooder.close()
    await witness.close()


async def test_text_message_flood_is_rate_limited(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    for i in range(200):
        await peer.send_json({"type": "ping", "id": str(i)})
    await peer.wait_for(lambda e: e["type"] == "error" and e["code"] == "rate_limited")
    await asyncio.sleep(1.5)
    await peer.send_json({"type": "ping", "id": "later"})
    await peer.wait_for(lambda e: e["type"] == "pong" and e["id"] == "later")
    await peer.close()


async def test_abrupt_disconnects_leave_nothing_behind(server: RunningServer) -> None:
    for cut in ("mid_speech", "mid_reply"):
        peer = await Peer.open(server.url)
        if cut == "mid_speech":
            await peer.send_pcm(load_pcm("en_goforward_command")[:32000])
        else:
            await peer.send_json({"type": "input.text", "text": "a reply that will be cut off " * 5})
            await peer.wait_for(lambda e: e["type"] == "response.audio.started")
        peer.conn.transport.abort()  # TCP reset, no close handshake
    # tests run one at a time, so once these two are cleaned up no session is open
    for _ in range(100):
        if metric(server, "hark_sessions_open") == 0:
            break
        await asyncio.sleep(0.1)
    assert metric(server, "hark_sessions_open") == 0
    server.assert_alive()
    peer = await Peer.open(server.url)
    await peer.send_json({"type": "ping"})
    await peer.wait_for(lambda e: e["type"] == "pong")
    await peer.close()


async def test_events_after_session_close(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    await peer.send_json({"type": "session.close"})
    await peer.conn.send(b"\0" * 3200)
    await peer.wait_closed()
    assert peer.conn.close_code == 1000
    # the audio may race the close; if it was read, it was answered with session_closed
    assert set(peer.errors()) <= {"session_closed"}


async def test_slow_reader_is_disconnected(server_factory: Any) -> None:
    slow_server: RunningServer = server_factory(
        env={"HARK_SEND_BUFFER_BYTES": "4096", "HARK_SLOW_CONSUMER_TIMEOUT_S": "1", "HARK_SEND_QUEUE_LIMIT": "32"}
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", slow_server.port))
    conn = await connect(slow_server.url, sock=sock, max_queue=1, max_size=1 << 20)
    await conn.send(json.dumps({"type": "session.update", "config": {"output_sample_rate": 48000}}))
    await conn.send(json.dumps({"type": "input.text", "text": "never read this " * 200}))
    # never read: the server must give up on us instead of buffering forever
    witness = await Peer.open(slow_server.url)
    await witness.send_json({"type": "input.text", "text": "hello"})
    assert (await witness.wait_for(lambda e: e["type"] == "response.done"))["status"] == "completed"
    await witness.close()
    for _ in range(300):
        if "closing a slow consumer" in slow_server.log():
            break
        await asyncio.sleep(0.1)
    assert "closing a slow consumer" in slow_server.log()
    # drain now (the server waits 10 s for the close handshake): the close frame says why
    with pytest.raises(Exception):  # noqa: B017 - ConnectionClosed of either flavour
        while True:
            await asyncio.wait_for(conn.recv(), 10)
    assert conn.close_code == 1008 and "slow_consumer" in (conn.close_reason or "")
    slow_server.assert_alive()
