"""An app written for OpenAI Realtime, talking to Hark. Runs with the SDK venv's python (realtime_sdk.py).

Usage: python realtime_sdk_client.py SCENARIO PORT AUDIO_DIR
AUDIO_DIR holds raw input audio the test prepared: `<clip>.pcm24` (PCM16 24 kHz) and `<clip>.ulaw`.
Prints JSON lines: {"kind": "event", "event"} for every server event as it came off the wire (raw, for
the SDK type checks), then one {"kind": "result", ...} with what the scenario observed. Only the SDKs'
public API is used, as an app would (`send_raw` only for the bad-input scenario).
Not imported by the tests and not run by pytest: it needs openai[realtime] and openai-agents.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

CHUNK_MS = 100
TIMEOUT_S = 60.0
BUSY_RETRIES = 10  # a server at capacity says server_busy and closes 1013 (try again later): apps retry
SCENARIOS: dict[str, Callable[[int, Path], Awaitable[dict[str, Any]]]] = {}


def scenario(fn: Callable[[int, Path], Awaitable[dict[str, Any]]]) -> Callable[[int, Path], Awaitable[dict[str, Any]]]:
    SCENARIOS[fn.__name__] = fn
    return fn


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


class Events:
    """Every server event of one connection, raw, with a way to wait for one."""

    def __init__(self, recv: Callable[[], Awaitable[bytes]]) -> None:
        self.items: list[dict[str, Any]] = []
        self.arrivals: list[float] = []
        self.closed: str | None = None
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._read(recv))

    async def _read(self, recv: Callable[[], Awaitable[bytes]]) -> None:
        try:
            while True:
                event = json.loads(await recv())
                emit(kind="event", event=event)
                async with self._changed:
                    self.items.append(event)
                    self.arrivals.append(time.monotonic())
                    self._changed.notify_all()
        except Exception as exc:  # the connection closed
            async with self._changed:
                self.closed = repr(exc)
                self._changed.notify_all()

    async def wait(self, predicate: Callable[[dict[str, Any]], bool], after: int = 0) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            async with self._changed:
                while True:
                    for event in self.items[after:]:
                        if predicate(event):
                            return event
                    if self.closed is not None:
                        raise AssertionError(f"closed ({self.closed}) while waiting; got {self.types()}")
                    await self._changed.wait()

        return await asyncio.wait_for(find(), TIMEOUT_S)

    async def kind(self, kind: str, after: int = 0) -> dict[str, Any]:
        return await self.wait(lambda e: e["type"] == kind, after)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.items if e["type"] == kind]

    def types(self) -> list[str]:
        return [e["type"] for e in self.items]

    def stop(self) -> None:
        self._task.cancel()


async def stream(append: Callable[[str], Awaitable[Any]], audio: bytes, bytes_per_ms: float) -> None:
    """Send `audio` as base64 appends of CHUNK_MS each, at real time (a live microphone)."""
    chunk = int(bytes_per_ms * CHUNK_MS)
    started = time.monotonic()
    for n, i in enumerate(range(0, len(audio), chunk)):
        await append(base64.b64encode(audio[i : i + chunk]).decode())
        due = started + (n + 1) * CHUNK_MS / 1000.0
        await asyncio.sleep(max(0.0, due - time.monotonic()))


def appender(conn: Any) -> Callable[[str], Awaitable[Any]]:
    return lambda b64: conn.input_audio_buffer.append(audio=b64)


def pcm24(audio_dir: Path, clip: str, silence_ms: int = 0) -> bytes:
    return (audio_dir / f"{clip}.pcm24").read_bytes() + bytes(48 * silence_ms)


def client(port: int) -> AsyncOpenAI:
    return AsyncOpenAI(api_key="any", websocket_base_url=f"ws://127.0.0.1:{port}/v1")


@asynccontextmanager
async def opened(connect: Callable[[], Any]) -> AsyncIterator[tuple[Any, Events, dict[str, Any]]]:
    """(connection, its events, session.created), retrying while the server says it is busy."""
    for _ in range(BUSY_RETRIES):
        conn = await connect().enter()
        events = Events(conn.recv_bytes)
        first = await events.wait(lambda e: True)
        if first["type"] == "session.created":
            break
        events.stop()
        await conn.close()
        assert first["type"] == "error" and first["error"]["code"] == "server_busy", first
        await asyncio.sleep(2.0)
    else:
        raise AssertionError(f"still busy after {BUSY_RETRIES} tries")
    try:
        yield conn, events, first
    finally:
        events.stop()
        await conn.close()


def reply_summary(events: Events, after: int = 0, audio_kind: str = "response.output_audio.delta") -> dict[str, Any]:
    items = events.items[after:]
    done = next(e for e in items if e["type"] == "response.done")
    audio = sum(len(base64.b64decode(e["delta"])) for e in items if e["type"] == audio_kind)
    return {"status": done["response"]["status"], "response": done["response"], "audio_bytes": audio}


# ---------------------------------------------------------------- openai-python, GA (client.realtime)


@scenario
async def voice(port: int, audio: Path) -> dict[str, Any]:
    """A corpus clip at real time: the user's words transcribed, a spoken reply."""
    async with opened(lambda: client(port).realtime.connect(model="hark-voice")) as (conn, events, created):
        sender = asyncio.create_task(stream(appender(conn), pcm24(audio, "en_goforward_command", 2500), 48))
        completed = await events.kind("conversation.item.input_audio_transcription.completed")
        await events.kind("response.done")
        sender.cancel()
        result = reply_summary(events)
        transcript = "".join(e["delta"] for e in events.of("response.output_audio_transcript.delta"))
    return {"model": created["session"]["model"], "user": completed["transcript"], "reply": transcript, **result}


@scenario
async def text_only(port: int, audio: Path) -> dict[str, Any]:
    """output_modalities ["text"], a typed user message, response.create: text deltas, no audio."""
    async with opened(lambda: client(port).realtime.connect(model="hark")) as (conn, events, _):
        await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
        updated = await events.kind("session.updated")
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello there"}]}
        )
        await conn.response.create()
        await events.kind("response.done")
        text = "".join(e["delta"] for e in events.of("response.output_text.delta"))
        return {"modalities": updated["session"]["output_modalities"], "text": text, **reply_summary(events)}


@scenario
async def typed(port: int, audio: Path) -> dict[str, Any]:
    """A typed user message in an audio session, answered by voice after response.create."""
    async with opened(lambda: client(port).realtime.connect(model="hark")) as (conn, events, _):
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "turn left"}]}
        )
        added = await events.kind("conversation.item.added")
        await conn.response.create(response={"instructions": "Answer briefly.", "metadata": {"app": "test"}})
        await events.kind("response.done")
        transcript = "".join(e["delta"] for e in events.of("response.output_audio_transcript.delta"))
        return {"item": added["item"], "reply": transcript, **reply_summary(events)}


@scenario
async def barge_in(port: int, audio: Path) -> dict[str, Any]:
    """Talk over a long reply: it is cancelled (turn_detected); the app truncates the item to what it played
    and the server's copy of the conversation is cut to match; the interrupting turn is answered."""
    async with opened(lambda: client(port).realtime.connect(model="hark")) as (conn, events, _):
        talk = appender(conn)
        sender = asyncio.create_task(stream(talk, pcm24(audio, "en_librivox_sense_0870", 1200), 48))
        first_audio = await events.kind("response.output_audio.delta")
        started_playing = events.arrivals[events.items.index(first_audio)]
        await sender
        await asyncio.sleep(max(0.0, started_playing + 1.5 - time.monotonic()))  # let 1.5 s of it play
        mark = len(events.items)
        sender = asyncio.create_task(stream(talk, pcm24(audio, "en_goforward_command", 2500), 48))
        speech = await events.kind("input_audio_buffer.speech_started", mark)
        stopped_playing = events.arrivals[events.items.index(speech)]  # an app stops playback here
        done = await events.wait(lambda e: e["type"] == "response.done", mark)
        item_id = done["response"]["output"][0]["id"]
        received_ms = sum(len(base64.b64decode(e["delta"])) for e in events.of("response.output_audio.delta")) / 48
        played_ms = int(min(received_ms, (stopped_playing - started_playing) * 1000.0))
        await conn.conversation.item.truncate(item_id=item_id, content_index=0, audio_end_ms=played_ms)
        truncated = await events.kind("conversation.item.truncated", mark)
        await conn.conversation.item.retrieve(item_id=item_id)
        retrieved = await events.kind("conversation.item.retrieved", mark)
        second = await events.wait(lambda e: e["type"] == "response.done", events.items.index(done) + 1)
        await sender
        full = "".join(e["delta"] for e in events.items[:mark] if e["type"] == "response.output_audio_transcript.delta")
        return {
            "first": done["response"],
            "full_reply": full,
            "played_ms": played_ms,
            "truncated": truncated,
            "retrieved": retrieved["item"],
            "second": second["response"],
        }


@scenario
async def manual(port: int, audio: Path) -> dict[str, Any]:
    """turn_detection null: the app commits the buffer and asks for the reply itself."""
    async with opened(lambda: client(port).realtime.connect(model="hark")) as (conn, events, _):
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": None}}})
        updated = await events.kind("session.updated")
        await stream(appender(conn), pcm24(audio, "en_goforward_command", 300), 48)
        await conn.input_audio_buffer.commit()
        committed = await events.kind("input_audio_buffer.committed")
        completed = await events.kind("conversation.item.input_audio_transcription.completed")
        await asyncio.sleep(1.5)  # nothing may answer by itself
        unasked = events.types().count("response.created")
        await conn.response.create()
        await events.kind("response.done")
        return {
            "turn_detection": updated["session"]["audio"]["input"]["turn_detection"],
            "committed_item": committed["item_id"],
            "transcript_item": completed["item_id"],
            "user": completed["transcript"],
            "unasked_responses": unasked,
            "vad_events": [t for t in events.types() if t.startswith("input_audio_buffer.speech")],
            **reply_summary(events),
        }


@scenario
async def g711(port: int, audio: Path) -> dict[str, Any]:
    """G.711 mu-law in and out (8 kHz, what telephony sends)."""
    async with opened(lambda: client(port).realtime.connect(model="hark")) as (conn, events, _):
        fmt = {"type": "audio/pcmu"}
        await conn.session.update(
            session={"type": "realtime", "audio": {"input": {"format": fmt}, "output": {"format": fmt}}}
        )
        updated = await events.kind("session.updated")
        clip = (audio / "en_goforward_command.ulaw").read_bytes() + b"\xff" * (8 * 2500)  # 0xff: mu-law silence
        sender = asyncio.create_task(stream(appender(conn), clip, 8))
        completed = await events.kind("conversation.item.input_audio_transcription.completed")
        await events.kind("response.done")
        sender.cancel()
        result = {"formats": updated["session"]["audio"], "user": completed["transcript"], **reply_summary(events)}
    # the same 8 kHz audio, as 24 kHz PCM
    async with opened(lambda: client(port).realtime.connect(model="hark")) as (conn, events, _):
        no_reply = {"type": "server_vad", "create_response": False}  # a transcript is all this needs
        await conn.session.update(session={"type": "realtime", "audio": {"input": {"turn_detection": no_reply}}})
        clip = (audio / "en_goforward_command.8k.pcm24").read_bytes() + bytes(48 * 2500)
        sender = asyncio.create_task(stream(appender(conn), clip, 48))
        completed = await events.kind("conversation.item.input_audio_transcription.completed")
        await asyncio.sleep(1.0)
        unasked = events.types().count("response.created")
        sender.cancel()
    return {**result, "same_audio_as_pcm": completed["transcript"], "unasked_responses": unasked}


@scenario
async def bad_input(port: int, audio: Path) -> dict[str, Any]:
    """Broken client events each get an error naming them, and the session goes on."""
    async with opened(lambda: client(port).realtime.connect(model="hark")) as (conn, events, _):
        wav = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(200)
        sends = [
            "{not json",
            json.dumps({"type": "no.such.event", "event_id": "e_unknown"}),
            json.dumps({"type": "input_audio_buffer.append", "event_id": "e_big", "audio": "A" * (1100 * 1024)}),
            json.dumps({"type": "input_audio_buffer.append", "event_id": "e_b64", "audio": "not base64!"}),
            json.dumps(
                {"type": "input_audio_buffer.append", "event_id": "e_wav", "audio": base64.b64encode(wav).decode()}
            ),
            json.dumps(
                {
                    "type": "input_audio_buffer.append",
                    "event_id": "e_odd",
                    "audio": base64.b64encode(b"\x01\x02\x03").decode(),
                }
            ),
            json.dumps({"type": "output_audio_buffer.clear", "event_id": "e_webrtc"}),
        ]
        for data in sends:
            await conn.send_raw(data)
        await events.wait(lambda e: len(events.of("error")) >= len(sends))
        errors = [{"code": e["error"]["code"], "event_id": e["error"]["event_id"]} for e in events.of("error")]
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "still there"}]}
        )
        await conn.response.create()
        await events.kind("response.done")
        return {"errors": errors, "closed": events.closed, **reply_summary(events)}


# ---------------------------------------------------------------- openai-python, beta (client.beta.realtime)


@scenario
async def beta(port: int, audio: Path) -> dict[str, Any]:
    async with opened(lambda: client(port).beta.realtime.connect(model="gpt-4o-realtime-preview")) as (
        conn,
        events,
        created,
    ):
        await conn.session.update(
            session={"instructions": "Be brief.", "input_audio_transcription": {"model": "whisper-1"}}
        )
        await events.kind("session.updated")
        sender = asyncio.create_task(stream(appender(conn), pcm24(audio, "en_goforward_command", 2500), 48))
        completed = await events.kind("conversation.item.input_audio_transcription.completed")
        await events.kind("response.done")
        sender.cancel()
        transcript = "".join(e["delta"] for e in events.of("response.audio_transcript.delta"))
        return {
            "session": created["session"],
            "user": completed["transcript"],
            "reply": transcript,
            **reply_summary(events, audio_kind="response.audio.delta"),
        }


# ---------------------------------------------------------------- openai-agents (RealtimeRunner)


@scenario
async def agents(port: int, audio: Path) -> dict[str, Any]:
    """openai-agents validates every server event with pydantic and reports what it cannot use as errors."""
    from agents.realtime import RealtimeAgent, RealtimeRunner

    agent = RealtimeAgent(name="assistant", instructions="You are a helpful voice assistant.")
    runner = RealtimeRunner(agent)
    config = {"url": f"ws://127.0.0.1:{port}/v1/realtime?model=hark", "api_key": "any"}
    seen: list[str] = []
    errors: list[str] = []
    audio_bytes = 0
    history: list[Any] = []
    for _ in range(BUSY_RETRIES):  # a server at capacity closes 1013 (server_busy): try again later
        session = await runner.run(model_config=config)  # type: ignore[arg-type]
        try:
            await session.__aenter__()
            break
        except Exception as exc:
            if "server_busy" not in repr(exc):
                raise
            await asyncio.sleep(2.0)
    else:
        raise AssertionError(f"still busy after {BUSY_RETRIES} tries")
    try:
        pcm = pcm24(audio, "en_goforward_command", 2500)

        async def talk() -> None:
            await stream(lambda b64: session.send_audio(base64.b64decode(b64)), pcm, 48)

        sender = asyncio.create_task(talk())
        try:
            async with asyncio.timeout(TIMEOUT_S):
                async for event in session:
                    seen.append(event.type)
                    if event.type == "raw_model_event" and getattr(event.data, "type", "") == "raw_server_event":
                        raw = event.data.data
                        emit(kind="event", event=raw)
                        if raw.get("type") == "response.done":
                            break
                    elif event.type == "error":
                        errors.append(repr(event.error)[:500])
                    elif event.type == "audio":
                        audio_bytes += len(event.audio.data)
                    elif event.type == "history_updated":
                        history = [item.model_dump(mode="json") for item in event.history]
        finally:
            sender.cancel()
    finally:
        await session.__aexit__(None, None, None)
    return {"types": sorted(set(seen)), "errors": errors, "audio_bytes": audio_bytes, "history": history}


async def main() -> None:
    name, port, audio_dir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    result = await SCENARIOS[name](port, audio_dir)
    emit(kind="result", result=result)


if __name__ == "__main__":
    asyncio.run(main())
