"""End to end through a real server process: real audio in, transcripts, reply text and audio out."""

from __future__ import annotations

import itertools
import re

from conftest import RunningServer, load_pcm
from wsclient import Peer, silence

CONTRACT_ORDER = [
    "speech.started",
    "transcript.partial",
    "speech.stopped",
    "transcript.final",
    "response.started",
    "response.text.delta",
    "response.audio.started",
    "response.audio.done",
    "response.done",
]


def _collapse(types: list[str]) -> list[str]:
    out: list[str] = []
    for t in types:
        if not out or out[-1] != t:
            out.append(t)
    return out


# the silence policy these turn boundaries and timings are about (the server's default is semantic
# when its turn model is installed; tests/test_turn_taking.py covers that one)
SILENCE_500 = {"type": "session.update", "config": {"turn_detection": {"type": "silence", "silence_ms": 500}}}


async def test_goforward_turn_in_contract_order(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    created = peer.events[0]
    assert created["type"] == "session.created" and created["protocol"] == "hark.v1"
    await peer.send_json(SILENCE_500)
    await peer.send_pcm(load_pcm("en_goforward_command") + silence(1000))
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    await peer.close()

    assert peer.of("transcript.final")[0]["text"] == "go forward ten meters"
    assert done["status"] == "completed"
    deltas = "".join(e["delta"] for e in peer.of("response.text.delta"))
    assert deltas == done["text"] == "You said: go forward ten meters."
    assert len(peer.of("response.text.delta")) > 1  # streamed, not one block
    sample_rate = peer.of("response.audio.started")[0]["sample_rate"]
    reply_seconds = peer.audio_bytes / 2 / sample_rate
    assert reply_seconds >= 0.5
    assert peer.of("response.audio.done")[0]["audio_ms"] == round(reply_seconds * 1000)

    turn_events = [t for t in peer.types() if t not in ("session.created", "session.updated")]
    assert _collapse(turn_events) == CONTRACT_ORDER
    # partials: stable_text only grows and is a word prefix of the turn's words
    stables = [e["stable_text"] for e in peer.of("transcript.partial")]
    assert all(b.startswith(a) for a, b in itertools.pairwise(stables))
    # every binary frame arrived between audio.started and audio.done
    started_at = peer.of("response.audio.started")[0]["_t"]
    done_at = peer.of("response.audio.done")[0]["_t"]
    assert all(started_at <= t <= done_at for t, _ in peer.audio)

    metrics = done["metrics"]
    for key in (
        "final_ms",
        "first_token_ms",
        "first_audio_ms",
        "prompt_tokens",
        "cached_tokens",
        "speculative_prefills",
    ):
        assert key in metrics
    assert 0 <= metrics["final_ms"] <= metrics["first_token_ms"] <= metrics["first_audio_ms"]
    # the end of speech needs min_silence_ms of silence to be sure of: it is inside final_ms
    assert metrics["final_ms"] >= 500 / 1.8 * 0.9


async def test_audio_is_paced_near_real_time(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    await peer.send_json({"type": "input.text", "text": "please read this whole sentence back to me slowly"})
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    await peer.close()
    audio_seconds = done["metrics"]["audio_ms"] / 1000.0
    first, last = peer.audio[0][0], peer.audio[-1][0]
    # sent with at most ~200 ms lead: the span of arrivals is the audio length minus the lead
    assert last - first >= audio_seconds - 0.35


async def test_digits_three_turns(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    await peer.send_json(SILENCE_500)  # one turn per digit group: what silence endpointing does
    await peer.send_pcm(load_pcm("en_vosk_digits") + silence(1000))
    await peer.wait_for(lambda e: e["type"] == "transcript.final" and e["turn_id"] == 3)
    await peer.send_json({"type": "session.close"})
    await peer.wait_closed()
    assert len(peer.of("speech.started")) == 3
    assert len(peer.of("speech.stopped")) == 3
    finals = peer.of("transcript.final")
    assert [e["turn_id"] for e in finals] == [1, 2, 3]
    assert all(e["text"] for e in finals), finals  # every turn was recognized, not just segmented
    assert peer.errors() == []
    print("digits finals:", [e["text"] for e in finals])
    assert peer.conn.close_code == 1000


async def test_mandarin_vad_boundaries_match_reference(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    await peer.send_pcm(load_pcm("zh_funasr_regression_sample") + silence(1000))
    await peer.send_json({"type": "session.close"})
    await peer.wait_closed()
    starts = [e["audio_ms"] for e in peer.of("speech.started")]
    stops = [e["audio_ms"] for e in peer.of("speech.stopped")]
    # reference from another VAD (refs/zh_funasr_regression_sample.vad_golden_ms.txt): 770-5980 ms
    print(f"zh VAD: starts {starts}, stops {stops} (reference 770-5980)")
    assert abs(starts[0] - 770) <= 400, starts
    assert abs(stops[-1] - 5980) <= 400, stops


async def test_graceful_close_finishes_the_turn(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    # no trailing silence: session.close must end the open utterance and still answer it
    await peer.send_pcm(load_pcm("en_goforward_command")[: 16000 * 2 * 2])
    await peer.send_json({"type": "session.close"})
    await peer.send_pcm(silence(200))
    await peer.wait_closed()
    assert peer.conn.close_code == 1000
    assert "session_closed" in peer.errors()
    assert peer.of("response.done")[0]["status"] == "completed"
    assert re.match(r"You said: go forward", peer.of("response.done")[0]["text"])


async def test_typed_turn_and_history(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    await peer.send_json({"type": "session.update", "config": {"audio_output": False}})
    await peer.wait_for(lambda e: e["type"] == "session.updated")
    await peer.send_json({"type": "input.text", "text": "hello there"})
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    await peer.close()
    assert done["text"] == "You said: hello there."
    assert peer.audio_bytes == 0 and not peer.of("response.audio.started")
    assert done["metrics"]["first_audio_ms"] is None
    assert done["metrics"]["final_ms"] is None  # no transcript to wait for


async def test_output_and_input_sample_rates(server: RunningServer) -> None:
    import numpy as np
    import soxr

    pcm16k = np.frombuffer(load_pcm("en_goforward_command"), dtype="<i2")
    pcm48k = soxr.resample(pcm16k, 16000, 48000).astype("<i2").tobytes()
    peer = await Peer.open(server.url)
    await peer.send_json(
        {"type": "session.update", "config": {"input_sample_rate": 48000, "output_sample_rate": 24000}}
    )
    await peer.wait_for(lambda e: e["type"] == "session.updated")
    await peer.send_pcm(pcm48k + b"\0" * 96000, frame_bytes=9600)
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    await peer.close()
    # resampled audio decodes slightly differently on a first utterance ("ten years" happens)
    assert peer.of("transcript.final")[0]["text"].startswith("go forward ten")
    assert peer.of("response.audio.started")[0]["sample_rate"] == 24000
    assert abs(peer.audio_bytes / 2 / 24000 * 1000 - done["metrics"]["audio_ms"]) <= 1


async def test_frames_right_after_a_rate_change_are_sized_by_the_new_rate(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    await peer.send_json({"type": "session.update", "config": {"input_sample_rate": 48000}})
    await peer.conn.send(b"\0" * 96000)  # 1000 ms at 48 kHz (3000 ms if read at 16 kHz)
    await peer.send_json({"type": "ping", "id": "sync"})
    await peer.wait_for(lambda e: e["type"] == "pong")
    await peer.close()
    assert peer.errors() == []


async def test_typed_turn_during_speech_keeps_turn_ids_consistent(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    pcm = load_pcm("en_goforward_command")
    await peer.send_pcm(pcm[: 16000 * 2 * 2])  # two seconds in: the user is speaking
    await peer.wait_for(lambda e: e["type"] == "speech.started")
    await peer.send_json({"type": "input.text", "text": "typed while talking"})
    await peer.send_pcm(pcm[16000 * 2 * 2 :] + silence(1000))
    await peer.wait_for(lambda e: e["type"] == "transcript.final")
    await peer.close()
    spoken = peer.of("speech.started")[0]["turn_id"]
    assert peer.of("speech.stopped")[0]["turn_id"] == spoken
    assert peer.of("transcript.final")[0]["turn_id"] == spoken
