"""The hark-client console script against a real server: what a person runs from the README."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import pytest
from conftest import RunningServer, corpus_path


def _hark_client() -> str:
    script = Path(sys.executable).parent / "hark-client"
    if not script.exists():
        pytest.fail(f"{script} is missing: install the project (make install) so the console script exists")
    return str(script)


def test_cli_transcript_reply_and_saved_audio(server: RunningServer, tmp_path: Path) -> None:
    out = tmp_path / "reply.wav"
    result = subprocess.run(
        [
            _hark_client(),
            "--url",
            server.url,
            "--wav",
            str(corpus_path("en_goforward_command")),
            "--save-reply",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "go forward ten meters" in result.stdout
    assert "You said: go forward ten meters." in result.stdout
    assert "first_audio_ms" in result.stdout or "first audio" in result.stdout
    with wave.open(str(out)) as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        assert wav.getnframes() / wav.getframerate() >= 0.5


def test_cli_json_fast_mode(server: RunningServer) -> None:
    # three digit groups are three turns when silence alone ends a turn (semantic joins them)
    args = ["--wav", str(corpus_path("en_vosk_digits")), "--fast", "--json", "--turn-detection", "silence"]
    result = subprocess.run(
        [_hark_client(), "--url", server.url, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    types = [e.get("type") for e in events]
    assert types.count("transcript.final") == 3
    assert "audio_flood" not in result.stdout
    assert types.count("response.done") >= 2  # turns whose words were recognized are answered


def test_cli_connection_refused_exit_code(tmp_path: Path) -> None:
    result = subprocess.run(
        [_hark_client(), "--url", "ws://127.0.0.1:9/v1/stream", "--wav", str(corpus_path("en_goforward_command"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "hark-server" in result.stderr or "connect" in result.stderr
