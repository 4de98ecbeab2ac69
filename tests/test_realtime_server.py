"""`/v1/realtime` on the server: the handshake, admission and the wire against real server processes,
and, in this process, that the Realtime operations really change the Session's conversation.

The first half speaks raw WebSocket (tests/wsclient.py), including what no SDK would send. The second
half drives a real Session (real Silero VAD, stand-ins where the test must see inside: inprocess.py)
through the same translator and bridge the transport uses, and reads the history the model would be
prompted with. The SDKs themselves are in test_realtime_sdk.py.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
from conftest import REPO, RunningServer, load_pcm
from inprocess import FAST_FEED, RecordingASR, StalledLLM, silero
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from wsclient import Peer

from hark.loadtest.realtime_device import RealtimeWire
from hark.protocol import ConversationTracker, SessionLimits, decode_server
from hark.protocol.realtime import RealtimeTranslator
from hark.protocol.realtime.emitter import Event
from hark.protocol.turn_detection import SilenceTurnDetection
from hark.server.config import ServerConfig
from hark.server.context import ServerContext
from hark.server.llm.base import LLMEngine, LLMRequest, LLMUsage, Message
from hark.server.llm.echo import EchoEngine
from hark.server.metrics import Metrics
from hark.server.session import Session
from hark.server.transport.realtime_bridge import RealtimeBridge
from hark.server.transport.ws import session_created
from hark.server.tts.base import Pcm16, TTSEngine
from hark.server.vad_batch import VadBatcher


def realtime_url(server: RunningServer, query: str = "") -> str:
    return server.url.replace("/v1/stream", "/v1/realtime") + query


def user_item(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    }


def error_codes(peer: Peer) -> list[str]:
    return [e["error"]["code"] for e in peer.of("error")]


# ---------------------------------------------------------------- the handshake, on a real server


async def test_ga_by_default_with_the_model_reported(server: RunningServer) -> None:
    peer = await Peer.open(realtime_url(server, "?model=my-voice-model"))
    try:
        session = peer.of("session.created")[0]["session"]
        assert session["type"] == "realtime" and session["model"] == "my-voice-model"
        assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
        assert peer.conn.subprotocol is None  # none offered, none chosen
    finally:
        await peer.close()


@pytest.mark.parametrize("how", ["header", "subprotocol"])
async def test_the_beta_dialect_by_header_or_browser_subprotocol(server: RunningServer, how: str) -> None:
    if how == "header":
        peer = await Peer.open(realtime_url(server), additional_headers={"OpenAI-Beta": "realtime=v1"})
    else:
        peer = await Peer.open(realtime_url(server), subprotocols=["realtime", "openai-beta.realtime-v1"])  # type: ignore[list-item]
    try:
        session = peer.of("session.created")[0]["session"]
        assert "type" not in session and session["modalities"] == ["text", "audio"]
        assert session["input_audio_format"] == "pcm16"
        assert peer.conn.subprotocol == ("realtime" if how == "subprotocol" else None)
    finally:
        await peer.close()


async def test_api_keys_by_bearer_or_the_browser_subprotocol(server_factory: Callable[..., RunningServer]) -> None:
    keyed = server_factory("--api-key", "k-123")
    url = realtime_url(keyed)
    for refused in ({}, {"additional_headers": {"Authorization": "Bearer wrong"}}):
        with pytest.raises(InvalidStatus) as info:
            await connect(url, **refused)  # type: ignore[arg-type]
        assert info.value.response.status_code == 401
        assert b"openai-insecure-api-key.KEY" in info.value.response.body
    with pytest.raises(InvalidStatus):
        await connect(url, subprotocols=["realtime", "openai-insecure-api-key.wrong"])  # type: ignore[list-item]
    by_header = await Peer.open(url, additional_headers={"Authorization": "Bearer k-123"})
    by_subprotocol = await Peer.open(url, subprotocols=["realtime", "openai-insecure-api-key.k-123"])  # type: ignore[list-item]
    try:
        assert by_header.types() == ["session.created"] and by_subprotocol.types() == ["session.created"]
        assert by_subprotocol.conn.subprotocol == "realtime"  # the key itself is never echoed
    finally:
        await by_header.close()
        await by_subprotocol.close()
    with pytest.raises(InvalidStatus):  # the subprotocol key is the Realtime API's form, not hark.v1's
        await connect(keyed.url, subprotocols=["openai-insecure-api-key.k-123"])  # type: ignore[list-item]


async def test_origins_as_for_the_stream(server_factory: Callable[..., RunningServer]) -> None:
    strict = server_factory("--allowed-origin", "https://app.example")
    with pytest.raises(InvalidStatus) as info:
        await connect(realtime_url(strict), origin="https://evil.example")  # type: ignore[arg-type]
    assert info.value.response.status_code == 403
    peer = await Peer.open(realtime_url(strict), origin="https://app.example")
    await peer.close()


async def test_capacity_is_shared_with_the_stream_and_refused_in_the_realtime_format(
    server_factory: Callable[..., RunningServer],
) -> None:
    small = server_factory("--max-sessions", "1")
    stream = await Peer.open(small.url)  # a hark.v1 session holds the one slot
    try:
        refused = await Peer.open(realtime_url(small))
        await refused.wait_closed()
        (error,) = refused.events
        assert error["type"] == "error" and error["error"]["code"] == "server_busy"
        assert error["error"]["type"] == "server_error" and error["event_id"]
        assert refused.conn.close_code == 1013
    finally:
        await stream.close()


# ---------------------------------------------------------------- the wire, on a real server


async def test_binary_frames_are_refused_and_the_session_goes_on(server: RunningServer) -> None:
    peer = await Peer.open(realtime_url(server))
    try:
        await peer.conn.send(bytes(4800))
        error = await peer.wait_for(lambda e: e["type"] == "error")
        assert error["error"]["code"] == "binary_frame_not_supported"
        await peer.send_json(user_item("are you there"))
        await peer.send_json({"type": "response.create"})
        done = await peer.wait_for(lambda e: e["type"] == "response.done")
        assert done["response"]["status"] == "completed"
        transcript = "".join(e["delta"] for e in peer.of("response.output_audio_transcript.delta"))
        assert transcript == "You said: are you there."
    finally:
        await peer.close()


@pytest.mark.parametrize("flood", ["events", "binary frames"])
async def test_a_flood_is_rate_limited_and_the_session_goes_on(server: RunningServer, flood: str) -> None:
    peer = await Peer.open(realtime_url(server))
    try:
        for i in range(120):  # well past the burst of text events
            if flood == "events":
                await peer.send_json({"type": "conversation.item.retrieve", "event_id": f"r{i}", "item_id": "nope"})
            else:
                await peer.conn.send(bytes(480))
        await peer.wait_for(lambda e: e["type"] == "error" and e["error"]["code"] == "rate_limited")
        codes = set(error_codes(peer))
        refused = "item_not_found" if flood == "events" else "binary_frame_not_supported"
        assert codes == {refused, "rate_limited"}, codes
        assert len(peer.of("error")) < 120, "the flood is not answered message by message"
        await asyncio.sleep(1.5)  # the bucket refills
        await peer.send_json({**user_item("hello"), "event_id": "after"})
        added = await peer.wait_for(lambda e: e["type"] == "conversation.item.added")
        assert added["item"]["content"][0]["text"] == "hello"
    finally:
        await peer.close()


async def test_appends_are_metered_as_audio(server: RunningServer) -> None:
    """Audio faster than the hark.v1 limit (2x real time after a 3 s burst) is refused the same way."""
    peer = await Peer.open(realtime_url(server))
    try:
        second = base64.b64encode(bytes(48000)).decode()  # one second of 24 kHz silence
        for _ in range(8):
            await peer.send_json({"type": "input_audio_buffer.append", "audio": second})
        await peer.wait_for(lambda e: e["type"] == "error" and e["error"]["code"] == "audio_flood")
    finally:
        await peer.close()


# ---------------------------------------------------------------- the Session underneath, in this process


class WordTTS(TTSEngine):
    """A labelled stand-in voice: 200 ms of tone per word, so how much was played says how many words."""

    name = "word-tts-standin"
    sample_rate = 16000

    async def synthesize(self, text: str, voice: str) -> Pcm16:
        samples = 3200 * len(text.split())
        return (np.sin(np.arange(samples) * 0.05) * 6000).astype(np.int16)


class RecordingEcho(EchoEngine):
    """The echo engine, keeping every request it was sent."""

    def __init__(self) -> None:
        self.requests: list[LLMRequest] = []

    async def stream(self, request: LLMRequest, usage: LLMUsage) -> AsyncIterator[str]:  # type: ignore[override]
        self.requests.append(request)
        async for delta in super().stream(request, usage):
            yield delta


@dataclass
class Wire:
    """The Realtime transport's outbox, minus the socket: every event the client would get."""

    translator: RealtimeTranslator
    bridge: RealtimeBridge | None = None
    events: list[Event] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def send_event(self, event: Any) -> None:
        assert self.bridge is not None
        self._keep(self.bridge.translate(event))

    def send_audio(self, pcm: bytes) -> None:
        self._keep(self.translator.on_reply_audio(pcm))

    def send_realtime(self, events: Any) -> None:
        self._keep(list(events))

    def _keep(self, events: list[Event]) -> None:
        self.events += events
        self._changed.set()

    def of(self, kind: str) -> list[Event]:
        return [e for e in self.events if e["type"] == kind]

    async def wait_for(self, predicate: Callable[[Event], bool], after: int = 0, timeout: float = 30.0) -> Event:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[after:]:
                    if predicate(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

    async def kind(self, kind: str, after: int = 0) -> Event:
        return await self.wait_for(lambda e: e["type"] == kind, after)


@dataclass
class Realtime:
    session: Session
    bridge: RealtimeBridge
    wire: Wire

    async def send(self, event: dict[str, Any]) -> None:
        await self.bridge.receive(json.dumps(event))

    async def append(self, pcm24: bytes, chunk_ms: int = 100) -> None:
        step = 48 * chunk_ms
        for i in range(0, len(pcm24), step):
            await self.send(
                {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm24[i : i + step]).decode()}
            )

    def history(self) -> list[tuple[str, str]]:
        return [(m.role, m.content) for m in self.session.history.messages]


@asynccontextmanager
async def realtime_session(
    *, llm: LLMEngine | None = None, asr: RecordingASR | None = None, limits: SessionLimits = FAST_FEED
) -> AsyncIterator[Realtime]:
    """A Session wired to a translator and bridge exactly as RealtimeHandler wires them."""
    metrics = Metrics()
    with ThreadPoolExecutor(2) as pool:
        batcher = VadBatcher(silero(), pool, metrics)
        batcher.start()
        engines = (asr or RecordingASR(), llm or EchoEngine(), WordTTS())
        ctx = ServerContext(ServerConfig(limits=limits), metrics, silero(), *engines, pool, batcher)
        translator = RealtimeTranslator("ga", "hark-test")
        wire = Wire(translator)
        session = Session(ctx, wire, "sess_realtime")
        bridge = wire.bridge = RealtimeBridge(session, translator, wire.send_realtime)
        wire.send_event(session_created(ctx, session))
        task = asyncio.create_task(session.run())
        try:
            await bridge.start()
            yield Realtime(session, bridge, wire)
        finally:
            task.cancel()
            await asyncio.wait({task})
            await batcher.stop()


def pcm24(clip: str, silence_ms: int = 0) -> bytes:
    pcm16k = np.frombuffer(load_pcm(clip) + bytes(32 * silence_ms), dtype="<i2")
    return soxr.resample(pcm16k, 16000, 24000).astype("<i2").tobytes()


def words(text: str) -> list[str]:
    return text.split()


async def reply_to(rt: Realtime, text: str, **response: Any) -> Event:
    """A typed user message and response.create; the response.done."""
    mark = len(rt.wire.events)
    await rt.send(user_item(text))
    await rt.send({"type": "response.create", "response": response})
    return await rt.wire.kind("response.done", mark)


async def test_a_truncate_after_the_reply_cuts_the_history_to_what_was_played() -> None:
    async with realtime_session() as rt:
        done = await reply_to(rt, "one two three four five six")
        full = "You said: one two three four five six."
        assert done["response"]["status"] == "completed"
        assert rt.history() == [("user", "one two three four five six"), ("assistant", full)]
        item_id = done["response"]["output"][0]["id"]
        kept: list[list[str]] = []
        for played_ms in (1700, 900, 0):  # 200 ms per word: all of it, some, none
            await rt.send(
                {
                    "type": "conversation.item.truncate",
                    "item_id": item_id,
                    "content_index": 0,
                    "audio_end_ms": played_ms,
                }
            )
            mark = len(rt.wire.events)
            await rt.send({"type": "conversation.item.retrieve", "item_id": item_id})
            retrieved = (await rt.wire.kind("conversation.item.retrieved", mark))["item"]["content"][0]["transcript"]
            assistant = [text for role, text in rt.history() if role == "assistant"]
            assert assistant == ([retrieved] if retrieved else []), "the client's copy and the history agree"
            kept.append(words(retrieved))
        assert kept[0] == words(full)
        assert 0 < len(kept[1]) < len(kept[0]) and kept[1] == kept[0][: len(kept[1])]
        assert kept[2] == []  # nothing was heard: the reply leaves no message, as after a barge-in
        assert rt.history() == [("user", "one two three four five six")]
        assert rt.wire.of("conversation.item.truncated")[-1]["audio_end_ms"] == 0


async def test_a_truncate_while_the_reply_plays_cuts_it_when_it_ends() -> None:
    async with realtime_session() as rt:
        text = "alpha beta gamma delta epsilon zeta eta theta"
        await rt.send(user_item(text))
        await rt.send({"type": "response.create"})
        await rt.wire.wait_for(lambda e: len(rt.wire.of("response.output_audio.delta")) >= 8)  # 800 ms sent
        item_id = rt.wire.of("response.output_audio.delta")[0]["item_id"]
        truncate = {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0}
        await rt.send({**truncate, "audio_end_ms": 700})  # 200 ms per word: three or so of ten
        assert not rt.wire.of("error")
        done = await rt.wire.kind("response.done")
        assert done["response"]["status"] == "completed"  # the reply ran to its end ...
        spoken = words(done["response"]["output"][0]["content"][0]["transcript"])
        full = words(f"You said: {text}.")
        assert 0 < len(spoken) < len(full) and spoken == full[: len(spoken)]  # ... and keeps what was played
        assert rt.history()[-1] == ("assistant", " ".join(spoken))


async def test_response_create_answers_the_conversation_with_its_overrides() -> None:
    llm = RecordingEcho()
    async with realtime_session(llm=llm) as rt:
        await rt.send({"type": "session.update", "session": {"instructions": "Be terse.", "max_output_tokens": 3}})
        await rt.send(
            {
                "type": "conversation.item.create",
                "item": {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi!"}]},
            }
        )
        done = await reply_to(
            rt, "alpha beta gamma delta", instructions="Answer in French.", output_modalities=["text"]
        )
        request = llm.requests[-1]
        assert request.messages == [
            Message("system", "Answer in French."),
            Message("assistant", "Hi!"),
            Message("user", "alpha beta gamma delta"),  # the item itself: no second user message
        ]
        assert request.max_tokens == 3
        assert done["response"]["output"][0]["content"] == [{"type": "output_text", "text": "You said: alpha"}]
        assert not rt.wire.of("response.output_audio.delta")  # text for this response only
        await reply_to(rt, "again")
        assert llm.requests[-1].messages[0] == Message("system", "Be terse.")
        assert rt.wire.of("response.output_audio.delta"), "the session's own modality is back"


async def test_deleted_items_leave_the_history() -> None:
    async with realtime_session() as rt:
        done = await reply_to(rt, "first words")
        typed = next(e for e in rt.wire.of("conversation.item.added") if e["item"]["role"] == "user")["item"]["id"]
        await rt.send({"type": "conversation.item.delete", "item_id": typed})
        await rt.wire.kind("conversation.item.deleted")
        assert rt.history() == [("assistant", "You said: first words.")]
        await rt.send({"type": "conversation.item.delete", "item_id": done["response"]["output"][0]["id"]})
        await rt.wire.wait_for(lambda e: e["type"] == "conversation.item.deleted" and e["item_id"] != typed)
        assert rt.history() == []


async def test_manual_turns_hold_the_words_until_response_create() -> None:
    asr = RecordingASR()
    llm = RecordingEcho()
    async with realtime_session(asr=asr, llm=llm) as rt:
        await rt.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}})
        assert rt.session.turn_taking.client_commits
        await rt.append(pcm24("en_goforward_command", 1500))  # the silence after it ends nothing by itself
        await asyncio.sleep(0.5)
        assert not rt.wire.of("input_audio_buffer.committed")
        await rt.send({"type": "input_audio_buffer.commit", "event_id": "k1"})
        completed = await rt.wire.kind("conversation.item.input_audio_transcription.completed")
        heard = completed["transcript"]
        assert heard.startswith("utterance of ")
        assert rt.history() == [("user", heard)] and not rt.wire.of("response.created")
        assert not rt.wire.of("input_audio_buffer.speech_started")  # the client decides the turns
        await rt.send({"type": "response.create"})
        await rt.wire.kind("response.done")
        assert llm.requests[-1].messages[-1] == Message("user", heard)
        # deleting the spoken item takes its words out of what the model reads
        await rt.send({"type": "conversation.item.delete", "item_id": completed["item_id"]})
        await rt.wire.kind("conversation.item.deleted")
        assert ("user", heard) not in rt.history()


async def test_clear_drops_the_utterance_in_progress() -> None:
    async with realtime_session() as rt:
        speech = pcm24("en_librivox_sense_0870")
        await rt.append(speech[: len(speech) // 2])
        started = await rt.wire.kind("input_audio_buffer.speech_started")
        await rt.send({"type": "input_audio_buffer.clear"})
        await rt.wire.kind("input_audio_buffer.cleared")
        await rt.append(bytes(48 * 1500))
        await asyncio.sleep(0.5)
        assert not rt.wire.of("input_audio_buffer.committed"), "the cleared speech is never a turn"
        assert rt.history() == [] and not rt.wire.of("response.created")
        await rt.append(pcm24("en_goforward_command", 1500))  # the next speech is a turn of its own
        committed = await rt.wire.kind("input_audio_buffer.committed")
        assert committed["item_id"] != started["item_id"]


@pytest.mark.parametrize("interrupt", [True, False])
async def test_interrupt_response_decides_whether_speech_cancels_a_reply(interrupt: bool) -> None:
    llm = StalledLLM()  # the reply never finishes by itself
    async with realtime_session(llm=llm) as rt:
        td = {"type": "server_vad", "interrupt_response": interrupt, "create_response": False}
        await rt.send({"type": "session.update", "session": {"audio": {"input": {"turn_detection": td}}}})
        await rt.send(user_item("talk for a while"))
        await rt.send({"type": "response.create"})
        await llm.wait_for(lambda requests: len(requests) == 1)
        await rt.append(pcm24("en_goforward_command", 1500))
        await rt.wire.kind("conversation.item.input_audio_transcription.completed")
        done = rt.wire.of("response.done")
        if interrupt:
            assert done and done[0]["response"]["status_details"]["reason"] == "turn_detected"
        else:
            assert not done, "the reply goes on while the user speaks"
        assert not rt.wire.of("response.created")[1:], "create_response: false starts no reply of its own"


async def test_semantic_vad_without_a_turn_model_says_so_and_ends_turns_by_silence() -> None:
    async with realtime_session() as rt:  # this context has no turn detector
        await rt.send(
            {
                "type": "session.update",
                "event_id": "u1",
                "session": {"audio": {"input": {"turn_detection": {"type": "semantic_vad"}}}},
            }
        )
        error = await rt.wire.kind("error")
        assert error["error"]["code"] == "unsupported_feature" and error["error"]["event_id"] == "u1"
        await rt.append(pcm24("en_goforward_command", 1500))
        await rt.wire.kind("input_audio_buffer.committed")
        assert isinstance(rt.session.config.turn_detection, SilenceTurnDetection)


async def test_a_closed_socket_mid_reply_is_a_clean_end(server: RunningServer) -> None:
    """The same teardown as /v1/stream: the session goes, the server stays healthy."""
    peer = await Peer.open(realtime_url(server))
    await peer.send_json(user_item("one two three four five six seven eight nine ten"))
    await peer.send_json({"type": "response.create"})
    await peer.wait_for(lambda e: e["type"] == "response.output_audio.delta")
    peer.conn.transport.abort()
    with pytest.raises((ConnectionClosed, OSError)):
        await asyncio.wait_for(peer.conn.send("{}"), 5)
    again = await Peer.open(realtime_url(server))
    assert again.types() == ["session.created"]
    await again.close()


# ---------------------------------------------------------------- the load harness over /v1/realtime


async def test_the_harness_adaptor_reads_a_realtime_conversation_as_the_tracker_wants_it() -> None:
    """Real Realtime events of a voice turn and a typed one, through the adaptor: the hark.v1 tracker
    (which checks the conversation rules) follows them without a violation."""
    async with realtime_session(asr=RecordingASR()) as rt:
        await rt.append(pcm24("en_goforward_command", 1500))
        await rt.wire.kind("response.done")
        await reply_to(rt, "and a typed one")
        events = list(rt.wire.events)
    adaptor, tracker = RealtimeWire(), ConversationTracker()
    for n, event in enumerate(events):
        for message in adaptor.incoming(json.dumps(event)):
            if isinstance(message, bytes):
                tracker.audio(len(message), float(n))
            else:
                tracker.feed(decode_server(message), float(n))
    spoken, typed = tracker.turns[1], tracker.turns[2]
    assert spoken.utterance is not None and spoken.utterance.text.startswith("utterance of ")
    for turn in (spoken, typed):
        assert turn.response is not None and turn.response.done is not None
        assert turn.response.done.status == "completed" and turn.response.audio_ms > 0


def test_hark_loadtest_drives_the_same_scenarios_over_openai_realtime(
    server_factory: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server = server_factory("--max-sessions", "16")
    report = tmp_path / "report"
    sessions = 2
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hark.loadtest.cli",
            *("--url", server.url, "--protocol", "openai-realtime", "--sessions", str(sessions)),
            *("--ramp", "1", "--duration", "15", "--slo-ms", "3600000", "--report", str(report)),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    result = json.loads((report / "report.json").read_text())
    summary, turns = result["summary"], result["turns"]
    server.assert_alive()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert result["meta"]["protocol"] == "openai-realtime" and "/v1/realtime?model=" in result["meta"]["url"]
    assert summary["sessions_started"] == sessions and summary["clean_closes"] == sessions
    assert summary["disconnects"] == {} and summary["errors_by_code"] == {}  # no protocol_violation either
    assert turns and all(t["status"] in ("completed", "cancelled") for t in turns), summary["statuses"]
    assert all(t["transcript"] and t["first_audio_ms"] is not None and t["reply_audio_ms"] > 0 for t in turns)
    frames = summary["server"]
    assert frames["frames_processed"] == frames["frames_received"] > 0 and frames["frames_dropped"] == 0
