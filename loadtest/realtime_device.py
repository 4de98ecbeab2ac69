"""The virtual device over the OpenAI Realtime API (`hark-loadtest --protocol openai-realtime`).

Same device, same scenarios, same records as hark.v1 (device.py); only the wire differs. The device
keeps speaking hark.v1 to its connection object, and `RealtimeConnection` (a websockets
ClientConnection) translates at the socket, both ways:
- out: 100 ms PCM16 frames at 16 kHz -> `input_audio_buffer.append` with base64 PCM16 at 24 kHz (the
  Realtime rate, resampled with soxr as an app would); `session.update` -> its Realtime shape;
  `session.close` -> the client closes (1000) once the reply in progress is done (Realtime has no
  close event);
- in: Realtime server events -> the hark.v1 events the conversation tracker reads, in the order it
  checks (so a Realtime event order the tracker cannot follow shows up as a protocol violation).
Audio positions need no translation: both protocols count input audio in ms from the session start.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections import deque
from collections.abc import AsyncIterable, Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import soxr
from websockets.asyncio.client import ClientConnection
from websockets.typing import Data, DataLike

from hark.protocol import (
    AudioCommit,
    ClientEvent,
    Error,
    InputText,
    ResponseAudioDone,
    ResponseAudioStarted,
    ResponseCancel,
    ResponseDone,
    ResponseStarted,
    ResponseStatus,
    ResponseTextDelta,
    ServerEvent,
    SessionClose,
    SessionCreated,
    SessionUpdate,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptFinal,
    decode_client,
    encode,
)

from .device import Device

log = logging.getLogger(__name__)

REALTIME_PATH = "/v1/realtime"
DRAIN_S = 0.5  # between the last audio and the close: the server's input queue holds well under this
WIRE_RATE = 24000  # Realtime PCM
DEVICE_RATE = 16000  # what the device streams
# Realtime error codes after which the server closes the session (hark.v1 sends these as fatal)
FATAL_CODES = {"server_busy", "server_not_ready", "idle_timeout", "slow_consumer", "internal_error"}
_STATUSES = {"completed": "completed", "cancelled": "cancelled", "failed": "failed", "incomplete": "cancelled"}


def realtime_url(url: str, model: str = "hark") -> str:
    """The /v1/realtime URL of the server a hark.v1 URL names."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, REALTIME_PATH, f"model={model}", ""))


def hark_config(session: dict[str, Any]) -> dict[str, Any]:
    """The hark.v1 settings the device reads, from a Realtime session (GA shape)."""
    audio = session.get("audio") or {}
    td = (audio.get("input") or {}).get("turn_detection") or {}
    config: dict[str, Any] = {
        "input_sample_rate": DEVICE_RATE,
        "output_sample_rate": WIRE_RATE,
        "audio_output": session.get("output_modalities") != ["text"],
        "instructions": session.get("instructions", ""),
    }
    for realtime_key, hark_key in (
        ("prefix_padding_ms", "speech_pad_ms"),
        ("silence_duration_ms", "min_silence_ms"),
        ("threshold", "vad_threshold"),
    ):
        if td.get(realtime_key) is not None:
            config[hark_key] = td[realtime_key]
    if td.get("type") == "semantic_vad":
        config["turn_detection"] = {"type": "semantic", "eagerness": td.get("eagerness", "auto")}
    return config


def realtime_session(patch: dict[str, Any]) -> dict[str, Any]:
    """A hark.v1 session.update patch as a Realtime `session` object (settings Realtime lacks are dropped)."""
    session: dict[str, Any] = {"type": "realtime"}
    td: dict[str, Any] = {}
    policy = patch.get("turn_detection")
    if isinstance(policy, dict) and policy.get("type") == "semantic":
        td = {"type": "semantic_vad", "eagerness": policy.get("eagerness", "auto")}
    else:
        if isinstance(policy, dict) and policy.get("silence_ms") is not None:
            td["silence_duration_ms"] = policy["silence_ms"]
        for hark_key, realtime_key in (
            ("min_silence_ms", "silence_duration_ms"),
            ("vad_threshold", "threshold"),
            ("speech_pad_ms", "prefix_padding_ms"),
        ):
            if hark_key in patch:
                td[realtime_key] = patch[hark_key]
        if td or policy is not None:
            td["type"] = "server_vad"
    if td:
        session["audio"] = {"input": {"turn_detection": td}}
    if "instructions" in patch:
        session["instructions"] = patch["instructions"]
    if "audio_output" in patch:
        session["output_modalities"] = ["audio"] if patch["audio_output"] else ["text"]
    if "voice" in patch:
        session.setdefault("audio", {})["output"] = {"voice": patch["voice"]}
    dropped = sorted(set(patch) - {"turn_detection", "min_silence_ms", "vad_threshold", "speech_pad_ms"} - set(session))
    if dropped:
        log.warning("the Realtime API has no setting for %s: not sent", ", ".join(dropped))
    return session


class RealtimeWire:
    """One connection's translation, sans-IO: `outgoing` for what the device sends, `incoming` for what
    the server sends. Turn ids are given in the order user items start, as a hark.v1 server does."""

    def __init__(self) -> None:
        # it stands in for a microphone that records at 24 kHz: "QQ" (cubic) adds no buffering, where
        # soxr's default quality holds back ~20 ms of every 100 ms chunk, which would count as latency
        self._resampler = soxr.ResampleStream(DEVICE_RATE, WIRE_RATE, 1, dtype="int16", quality="QQ")
        self._turn_of_item: dict[str, int] = {}
        self._last_turn = 0
        self._answerable: int | None = None  # the newest spoken turn whose final arrived, not yet answered
        self._audio_bytes: dict[str, int] = {}  # response id -> reply audio so far (from its first delta)
        self.active: str | None = None  # the response in progress
        self.close_wanted = False  # the device sent session.close

    def outgoing(self, message: str | bytes) -> list[str]:
        if isinstance(message, bytes):
            pcm = self._resampler.resample_chunk(np.frombuffer(message, dtype="<i2"))
            audio = base64.b64encode(pcm.astype("<i2", copy=False).tobytes()).decode("ascii")
            return [json.dumps({"type": "input_audio_buffer.append", "audio": audio})]
        return [json.dumps(event) for event in self._client_event(decode_client(message))]

    def _client_event(self, event: ClientEvent) -> list[dict[str, Any]]:
        match event:
            case SessionUpdate(config=patch):
                return [{"type": "session.update", "session": realtime_session(dict(patch))}]
            case AudioCommit():
                return [{"type": "input_audio_buffer.commit"}]
            case InputText(text=text):
                content = [{"type": "input_text", "text": text}]
                item = {"type": "message", "role": "user", "content": content}
                return [{"type": "conversation.item.create", "item": item}, {"type": "response.create"}]
            case ResponseCancel():
                return [{"type": "response.cancel"}]
            case SessionClose():
                self.close_wanted = True
        return []  # ping, playback.position: the Realtime API has none (a truncate comes after the fact)

    def incoming(self, text: str) -> list[str | bytes]:
        """hark.v1 messages (encoded events, and reply audio as bytes) for one Realtime server event."""
        event = json.loads(text)
        out: list[str | bytes] = []
        for item in self._server_event(event):
            out.append(item if isinstance(item, bytes) else encode(item))
        return out

    def _server_event(self, event: dict[str, Any]) -> list[ServerEvent | bytes]:
        kind = event.get("type")
        if kind in ("session.created", "session.updated"):
            config = hark_config(event["session"])
            if kind == "session.updated":
                return [SessionUpdated(config=config)]
            transcription = (event["session"].get("audio") or {}).get("input", {}).get("transcription") or {}
            engines = {"asr": str(transcription.get("model") or "unknown")}
            session_id = event["session"]["id"]
            return [
                SessionCreated(session_id=session_id, protocol="hark.v1", config=config, limits={}, engines=engines)
            ]
        if kind == "input_audio_buffer.speech_started":
            self._last_turn += 1
            self._turn_of_item[event["item_id"]] = self._last_turn
            return [SpeechStarted(turn_id=self._last_turn, audio_ms=event["audio_start_ms"])]
        if kind == "input_audio_buffer.speech_stopped":
            turn = self._turn_of_item.get(event["item_id"])
            return [] if turn is None else [SpeechStopped(turn_id=turn, audio_ms=event["audio_end_ms"])]
        if kind == "conversation.item.input_audio_transcription.completed":
            turn = self._turn_of_item.pop(event["item_id"], None)
            if turn is None:
                return []
            self._answerable = turn
            return [TranscriptFinal(turn_id=turn, text=event["transcript"])]
        if kind == "response.created":
            return self._response_started(event["response"]["id"])
        if kind in ("response.output_audio_transcript.delta", "response.output_text.delta"):
            return [ResponseTextDelta(response_id=event["response_id"], delta=event["delta"])]
        if kind == "response.output_audio.delta":
            return self._audio(event["response_id"], base64.b64decode(event["delta"]))
        if kind == "response.output_audio.done":
            sent = self._audio_bytes.get(event["response_id"])
            return [] if sent is None else [ResponseAudioDone(response_id=event["response_id"], audio_ms=sent // 48)]
        if kind == "response.done":
            return self._response_done(event["response"])
        if kind == "error":
            error = event.get("error") or {}
            code = str(error.get("code") or "error")
            return [Error(code=code, message=str(error.get("message") or ""), fatal=code in FATAL_CODES)]
        return []  # items, content parts, committed, ...: nothing the tracker follows

    def _response_started(self, response_id: str) -> list[ServerEvent | bytes]:
        if self._answerable is None:  # a response to no new spoken turn (a response.create): a typed turn
            self._last_turn += 1
            self._answerable = self._last_turn
        turn, self._answerable = self._answerable, None
        self.active = response_id
        return [ResponseStarted(turn_id=turn, response_id=response_id)]

    def _audio(self, response_id: str, pcm: bytes) -> list[ServerEvent | bytes]:
        out: list[ServerEvent | bytes] = []
        if response_id not in self._audio_bytes:
            self._audio_bytes[response_id] = 0
            out.append(ResponseAudioStarted(response_id=response_id, sample_rate=WIRE_RATE, encoding="pcm_s16le"))
        self._audio_bytes[response_id] += len(pcm)
        if pcm:
            out.append(pcm)
        return out

    def _response_done(self, response: dict[str, Any]) -> list[ServerEvent | bytes]:
        response_id = response["id"]
        self._audio_bytes.pop(response_id, None)
        if self.active == response_id:
            self.active = None
        text = ""
        for item in response.get("output") or []:
            for part in item.get("content") or []:
                text += part.get("transcript") or part.get("text") or ""
        status = ResponseStatus(_STATUSES.get(response.get("status", ""), "failed"))
        return [ResponseDone(response_id=response_id, status=status, text=text, metrics={})]


class RealtimeConnection(ClientConnection):
    """A websockets client connection that speaks Realtime on the socket and hark.v1 to its caller."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wire = RealtimeWire()
        self._pending: deque[str | bytes] = deque()
        self._closing: asyncio.Task[None] | None = None

    async def send(
        self, message: DataLike | Iterable[DataLike] | AsyncIterable[DataLike], text: bool | None = None
    ) -> None:
        if not isinstance(message, str | bytes):
            raise TypeError("the Realtime adaptor sends one message at a time")
        for out in self.wire.outgoing(message):
            await super().send(out)
        self._close_when_done()

    async def recv(self, decode: bool | None = None) -> Data:  # type: ignore[override]
        while not self._pending:
            message = await super().recv()
            if not isinstance(message, str):
                log.warning("a %d-byte binary frame on a Realtime connection: ignored", len(message))
                continue
            self._pending.extend(self.wire.incoming(message))
            self._close_when_done()
        return self._pending.popleft()

    def _close_when_done(self) -> None:
        """After session.close and once no reply is in progress, end the session as a Realtime client
        does: it closes the socket. Realtime has no graceful close (hark.v1's session.close lets the
        server drain its input first), so the audio sent last gets DRAIN_S to be processed."""
        if self.wire.close_wanted and self.wire.active is None and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._close_after_drain())

    async def _close_after_drain(self) -> None:
        await asyncio.sleep(DRAIN_S)
        await self.close()


class RealtimeDevice(Device):
    """A Device whose connection is a RealtimeConnection to the same server's /v1/realtime."""

    connection_class = RealtimeConnection

    def __init__(self, index: int, url: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(index, realtime_url(url), *args, **kwargs)
