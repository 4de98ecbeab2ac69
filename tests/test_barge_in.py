"""Barge-in: the user talking over a reply cancels it; audio stops; history keeps what was heard."""

from __future__ import annotations

import asyncio

from conftest import RunningServer, load_pcm
from wsclient import Peer, silence

LONG_REQUEST = (
    "tell me a long story about a robot that walks ten meters forward every single morning, "
    "then turns around, looks at the sea, and walks all the way back home again before noon"
)


async def test_speech_during_reply_cancels_it(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    await peer.send_json({"type": "input.text", "text": LONG_REQUEST})
    started = await peer.wait_for(lambda e: e["type"] == "response.audio.started")
    await asyncio.sleep(0.5)  # let some of the reply play
    await peer.send_pcm(load_pcm("en_goforward_command") + silence(1000))
    cancelled = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] == "resp_1")
    second = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] == "resp_2")
    await peer.close()

    assert cancelled["status"] == "cancelled"
    full = "You said: " + LONG_REQUEST + "."
    heard = cancelled["text"]
    assert heard and full.startswith(heard) and len(heard) < len(full) / 2
    # the cancelled reply's audio stopped: far less than the whole reply was sent
    audio_started = [e for e in peer.of("response.audio.started")]
    assert audio_started[0]["response_id"] == "resp_1"
    sent_resp1 = cancelled["_audio_bytes"] - started["_audio_bytes"]
    assert cancelled["metrics"]["audio_ms"] == round(sent_resp1 / 2 / 16)
    assert cancelled["metrics"]["audio_ms"] < 6000
    # nothing of resp_1 after its response.done: the next frames belong to resp_2's audio
    resp2_audio = next(e for e in audio_started if e["response_id"] == "resp_2")
    assert resp2_audio["_audio_bytes"] == cancelled["_audio_bytes"]
    # the barge-in turn was answered normally
    assert second["status"] == "completed"
    assert second["text"] == "You said: go forward ten meters."
    # order: the user's speech started before the cancellation
    barge_turn = peer.of("speech.started")[0]
    assert barge_turn["_t"] <= cancelled["_t"]


async def test_client_cancel_and_cancel_without_response(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    await peer.send_json({"type": "response.cancel"})
    await peer.wait_for(lambda e: e["type"] == "error" and e["code"] == "no_active_response")
    await peer.send_json({"type": "input.text", "text": LONG_REQUEST})
    await peer.wait_for(lambda e: e["type"] == "response.audio.started")
    await peer.send_json({"type": "playback.position", "response_id": "resp_1", "played_ms": 0})
    await peer.send_json({"type": "response.cancel", "response_id": "resp_1"})
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    frames_at_done = len(peer.audio)
    await asyncio.sleep(0.6)
    await peer.close()
    assert done["status"] == "cancelled"
    assert done["text"] == ""  # the client said it had played nothing
    assert len(peer.audio) == frames_at_done  # no audio after the cancellation


async def test_min_interrupt_ms_decides_when_speech_interrupts(server: RunningServer) -> None:
    """Under min_interrupt_ms, speech alone does not cut the reply; the words it turns out to carry do."""
    peer = await Peer.open(server.url)
    await peer.send_json({"type": "session.update", "config": {"min_interrupt_ms": 5000}})
    await peer.send_json({"type": "input.text", "text": LONG_REQUEST})
    await peer.wait_for(lambda e: e["type"] == "response.audio.started")
    await peer.send_pcm(load_pcm("en_goforward_command") + silence(1000))
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    stopped = await peer.wait_for(lambda e: e["type"] == "speech.stopped")
    await peer.close()
    assert done["status"] == "cancelled"
    assert stopped["_t"] <= done["_t"]  # not by duration: by the final transcript's words


async def test_default_threshold_interrupts_while_still_speaking(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    await peer.send_json({"type": "input.text", "text": LONG_REQUEST})
    await peer.wait_for(lambda e: e["type"] == "response.audio.started")
    await peer.send_pcm(load_pcm("en_librivox_sense_0870"))
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    await peer.close()
    assert done["status"] == "cancelled"
    assert not any(e["_t"] <= done["_t"] for e in peer.of("speech.stopped"))
