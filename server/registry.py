"""One registry per engine kind: name -> factory(config), with a one-line summary.

The registries are the only list of engines: argparse `choices` and the README engines table are
read from them. Factories import their engine's modules when called, so listing the engines (as
`--help` does) imports nothing heavy and needs no optional extra.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from .config import ServerConfig

T = TypeVar("T")


class UnknownEngine(ValueError):
    """A configuration names an engine nobody registered; the message lists the known ones."""


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[[ServerConfig], T]
    summary: str


class Registry(Generic[T]):
    """Engines of one kind (`kind` as a person says it, `option` the command-line flag choosing one)."""

    def __init__(self, kind: str, option: str) -> None:
        self.kind = kind
        self.option = option
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, factory: Callable[[ServerConfig], T], summary: str) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        if not summary.strip() or "\n" in summary or "|" in summary:
            raise ValueError(f"{self.kind} {name!r}: the summary must be one line without '|' (a table cell)")
        self._entries[name] = Entry(name, factory, summary)

    def names(self) -> list[str]:
        """In registration order: the order `--help` and the README list them in."""
        return list(self._entries)

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def create(self, name: str, config: ServerConfig) -> T:
        """A new engine, not started yet (`await engine.start()` before use)."""
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownEngine(f"{self.option} {name!r}: unknown {self.kind} (known: {', '.join(self._entries)})")
        return entry.factory(config)
