"""Fixtures for the FunASR tests: tiny random-weight models built once per run, and a network guard."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
NETGUARD = Path(__file__).resolve().parent / "netguard"


def require_funasr() -> None:
    missing = [m for m in ("funasr", "kaldi_native_fbank") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(
            f"the FunASR tests need {' and '.join(missing)}: pip install -e '.[funasr]' "
            "(funasr and kaldi-native-fbank; keep torch pinned at the project's version)"
        )


@dataclass(frozen=True)
class TinyModels:
    root: Path
    net_log: Path

    def __getitem__(self, kind: str) -> str:
        return str(self.root / kind)

    @property
    def env(self) -> dict[str, str]:
        """For server subprocesses: record any connection to a host other than loopback."""
        path = os.pathsep.join([str(NETGUARD), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        return {"PYTHONPATH": path, "HARK_NET_LOG": str(self.net_log)}

    def assert_no_network(self) -> None:
        attempts = self.net_log.read_text() if self.net_log.exists() else ""
        assert attempts == "", f"the server tried to reach the network:\n{attempts}"


def build_tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """For a session-scoped fixture: the models, built once per test run."""
    require_funasr()
    root = tmp_path_factory.mktemp("funasr-models")
    # through FunASR's own classes, in a subprocess: the test process stays free of its 0.5 GB import
    result = subprocess.run(
        [sys.executable, "-m", "tools.funasr_models", "--out", str(root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"building the tiny models failed:\n{result.stderr[-4000:]}"
    return TinyModels(root, root / "net.log")


def host_pool(
    name: str, models: TinyModels, max_batch: int, *, two_pass: bool = False, runtime: str | None = None
) -> Any:
    """One process worker of the paraformer-streaming host on the tiny models: `max_batch` 1 is
    FunASR's one `generate` per call, more the batched host; `two_pass` adds the offline
    paraformer and ct-punc; `runtime` torch (default), onnx or onnx-int8."""
    from hark.server.asr.inference_pool import InferencePool
    from hark.server.asr.paraformer_factory import ParaformerHostFactory

    settings: dict[str, Any] = {
        "model": models["paraformer-streaming"],
        "offline_model": models["paraformer"] if two_pass else "",
        "punc_model": models["ct-punc"] if two_pass else "",
        "two_pass": two_pass,
        "ncpu": 1,
        "max_batch": max_batch,
    }
    if runtime is not None:
        settings["runtime"] = runtime
    return InferencePool(name, ParaformerHostFactory(settings), workers=1, kind="process")
