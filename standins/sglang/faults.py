"""Faults a test injects into the simulator (`POST /sim/faults`): 500s, hangs, drops, a slow first byte."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

FAULT_MODES: Final = ("none", "http_500", "hang", "drop_mid_stream", "slow_first_byte")


@dataclass
class Faults:
    """The fault armed for the next `count` generation requests (all of them when `remaining` is None)."""

    mode: str = "none"
    remaining: int | None = None  # None: every request
    after_tokens: int = 3
    delay_s: float | None = None

    def take(self) -> Faults:
        """The fault for the next generation request (and count it): a snapshot, mode "none" if none."""
        hit = Faults(mode=self.mode, after_tokens=self.after_tokens, delay_s=self.delay_s)
        if self.mode == "none":
            return hit
        if self.remaining is not None:
            if self.remaining <= 0:
                self.mode = hit.mode = "none"
                return hit
            self.remaining -= 1
            if self.remaining == 0:
                self.mode = "none"  # that was the last affected request: /sim/stats shows it used up
        return hit
