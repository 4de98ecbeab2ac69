"""Loading FunASR models as FunASR does, without its side effects.

- A local directory is loaded as is (checked first: FunASR takes a path that does not exist for a
  hub id and starts a download). Anything else that looks like a ModelScope id (`owner/name`) is
  downloaded by FunASR, after a bounded probe of the hub, so an offline machine fails in seconds.
- `disable_update=True` (FunASR otherwise checks PyPI for a newer version on every load).
- `import funasr` and `AutoModel` print to stdout (the server's stdout carries its ready line):
  silenced. `AutoModel` calls `logging.basicConfig(level=INFO)`: the root logger is restored.
- FunASR's weight loading is lenient (a shape mismatch only logs and leaves that layer random),
  so the checkpoint is compared with the network and a mismatch is an error.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import re
import socket
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HUB_HOST = os.environ.get("HARK_MODELSCOPE_HOST", "www.modelscope.cn")
HUB_PROBE_TIMEOUT_S = 5.0
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# loads run one at a time: the stdout and root-logger swaps are process-wide, and a full-size
# checkpoint peaks at ~3 GiB while it loads
_LOAD_LOCK = threading.Lock()


class ModelLoadError(ValueError):
    """A model cannot be used; the message says which option and what to do (the server exits 2)."""


def resolve(spec: str, flag: str) -> str:
    """A local model directory (checked) or a hub id; anything else is a ModelLoadError."""
    path = Path(spec).expanduser()
    if path.exists():
        check_dir(path, flag)
        return str(path.resolve())
    if _HUB_ID.match(spec) and not spec.startswith((".", "~")):
        return spec
    raise ModelLoadError(f"{flag} {spec}: no such model directory (and not a ModelScope id like iic/SenseVoiceSmall)")


def check_dir(path: Path, flag: str) -> None:
    if not path.is_dir():
        raise ModelLoadError(f"{flag} {path}: not a directory")
    missing = [name for name in ("config.yaml", "model.pt") if not (path / name).is_file()]
    if not any((path / name).is_file() for name in ("tokens.json", "tokens.txt")) and _needs_tokens(path):
        missing.append("tokens.json (or tokens.txt)")
    if missing:
        raise ModelLoadError(
            f"{flag} {path}: not a FunASR model directory (missing {', '.join(missing)}); "
            "download one with `modelscope download --model iic/<name> --local_dir DIR`"
        )


def _needs_tokens(path: Path) -> bool:
    # SenseVoice ships a sentencepiece model instead of a token list
    return not any(path.glob("*.bpe.model"))


def probe_hub(flag: str, spec: str) -> None:
    """Fail fast when the hub is unreachable (FunASR's own download would retry for minutes)."""
    error: list[BaseException] = []

    def connect() -> None:
        try:
            socket.create_connection((HUB_HOST, 443), timeout=HUB_PROBE_TIMEOUT_S).close()
        except OSError as exc:
            error.append(exc)

    thread = threading.Thread(target=connect, daemon=True)  # name resolution has no timeout of its own
    thread.start()
    thread.join(HUB_PROBE_TIMEOUT_S + 1)
    if thread.is_alive() or error:
        reason = error[0] if error else "timed out"
        raise ModelLoadError(
            f"{flag} {spec}: not a local directory, and the model hub ({HUB_HOST}) is unreachable ({reason}); "
            f"on a machine with internet run `modelscope download --model {spec} --local_dir DIR` "
            "and pass DIR"
        )


def load_model(spec: str, flag: str, ncpu: int) -> Any:
    """Build one AutoModel (call from the worker that will use it: generate() is not thread-safe)."""
    shapes = _read_checkpoint(Path(spec) / "model.pt", flag) if Path(spec).is_dir() else None
    with _LOAD_LOCK, _quiet():
        from funasr import AutoModel

        try:
            model = AutoModel(
                model=spec,
                disable_update=True,
                device="cpu",
                ncpu=ncpu,
                disable_pbar=True,
                disable_log=True,
                # FunASR's fbank adds random dither (a training-time augmentation) at inference too:
                # off, so the same audio always gives the same transcript
                frontend_conf={"dither": 0.0},
            )
        except Exception as exc:
            raise ModelLoadError(f"{flag} {spec}: FunASR cannot load it: {type(exc).__name__}: {exc}") from exc
    if shapes is not None:
        _check_weights(model, shapes, Path(spec) / "model.pt", flag)
    _trim_heap()
    return model


def _trim_heap() -> None:
    """Give the checkpoint's freed buffers back to the OS: glibc keeps them otherwise, and a
    full-size model would stay at ~3 GiB resident instead of ~1.4 GiB."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _read_checkpoint(path: Path, flag: str) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of model.pt: memory-mapped when it can be (a full-size one is ~1 GB)."""
    import torch

    errors = []
    for options in ({"mmap": True, "weights_only": True}, {"weights_only": False}):  # older pickles: the 2nd
        try:
            state = torch.load(path, map_location="cpu", **options)
            break
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    else:
        raise ModelLoadError(f"{flag} {path}: unreadable checkpoint ({errors[-1]})")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{flag} {path}: not a state_dict checkpoint ({type(state).__name__})")
    # shapes only: nothing of the tensors stays in memory while FunASR loads its own copy
    return {k.removeprefix("module."): tuple(getattr(v, "shape", ())) for k, v in state.items()}


def _check_weights(model: Any, shapes: dict[str, tuple[int, ...]], path: Path, flag: str) -> None:
    bad = [name for name, param in model.model.named_parameters() if shapes.get(name) != tuple(param.shape)]
    if bad:
        raise ModelLoadError(
            f"{flag} {path}: {len(bad)} weight tensors are missing or do not match config.yaml "
            f"(first: {bad[0]}); FunASR would run them with random weights"
        )


@contextlib.contextmanager
def _quiet() -> Any:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
