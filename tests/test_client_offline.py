"""Offline tests of the Python client (client/) against a FAKE server defined in this file.

`FakeHarkServerForClientTests` is not hark-server: it speaks just enough hark.v1 (a loudness "VAD", canned
transcripts and replies, the audio flood rule from the advertised limits) to check the client library, its
pacing, the WAV helpers and the CLI in isolation. End-to-end tests against the real server live elsewhere.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import subprocess
import sys
import time
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection, serve

import hark.protocol as p
from hark.client import (
    AudioChunk,
    Conversation,
    HarkClient,
    HarkConnectError,
    HarkConnectionClosed,
    HarkServerError,
    read_wav,
    resample_pcm16,
    stream_pcm,
    write_wav,
)
from hark.client.cli import main as cli_main

RATE = 16000
REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- the fake server (client tests only)


@dataclass
class _FakeOptions:
    api_key: str | None = None
    limits: p.SessionLimits = field(default_factory=p.SessionLimits)
    fail_responses: bool = False  # answer turns with error(response_failed) + response.done(failed)
    ignore_session_close: bool = False  # never close: lets the CLI's timeout be tested
    send_unknown_event: bool = False  # a future event type right after session.created
    stray_audio: bool = False  # reply audio right after session.created, before any response announced it
    reply_frames: int = 3  # 100 ms frames of reply audio per response


class FakeHarkServerForClientTests:
    """A minimal, in-test hark.v1 speaker. NOT the real server; just enough protocol to test the client."""

    def __init__(self, **options: Any) -> None:
        self.opts = _FakeOptions(**options)
        self.url = ""
        self.port = 0
        self.received: list[p.ClientEvent] = []
        self.frame_times: list[tuple[float, float]] = []  # (arrival time, ms) of accepted audio frames
        self.sent_errors: list[str] = []
        self.connections = 0

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeHarkServerForClientTests]:
        async with serve(self._handler, "127.0.0.1", 0) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{self.port}/v1/stream"
            yield self

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.connections += 1
        token = parse_qs(urlsplit(ws.request.path).query).get("token", [None])[0]
        auth = ws.request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth.removeprefix("Bearer ")
        if self.opts.api_key is not None and token != self.opts.api_key:
            await ws.send(p.encode(p.Error(p.ErrorCode.UNAUTHORIZED, "missing or wrong API key", fatal=True)))
            await ws.close(1008, "unauthorized")
            return
        await _FakeSession(self, ws).run()


class _FakeSession:
    def __init__(self, server: FakeHarkServerForClientTests, ws: ServerConnection) -> None:
        self.server, self.ws, self.opts = server, ws, server.opts
        self.config = p.SessionConfig()
        self.turn_id = 0
        self.responses = 0
        self.in_speech = False
        self.speech_ms = self.silence_ms = self.audio_ms = 0.0
        self.voiced_frames = 0
        # the advertised rule as a token bucket: `audio_burst_ms` of audio, refilled at max_audio_rate x real time
        self.bucket_ms = float(self.opts.limits.audio_burst_ms)
        self.bucket_at = asyncio.get_running_loop().time()

    async def send(self, event: Any) -> None:
        if isinstance(event, p.Error):
            self.server.sent_errors.append(event.code)
        await self.ws.send(p.encode(event) if not isinstance(event, bytes) else event)

    async def run(self) -> None:
        await self.send(p.SessionCreated("sess_fake", "hark.v1", self.config.to_dict(), self.opts.limits.to_dict()))
        if self.opts.send_unknown_event:
            await self.ws.send(json.dumps({"type": "future.event", "x": 1}))
        if self.opts.stray_audio:
            await self.ws.send(tone(100))
        async for message in self.ws:
            if isinstance(message, bytes):
                await self.on_audio(message)
                continue
            try:
                event = p.decode_client(message)
            except p.ProtocolError as exc:
                await self.send(p.Error(exc.code, exc.message))
                continue
            self.server.received.append(event)
            if isinstance(event, p.SessionClose):
                if self.in_speech:
                    await self.end_turn()
                if not self.opts.ignore_session_close:
                    await self.ws.close(1000)
                    return
            else:
                await self.on_event(event)

    async def on_event(self, event: p.ClientEvent) -> None:
        if isinstance(event, p.SessionUpdate):
            if event.config.get("voice", "en-us") != "en-us":
                await self.send(p.Error(p.ErrorCode.INVALID_FIELD, "the fake only has en-us"))
                return
            self.config = self.config.updated(event.config)
            await self.send(p.SessionUpdated(self.config.to_dict()))
        elif isinstance(event, p.AudioCommit):
            if self.in_speech:
                await self.end_turn()
            else:
                await self.send(p.Error(p.ErrorCode.NOTHING_TO_COMMIT, "no speech in progress"))
        elif isinstance(event, p.InputText):
            if event.text == "crash":
                await self.ws.close(1011, "fake crash")
                return
            self.turn_id += 1
            await self.respond(self.turn_id, event.text)
        elif isinstance(event, p.Ping):
            await self.send(p.Pong(event.id))
        elif isinstance(event, p.ResponseCancel):
            await self.send(p.Error(p.ErrorCode.NO_ACTIVE_RESPONSE, "nothing is playing"))
        elif isinstance(event, p.PlaybackPosition):
            pass

    async def on_audio(self, frame: bytes) -> None:
        try:
            dur = p.validate_audio_frame(frame, self.config.input_sample_rate, self.opts.limits)
        except p.ProtocolError as exc:
            await self.send(p.Error(exc.code, exc.message))
            return
        now = asyncio.get_running_loop().time()
        limits = self.opts.limits
        self.bucket_ms = min(
            limits.audio_burst_ms, self.bucket_ms + (now - self.bucket_at) * limits.max_audio_rate * 1000
        )
        self.bucket_at = now
        if dur > self.bucket_ms:
            await self.send(p.Error(p.ErrorCode.AUDIO_FLOOD, "audio faster than the limits allow; frame dropped"))
            return
        self.bucket_ms -= dur
        self.server.frame_times.append((now, dur))
        samples = np.frombuffer(frame, dtype="<i2")
        voiced = int(np.abs(samples.astype(np.int32)).max()) > 500  # a loudness "VAD" is all a fake needs
        if voiced:
            if not self.in_speech:
                self.in_speech, self.turn_id = True, self.turn_id + 1
                self.speech_ms = 0.0
                self.voiced_frames = 0
                await self.send(p.SpeechStarted(self.turn_id, int(self.audio_ms)))
            self.speech_ms += dur
            self.silence_ms = 0.0
            self.voiced_frames += 1
            words = ["la"] * self.voiced_frames
            await self.send(p.TranscriptPartial(self.turn_id, " ".join(words), " ".join(words[:-1])))
        elif self.in_speech:
            self.silence_ms += dur
            if self.silence_ms >= self.config.min_silence_ms:
                await self.end_turn()
        self.audio_ms += dur

    async def end_turn(self) -> None:
        self.in_speech = False
        await self.send(p.SpeechStopped(self.turn_id, int(self.audio_ms)))
        text = f"heard {self.speech_ms:.0f} ms"
        await self.send(p.TranscriptFinal(self.turn_id, text))
        await self.respond(self.turn_id, text)

    async def respond(self, turn_id: int, user_text: str) -> None:
        self.responses += 1
        rid = f"resp_{self.responses}"
        reply = f"You said: {user_text}"
        await self.send(p.ResponseStarted(turn_id, rid))
        for delta in ("You said: ", user_text):
            await self.send(p.ResponseTextDelta(rid, delta))
        if self.config.audio_output:
            rate = self.config.output_sample_rate
            await self.send(p.ResponseAudioStarted(rid, rate))
            for _ in range(self.opts.reply_frames):
                await self.send(tone(100, rate))
            await self.send(p.ResponseAudioDone(rid, 100 * self.opts.reply_frames))
        if self.opts.fail_responses:
            await self.send(p.Error(p.ErrorCode.RESPONSE_FAILED, "the fake was told to fail"))
            await self.send(p.ResponseDone(rid, "failed", "", {}))
            return
        metrics = {
            "final_ms": 12,
            "first_token_ms": 30,
            "first_audio_ms": 80,
            "prompt_tokens": 40,
            "cached_tokens": 32,
            "speculative_prefills": 2,
        }
        await self.send(p.ResponseDone(rid, "completed", reply, metrics))


# ---------------------------------------------------------------- helpers


def tone(ms: int, rate: int = RATE, freq: float = 440.0, amp: int = 8000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def silence(ms: int, rate: int = RATE) -> bytes:
    return bytes(rate * ms // 1000 * 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_stereo_wav(path: Path, left: np.ndarray, right: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.column_stack([left, right]).astype("<i2").tobytes())


async def collect(client: HarkClient, limit_s: float = 10.0) -> Conversation:
    async with asyncio.timeout(limit_s):
        return await Conversation().collect(client)


# ---------------------------------------------------------------- client library


async def test_connect_exposes_session_and_applies_config() -> None:
    async with FakeHarkServerForClientTests().running() as fake:
        async with HarkClient(fake.url, config={"output_sample_rate": 24000, "min_silence_ms": 300}) as c:
            assert c.session_id == "sess_fake"
            assert c.config.output_sample_rate == 24000 and c.config.min_silence_ms == 300
            assert c.limits.audio_burst_ms == 3000 and c.limits.max_audio_rate == 2.0
        assert isinstance(fake.received[0], p.SessionUpdate)


async def test_config_errors_local_and_from_server() -> None:
    async with FakeHarkServerForClientTests().running() as fake:
        # a typo is caught before it is sent, with the same error the server would give
        with pytest.raises(p.ProtocolError) as local:
            async with HarkClient(fake.url, config={"output_rate": 24000}):
                pass
        assert local.value.code is p.ErrorCode.INVALID_FIELD
        with pytest.raises(HarkServerError) as remote:
            async with HarkClient(fake.url, config={"voice": "de"}):
                pass
        assert remote.value.error.code == "invalid_field"


async def test_auth_by_header_or_query_token() -> None:
    async with FakeHarkServerForClientTests(api_key="s3cret").running() as fake:
        with pytest.raises(HarkServerError) as refused:
            async with HarkClient(fake.url):
                pass
        assert refused.value.error.code == "unauthorized" and refused.value.error.fatal
        async with HarkClient(fake.url, api_key="s3cret") as c:
            assert c.session_id
        async with HarkClient(fake.url + "?token=s3cret") as c:
            assert c.session_id


async def test_connection_refused_is_a_clear_connect_error() -> None:
    url = f"ws://127.0.0.1:{free_port()}/v1/stream"
    with pytest.raises(HarkConnectError, match="is hark-server running"):
        async with HarkClient(url, open_timeout=3):
            pass


async def test_events_audio_chunks_pong_and_unknown_events() -> None:
    async with FakeHarkServerForClientTests(send_unknown_event=True).running() as fake:
        async with HarkClient(fake.url, config={"output_sample_rate": 24000}) as c:
            ping_id = await c.ping()
            await c.send_text("hello")
            await c.close_session()
            seen: list[Any] = []
            async with asyncio.timeout(5):
                seen = [e async for e in c.events()]
        assert c.close_code == 1000
        assert p.Pong(ping_id) in seen
        chunks = [e for e in seen if isinstance(e, AudioChunk)]
        assert len(chunks) == 3
        assert all(ch.response_id == "resp_1" and ch.sample_rate == 24000 for ch in chunks)
        assert chunks[0].duration_ms == pytest.approx(100)
        done = [e for e in seen if isinstance(e, p.ResponseDone)]
        assert done[0].text == "You said: hello"


async def test_text_turn_collected_per_response() -> None:
    async with FakeHarkServerForClientTests().running() as fake:
        async with HarkClient(fake.url) as c:
            await c.send_text("one")
            await c.send_text("two")
            await c.cancel()  # the fake has nothing playing: a non-fatal error, attributed to no response
            await c.playback_position("resp_1", 120)
            await c.close_session()
            conv = await collect(c)
    assert [r.text for r in conv.responses] == ["You said: one", "You said: two"]
    first = conv.responses[0]
    assert first.status == "completed" and first.done
    assert first.metrics["final_ms"] == 12 and first.metrics["cached_tokens"] == 32
    assert len(first.audio) == 3 * RATE // 10 * 2 and first.sample_rate == RATE and first.audio_ms == 300
    assert first.transcript == ""  # a typed turn has no transcript
    assert [e.code for e in conv.errors] == ["no_active_response"]
    assert conv.close_code == 1000
    assert len(conv.reply_audio) == 2 * len(first.audio)
    assert isinstance(fake.received[-2], p.PlaybackPosition)


async def test_spoken_turn_realtime_pacing_and_transcripts() -> None:
    async with FakeHarkServerForClientTests().running() as fake:
        async with HarkClient(fake.url) as c:
            audio = tone(500) + silence(600)

            async def speak() -> Any:
                stats = await stream_pcm(c, audio, RATE, frame_ms=100, pace="realtime")
                await c.close_session()
                return stats

            stats, conv = await asyncio.gather(speak(), collect(c))
    assert stats.frames == 11 and stats.audio_ms == pytest.approx(1100)
    # frame i leaves at i*100 ms: the last one at 1.0 s, never earlier
    assert 0.99 <= stats.wall_s < 2.0
    arrivals = [t for t, _ in fake.frame_times]
    assert arrivals[-1] - arrivals[0] >= 0.95
    [result] = conv.responses
    assert result.transcript == "heard 500 ms"
    assert result.partials[-1] == "la la la la la"
    assert result.text == "You said: heard 500 ms"
    assert [f.text for f in conv.finals] == ["heard 500 ms"]


async def test_fast_pace_stays_inside_advertised_limits() -> None:
    limits = p.SessionLimits(audio_burst_ms=500, max_audio_rate=4.0)
    async with FakeHarkServerForClientTests(limits=limits).running() as fake:
        async with HarkClient(fake.url) as c:
            reader = asyncio.create_task(collect(c))
            stats = await stream_pcm(c, silence(2500), RATE, frame_ms=100, pace="fast")
            await c.close_session()
            conv = await reader
    assert conv.errors == [] and "audio_flood" not in fake.sent_errors
    assert stats.frames == 25 and len(fake.frame_times) == 25
    # the audio beyond the burst can not go faster than max_audio_rate ...
    assert stats.wall_s >= (2500 - 500) / (4.0 * 1000)
    # ... and "fast" uses most of it: 0.9*burst then 0.95*rate is about 0.54 s here, far below 2.5 s real time
    assert stats.wall_s < 1.5
    # as the server saw it: after the burst, audio arrived at close to (and under) max_audio_rate
    t0 = fake.frame_times[0][0]
    span = fake.frame_times[-1][0] - t0
    assert 2.0 < (2500 - 500) / (span * 1000) <= 4.0


async def test_realtime_catch_up_after_a_stall_stays_inside_limits() -> None:
    """A sender whose loop stalls must not dump the backlog at once: the server's bucket holds only the burst."""
    limits = p.SessionLimits(audio_burst_ms=500, max_audio_rate=4.0)
    async with FakeHarkServerForClientTests(limits=limits).running() as fake:
        async with HarkClient(fake.url) as c:
            reader = asyncio.create_task(collect(c))
            # block the whole event loop for 1 s mid-stream, as a busy host would
            asyncio.get_running_loop().call_later(0.25, time.sleep, 1.0)
            stats = await stream_pcm(c, silence(2000), RATE, pace="realtime")
            await c.close_session()
            conv = await reader
    assert conv.errors == [] and len(fake.frame_times) == 20
    assert stats.wall_s >= 1.9  # still never ahead of real time


async def test_fake_does_flag_unpaced_audio() -> None:
    """Control for the test above: the fake's flood rule really bites a sender that ignores the limits."""
    limits = p.SessionLimits(audio_burst_ms=500, max_audio_rate=4.0)
    async with FakeHarkServerForClientTests(limits=limits).running() as fake:
        async with HarkClient(fake.url) as c:
            for _ in range(25):
                await c.send_audio(silence(100))
            await c.close_session()
            conv = await collect(c)
    assert any(e.code == "audio_flood" for e in conv.errors)


async def test_commit_ends_turn_and_nothing_to_commit() -> None:
    async with FakeHarkServerForClientTests().running() as fake:
        async with HarkClient(fake.url) as c:
            await c.commit()
            await stream_pcm(c, tone(300), RATE, pace="fast")
            await c.commit()
            await c.close_session()
            conv = await collect(c)
    assert [e.code for e in conv.errors] == ["nothing_to_commit"]
    assert [r.transcript for r in conv.responses] == ["heard 300 ms"]


async def test_a_server_breaking_the_conversation_rules_is_an_error() -> None:
    async with FakeHarkServerForClientTests(stray_audio=True).running() as fake:
        async with HarkClient(fake.url) as c:
            with pytest.raises(p.ConversationError) as caught:
                await collect(c)
    assert caught.value.violation is p.Violation.AUDIO_WITHOUT_RESPONSE
    assert caught.value.code is p.ErrorCode.INVALID_EVENT


async def test_abnormal_close_raises() -> None:
    async with FakeHarkServerForClientTests().running() as fake:
        async with HarkClient(fake.url) as c:
            await c.send_text("crash")
            with pytest.raises(HarkConnectionClosed) as closed:
                await collect(c)
    assert closed.value.code == 1011


async def test_local_checks_on_audio_and_streaming() -> None:
    async with FakeHarkServerForClientTests().running() as fake:
        async with HarkClient(fake.url) as c:
            with pytest.raises(p.ProtocolError) as odd:
                await c.send_audio(b"\x00\x01\x02")
            assert odd.value.code is p.ErrorCode.AUDIO_ODD_LENGTH
            with pytest.raises(p.ProtocolError):
                await c.send_audio(silence(5))  # below min_frame_ms
            with pytest.raises(ValueError, match="resample"):
                await stream_pcm(c, silence(100, 8000), 8000)
            with pytest.raises(ValueError, match="frame_ms"):
                await stream_pcm(c, silence(100), RATE, frame_ms=5)
            # a short tail is padded to the minimum frame, not rejected
            stats = await stream_pcm(c, silence(105), RATE, pace="fast")
            assert stats.frames == 2 and stats.audio_ms == pytest.approx(110)
            # one reader at a time
            it = c.events()
            await c.ping()
            await it.__anext__()
            with pytest.raises(RuntimeError):
                await c.update({"vad_threshold": 0.6}, wait=True)
            await it.aclose()


# ---------------------------------------------------------------- WAV helpers


def test_wav_round_trip_mono(tmp_path: Path) -> None:
    pcm = tone(250)
    write_wav(tmp_path / "a.wav", pcm, RATE)
    assert read_wav(tmp_path / "a.wav") == (pcm, RATE)


def test_wav_stereo_is_downmixed(tmp_path: Path) -> None:
    n = 1600
    left = np.full(n, 1000, dtype=np.int16)
    right = np.full(n, 3000, dtype=np.int16)
    right[:10] = 32767
    left[:10] = 32767  # full scale on both channels must not overflow
    write_stereo_wav(tmp_path / "s.wav", left, right, RATE)
    pcm, rate = read_wav(tmp_path / "s.wav")
    samples = np.frombuffer(pcm, dtype="<i2")
    assert rate == RATE and len(samples) == n
    assert samples[0] == 32767 and (samples[10:] == 2000).all()


def test_wav_resampled_to_target_rate(tmp_path: Path) -> None:
    src_rate, freq = 44100, 1000.0
    t = np.arange(src_rate) / src_rate
    wave_l = (10000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    write_stereo_wav(tmp_path / "hi.wav", wave_l, wave_l, src_rate)
    pcm, rate = read_wav(tmp_path / "hi.wav", target_rate=RATE)
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    assert rate == RATE and abs(len(samples) - RATE) <= 2
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) * RATE / len(samples) == pytest.approx(freq, abs=2)
    assert 6000 < np.abs(samples).max() < 11000  # level kept
    assert resample_pcm16(pcm, RATE, RATE) == pcm


def test_wav_rejects_other_formats(tmp_path: Path) -> None:
    with wave.open(str(tmp_path / "u8.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes(800))
    with pytest.raises(ValueError, match="8-bit"):
        read_wav(tmp_path / "u8.wav")
    (tmp_path / "junk.wav").write_bytes(b"not a wav at all")
    with pytest.raises(ValueError, match="16-bit PCM WAV"):
        read_wav(tmp_path / "junk.wav")
    with pytest.raises(ValueError):
        write_wav(tmp_path / "odd.wav", b"\x00", RATE)


# ---------------------------------------------------------------- CLI


@pytest.fixture
def speech_wav(tmp_path: Path) -> Path:
    """Stereo 44.1 kHz: the CLI must downmix and resample to the session rate."""
    rate = 44100
    voiced = (8000 * np.sin(2 * np.pi * 300 * np.arange(rate * 6 // 10) / rate)).astype(np.int16)
    path = tmp_path / "speech.wav"
    write_stereo_wav(path, voiced, voiced, rate)
    return path


async def run_cli(*argv: str) -> int:
    # main() runs its own event loop, so it goes to a thread while the fake serves on this one
    return await asyncio.to_thread(cli_main, list(argv))


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main([]) == 2  # --wav is required
    assert cli_main(["--wav", str(tmp_path / "missing.wav")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "x.wav").write_bytes(b"RIFF")
    assert cli_main(["--wav", str(tmp_path / "x.wav")]) == 2
    assert "--wav" in capsys.readouterr().err
    write_wav(tmp_path / "ok.wav", tone(100), RATE)
    assert cli_main(["--wav", str(tmp_path / "ok.wav"), "--url", "http://localhost:1/"]) == 2
    assert "ws://" in capsys.readouterr().err
    assert cli_main(["--wav", str(tmp_path / "ok.wav"), "--tail-silence-ms", "-1"]) == 2
    assert cli_main(["--wav", str(tmp_path / "ok.wav"), "--timeout", "0"]) == 2
    assert cli_main(["--help"]) == 0


def test_cli_connection_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_wav(tmp_path / "ok.wav", tone(100), RATE)
    url = f"ws://127.0.0.1:{free_port()}/v1/stream"
    assert cli_main(["--url", url, "--wav", str(tmp_path / "ok.wav"), "--timeout", "3"]) == 2
    err = capsys.readouterr().err
    assert f"cannot connect to {url}" in err and "is hark-server running?" in err


def test_cli_exit_status_of_the_process(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hark.client.cli", "--wav", str(tmp_path / "missing.wav")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "no such file" in proc.stderr


async def test_cli_streams_file_and_saves_reply(
    speech_wav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "reply.wav"
    async with FakeHarkServerForClientTests().running() as fake:
        code = await run_cli("--url", fake.url, "--wav", str(speech_wav), "--fast", "--save-reply", str(out))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "you:  heard 600 ms" in captured.out
    assert "hark: You said: heard 600 ms" in captured.out
    assert "first token 30 ms" in captured.out and "32 cached / 40 prompt" in captured.out
    # 600 ms of speech and 1000 ms of tail silence, resampled 44.1k -> 16k, in 100 ms frames
    assert sum(ms for _, ms in fake.frame_times) == pytest.approx(1600)
    assert isinstance(fake.received[-1], p.SessionClose) and fake.connections == 1
    pcm, rate = read_wav(out)
    assert rate == RATE and len(pcm) == 3 * RATE // 10 * 2


async def test_cli_json_lines(speech_wav: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with FakeHarkServerForClientTests().running() as fake:
        code = await run_cli("--url", fake.url, "--wav", str(speech_wav), "--fast", "--json")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0
    types = [obj["type"] for obj in lines]
    assert types[0] == "session.created" and types[-1] == "summary"
    assert {"speech.started", "transcript.final", "response.done"} <= set(types)
    audio = [obj for obj in lines if obj["type"] == "audio"]
    assert len(audio) == 3 and audio[0]["bytes"] == RATE // 10 * 2
    summary = lines[-1]
    assert summary["exit_code"] == 0 and summary["errors"] == []
    assert summary["responses"][0]["text"] == "You said: heard 600 ms"


async def test_cli_exit_1_on_error_event(speech_wav: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with FakeHarkServerForClientTests(fail_responses=True).running() as fake:
        code = await run_cli("--url", fake.url, "--wav", str(speech_wav), "--fast")
    assert code == 1
    assert "response_failed" in capsys.readouterr().err


async def test_cli_exit_1_on_a_contract_violation(speech_wav: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with FakeHarkServerForClientTests(stray_audio=True).running() as fake:
        code = await run_cli("--url", fake.url, "--wav", str(speech_wav), "--fast")
    assert code == 1
    assert "the server sent an invalid message: invalid_event: audio_without_response" in capsys.readouterr().err


async def test_cli_refused_session_and_timeout(speech_wav: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with FakeHarkServerForClientTests(api_key="k").running() as fake:
        assert await run_cli("--url", fake.url, "--wav", str(speech_wav)) == 2
        assert "unauthorized" in capsys.readouterr().err
        assert await run_cli("--url", fake.url, "--wav", str(speech_wav), "--fast", "--api-key", "k") == 0
    async with FakeHarkServerForClientTests(ignore_session_close=True).running() as fake:
        code = await run_cli("--url", fake.url, "--wav", str(speech_wav), "--fast", "--timeout", "0.5")
    assert code == 1
    assert "timed out" in capsys.readouterr().err


class _FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_cli_live_line_on_a_terminal(speech_wav: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tty = _FakeTty()
    monkeypatch.setattr(sys, "stdout", tty)
    async with FakeHarkServerForClientTests().running() as fake:
        assert await run_cli("--url", fake.url, "--wav", str(speech_wav), "--fast") == 0
    out = tty.getvalue()
    # partials and the streaming reply rewrite one line; finals and the reply stay as plain lines
    assert "\r\x1b[Kyou: la la ..." in out and "\r\x1b[Khark: You said: " in out
    assert "you:  heard 600 ms\n" in out and "hark: You said: heard 600 ms\n" in out
    assert "partial:" not in out
