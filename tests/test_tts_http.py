"""The HTTP TTS engines against their labelled stand-ins (standins/tts, espeak-ng audio, each in its
own process): audio streams before the utterance is finished, faults become TTSUnavailable, the
breaker fails fast, leaving early closes the request; through a real server: cloned voices end to
end across a restart, a TTS fault mid-reply keeps the text and the session, barge-in aborts."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import io
import socket
import time
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import RunningServer, corpus_path, manifest
from ttsproc import TTSStandin, tts_standin
from wsclient import Peer

from hark.server.tts.cosyvoice import CosyVoiceEngine
from hark.server.tts.fish import FishSpeechEngine
from hark.server.tts.http_stream import TTSHttpSettings
from hark.server.tts.openai_speech import OpenAISpeechEngine
from hark.server.tts.streaming import PcmChunk, StreamingTTSEngine, TTSRefused, TTSUnavailable, VoiceChoice
from hark.server.tts.voices import VoiceStore

APIS = ("openai", "fish", "cosyvoice")
RATES = {"openai": 24000, "fish": 44100, "cosyvoice": 22050}
TEXT = "The quick brown fox jumps over the lazy dog, and then it runs far away into the woods."
CLIP = "en_librivox_sense_0870"


@pytest.fixture(scope="module", params=APIS)
def standin(request: pytest.FixtureRequest) -> Iterator[TTSStandin]:
    with tts_standin(request.param) as running:
        yield running


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> None:
    if "standin" in request.fixturenames:
        request.getfixturevalue("standin").reset()


def make_engine(api: str, url: str, tmp: Path, **settings: Any) -> StreamingTTSEngine:
    s = TTSHttpSettings(url=url, **settings)
    if api == "openai":
        return OpenAISpeechEngine(s)
    if api == "fish":
        return FishSpeechEngine(s, VoiceStore(tmp))
    return CosyVoiceEngine(s, VoiceStore(tmp))


@contextlib.asynccontextmanager
async def started(engine: StreamingTTSEngine) -> AsyncIterator[StreamingTTSEngine]:
    await engine.start()
    try:
        yield engine
    finally:
        await engine.aclose()


async def collect(engine: StreamingTTSEngine, voice: VoiceChoice, text: str = TEXT) -> tuple[list[PcmChunk], float]:
    """The chunks and the wall time (time.time(), as the stand-in logs) the first one arrived."""
    chunks: list[PcmChunk] = []
    first = 0.0
    async for chunk in engine.stream(text, voice):
        if not chunks:
            first = time.time()
        chunks.append(chunk)
    return chunks, first


def clip_voice() -> VoiceChoice:
    from hark.server.tts.streaming import ReferenceClip

    wav = corpus_path(CLIP).read_bytes()
    return VoiceChoice("clone", ReferenceClip(wav, str(manifest()[CLIP]["transcript"]), 16000, 7100))


async def test_audio_streams_before_the_utterance_is_finished(standin: TTSStandin, tmp_path: Path) -> None:
    async with started(make_engine(standin.api, standin.url, tmp_path)) as engine:
        chunks, first_at = await collect(engine, VoiceChoice("en-us"))
    record = standin.requests()[-1]
    assert record["finished"] is not None and not record["disconnected"]
    assert first_at < record["finished"] - 0.2, "the first audio came only once the stand-in had sent it all"
    assert len(chunks) >= 3
    assert {c.sample_rate for c in chunks} == {RATES[standin.api]}
    pcm = np.concatenate([c.pcm for c in chunks])
    assert 3.0 < len(pcm) / RATES[standin.api] < 10.0  # the whole sentence, spoken
    assert float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > 300
    fields = record["fields"]
    if standin.api == "openai":
        assert fields["response_format"] == "pcm" and fields["voice"] == "alloy" and fields["input"] == TEXT
    elif standin.api == "fish":
        assert fields["streaming"] is True and fields["format"] == "wav" and fields["text"] == TEXT
    else:
        assert record["route"] == "/inference_sft" and fields["spk_id"] == "英文女"


async def test_a_cloned_voice_reaches_the_engine(standin: TTSStandin, tmp_path: Path) -> None:
    voice = clip_voice()
    assert voice.clip is not None
    async with started(make_engine(standin.api, standin.url, tmp_path)) as engine:
        if standin.api == "openai":
            with pytest.raises(TTSRefused, match="no reference clips"):
                await collect(engine, voice)
            return
        chunks, _ = await collect(engine, voice)
    assert chunks
    record = standin.requests()[-1]
    assert record["reference_sha256"] == hashlib.sha256(voice.clip.wav).hexdigest()
    assert record["reference_text"] == voice.clip.transcript
    assert record["route"] == ("/v1/tts" if standin.api == "fish" else "/inference_zero_shot")


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ({"mode": "error", "status": 503}, "HTTP 503"),
        ({"mode": "refuse"}, "Disconnected|reset|Connection"),
        ({"mode": "slow", "delay_s": 2.0}, "timed out"),
        ({"mode": "cut", "after_bytes": 30000}, "cut short"),
    ],
    ids=["5xx", "refused-connection", "slow-first-byte", "cut-mid-stream"],
)
async def test_server_faults_are_tts_unavailable(
    standin: TTSStandin, tmp_path: Path, fault: dict[str, Any], message: str
) -> None:
    standin.faults(**fault)
    engine = make_engine(standin.api, standin.url, tmp_path, first_byte_timeout_s=0.8, idle_timeout_s=0.8)
    got: list[PcmChunk] = []
    async with started(engine):
        with pytest.raises(TTSUnavailable, match=message) as info:
            async for chunk in engine.stream(TEXT, VoiceChoice("en-us")):
                got.append(chunk)
    assert not isinstance(info.value, TTSRefused)
    if fault["mode"] == "cut":
        assert got, "audio sent before the cut is passed on"


async def test_an_unreachable_server_and_the_breaker(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    engine = make_engine("openai", f"http://127.0.0.1:{port}", tmp_path, breaker_failures=2, breaker_reset_s=30)
    async with started(engine):
        for _ in range(2):
            with pytest.raises(TTSUnavailable, match="Connect"):
                await collect(engine, VoiceChoice("alloy"))
        started_at = time.monotonic()
        with pytest.raises(TTSUnavailable, match="failed repeatedly"):
            await collect(engine, VoiceChoice("alloy"))
        assert time.monotonic() - started_at < 0.05  # fails fast, no connection attempt


async def test_refusals_do_not_open_the_breaker(tmp_path: Path) -> None:
    with tts_standin("openai") as standin:
        engine = make_engine("openai", standin.url, tmp_path, breaker_failures=1)
        async with started(engine):
            for _ in range(3):
                with pytest.raises(TTSRefused, match="voice"):
                    await collect(engine, VoiceChoice("no-such-voice"))
            chunks, _ = await collect(engine, VoiceChoice("nova"))
        assert chunks
        assert [r["status"] for r in standin.requests()] == [400, 400, 400, 200]


async def test_leaving_early_closes_the_request(standin: TTSStandin, tmp_path: Path) -> None:
    async with started(make_engine(standin.api, standin.url, tmp_path)) as engine:
        stream = engine.stream(TEXT * 3, VoiceChoice("en-us"))
        await anext(stream)
        await stream.aclose()  # what cancelling the reply does
        log = await asyncio.to_thread(standin.wait_for, lambda log: bool(log) and log[-1]["disconnected"])
    assert log[-1]["finished"] is None


# ------------------------------------------------------------------ through a real hark-server


def clip_b64() -> str:
    return base64.b64encode(corpus_path(CLIP).read_bytes()).decode()


async def reply(peer: Peer, text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send a typed turn; the response.done and the events of that reply."""
    seen = len(peer.events)
    await peer.send_json({"type": "input.text", "text": text})
    started_event = await peer.wait_for(
        lambda e: e["type"] == "response.started" and e["_t"] >= 0 and e in peer.events[seen:]
    )
    rid = started_event["response_id"]
    done = await peer.wait_for(lambda e: e["type"] == "response.done" and e["response_id"] == rid)
    return done, [e for e in peer.events[seen:] if e.get("response_id", rid) == rid]


def fish_server(factory: Any, standin: TTSStandin, voices: Path) -> RunningServer:
    server: RunningServer = factory(
        "--tts", "fish", "--tts-url", standin.url, "--voices-dir", str(voices), "--max-sessions", "4"
    )
    return server


async def test_a_cloned_voice_end_to_end_across_a_restart(server_factory: Any, tmp_path: Path) -> None:
    voices = tmp_path / "voices"
    with tts_standin("fish") as standin:
        server = fish_server(server_factory, standin, voices)
        peer = await Peer.open(server.url)
        await peer.send_json({"type": "voice.create", "audio": clip_b64(), "transcript": "a reader", "id": "r1"})
        created = await peer.wait_for(lambda e: e["type"] in ("voice.created", "error"))
        assert created["type"] == "voice.created", created
        voice = created["voice"]
        assert created["id"] == "r1" and 7000 <= created["duration_ms"] <= 7200
        await peer.send_json({"type": "session.update", "config": {"voice": voice}})
        await peer.wait_for(lambda e: e["type"] == "session.updated")
        done, _ = await reply(peer, "Please read this sentence in my voice.")
        assert done["status"] == "completed" and done["metrics"]["audio_ms"] > 500
        sha = hashlib.sha256(_stored_clip(voices, voice)).hexdigest()
        assert standin.requests()[-1]["reference_sha256"] == sha
        assert standin.requests()[-1]["reference_text"] == "a reader"
        await peer.close()
        server.stop()

        again = fish_server(server_factory, standin, voices)  # the voice is on disk, not in the old process
        standin.reset()
        peer = await Peer.open(again.url)
        await peer.send_json({"type": "session.update", "config": {"voice": voice}})
        await peer.wait_for(lambda e: e["type"] == "session.updated")
        done, _ = await reply(peer, "And once more after the restart.")
        assert done["status"] == "completed" and done["metrics"]["audio_ms"] > 500
        assert standin.requests()[-1]["reference_sha256"] == sha
        # an id nobody created is refused, and the voice stays
        await peer.send_json({"type": "session.update", "config": {"voice": "clone-" + "B" * 22}})
        refused = await peer.wait_for(lambda e: e["type"] == "error")
        assert refused["code"] == "unknown_voice"
        # a bad clip is refused with its code over the wire, and nothing is stored
        short = io.BytesIO()
        with wave.open(short, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(16000)
            out.writeframes((np.random.default_rng(0).standard_normal(8000) * 3000).astype("<i2").tobytes())
        await peer.send_json(
            {"type": "voice.create", "audio": base64.b64encode(short.getvalue()).decode(), "transcript": "x"}
        )
        await peer.wait_for(lambda e: e["type"] == "error" and e["code"] == "voice_clip_too_short")
        assert len(list((voices / "clients").iterdir())) == 1
        await peer.close()


def _stored_clip(voices: Path, voice: str) -> bytes:
    return (voices / "clients" / voice / "clip.wav").read_bytes()


async def test_a_tts_fault_mid_reply_keeps_the_text_and_the_session(server_factory: Any, tmp_path: Path) -> None:
    long_text = " ".join(f"This is sentence number {i} of a long answer." for i in range(8))
    with tts_standin("fish") as standin:
        server = fish_server(server_factory, standin, tmp_path / "voices")
        peer = await Peer.open(server.url)
        standin.faults("cut", after_bytes=40000, count=1)  # the first chunk's stream is cut
        done, events = await reply(peer, long_text)
        assert done["status"] == "completed"
        assert long_text in done["text"]  # echo: "You said: ..." all of it, though speech stopped
        text = "".join(e["delta"] for e in events if e["type"] == "response.text.delta")
        assert text == done["text"]
        assert "tts_unavailable" in peer.errors()
        assert 0 < done["metrics"]["audio_ms"] < 3000  # what was spoken before the cut
        assert len(standin.requests()) == 1  # no more requests for the rest of that reply
        # the session goes on, speech included, and the history holds the whole reply
        done2, _ = await reply(peer, "Short one.")
        assert done2["status"] == "completed" and done2["metrics"]["audio_ms"] > 300
        # the server down: text still comes, every time, and the breaker answers fast
        standin.faults("error", status=503)
        before = len(standin.requests())
        for _ in range(4):
            done3, _ = await reply(peer, "Are you still there?")
            assert done3["status"] == "completed" and "Are you still there?" in done3["text"]
            assert done3["metrics"]["audio_ms"] == 0
        # three failures open the breaker (one request each: a reply stops asking after its first
        # failure); the 4th reply never reached the server
        assert len(standin.requests()) - before == 3
        await peer.send_json({"type": "ping", "id": "alive"})
        await peer.wait_for(lambda e: e["type"] == "pong" and e["id"] == "alive")
        await peer.close()
        server.assert_alive()


async def test_barge_in_aborts_the_tts_request(server_factory: Any, tmp_path: Path) -> None:
    with tts_standin("openai", "--speed", "1.0") as standin:  # real time: the request is still streaming
        server = server_factory("--tts", "openai", "--tts-url", standin.url, "--max-sessions", "4")
        peer = await Peer.open(server.url)
        await peer.send_json({"type": "input.text", "text": "word " * 150})
        await peer.wait_for(lambda e: e["type"] == "response.audio.started")
        await peer.send_json({"type": "response.cancel"})
        done = await peer.wait_for(lambda e: e["type"] == "response.done")
        assert done["status"] == "cancelled"
        log = await asyncio.to_thread(standin.wait_for, lambda log: bool(log) and log[-1]["disconnected"])
        assert log[-1]["finished"] is None
        await peer.close()


def test_the_embedded_default_needs_only_espeak() -> None:
    from hark.server.config import ServerConfig
    from hark.server.tts.espeak import EspeakEngine
    from hark.server.tts.registry import TTS_ENGINES

    assert ServerConfig().tts == "espeak"
    assert isinstance(TTS_ENGINES.create("espeak", ServerConfig()), EspeakEngine)
    with pytest.raises(ValueError, match="needs --tts-url"):
        TTS_ENGINES.create("fish", ServerConfig(tts="fish"))
