"""The OpenAI SDKs as external clients: a venv of their own under .cache/realtime-sdk, built once.

`openai[realtime]` needs websockets < 16 and `openai-agents` < 17, while Hark runs websockets 17: they
cannot share Hark's environment, so the tests build a separate venv from pinned versions (as a user's
app would have) and run SDK code there as subprocesses. Building is idempotent: a stamp file records
the pins it was built from, and a lock file keeps two test processes from building at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SDK_DIR = Path(os.environ.get("HARK_REALTIME_SDK_VENV", REPO / ".cache" / "realtime-sdk"))
# current releases when this was written (pip index versions openai / openai-agents); bump together
PINS = ("openai[realtime]==3.57.0", "openai-agents==0.24.0")
VALIDATOR = Path(__file__).resolve().parent / "realtime_sdk_validate.py"
_STAMP = SDK_DIR / ".installed"


def _install_hint(detail: str) -> str:
    pins = " ".join(f"'{pin}'" for pin in PINS)
    return (
        f"the OpenAI Realtime SDK tests need their own venv at {SDK_DIR} with {pins} "
        f"(websockets < 16, so not in Hark's venv). Building it failed:\n{detail[-3000:]}\n"
        f"Build it by hand with: {sys.executable} -m venv {SDK_DIR} && {SDK_DIR}/bin/pip install {pins}"
    )


@contextmanager
def _locked() -> Iterator[None]:
    SDK_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(SDK_DIR.parent / ".realtime-sdk.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(cmd: list[str], timeout: float) -> None:
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(_install_hint(f"{' '.join(cmd)}: {exc}"))
    if result.returncode != 0:
        pytest.fail(_install_hint(f"{' '.join(cmd)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"))


def sdk_python() -> Path:
    """The SDK venv's interpreter, building the venv first if it is missing or was built from other pins."""
    python = SDK_DIR / "bin" / "python"
    wanted = "\n".join(PINS)
    with _locked():
        if _STAMP.is_file() and _STAMP.read_text() == wanted and python.is_file():
            return python
        # the base interpreter, not Hark's venv: nothing of Hark's environment leaks into the SDKs'
        base = getattr(sys, "_base_executable", sys.executable)
        _run([base, "-m", "venv", "--clear", str(SDK_DIR)], timeout=120)
        _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *PINS], timeout=900)
        _STAMP.write_text(wanted)
    return python


@dataclass(frozen=True)
class Rejection:
    index: int
    type: str
    check: str  # ga (pydantic), ga-session, ga-agents (the SDK's handler), beta
    error: str


@dataclass(frozen=True)
class Validation:
    rejections: list[Rejection]
    sent: list[tuple[int, dict[str, Any]]]  # (event index, client event openai-agents sent in answer)

    def describe(self, events: list[Mapping[str, Any]]) -> str:
        lines = [f"#{r.index} {r.type} [{r.check}]: {r.error}" for r in self.rejections]
        for r in self.rejections[:3]:
            lines.append(f"#{r.index} was: {json.dumps(events[r.index])[:1500]}")
        return "\n".join(lines)


def validate_server_events(events: Iterable[Mapping[str, Any]], dialect: str) -> Validation:
    """Run server events through the SDKs' own types (see realtime_sdk_validate.py for the checks)."""
    payload = "".join(json.dumps(dict(event)) + "\n" for event in events)
    result = subprocess.run(
        [str(sdk_python()), str(VALIDATOR), dialect],
        input=payload,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"the SDK validator failed to run:\n{result.stdout}\n{result.stderr[-4000:]}"
    rejections, sent = [], []
    for line in result.stdout.splitlines():
        item = json.loads(line)
        if item["kind"] == "sent":
            sent.append((item["index"], item["message"]))
        else:
            rejections.append(Rejection(item["index"], str(item["type"]), item["dialect"], item["error"]))
    return Validation(rejections, sent)
