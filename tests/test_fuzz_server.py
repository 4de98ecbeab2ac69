"""A real server process against generated hostile input (issue 12, item 5a).

Every case goes to a fresh session of one `hark-server` and must be answered as PROTOCOL.md says:
the `error` code the hark.v1 codec gives that message in this process (so the server and the
contract agree), or the event's documented reply, or close 1007 for a text frame that is not
UTF-8. Only audio, and a `playback.position` for no reply in progress, are answered by silence; a
`ping` sent after every case proves the session is still there either way. A second test sends
valid events in random order to one session. At the end the server still serves a full spoken
turn, `hark_sessions_open` is back to 0, and its log holds no traceback.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import RunningServer, load_pcm, metric, serving
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from wsclient import Peer, silence

from hark.protocol import (
    AudioCommit,
    ErrorCode,
    InputText,
    Ping,
    PlaybackPosition,
    ProtocolError,
    ResponseCancel,
    SessionClose,
    SessionLimits,
    SessionUpdate,
    decode_client,
    validate_audio_frame,
)
from hark.protocol.events import CLIENT_EVENTS, SERVER_EVENTS, FunctionCallOutput, VoiceCreate

pytestmark = pytest.mark.timeout(240)

LIMITS = SessionLimits()
ANSWER_TIMEOUT_S = 20.0  # per case; a loaded 2-core machine answers within a second or two
FUZZ_EXAMPLES = 200
SEQUENCE_EXAMPLES = 60
DEEP_NESTING = 500
_canary_ids = itertools.count()


@dataclass(frozen=True)
class Frame:
    """One WebSocket message: text (a str, or raw bytes in a text frame) or binary."""

    data: str | bytes
    binary: bool = False

    def __repr__(self) -> str:  # hypothesis prints failing examples: keep megabyte frames short
        body = self.data if len(self.data) <= 200 else self.data[:200]
        return f"Frame({body!r}{'...' if len(self.data) > 200 else ''}, len={len(self.data)}, binary={self.binary})"


@dataclass(frozen=True)
class Expected:
    """What the server must answer: an error code, one of some event types, a close, or nothing."""

    error: str | None = None
    also: frozenset[str] = frozenset()  # other error codes that are as right
    reply: frozenset[str] = frozenset()
    close: int | None = None


def expected(frame: Frame) -> Expected:
    """The documented answer, decided with the protocol package in this process."""
    if frame.binary:
        assert isinstance(frame.data, bytes)
        try:
            validate_audio_frame(frame.data, 16000, LIMITS)
        except ProtocolError as exc:
            return Expected(error=exc.code.value)
        return Expected()  # audio: it is heard, not answered
    if isinstance(frame.data, bytes):
        try:
            text = frame.data.decode("utf-8")
        except UnicodeDecodeError:
            return Expected(close=1007)  # RFC 6455 8.1, PROTOCOL.md's close codes
    else:
        text = frame.data
    # how deep JSON may nest is the decoder's stack limit, which is lower inside a server's call stack
    # than here: past a few hundred levels "nested too deeply" (invalid_json) is as right
    deep = (
        frozenset({ErrorCode.INVALID_JSON.value}) if text.count("[") + text.count("{") > DEEP_NESTING else frozenset()
    )
    try:
        event = decode_client(text)
    except ProtocolError as exc:
        return Expected(error=exc.code.value, also=deep)
    if deep:
        return Expected(error=ErrorCode.INVALID_JSON.value)  # decoded here, too deep there
    match event:
        case Ping():
            return Expected(reply=frozenset({"pong"}))
        case SessionUpdate() | VoiceCreate():  # a value the session refuses (an unknown voice) is an error
            return Expected(reply=frozenset({"session.updated", "voice.created", "error"}))
        case AudioCommit():
            return Expected(error=ErrorCode.NOTHING_TO_COMMIT.value)
        case InputText():
            return Expected(reply=frozenset({"response.started"}))
        case ResponseCancel():
            return Expected(error=ErrorCode.NO_ACTIVE_RESPONSE.value)
        case PlaybackPosition():
            return Expected()  # a position for a reply that is not playing is ignored (PROTOCOL.md)
        case SessionClose():
            return Expected(close=1000)
        case FunctionCallOutput():  # no reply is waiting for a tool's output
            return Expected(error=ErrorCode.UNKNOWN_CALL_ID.value)
    raise AssertionError(f"no documented answer for {event!r}")


# ---------------------------------------------------------------------- what the fuzzer sends

hostile_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=12)
hostile_numbers = st.one_of(
    st.integers(),
    st.integers(min_value=10**18, max_value=10**400),
    st.integers(min_value=-(10**400), max_value=-1),
    st.floats(allow_nan=False, allow_infinity=False),
)
json_values = st.recursive(
    st.none() | st.booleans() | hostile_numbers | hostile_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(hostile_text, inner, max_size=4),
    max_leaves=12,
)
CLIENT_TYPES = [cls.TYPE for cls in CLIENT_EVENTS]
FIELD_NAMES = ["config", "text", "response_id", "played_ms", "id", "audio", "transcript", "format", "sample_rate"]
CONFIG_KEYS = [
    "input_sample_rate",
    "output_sample_rate",
    "vad_threshold",
    "min_silence_ms",
    "speech_pad_ms",
    "min_interrupt_ms",
    "audio_output",
    "voice",
    "instructions",
    "turn_detection",
    "min_asr_confidence",
    "no_such_key",
]

# known and unknown types with fields of any shape: the codec's every refusal path
typed_objects = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    st.sampled_from(CLIENT_TYPES + [cls.TYPE for cls in SERVER_EVENTS] + ["", "PING", "x" * 300]) | hostile_text,
    st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=4),
)
config_updates = st.builds(
    lambda config: {"type": "session.update", "config": config},
    st.dictionaries(st.sampled_from(CONFIG_KEYS), json_values, max_size=3),
)
valid_events = st.one_of(
    st.builds(lambda i: {"type": "ping", "id": i}, st.none() | st.text(max_size=20)),
    st.just({"type": "audio.commit"}),
    st.builds(
        lambda t: {"type": "input.text", "text": t}, st.text(string.ascii_letters + " ", min_size=1, max_size=40)
    ),
    st.builds(lambda r: {"type": "response.cancel", "response_id": r}, st.none() | st.sampled_from(["resp_1", "x"])),
    st.builds(
        lambda r, ms: {"type": "playback.position", "response_id": r, "played_ms": ms},
        st.sampled_from(["resp_1", "resp_9"]),
        st.integers(min_value=0, max_value=86_400_000),
    ),
    st.builds(
        lambda c: {"type": "session.update", "config": c},
        st.fixed_dictionaries(
            {},
            optional={
                "audio_output": st.booleans(),
                "min_silence_ms": st.integers(100, 5000),
                "voice": st.sampled_from(["en-us", "en-gb"]),
                "min_asr_confidence": st.floats(0, 1),
            },
        ),
    ),
)


def _as_json(value: Any) -> str:
    # ensure_ascii: a lone surrogate goes out as the \ud800 escape a browser's JSON.stringify makes
    return json.dumps(value)


text_frames = st.one_of(
    json_values.map(_as_json),
    typed_objects.map(_as_json),
    config_updates.map(_as_json),
    valid_events.map(_as_json),
    st.text(max_size=12),  # not JSON at all
    st.builds(lambda depth: "[" * depth + "]" * depth, st.integers(1, 20_000)),
    st.builds(lambda depth: '{"type":"ping","id":' + "[" * depth + "]" * depth + "}", st.integers(1, 5_000)),
).map(Frame)
raw_text_frames = st.one_of(
    st.binary(max_size=64),  # random bytes in a text frame: UTF-8 or not
    # text with raw lone surrogates, encoded as they are (no UTF-8 encoder would): not UTF-8
    hostile_text.map(lambda text: text.encode("utf-8", "surrogatepass")),
).map(Frame)
binary_frames = st.one_of(
    st.binary(max_size=64),
    st.integers(0, 40_000).map(lambda n: bytes(n)),  # every size: odd, under 10 ms, over 1000 ms
    st.integers(1, 1600).map(lambda n: bytes(range(256)) * (n // 128) + b"\x01" * (n % 2)),
).map(lambda data: Frame(data, binary=True))
frames = st.one_of(text_frames, raw_text_frames, binary_frames)


# ---------------------------------------------------------------------- driving the server


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server of its own: its session count and its log see only this module's traffic."""
    with serving(tmp_path_factory.mktemp("fuzz"), "--max-sessions", "8") as running:
        yield running


@pytest.fixture(scope="module")
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as loop:
        yield loop


async def _send(peer: Peer, frame: Frame) -> None:
    if frame.binary or isinstance(frame.data, str):
        await peer.conn.send(frame.data)
    else:
        await peer.conn.send(frame.data, text=True)


async def _wait(peer: Peer, predicate: Callable[[dict[str, Any]], bool], what: str, frame: Frame) -> None:
    try:
        await peer.wait_for(predicate, ANSWER_TIMEOUT_S)
    except (TimeoutError, AssertionError):
        events = [{k: v for k, v in e.items() if not k.startswith("_")} for e in peer.events]
        raise AssertionError(f"{frame}: no {what} within {ANSWER_TIMEOUT_S} s; events: {events}") from None


async def _answered(peer: Peer, frame: Frame, since: int) -> None:
    """`frame` got its documented answer, and the session still answers a ping afterwards."""
    want = expected(frame)
    if want.close is not None:
        await peer.wait_closed(ANSWER_TIMEOUT_S)
        assert peer.conn.close_code == want.close, (frame, peer.conn.close_code, peer.conn.close_reason)
        return
    canary = f"canary-{next(_canary_ids)}"
    try:
        await peer.send_json({"type": "ping", "id": canary})
    except ConnectionClosed:
        raise AssertionError(f"{frame}: the server closed ({peer.conn.close_code}) instead of answering") from None

    def seen() -> list[dict[str, Any]]:
        return peer.events[since:]

    await _wait(peer, lambda e: e["type"] == "pong" and e.get("id") == canary, f"pong {canary}", frame)
    if want.error is not None:
        codes = {want.error, *want.also}
        await _wait(peer, lambda e: e["type"] == "error" and e["code"] in codes, str(codes), frame)
    elif want.reply:
        await _wait(peer, lambda e: e["type"] in want.reply and e.get("id") != canary, str(set(want.reply)), frame)
    fatal = [e for e in seen() if e["type"] == "error" and (e.get("fatal") or e["code"] == "internal_error")]
    assert not fatal, (frame, fatal)
    unexpected = [e["code"] for e in seen() if e["type"] == "error" and e["code"] not in {want.error, *want.also}]
    if "error" not in want.reply:
        assert not unexpected, (frame, unexpected)


async def _one_case(url: str, frame: Frame) -> None:
    peer = await Peer.open(url)
    try:
        assert peer.events[0]["type"] == "session.created", peer.events
        await _send(peer, frame)
        await _answered(peer, frame, since=1)
    finally:
        await peer.close()


async def _sessions_drain(server: RunningServer) -> float:
    for _ in range(100):
        if (value := metric(server, "hark_sessions_open")) == 0:
            return value
        await asyncio.sleep(0.1)
    return metric(server, "hark_sessions_open")


# ---------------------------------------------------------------------- the tests


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same 200 cases every run: a failure reproduces, CI does not flake
)
@given(frame=frames)
@example(frame=Frame('{"type":"playback.position","response_id":"r","played_ms":1' + "0" * 400 + "}"))
@example(frame=Frame('{"type":"ping","id":"\\ud800"}'))
@example(frame=Frame('{"type":"input.text","text":"\\udfff half an emoji"}'))
@example(frame=Frame('{"type":"session.update","config":{"voice":"\\ud83d"}}'))
@example(frame=Frame(b'{"type":"ping","id":"\xed\xa0\x80"}'))  # a surrogate encoded into the bytes: not UTF-8
@example(frame=Frame('{"type":"input.text","text":"' + "\u00e9" * 600_000 + '"}'))  # 1.2 MB in UTF-8
@example(frame=Frame(b"\x00" * (1 << 20), binary=True))  # a 32 s audio frame, 1 MiB
@example(frame=Frame(b"\x00" * 3201, binary=True))
@example(frame=Frame('{"type":"session.close"}'))
def test_every_hostile_message_gets_its_documented_answer(
    fuzz_server: RunningServer, runner: asyncio.Runner, frame: Frame
) -> None:
    want = expected(frame)
    event(
        f"answer: {want.error or want.close or '/'.join(sorted(want.reply)) or 'none'}"
    )  # --hypothesis-show-statistics
    runner.run(asyncio.wait_for(_one_case(fuzz_server.url, frame), ANSWER_TIMEOUT_S * 3))


@settings(
    max_examples=SEQUENCE_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)
@given(events=st.lists(valid_events | text_frames.map(lambda f: f.data), min_size=1, max_size=10))
def test_valid_and_hostile_events_in_random_order_are_all_answered(
    fuzz_server: RunningServer, runner: asyncio.Runner, events: list[Any]
) -> None:
    """One session takes them all in a row. Repeated errors of one code are folded into one report a
    second (PROTOCOL.md), so each code expected must show up at least once, not once per message."""

    async def run() -> None:
        peer = await Peer.open(fuzz_server.url)
        frames = [Frame(e if isinstance(e, str) else _as_json(e)) for e in events]
        closing = False
        try:
            for frame in frames:
                await _send(peer, frame)
                if expected(frame).close is not None:
                    closing = True
                    break
            if closing:
                await peer.wait_closed(ANSWER_TIMEOUT_S)
                assert peer.conn.close_code == 1000, peer.conn.close_reason
                return
            canary = f"canary-{next(_canary_ids)}"
            await peer.send_json({"type": "ping", "id": canary})
            await peer.wait_for(lambda e: e["type"] == "pong" and e.get("id") == canary, ANSWER_TIMEOUT_S)
            for frame in frames:
                want = expected(frame)
                if want.error in (ErrorCode.NOTHING_TO_COMMIT.value, ErrorCode.NO_ACTIVE_RESPONSE.value):
                    continue  # state-dependent: an input.text before it may have started a reply
                if want.error is not None:
                    codes = {want.error, *want.also}
                    await peer.wait_for(lambda e, c=codes: e["type"] == "error" and e["code"] in c, ANSWER_TIMEOUT_S)
                elif want.reply:
                    await peer.wait_for(lambda e, r=want.reply: e["type"] in r, ANSWER_TIMEOUT_S)
            assert not [e for e in peer.of("error") if e.get("fatal")], peer.events
        finally:
            await peer.close()

    runner.run(asyncio.wait_for(run(), ANSWER_TIMEOUT_S * 4))


async def test_after_the_fuzzing_a_spoken_turn_works_and_nothing_is_left_open(fuzz_server: RunningServer) -> None:
    """Runs after the fuzz tests above (file order): the canary session."""
    peer = await Peer.open(fuzz_server.url)
    await peer.send_pcm(load_pcm("en_goforward_command") + silence(3000))
    done = await peer.wait_for(lambda e: e["type"] == "response.done")
    await peer.send_json({"type": "session.close"})
    await peer.wait_closed()
    assert peer.of("transcript.final")[0]["text"] == "go forward ten meters"
    assert done["status"] == "completed" and done["text"] == "You said: go forward ten meters."
    assert peer.conn.close_code == 1000
    assert await _sessions_drain(fuzz_server) == 0
    fuzz_server.assert_alive()
    log = fuzz_server.log()
    assert "Traceback" not in log, log[-4000:]
