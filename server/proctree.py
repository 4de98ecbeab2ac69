"""CPU and memory of this process and every process under it (ASR workers live in children).

`/proc` is read directly: the numbers a capacity plan needs are those of the whole server, and the
standard process collector only sees the calling process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity (taskset, a container's cpuset), not the
    machine's count, which is what `os.cpu_count()` says; worker counts and the default session
    limit follow it."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity API here (not Linux)
        return os.cpu_count() or 1


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True, slots=True)
class TreeUsage:
    cpu_seconds: float  # user + system of the live processes, since each started
    resident_bytes: int
    processes: int


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text()
            found += [int(c) for c in text.split()]
    except OSError:  # exited meanwhile, or a kernel without the children file
        pass
    return found


def _usage(pid: int) -> tuple[float, int] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS, int(statm.split()[1]) * _PAGE_SIZE


def tree_usage(root: int | None = None) -> TreeUsage:
    """Sum over `root` (default: this process) and its descendants; zeros where /proc is missing."""
    pending = [os.getpid() if root is None else root]
    cpu, rss, count, seen = 0.0, 0, 0, set()
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        usage = _usage(pid)
        if usage is None:
            continue
        cpu, rss, count = cpu + usage[0], rss + usage[1], count + 1
        pending += _children(pid)
    return TreeUsage(cpu, rss, count)
