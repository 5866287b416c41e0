"""One WARN line per kind of problem and period: a flood of bad input must not flood the log."""

from __future__ import annotations

import threading
import time
from typing import Any


class WarnThrottle:
    """Log a warning at most once per ``key`` (a kind of problem, never a message's text) and period.

    A flood of varied garbage of one kind writes one line per period, saying how many like it
    were not written; another kind of problem still gets its own line at once. Shared by the
    node's frame path and its request handlers, which run on different threads.
    """

    def __init__(self, logger: Any, period: float = 5.0) -> None:
        self._logger = logger
        self._period = period
        self._lock = threading.Lock()
        self._entries: dict[str, list] = {}  # key -> [last warning time, warnings suppressed since]

    def __call__(self, key: str, message: str, period: float | None = None) -> None:
        period = self._period if period is None else period
        now = time.monotonic()
        with self._lock:
            entry = self._entries.setdefault(key, [-1e9, 0])
            if now - entry[0] < period:
                entry[1] += 1
                return
            if entry[1]:
                message += f" ({entry[1]} more like it in the last {now - entry[0]:.0f} s not logged)"
            entry[0], entry[1] = now, 0
        self._logger.warning(message)
