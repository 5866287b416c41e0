"""Giving memory back to the system after bursts: resident set size and glibc's malloc.

Decoded frames, token tensors and activations are freed after each request, but glibc keeps
freed heap pages in its arenas (one per thread that allocated) for reuse; after a burst the
node's RSS stayed ~700 MB above its level after the first request although nothing leaked.
Two things keep them:

* glibc's dynamic mmap threshold. Each time a block allocated with mmap (above 128 KiB at
  start) is freed, glibc raises the threshold to that block's size and the trim threshold to
  twice that (up to 32 and 64 MiB). After the first large tensors, blocks of many MiB come
  from the arenas, and an arena keeps up to 64 MiB of free memory at its top resident.
  ``malloc_trim`` does not help there: it gives back free pages inside every arena but trims
  the top of the main one only. Measured (issue 14's memory experiments, tiny model): each
  refused 10 MB command left ~30 MB resident in the arena of whichever executor thread took
  it, and two configure / request / cleanup cycles left RSS 120 MB above the first cleanup.
  :func:`tune_allocator` fixes both thresholds (which ends the dynamic raising) and caps the
  number of arenas, so big blocks are mmapped and unmapped when freed and an arena's top
  never holds more than the trim threshold.
* Free pages inside the arenas: ``malloc_trim(0)`` hands them back. It is cheap when there is
  little to give back and is rate-limited here (:class:`Trimmer`), so calling it whenever the
  language worker goes idle costs nothing measurable.

Outside glibc (musl, macOS) both are no-ops.
"""

from __future__ import annotations

import gc
import os
import threading
import time

from sa2va_ros import glibc_malloc

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

#: Blocks from this size up are mmapped (unmapped when freed). Big enough that a tracked frame's
#: tensors at SAM-2's 256-1024 px stay in the arenas (their reuse costs no page faults), small
#: enough that a burst of big refused commands never stays resident.
MALLOC_MMAP_THRESHOLD_BYTES = 8 << 20
#: An arena gives back the free memory at its top above this. With it at 8 MiB, each tracked
#: frame of the demo model (SAM-2 at 256 px) gave its short-lived tensors back and faulted them
#: in again at the next: 961-2,389 page faults (4-9 MiB) and 1.7-3 ms of kernel time per 40 ms
#: step on a CPU (README, "Page faults"); from 16 MiB up almost none (20 per frame at 16 MiB, 7
#: at 32). What stays resident is bounded: this much per arena at most.
MALLOC_TRIM_THRESHOLD_BYTES = 32 << 20
#: Arenas (glibc's default is 8 per core): the node has two busy threads (tracking, language)
#: and executor threads that allocate little; each arena may keep up to the trim threshold.
MALLOC_ARENA_MAX = 4


def tune_allocator(environ: dict[str, str] | None = None) -> str:
    """The node's glibc malloc settings (above); what was done, in words. Call before threads start."""
    return glibc_malloc.tune_allocator(
        MALLOC_MMAP_THRESHOLD_BYTES, MALLOC_TRIM_THRESHOLD_BYTES, MALLOC_ARENA_MAX, environ
    )


def rss_bytes() -> int:
    """The process's resident set size now (0 where /proc is not available)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class Trimmer:
    """``malloc_trim`` at most once per ``min_interval`` seconds, from any thread."""

    def __init__(self, min_interval: float = 1.0) -> None:
        self.min_interval = min_interval
        self._last = -1e9
        self._lock = threading.Lock()
        self.trims = 0

    def __call__(self, force: bool = False) -> bool:
        if not glibc_malloc.HAS_MALLOC_TRIM:
            return False
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last < self.min_interval:
                return False
            self._last = now
            self.trims += 1
        # Reference cycles among a request's objects (frames, answers, tensors' wrappers) hold
        # their memory until the next collection; the model itself is frozen (gc.freeze after
        # configure), so this pass only walks what was made since and costs a few milliseconds.
        gc.collect()
        return glibc_malloc.malloc_trim()
