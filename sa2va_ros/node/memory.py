"""Giving memory back to the system after bursts: resident set size and glibc's malloc_trim.

Decoded frames, token tensors and activations are freed after each request, but glibc keeps
freed heap pages in its arenas (one per thread that allocated) for reuse; after a burst the
node's RSS stayed ~700 MB above its level after the first request although nothing leaked.
``malloc_trim(0)`` hands the free pages of every arena back. It is cheap when there is little
to give back and is rate-limited here, so calling it whenever the language worker goes idle
costs nothing measurable. Outside glibc (musl, macOS) it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import threading
import time

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _load_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


_TRIM = _load_trim()


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
