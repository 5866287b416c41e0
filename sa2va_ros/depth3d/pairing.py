"""Colour frames matched to depth frames by header stamp (exact, or nearest within a slop).

Drivers stamp a registered depth frame with its colour frame's stamp (RealSense with
``enable_sync``), or with their own capture time a few milliseconds apart (unsynchronised
streams). The pairer keeps the last few depth frames and, for each colour frame, returns the
one with the same stamp or the nearest within ``slop`` seconds. It never waits: a colour frame
whose depth has not arrived is tracked in 2D at once (the 3D stage must not add latency), and
counted so /diagnostics shows how often it happens and why.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class PairingStats:
    """Counters for /diagnostics."""

    depth_received: int = 0
    matched: int = 0
    unmatched: int = 0
    #: |colour - nearest depth| stamp difference (s) of the last unmatched frame, None if none was near.
    last_gap: float | None = None
    #: time.monotonic() of the newest depth frame (0 = none yet).
    last_depth_at: float = 0.0


class StampPairer:
    """The depth frames of one camera, looked up by colour stamp. Thread-safe."""

    def __init__(self, slop: float = 0.02, keep: int = 30):
        self.slop = slop
        self._frames: collections.deque[tuple[int, Any]] = collections.deque(maxlen=max(1, keep))
        self._lock = threading.Lock()
        self.stats = PairingStats()

    def add(self, stamp_ns: int, payload: Any) -> None:
        """A depth frame arrived (payload: whatever the caller needs later, e.g. the message)."""
        with self._lock:
            self._frames.append((int(stamp_ns), payload))
            self.stats.depth_received += 1
            self.stats.last_depth_at = time.monotonic()

    def match(self, stamp_ns: int) -> Any | None:
        """The payload of the depth frame with this stamp, or the nearest within slop; else None."""
        stamp_ns = int(stamp_ns)
        with self._lock:
            best, best_gap = None, None
            for other, payload in self._frames:
                gap = abs(other - stamp_ns)
                if best_gap is None or gap < best_gap:
                    best, best_gap = payload, gap
                    if gap == 0:
                        break
            if best_gap is not None and best_gap <= self.slop * 1e9:
                self.stats.matched += 1
                return best
            self.stats.unmatched += 1
            self.stats.last_gap = None if best_gap is None else best_gap * 1e-9
            return None

    def seconds_since_depth(self, now: float | None = None) -> float | None:
        """Seconds since the newest depth frame arrived; None before the first."""
        with self._lock:
            last = self.stats.last_depth_at
        if not last:
            return None
        return (time.monotonic() if now is None else now) - last

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
