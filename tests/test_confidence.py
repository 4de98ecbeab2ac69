"""The ASR-confidence fallback (issue 12, item 4): pocketsphinx's word posteriors say how sure a final
is; below `min_asr_confidence` the assistant does not answer the words, it asks to repeat or type.

Real audio only: clean corpus speech must come out confident, the same speech under heavy white
noise (loud enough for the VAD to hear a turn) must not."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from conftest import RunningServer, load_pcm
from wsclient import Peer, silence

from hark.protocol import ErrorCode, ProtocolError, SessionConfig, TranscriptFinal, decode_server, encode
from hark.server.asr.pocketsphinx import PocketsphinxEngine
from hark.server.asr.posterior import mean_word_posterior
from hark.server.clarify import ASK_AGAIN, is_low_confidence

THRESHOLD = SessionConfig().min_asr_confidence


def with_noise(pcm: bytes, rms: float, seed: int = 12) -> bytes:
    """The clip with white noise of `rms` (PCM16 units) added: the words are still there, barely."""
    speech = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    noise = np.random.default_rng(seed).standard_normal(len(speech)) * rms
    return np.clip(speech + noise, -32768, 32767).astype("<i2").tobytes()


def noisy_speech() -> bytes:
    # LibriVox speech is ~900 rms: noise as loud (0 dB SNR), which Silero still hears as speech
    return with_noise(load_pcm("en_librivox_sense_0920"), 900.0)


# ---------------------------------------------------------------------- the measure


@dataclass
class Seg:
    word: str
    prob: float


def test_the_confidence_is_the_mean_posterior_of_the_words_only() -> None:
    segs = [
        Seg("<s>", 0.1),
        Seg("go", 1.0),
        Seg("[NOISE]", 0.0),
        Seg("forward", 0.5),
        Seg("<sil>", 0.2),
        Seg("</s>", 1),
    ]
    assert mean_word_posterior(segs) == pytest.approx(0.75)
    assert mean_word_posterior([Seg("<s>", 1.0), Seg("[SPEECH]", 1.0)]) is None  # no words: nothing to rate
    assert mean_word_posterior([Seg("a", 1.0000001), Seg("b", -0.0)]) == pytest.approx(0.5)  # clamped


def test_low_confidence_needs_a_confidence_and_a_threshold() -> None:
    assert is_low_confidence(0.3, 0.65)
    assert not is_low_confidence(0.65, 0.65)
    assert not is_low_confidence(None, 0.65)  # an engine that cannot say never triggers it
    assert not is_low_confidence(0.0, 0.0)  # 0 turns it off


def test_the_threshold_is_a_session_setting_checked_like_the_others() -> None:
    assert THRESHOLD == 0.65  # the seed's number
    assert SessionConfig().updated({"min_asr_confidence": 0}).min_asr_confidence == 0
    for bad in (1.5, -0.1, "high", None):
        with pytest.raises(ProtocolError) as caught:
            SessionConfig().updated({"min_asr_confidence": bad})
        assert caught.value.code is ErrorCode.INVALID_FIELD and "min_asr_confidence" in caught.value.message


def test_transcript_final_carries_confidence_and_the_flag_on_the_wire() -> None:
    event = TranscriptFinal(turn_id=1, text="go", confidence=0.42, low_confidence=True)
    wire = encode(event)
    assert '"confidence":0.42' in wire and '"low_confidence":true' in wire
    assert decode_server(wire) == event
    assert decode_server('{"type":"transcript.final","turn_id":1,"text":"go"}') == TranscriptFinal(1, "go")


# ---------------------------------------------------------------------- the engine, real pocketsphinx


async def _decode(engine: PocketsphinxEngine, pcm: bytes) -> tuple[str, float | None]:
    stream = engine.open_stream("confidence")
    try:
        await stream.begin()
        for i in range(0, len(pcm), 3200):
            await stream.accept(pcm[i : i + 3200])
        text = await stream.finalize()
        return text, stream.confidence
    finally:
        await stream.close()


async def test_pocketsphinx_is_confident_on_clean_speech_and_not_under_heavy_noise() -> None:
    engine = PocketsphinxEngine(workers=1, keep_idle=1)
    plain = PocketsphinxEngine(workers=1, keep_idle=1, confidence=False)
    await engine.start()
    await plain.start()
    try:
        clean_text, clean = await _decode(engine, load_pcm("en_goforward_command"))
        libri_text, libri = await _decode(engine, load_pcm("en_librivox_sense_0920"))
        noisy_text, noisy = await _decode(engine, noisy_speech())
        plain_text, none = await _decode(plain, load_pcm("en_goforward_command"))
    finally:
        await engine.aclose()
        await plain.aclose()
    print(f"clean {clean} {clean_text!r}; librivox {libri} {libri_text!r}; noisy {noisy} {noisy_text!r}")
    assert clean_text == plain_text == "go forward ten meters"  # the lattice pass keeps the first pass's words
    assert clean is not None and clean >= THRESHOLD
    assert libri is not None and libri >= THRESHOLD
    assert noisy_text and noisy is not None and noisy < THRESHOLD
    assert none is None  # without the lattice pass every posterior is 1.0: it does not pretend


# ---------------------------------------------------------------------- the session, a real server


async def _spoken_turn(peer: Peer, pcm: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Speak `pcm`; its first final with words, and the reply to that turn."""
    sent_at = time.monotonic()
    # past the semantic policy's 2.5 s cap: an unfinished-sounding turn may wait that long
    await peer.send_pcm(pcm + silence(3500))
    final = await peer.wait_for(lambda e: e["type"] == "transcript.final" and e["_t"] >= sent_at and e["text"] != "")
    started = await peer.wait_for(lambda e: e["type"] == "response.started" and e["turn_id"] == final["turn_id"])
    done = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] == started["response_id"])
    return final, done


async def test_a_clean_turn_is_answered_and_says_how_sure_it_was(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    final, done = await _spoken_turn(peer, load_pcm("en_goforward_command"))
    await peer.close()
    assert final["text"] == "go forward ten meters"
    assert final["confidence"] >= THRESHOLD and final["low_confidence"] is False
    assert done["status"] == "completed" and done["text"] == "You said: go forward ten meters."


async def test_an_unsure_turn_gets_a_question_not_a_guess(server: RunningServer) -> None:
    peer = await Peer.open(server.url)
    await peer.send_json({"type": "session.update", "config": {"audio_output": True}})
    final, done = await _spoken_turn(peer, noisy_speech())
    print("noisy final:", final["text"], final["confidence"])
    assert final["text"] and final["confidence"] < THRESHOLD and final["low_confidence"] is True
    started = peer.of("response.started")[-1]
    assert started["turn_id"] == final["turn_id"] and started["response_id"] == done["response_id"]
    # the server's own question, spoken through the normal reply path, not the model's echo
    assert done["status"] == "completed" and done["text"] == ASK_AGAIN
    assert "".join(e["delta"] for e in peer.of("response.text.delta")) == ASK_AGAIN
    assert peer.of("response.audio.done")[-1]["audio_ms"] > 1000
    assert peer.errors() == []

    # the words it was unsure of are not in the conversation: typed next, the model sees only that
    await peer.send_json({"type": "session.update", "config": {"audio_output": False}})
    await peer.send_json({"type": "input.text", "text": "hello"})
    typed = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] != done["response_id"])
    assert typed["text"] == "You said: hello."

    # a client that would rather have a guess turns the fallback off
    await peer.send_json({"type": "session.update", "config": {"min_asr_confidence": 0}})
    await peer.wait_for(lambda e: e["type"] == "session.updated" and e["config"]["min_asr_confidence"] == 0)
    final2, done2 = await _spoken_turn(peer, noisy_speech())
    await peer.close()
    assert final2["low_confidence"] is False
    assert done2["text"].startswith("You said: ")
