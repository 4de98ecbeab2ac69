"""The wheel holds one top-level package, `hark`: nothing generic (`server`, `client`, ...) lands in
site-packages, and the data files the code reads at run time travel with it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GENERIC = {"protocol", "server", "client", "loadtest", "bench", "tools", "standins", "tests"}


def test_wheel_installs_only_the_hark_namespace(tmp_path: Path) -> None:
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    build = subprocess.run(
        [*pip_wheel, "-w", str(tmp_path), str(REPO)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert build.returncode == 0, f"building the wheel failed (needs setuptools and wheel):\n{build.stderr[-2000:]}"
    (wheel,) = tmp_path.glob("hark-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"hark"}, f"unexpected top-level entries in the wheel: {sorted(top_level)}"
    assert not top_level & GENERIC
    for needed in (
        "hark/server/app.py",
        "hark/protocol/PROTOCOL.md",
        "hark/client/web/index.html",
        "hark/loadtest/scenarios/default.toml",
    ):
        assert needed in names, f"{needed} is missing from the wheel"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script in ("hark-server = hark.server.app:main", "hark-client = hark.client.cli:main"):
        assert script in scripts
