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
  never holds more than a few MiB.
* Free pages inside the arenas: ``malloc_trim(0)`` hands them back. It is cheap when there is
  little to give back and is rate-limited here (:class:`Trimmer`), so calling it whenever the
  language worker goes idle costs nothing measurable.

Outside glibc (musl, macOS) both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import threading
import time

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _libc_function(name: str):
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None


def _load_trim():
    trim = _libc_function("malloc_trim")
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _load_trim()

#: mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
#: Blocks from this size up are mmapped (unmapped when freed); an arena trims its top above it.
#: Big enough that a tracked frame's tensors at SAM-2's 256-1024 px stay in the arenas (their
#: reuse costs no page faults), small enough that what stays resident per arena is bounded.
MALLOC_THRESHOLD_BYTES = 8 << 20
#: Arenas (glibc's default is 8 per core): the node has two busy threads (tracking, language)
#: and executor threads that allocate little; each arena may keep up to the threshold resident.
MALLOC_ARENA_MAX = 4
#: Environment variables through which a user chooses glibc malloc's settings themselves.
_USER_MALLOC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


def tune_allocator(environ: dict[str, str] | None = None) -> str:
    """Fix glibc malloc's thresholds and arena count for this process; what was done, in words.

    Call before threads start (arenas are made as threads first allocate). A user who set
    glibc's malloc environment variables or ``glibc.malloc`` tunables keeps their own settings.
    """
    environ = os.environ if environ is None else environ
    user = [name for name in _USER_MALLOC_ENV if name in environ]
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        user.append("GLIBC_TUNABLES")
    if user:
        return f"glibc malloc settings left as given ({', '.join(user)})"
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return "not glibc: malloc settings unchanged"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = [
        mallopt(_M_MMAP_THRESHOLD, MALLOC_THRESHOLD_BYTES),
        mallopt(_M_TRIM_THRESHOLD, MALLOC_THRESHOLD_BYTES),
        mallopt(_M_ARENA_MAX, MALLOC_ARENA_MAX),
    ]
    if not all(done):
        return "glibc refused a malloc setting: dynamic thresholds kept"
    return (
        f"glibc malloc: mmap and trim thresholds fixed at {MALLOC_THRESHOLD_BYTES >> 20} MiB, "
        f"{MALLOC_ARENA_MAX} arenas"
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
        if _TRIM is None:
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
        _TRIM(0)
        return True
