"""One virtual device: a live microphone on one hark.v1 session, talking in turns.

It streams scenario clips at real-time pace in 100 ms frames, then silence (a live mic never
stops sending), waits until the turn has settled and the reply has been "played" at real time
(or barges in, as the scenario says), pauses, and talks again until told to stop. Then it sends
`session.close` and waits for the server's close.

Latency reference ("speech end"): the moment this device sent the frame carrying the audio
position of the server's `speech.stopped` for the turn's last utterance with words: the same
instant the server's own `response.done.metrics` count from, seen from the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from hark.protocol import (
    ConversationError,
    ConversationTracker,
    ProtocolError,
    TrackedResponse,
    Turn,
    decode_server,
    encode,
)
from hark.protocol import events as ev

from .reader import follow
from .recorder import Recorder, measured_turn
from .scenario import FRAME_BYTES, FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE, SILENCE, Scenario
from .stats import Playback, playback

log = logging.getLogger(__name__)

# silence streamed after a clip before its turn may count as settled: above the default
# min_silence_ms, so the server's VAD ends the turn, not us
MIN_TAIL_MS = 1000
SENT_RING = 1200  # send times of the last 2 min of audio: speech.stopped refers to recent audio
RESYNC_LAG_S = 1.0  # a harness stall longer than this restarts the pacing clock instead of bursting
CONNECT_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 30.0  # after session.close the server finishes the reply in progress first
# what the report counts when the server breaks the hark.v1 conversation rules (the message says which)
PROTOCOL_VIOLATION = "protocol_violation"


@dataclass(slots=True)
class TurnState:
    """One clip the device spoke, and the server turns (the tracker's, each with its utterance) it became."""

    index: int
    clip: str
    start_sample: int
    started_at: float
    barge_in: bool
    heard: list[Turn] = field(default_factory=list)  # spoken server turns, in order
    closed_for_input: bool = False  # the device moved on: no new utterance can belong to this turn
    interrupted_by: TurnState | None = None
    finalized: bool = False
    errors: list[str] = field(default_factory=list)

    def main(self) -> Turn | None:
        """The server turn whose reply is measured: the last one with words, else the last one."""
        with_text = [t for t in self.heard if _words(t)]
        if with_text:
            return with_text[-1]
        return self.heard[-1] if self.heard else None

    def settled(self, reply_expected: bool) -> bool:
        if not self.heard or any(t.utterance is None or t.utterance.final is None for t in self.heard):
            return False
        main = self.main()
        if not reply_expected or main is None or not _words(main):
            return True
        return main.response is not None and main.response.done is not None


def _words(turn: Turn) -> str:
    """The final transcript of a spoken turn ("" before it arrives or when nothing was understood)."""
    return (turn.utterance.text or "") if turn.utterance is not None else ""


class Device:
    connection_class = ClientConnection  # the wire: realtime_device.py's speaks OpenAI Realtime underneath

    def __init__(
        self, index: int, url: str, scenario: Scenario, clips: dict[str, bytes], recorder: Recorder, stop: asyncio.Event
    ) -> None:
        self.index = index
        self.url = url
        self.scenario = scenario
        self.clips = clips
        self.rec = recorder
        self.stop = stop
        self.rng = random.Random(scenario.seed * 1_000_003 + index)
        self.reply_expected = True
        self.speech_pad_ms = 200
        self.turns: list[TurnState] = []
        self.tracker = ConversationTracker()  # the conversation as the server told it
        self.active_at_stop: dict[int, int] = {}  # sessions open when each server turn's speech.stopped came
        self.frames_sent = 0
        # flat arrays, not tuples: a few KB per device, so thousands of devices stay cheap
        self._sent_idx = array("q", [-1]) * SENT_RING
        self._sent_at = array("d", [0.0]) * SENT_RING
        self._due = 0.0
        self.closed = asyncio.Event()
        self.updated = asyncio.Event()
        self.close_sent = False

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        self.rec.sessions_started += 1
        try:
            conn = await connect(
                self.url,
                open_timeout=CONNECT_TIMEOUT_S,
                close_timeout=10,
                max_size=16 << 20,
                compression=None,
                create_connection=self.connection_class,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self.rec.error(self.index, "connect_failed", True, repr(exc))
            return
        try:
            if await self._handshake(conn):
                self.rec.active += 1
                opened = time.monotonic()
                try:
                    await self._converse(conn)
                finally:
                    self.rec.active -= 1
                    self.rec.session_seconds += time.monotonic() - opened
        except Exception as exc:  # a harness bug must show up in the report, not vanish in gather()
            log.exception("device %d failed", self.index)
            self.rec.error(self.index, "harness_exception", True, repr(exc))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 10)
            for turn in self.turns:  # whatever never settled
                if not turn.finalized:
                    self._finalize(turn, "incomplete")

    async def _handshake(self, conn: ClientConnection) -> bool:
        try:
            first = decode_server(await asyncio.wait_for(conn.recv(), CONNECT_TIMEOUT_S))
        except (ConnectionClosed, TimeoutError, ProtocolError) as exc:
            self.rec.error(self.index, "no_session_created", True, repr(exc))
            self._record_close(conn)
            return False
        if isinstance(first, ev.Error):
            self.rec.refused += 1
            self.rec.error(self.index, first.code, first.fatal, first.message)
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                await asyncio.wait_for(conn.wait_closed(), 10)
            self._record_close(conn)
            return False
        if not isinstance(first, ev.SessionCreated):
            self.rec.error(self.index, "unexpected_first_event", True, repr(first)[:200])
            return False
        self.rec.engines = dict(first.engines)
        self.reply_expected = first.engines.get("asr") != "none"
        self._apply_config(first.config)
        return True

    def _apply_config(self, config: dict[str, Any]) -> None:
        pad = config.get("speech_pad_ms")
        if isinstance(pad, int):
            self.speech_pad_ms = pad
        self.rec.session_config = dict(config)

    async def _converse(self, conn: ClientConnection) -> None:
        reader = asyncio.create_task(self._read(conn), name=f"device-{self.index}-reader")
        try:
            self._due = time.monotonic()
            if self.scenario.session:
                await conn.send(encode(ev.SessionUpdate(config=self.scenario.session)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.updated.wait(), 10)
            turn_no = 0
            limit = self.scenario.turns_per_session
            while not self.stop.is_set() and not self.closed.is_set() and (limit == 0 or turn_no < limit):
                clip = self.scenario.clips[(self.index + turn_no) % len(self.scenario.clips)]
                last = limit != 0 and turn_no == limit - 1
                if not await self._turn(conn, turn_no, clip, last):
                    break
                turn_no += 1
            if not self.closed.is_set():
                self.close_sent = True
                await conn.send(encode(ev.SessionClose()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(reader), CLOSE_TIMEOUT_S)
        except ConnectionClosed:
            pass  # the reader records how it closed
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            self._record_close(conn)
            for turn in self.turns:  # nothing more will be said: a reply that ended still counts
                turn.closed_for_input = True
            self._settle_pending()

    def _record_close(self, conn: ClientConnection) -> None:
        code = conn.close_code
        if code == 1000 and self.close_sent:
            self.rec.clean_closes += 1
        elif code is not None or conn.state.name == "CLOSED":
            self.rec.disconnect(f"{code} {conn.close_reason or ''}".strip())

    # ------------------------------------------------------------ talking

    async def _turn(self, conn: ClientConnection, index: int, clip: str, last: bool) -> bool:
        """Speak one clip and wait for the turn to settle; False when the connection ended."""
        if self.turns:
            self.turns[-1].closed_for_input = True
        turn = TurnState(
            index=index,
            clip=clip,
            start_sample=self.frames_sent * FRAME_SAMPLES,
            started_at=time.monotonic(),
            barge_in=self.rng.random() < self.scenario.barge_in_probability,
        )
        if self.turns and not self.turns[-1].finalized:
            self.turns[-1].interrupted_by = turn
        self.turns.append(turn)
        pcm = self.clips[clip]
        for i in range(0, len(pcm), FRAME_BYTES):
            if self.closed.is_set():
                return False
            await self._send(conn, pcm[i : i + FRAME_BYTES])
        deadline = time.monotonic() + self.scenario.turn_timeout_s
        pause_s = self.scenario.pause_s(self.rng)
        tail_ms = 0
        while not self.closed.is_set():
            now = time.monotonic()
            main = turn.main()
            reply = main.response if main is not None else None
            if (
                turn.barge_in
                and not last
                and not self.stop.is_set()  # no next clip will come to talk over the reply
                and reply is not None
                and reply.done is None
                and reply.first_audio_at is not None
                and now >= reply.first_audio_at + self.scenario.barge_in_after_ms / 1000.0
            ):
                return True  # the next clip talks over the reply; this turn settles when it is cancelled
            if tail_ms >= MIN_TAIL_MS and turn.settled(self.reply_expected):
                if now >= self._playback_end(turn) + pause_s:
                    self._finalize(turn)
                    return True
            elif now > deadline:
                self._finalize(turn, "timeout")
                return True
            await self._send(conn, SILENCE)
            tail_ms += FRAME_MS
        return False

    async def _send(self, conn: ClientConnection, frame: bytes) -> None:
        """Send one 100 ms frame at its real-time due time."""
        now = time.monotonic()
        if self._due > now:
            await asyncio.sleep(self._due - now)
        else:
            lag = now - self._due
            self.rec.max_send_lag_ms = max(self.rec.max_send_lag_ms, lag * 1000.0)
            if lag > RESYNC_LAG_S:  # catching up in a burst would trip the server's audio_flood bucket
                self._due = now
        idx = self.frames_sent
        self._sent_idx[idx % SENT_RING] = idx
        self._sent_at[idx % SENT_RING] = time.monotonic()
        await conn.send(frame)
        self.frames_sent += 1
        self.rec.frames_sent += 1
        self._due += FRAME_MS / 1000.0

    def _sent_time(self, sample: int) -> float | None:
        """When the frame carrying input sample position `sample` was sent."""
        idx = max(0, (sample - 1) // FRAME_SAMPLES)
        slot = idx % SENT_RING
        return self._sent_at[slot] if self._sent_idx[slot] == idx else None

    def _playback_end(self, turn: TurnState) -> float:
        main = turn.main()
        if main is None or main.response is None:
            return 0.0
        return _played(main.response).end_at

    # ------------------------------------------------------------ receiving

    async def _read(self, conn: ClientConnection) -> None:
        try:
            await follow(conn, self.tracker, self._on_event, self._on_refused)
        finally:
            self.closed.set()

    def _on_refused(self, exc: ProtocolError) -> None:
        if isinstance(exc, ConversationError):  # a server bug: counted, and the tracker goes on
            self._error(PROTOCOL_VIOLATION, False, exc.message)
        # else an event this client cannot decode (a newer server's type): skipped, as the protocol says

    def _on_event(self, event: ev.ServerEvent, now: float) -> None:
        """After the tracker took `event`: what the device does about it."""
        if isinstance(event, ev.SpeechStarted):
            owner = self._owner(self._detected_start(event.audio_ms))
            if owner is not None:
                owner.heard.append(self.tracker.turns[event.turn_id])
        elif isinstance(event, ev.SpeechStopped):
            self.active_at_stop[event.turn_id] = self.rec.active
        elif isinstance(event, ev.TranscriptFinal | ev.ResponseDone):
            self._settle_pending()
        elif isinstance(event, ev.Error):
            self._error(event.code, event.fatal, event.message)
        elif isinstance(event, ev.SessionUpdated):
            self._apply_config(event.config)
            self.updated.set()

    def _error(self, code: str, fatal: bool, message: str) -> None:
        self.rec.error(self.index, code, fatal, message)
        if self.turns:
            self.turns[-1].errors.append(code)

    def _detected_start(self, start_audio_ms: int) -> int:
        """The VAD's detected start of speech (input samples) from speech.started's padded audio start."""
        return (start_audio_ms + self.speech_pad_ms) * SAMPLE_RATE // 1000

    def _owner(self, sample: int) -> TurnState | None:
        for turn in reversed(self.turns):
            if turn.start_sample <= sample:
                return turn
        return self.turns[0] if self.turns else None

    def _settle_pending(self) -> None:
        """Turns the device left early (barge-in) are recorded once their reply has ended."""
        for turn in self.turns:
            if turn.closed_for_input and not turn.finalized and turn.settled(self.reply_expected):
                self._finalize(turn)

    # ------------------------------------------------------------ the record

    def _finalize(self, turn: TurnState, status: str | None = None) -> None:
        turn.finalized = True
        main = turn.main()
        utterance = main.utterance if main is not None else None
        reply = main.response if main is not None else None
        end_at: float | None = None
        if utterance is not None and utterance.stop_audio_ms is not None:
            end_at = self._sent_time(utterance.stop_audio_ms * SAMPLE_RATE // 1000)
        if status is None:
            if not self.reply_expected:
                status = "ingest"
            elif main is None or not _words(main) or reply is None or reply.done is None:
                status = "no_reply"
            else:
                status = reply.done.status
        stop_ms: float | None = None
        nxt = turn.interrupted_by
        interrupter = nxt.heard[0].utterance if nxt is not None and nxt.heard else None
        if turn.barge_in and reply is not None and reply.done_at is not None and interrupter is not None:
            heard = self._sent_time(self._detected_start(interrupter.start_audio_ms))
            stop_ms = None if heard is None else (reply.done_at - heard) * 1000.0
        self.rec.turn_done(
            measured_turn(
                session=self.index,
                turn=turn.index,
                clip=turn.clip,
                status=status,
                t0=self.rec.t0,
                started_at=turn.started_at,
                speech_end=end_at,
                active_sessions=self.active_at_stop.get(main.turn_id, 0) if main is not None else self.rec.active,
                utterances=len(turn.heard),
                spoken=utterance,
                reply=reply,
                barge_in=turn.barge_in and turn.interrupted_by is not None,
                barge_in_stop_ms=stop_ms,
                errors=turn.errors,
            )
        )


def _played(reply: TrackedResponse) -> Playback:
    """Playback of a reply's audio, all of which arrived before its response.done (the tracker sees to it),
    so a cancelled reply is cut where the client flushes it."""
    return playback(reply.chunk_seconds())
