"""CPU affinity: the tracking loop and the language model on CPUs of their own (Linux).

Neither SCHED_IDLE nor niceness keeps a computing language model off the tracking loop's CPU:
Linux's EEVDF scheduler still gives a SCHED_IDLE task an occasional slice of a CPU where a normal
task waits, and on a small machine the scheduler moves both around. Pinned to disjoint CPUs
(``tracking_cpus``, ``language_cpus``), the tracking thread waited for a CPU 11 ms a second while
the language model generated back to back, against 23-28 ms unpinned (README, "CPU affinity").

Affinity is per thread on Linux and threads inherit it when they start: pinning the tracking
thread before its first torch call pins the torch threads it starts too; the language process
pins every thread it already has. Shared by the node and the language process; no ROS, no torch.
"""

from __future__ import annotations

import os
from pathlib import Path


def parse_cpu_list(text: str) -> frozenset[int]:
    """CPUs in Linux's list syntax (``0``, ``2-3``, ``0,4-7``; what taskset -c and cpusets take).

    An empty string is the empty set (no pinning). Raises ValueError saying what is wrong.
    """
    cpus: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            if text.strip():
                raise ValueError(f"'{text}' has an empty item; write CPUs like 0,2-3")
            continue
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"'{part}' is not a CPU number or range; write CPUs like 0,2-3")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"range '{part}' runs backwards")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def unavailable(cpus: frozenset[int]) -> str | None:
    """Why this process cannot run on ``cpus`` (none allowed to it, or no affinity here), or None."""
    if not cpus:
        return None
    if not hasattr(os, "sched_getaffinity"):
        return "CPU affinity is not available on this system"
    allowed = os.sched_getaffinity(0)
    missing = sorted(cpus - allowed)
    if missing:
        return f"CPUs {missing} are not allowed to this process (it may use {format_cpu_list(allowed)})"
    return None


def format_cpu_list(cpus: set[int] | frozenset[int]) -> str:
    """The inverse of :func:`parse_cpu_list`, with ranges (for messages)."""
    out, run = [], []
    for cpu in sorted(cpus):
        if run and cpu != run[-1] + 1:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
            run = []
        run.append(cpu)
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def pin_this_thread(cpus: frozenset[int]) -> None:
    """Run the calling thread (and the threads it starts from now on) on ``cpus``; empty: no change."""
    if cpus:
        os.sched_setaffinity(0, cpus)


def pin_this_process(cpus: frozenset[int]) -> None:
    """Run every thread this process has, and those it starts later, on ``cpus``; empty: no change."""
    if not cpus:
        return
    os.sched_setaffinity(0, cpus)  # the calling thread first: threads it starts inherit it
    tasks = Path("/proc/self/task")
    for entry in tasks.iterdir() if tasks.is_dir() else ():
        try:
            os.sched_setaffinity(int(entry.name), cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            pass
