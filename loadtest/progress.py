"""Live progress: a `rich` panel on a terminal, a plain line every few seconds otherwise (CI logs)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from .recorder import Recorder


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f} ms"


def line(live: dict[str, Any], target: int) -> str:
    return (
        f"[{live['elapsed_s']:6.1f} s] sessions {live['active']}/{target} turns {live['turns']} "
        f"(bad {live['bad_turns']}) first audio p50 {_ms(live['p50_first_audio_ms'])} "
        f"p95 {_ms(live['p95_first_audio_ms'])} final p95 {_ms(live['p95_final_ms'])} "
        f"errors {live['errors']} disconnects {live['disconnects']}"
    )


def _table(live: dict[str, Any], target: int) -> Table:
    table = Table(title="hark-loadtest", show_header=False, min_width=44)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("elapsed", f"{live['elapsed_s']:.0f} s")
    table.add_row("sessions active / target", f"{live['active']} / {target}")
    table.add_row("turns done (bad)", f"{live['turns']} ({live['bad_turns']})")
    table.add_row("first audio p50", _ms(live["p50_first_audio_ms"]))
    table.add_row("first audio p95", _ms(live["p95_first_audio_ms"]))
    table.add_row("transcript.final p95", _ms(live["p95_final_ms"]))
    table.add_row("errors", str(live["errors"]), style="red" if live["errors"] else None)
    table.add_row("disconnects", str(live["disconnects"]), style="red" if live["disconnects"] else None)
    table.add_row("frames sent", str(live["frames_sent"]))
    return table


async def show(rec: Recorder, target: Callable[[], int], tty: bool | None = None, every_s: float = 5.0) -> None:
    """Until cancelled. `target()` is the session count asked for so far (a capacity search raises it)."""
    if tty is None:
        tty = sys.stdout.isatty()
    if not tty:
        while True:
            await asyncio.sleep(every_s)
            print(line(rec.live(), target()), flush=True)
    with Live(_table(rec.live(), target()), console=Console(), refresh_per_second=4, transient=False) as live:
        while True:
            await asyncio.sleep(0.5)
            live.update(_table(rec.live(), target()))
