"""Apps written for OpenAI Realtime, unchanged, against a real hark-server over /v1/realtime.

The official `openai` SDK (`client.realtime` GA, `client.beta.realtime`) and `openai-agents`
(`RealtimeRunner`) run as external clients in a venv of their own (realtime_sdk.py builds it from
pinned versions): each scenario of realtime_sdk_client.py is one process, all at once against one
server, audio streamed at real time from the corpus. Every event the server sent them then goes
through the SDKs' own pydantic types and openai-agents' event handler (realtime_sdk_validate.py).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import realtime_sdk
import soxr
from conftest import RunningServer, corpus_path, manifest, start_server, stop_server

from hark.protocol.realtime import AudioFormat
from hark.protocol.realtime.g711 import G711Codec

CLIENT = Path(__file__).resolve().parent / "realtime_sdk_client.py"
CLIPS = ("en_goforward_command", "en_librivox_sense_0870")
SCENARIOS = ("voice", "text_only", "typed", "barge_in", "manual", "g711", "bad_input", "beta", "agents")
BETA = ("beta",)
RUN_TIMEOUT_S = 150
START_SPACING_S = 1.0  # importing the SDKs takes a CPU second each: a burst of nine would look like overload


@dataclass
class Run:
    name: str
    returncode: int
    events: list[dict[str, Any]]
    result: dict[str, Any]
    stderr: str
    server_log: str = ""

    def describe(self) -> str:
        return f"{self.name}: rc={self.returncode}\n{self.stderr[-3000:]}\nserver log:\n{self.server_log}"


def _prepare_audio(directory: Path) -> None:
    """What the apps send: the corpus clips as PCM16 24 kHz, and as G.711 mu-law 8 kHz."""
    for clip in CLIPS:
        with wave.open(str(corpus_path(clip))) as wav:
            pcm16k = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        (directory / f"{clip}.pcm24").write_bytes(soxr.resample(pcm16k, 16000, 24000).astype("<i2").tobytes())
        pcm8k = soxr.resample(pcm16k, 16000, 8000).astype("<i2")
        (directory / f"{clip}.ulaw").write_bytes(G711Codec(AudioFormat.PCMU, "w").encode(pcm8k.tobytes()))
        # the same telephone-band audio as 24 kHz PCM: what the server hears from G.711, minus the codec
        (directory / f"{clip}.8k.pcm24").write_bytes(soxr.resample(pcm8k, 8000, 24000).astype("<i2").tobytes())


def _collect(name: str, process: subprocess.Popen[str]) -> Run:
    try:
        stdout, stderr = process.communicate(timeout=max(1.0, _deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        stderr += f"\n[killed after {RUN_TIMEOUT_S} s]"
    events, result = [], {}
    for line in stdout.splitlines():
        item = json.loads(line)
        if item["kind"] == "event":
            events.append(item["event"])
        else:
            result = item["result"]
    return Run(name, process.returncode, events, result, stderr)


_deadline = 0.0


# the first test builds the SDK venv when it is missing (about 20 s here; more on a slow package index)
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def realtime_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # what is tested is the protocol, on a machine other test runs may be loading too: the server must not
    # refuse a session as overloaded, nor close a client whose pongs a busy machine delays
    running = start_server(
        tmp_path_factory.mktemp("realtime-server"),
        *("--max-sessions", "32", "--overload-loop-lag-ms", "0", "--overload-frame-wait-ms", "0"),
        env={"HARK_SLOW_CONSUMER_TIMEOUT_S": "60"},
    )
    yield running
    running.assert_alive()
    stop_server(running)


@pytest.fixture(scope="module")
def runs(realtime_server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """Every scenario, each in its own SDK process, all at once against the one server."""
    global _deadline
    python = realtime_sdk.sdk_python()
    audio = tmp_path_factory.mktemp("realtime-audio")
    _prepare_audio(audio)
    processes = {}
    for name in SCENARIOS:
        processes[name] = subprocess.Popen(
            [str(python), str(CLIENT), name, str(realtime_server.port), str(audio)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(START_SPACING_S)
    _deadline = time.monotonic() + RUN_TIMEOUT_S
    runs = {name: _collect(name, process) for name, process in processes.items()}
    for run in runs.values():
        run.server_log = realtime_server.log()[-4000:]
    return runs


def run_of(runs: dict[str, Run], name: str) -> Run:
    run = runs[name]
    assert run.returncode == 0 and run.result, run.describe()
    return run


def words(text: str) -> list[str]:
    return [w.strip(".,:;!?").lower() for w in text.split() if w.strip(".,:;!?")]


# ---------------------------------------------------------------- every event, through the SDKs' own types


@pytest.mark.parametrize("dialect", ["ga", "beta"])
def test_every_event_the_server_sent_validates_against_the_sdk_types(runs: dict[str, Run], dialect: str) -> None:
    names = [n for n in SCENARIOS if (n in BETA) == (dialect == "beta")]
    events = [event for name in names for event in run_of(runs, name).events]
    assert len(events) > (30 if dialect == "beta" else 300), f"only {len(events)} events"
    validation = realtime_sdk.validate_server_events(events, dialect)
    assert not validation.rejections, validation.describe(events)
    ids = [e["event_id"] for name in names for e in runs[name].events]
    assert len(ids) == len(set(ids)), "event ids must be unique"


# ---------------------------------------------------------------- openai-python, GA


def test_a_clip_at_real_time_gives_its_transcript_and_a_spoken_reply(runs: dict[str, Run]) -> None:
    result = run_of(runs, "voice").result
    expected = manifest()["en_goforward_command"]["transcript"]
    assert words(result["user"]) == words(expected)
    assert result["status"] == "completed"
    assert words(result["reply"]) == ["you", "said", *words(expected)]
    assert result["audio_bytes"] > 24000 * 2  # over a second of 24 kHz speech
    assert result["model"] == "hark-voice"  # ?model= is reported back
    usage = result["response"]["usage"]
    assert usage["input_tokens"] > 0 and usage["total_tokens"] >= usage["input_tokens"]


def test_text_only_sessions_answer_in_text(runs: dict[str, Run]) -> None:
    result = run_of(runs, "text_only").result
    assert result["modalities"] == ["text"]
    assert result["status"] == "completed" and result["audio_bytes"] == 0
    assert result["text"] == "You said: hello there."
    assert result["response"]["output"][0]["content"] == [{"type": "output_text", "text": "You said: hello there."}]


def test_a_typed_message_is_answered_by_voice_after_response_create(runs: dict[str, Run]) -> None:
    result = run_of(runs, "typed").result
    assert result["item"]["content"] == [{"type": "input_text", "text": "turn left"}]
    assert result["status"] == "completed" and result["reply"] == "You said: turn left."
    assert result["audio_bytes"] > 0
    assert result["response"]["metadata"] == {"app": "test"}


def test_barge_in_cancels_the_reply_and_truncate_cuts_it_to_what_was_played(runs: dict[str, Run]) -> None:
    result = run_of(runs, "barge_in").result
    first = result["first"]
    assert first["status"] == "cancelled"
    assert first["status_details"]["reason"] == "turn_detected"
    assert result["truncated"]["audio_end_ms"] == result["played_ms"] > 0
    cut = result["retrieved"]["content"][0]["transcript"]
    full = words(result["full_reply"])
    assert 0 < len(words(cut)) < len(full), (cut, result["full_reply"])
    assert words(cut) == full[: len(words(cut))]  # the words that were heard, in order
    assert result["second"]["status"] == "completed"  # the interrupting turn is answered
    answer = result["second"]["output"][0]["content"][0]["transcript"]
    assert words(answer)[-4:] == ["go", "forward", "ten", "meters"]


def test_manual_turns_commit_then_response_create(runs: dict[str, Run]) -> None:
    result = run_of(runs, "manual").result
    assert result["turn_detection"] is None
    assert result["vad_events"] == []  # the app decides the turns: no speech_started/stopped
    assert result["committed_item"] == result["transcript_item"]
    assert words(result["user"]) == ["go", "forward", "ten", "meters"]
    assert result["unasked_responses"] == 0
    assert result["status"] == "completed"


def test_g711_in_and_out(runs: dict[str, Run]) -> None:
    result = run_of(runs, "g711").result
    assert result["formats"]["input"]["format"] == {"type": "audio/pcmu"}
    assert result["formats"]["output"]["format"] == {"type": "audio/pcmu"}
    # 8 kHz speech is harder for the recognizer ("go forward" comes out otherwise): what matters is that
    # mu-law decodes to exactly what the same telephone-band audio gives when sent as PCM
    assert result["user"] and result["user"] == result["same_audio_as_pcm"]
    assert result["unasked_responses"] == 0  # that second session had create_response: false
    assert result["status"] == "completed"
    wire = b"".join(
        base64.b64decode(e["delta"]) for e in runs["g711"].events if e["type"] == "response.output_audio.delta"
    )
    assert len(wire) / 8 > 1000  # ms: one byte per 8 kHz sample
    speech = np.frombuffer(G711Codec(AudioFormat.PCMU, "r").decode(wire), dtype="<i2").astype(np.float64)
    assert np.sqrt(np.mean(speech**2)) > 300, "the reply decodes to speech, not silence or noise"


def test_bad_input_gets_errors_and_the_session_goes_on(runs: dict[str, Run]) -> None:
    result = run_of(runs, "bad_input").result
    assert result["errors"] == [
        {"code": "invalid_json", "event_id": None},
        {"code": "unknown_event", "event_id": "e_unknown"},
        {"code": "message_too_large", "event_id": None},  # refused before parsing: its id is unread
        {"code": "invalid_value", "event_id": "e_b64"},
        {"code": "invalid_audio_format", "event_id": "e_wav"},
        {"code": "invalid_audio_format", "event_id": "e_odd"},
        {"code": "unsupported_event", "event_id": "e_webrtc"},
    ]
    assert result["closed"] is None and result["status"] == "completed"


# ---------------------------------------------------------------- beta, and openai-agents


def test_the_beta_dialect_through_client_beta_realtime(runs: dict[str, Run]) -> None:
    result = run_of(runs, "beta").result
    session = result["session"]
    assert session["input_audio_format"] == "pcm16" and "modalities" in session and "type" not in session
    assert words(result["user"]) == ["go", "forward", "ten", "meters"]
    assert result["status"] == "completed" and result["audio_bytes"] > 0
    assert words(result["reply"])[:2] == ["you", "said"]
    types = {e["type"] for e in runs["beta"].events}
    assert "conversation.item.created" in types and "conversation.item.added" not in types


def test_openai_agents_runs_a_voice_turn_without_an_error(runs: dict[str, Run]) -> None:
    result = run_of(runs, "agents").result
    assert result["errors"] == []
    assert result["audio_bytes"] > 0
    assert "audio" in result["types"] and "history_updated" in result["types"]
    spoken = [item for item in result["history"] if item.get("role") == "assistant"]
    assert spoken, result["history"]
