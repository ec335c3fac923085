"""Running a process on some CPUs only (`--cpus`), every thread of it included.

For a host whose few cores the mesh shares with its clients: grpc's
event-engine threads wake for every message, and each wake-up on another
core costs. Draining a stream of events on 2 shared cores, the mesh spent
78-92 µs of CPU a message free to run anywhere, 45-50 µs confined to one
(see README, "The event bus").
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Set as AbstractSet
from pathlib import Path

from brewmesh.startup import Setting, StartError

CPU_LIST_RE = re.compile(r"\d{1,4}(?:-\d{1,4})?(?:,\d{1,4}(?:-\d{1,4})?)*")
"""A CPU list as Linux writes one: numbers and ranges, comma-separated (`0`, `0-1`, `0,2-3`)."""
CPU_LIST_RULE = "a list of CPU numbers such as 0, 0-1 or 0,2-3"
THREADS = Path("/proc/self/task")


def parse_cpus(text: str) -> frozenset[int] | None:
    """The CPUs of a CPU list; None if `text` is not one (or a range runs backwards)."""
    if not CPU_LIST_RE.fullmatch(text):
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        low, high = int(first), int(last or first)
        if high < low:
            return None
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def cpu_list(cpus: AbstractSet[int]) -> str:
    """`cpus` as a CPU list, ranges joined (`{0, 1, 3}` -> `0-1,3`)."""
    parts: list[str] = []
    for cpu in sorted(cpus):
        if parts and parts[-1].rpartition("-")[2] == str(cpu - 1):
            parts[-1] = f"{parts[-1].partition('-')[0]}-{cpu}"
        else:
            parts.append(str(cpu))
    return ",".join(parts)


def confine(cpus: frozenset[int]) -> None:
    """Run this process's threads on `cpus` only; threads it starts later inherit that."""
    if not hasattr(os, "sched_setaffinity"):
        raise StartError(Setting.CPUS, "cannot choose CPUs on this system (it has no sched_setaffinity)")
    allowed = os.sched_getaffinity(0)
    if not cpus <= allowed:
        outside, usable = cpu_list(cpus - allowed), cpu_list(allowed)
        raise StartError(Setting.CPUS, f"CPU {outside} is not one this process may use: use some of {usable}")
    for thread in _threads():
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(thread, cpus)


def _threads() -> list[int]:
    """This process's threads (Linux); elsewhere the calling thread (0)."""
    try:
        return [int(name) for name in os.listdir(THREADS)]
    except OSError:
        return [0]
