"""glibc malloc's settings for our two kinds of process, and giving free memory back.

Shared by the ROS node (:mod:`sa2va_ros.node.memory`) and the language process
(:mod:`sa2va_ros.model.language_process`); it imports neither ROS nor torch. Outside glibc
(musl, macOS) every function here is a no-op that says so.

glibc raises its mmap threshold each time a block allocated with mmap (above 128 KiB at start)
is freed, and the trim threshold to twice that (up to 32 and 64 MiB); an arena keeps free memory
at its top up to the trim threshold. Fixing both ends that drift. Two numbers matter:

* ``mmap_threshold``: blocks from this size up are mmapped, and unmapped when freed. A block
  used again after that is faulted in again page by page (zeroed by the kernel).
* ``trim_threshold``: an arena gives back the free memory at its top above this size. Memory
  that a repeated job (a tracked frame, a request) needs again right after is faulted in again
  if it was given back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

#: mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
#: Environment variables through which a user chooses glibc malloc's settings themselves.
_USER_MALLOC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")


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
#: Whether this C library has ``malloc_trim`` (glibc).
HAS_MALLOC_TRIM = _TRIM is not None


def tune_allocator(
    mmap_threshold: int, trim_threshold: int, arenas: int, environ: dict[str, str] | None = None
) -> str:
    """Fix glibc malloc's thresholds (bytes) and arena count for this process; what was done, in words.

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
        mallopt(_M_MMAP_THRESHOLD, mmap_threshold),
        mallopt(_M_TRIM_THRESHOLD, trim_threshold),
        mallopt(_M_ARENA_MAX, arenas),
    ]
    if not all(done):
        return "glibc refused a malloc setting: dynamic thresholds kept"
    return (
        f"glibc malloc: mmap threshold {mmap_threshold >> 20} MiB, "
        f"trim threshold {trim_threshold >> 20} MiB, {arenas} arenas"
    )


def malloc_trim() -> bool:
    """``malloc_trim(0)``: free pages inside every arena (and the main arena's top) back to the system."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True
