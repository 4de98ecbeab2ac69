"""A real server against text a hostile (or careless) client sends: each gets a non-fatal error and
the session goes on. Issue 12 D1 (a 401-digit played_ms), D4 (lone surrogate escapes, which used to
abort the connection with 1006 when the server echoed them) and the byte-counted size limit."""

from __future__ import annotations

import json

import pytest
from conftest import RunningServer
from wsclient import Peer

LONE = "\ud800"  # json.dumps writes it as the escape \ud800, as JSON.stringify does


async def _still_serves(peer: Peer, tag: str) -> None:
    await peer.send_json({"type": "ping", "id": tag})
    assert (await peer.wait_for(lambda e: e["type"] == "pong" and e.get("id") == tag))["id"] == tag


@pytest.mark.parametrize(
    "event",
    [
        {"type": "ping", "id": LONE},
        {"type": "input.text", "text": "a reply cut inside an emoji " + LONE},
        {"type": "session.update", "config": {"voice": LONE}},
        {"type": "session.update", "config": {"instructions": "be brief " + LONE}},
        {"type": "session.update", "config": {LONE: 1}},
        {"type": "response.cancel", "response_id": LONE},
    ],
    ids=["ping.id", "input.text", "voice", "instructions", "unknown_key", "response_id"],
)
async def test_lone_surrogate_is_answered_with_invalid_json(server: RunningServer, event: dict[str, object]) -> None:
    peer = await Peer.open(server.url)
    await peer.send_json(event)
    error = await peer.wait_for(lambda e: e["type"] == "error")
    assert error["code"] == "invalid_json" and error["fatal"] is False and "surrogate" in error["message"]
    await _still_serves(peer, "after")
    assert peer.conn.close_code is None  # not aborted (1006) as before
    await peer.close()
    server.assert_alive()


async def test_huge_played_ms_during_a_reply_is_refused_and_the_reply_completes(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    await peer.send_json({"type": "input.text", "text": "tell me something long enough to still be playing"})
    started = await peer.wait_for(lambda e: e["type"] == "response.started")
    rid = started["response_id"]
    await peer.conn.send('{"type":"playback.position","response_id":"' + rid + '","played_ms":1' + "0" * 400 + "}")
    error = await peer.wait_for(lambda e: e["type"] == "error")
    assert error["code"] == "invalid_field" and "played_ms" in error["message"] and not error["fatal"]
    done = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] == rid)
    assert done["status"] == "completed"
    await _still_serves(peer, "after")
    await peer.close()


async def test_multibyte_text_over_a_mebibyte_of_bytes_is_too_large(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    text = json.dumps({"type": "input.text", "text": "语" * 1_000_000}, ensure_ascii=False)
    assert len(text) < 1 << 20 < len(text.encode())  # under the limit in characters, 3 MB in bytes
    await peer.conn.send(text)
    error = await peer.wait_for(lambda e: e["type"] == "error")
    assert error["code"] == "message_too_large" and not error["fatal"]
    await _still_serves(peer, "after")
    assert "response.started" not in peer.types()
    await peer.close()
