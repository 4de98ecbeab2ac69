"""Many sessions at once on one server: every turn finishes, none sees another's events."""

from __future__ import annotations

import asyncio
import urllib.request

from conftest import RunningServer, load_pcm
from wsclient import Peer, silence

SESSIONS = 20


def _loop_lag_histogram(server: RunningServer) -> dict[str, float]:
    body = urllib.request.urlopen(f"{server.http}/metrics", timeout=10).read().decode()
    return {
        line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("hark_event_loop_lag_seconds_bucket")
    }


async def test_twenty_concurrent_sessions_finish_their_turns(server: RunningServer) -> None:
    clip = load_pcm("en_goforward_command") + silence(1000)
    lag_before = _loop_lag_histogram(server)

    async def one(i: int) -> Peer:
        peer = await Peer.open(server.url)
        await asyncio.sleep(i * 0.05)  # staggered like real users, not one synchronized burst
        await peer.send_pcm(clip, speed=1.0)
        await peer.wait_for(lambda e: e["type"] == "response.done", timeout=180)
        await peer.send_json({"type": "session.close"})
        await peer.wait_closed(timeout=60)
        return peer

    peers = await asyncio.gather(*(one(i) for i in range(SESSIONS)))
    session_ids = {p.events[0]["session_id"] for p in peers}
    assert len(session_ids) == SESSIONS
    for peer in peers:
        finals = peer.of("transcript.final")
        done = peer.of("response.done")
        assert [f["text"] for f in finals] == ["go forward ten meters"], peer.types()
        assert len(done) == 1 and done[0]["status"] == "completed"
        assert done[0]["text"] == "You said: go forward ten meters."
        assert peer.audio_bytes > 16000  # at least 0.5 s of reply audio each
        assert peer.errors() == []
        assert peer.conn.close_code == 1000
    server.assert_alive()

    # loop lag while 20 sessions ran, from the server's own monitor (reported, not a speed limit:
    # the bound only catches a loop that was blocked outright, e.g. by inference on it)
    lag_after = _loop_lag_histogram(server)
    total = lag_after["+Inf"] - lag_before["+Inf"]
    over_half_second = total - (lag_after["0.5"] - lag_before["0.5"])
    print(f"loop lag samples: {total:.0f}, over 0.5 s: {over_half_second:.0f}")
    assert total > 0 and over_half_second <= total * 0.02
