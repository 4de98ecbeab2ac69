"""The engine registries: one per kind, the only list of engines (argparse choices, README table)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from conftest import REPO

from hark.server.asr.none import NoASREngine
from hark.server.config import ServerConfig, build_parser, load_config
from hark.server.engines import REGISTRIES, create_asr, create_llm, create_tts, readme_table, table_block
from hark.server.llm.echo import EchoEngine
from hark.server.registry import Registry, UnknownEngine


def test_a_registry_creates_by_name_and_refuses_unknown_names_and_bad_entries() -> None:
    made: list[ServerConfig] = []
    registry: Registry[str] = Registry("widget", "--widget")
    registry.register("b", lambda config: made.append(config) or "made b", "the b widget")
    registry.register("a", lambda config: "made a", "the a widget")
    assert registry.names() == ["b", "a"], "registration order, the order --help shows"
    config = ServerConfig()
    assert registry.create("b", config) == "made b" and made == [config]
    assert "a" in registry and "c" not in registry
    with pytest.raises(UnknownEngine, match=r"--widget 'c': unknown widget \(known: b, a\)"):
        registry.create("c", config)
    with pytest.raises(ValueError, match="registered already"):
        registry.register("a", lambda config: "again", "the a widget again")
    for summary in ("", "two\nlines", "a | b"):
        with pytest.raises(ValueError, match="one line"):
            registry.register("d", lambda config: "d", summary)


def _choices(parser: argparse.ArgumentParser, option: str) -> list[str]:
    action = next(a for a in parser._actions if option in a.option_strings)
    return list(action.choices or [])


def test_command_line_choices_and_defaults_come_from_the_registries() -> None:
    parser = build_parser()
    defaults = ServerConfig()
    for registry in REGISTRIES:
        assert _choices(parser, registry.option) == registry.names()
        default = getattr(defaults, registry.option.removeprefix("--"))
        assert default in registry, f"the default {registry.option} {default!r} is not registered"
    with pytest.raises(SystemExit) as exc:
        load_config(["--asr", "whisper-someday"], environ={})
    assert exc.value.code == 2


def test_factories_build_the_named_engines_from_the_config() -> None:
    assert isinstance(create_asr(ServerConfig(asr="none")), NoASREngine)
    assert isinstance(create_llm(ServerConfig()), EchoEngine)
    assert create_tts(ServerConfig()).name == "espeak"
    # a configuration file or HARK_* variable is not checked by argparse: the registry says it
    with pytest.raises(ValueError, match=r"--asr 'nope': unknown speech recognizer \(known: pocketsphinx, "):
        create_asr(ServerConfig(asr="nope"))
    with pytest.raises(ValueError, match="needs --llm-url"):
        create_llm(ServerConfig(llm="sglang"))
    engine = create_llm(ServerConfig(llm="openai", llm_url="http://127.0.0.1:9", llm_model="m"))
    assert engine.name == "openai"


def test_listing_the_engines_imports_no_engine() -> None:
    # --help and the registries must not need the optional extras or load any model library
    code = (
        "import sys; from hark.server.config import build_parser; build_parser().format_help(); "
        "import hark.server.engines; "
        "heavy = [m for m in ('pocketsphinx', 'funasr', 'torch', 'espeakng_loader', 'aiohttp') if m in sys.modules]; "
        "print(heavy)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_the_readme_engines_table_lists_exactly_the_registered_engines() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    current = readme_table(readme)
    assert current is not None, "README.md lost its engines table markers"
    assert current == table_block(), (
        "README.md's engines table differs from the registries: run "
        "`.venv/bin/python -m hark.server.engines --write README.md`"
    )
    rows = [line for line in current.splitlines() if line.startswith("| `--")]
    assert len(rows) == sum(len(r.names()) for r in REGISTRIES)
