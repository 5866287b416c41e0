"""The tracking loop: its own thread, never an executor callback, one frame at a time.

It waits for any camera to have a new frame, takes cameras in round-robin order (so every
camera gets its turn however fast another one publishes) and hands each frame to the node's
``process(camera, msg, received)``. An exception while processing one frame is logged and
the loop goes on: a bad frame or a model hiccup must never stop tracking.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .camera import Camera, FrameScheduler

log = logging.getLogger(__name__)

ProcessFn = Callable[[Camera, object, float], None]


class TrackingLoop:
    def __init__(
        self,
        scheduler: FrameScheduler,
        process: ProcessFn,
        on_error: Callable[[Camera, BaseException], None],
        thread_setup: Callable[[], None] | None = None,
    ) -> None:
        self._scheduler = scheduler
        self._process = process
        self._on_error = on_error
        self._setup = thread_setup
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.busy_time = 0.0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sa2va-tracking", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._scheduler.wake()
        # A local: deactivate (an executor thread) and shutdown (the main thread) may both stop it.
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("tracking loop still busy %.0f s after stop was asked", timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        if self._setup is not None:
            try:
                self._setup()
            except Exception:  # noqa: BLE001 - a failed tweak (threads) is not fatal
                log.exception("tracking thread set-up failed; continuing with defaults")
        while not self._stop.is_set():
            camera = self._scheduler.next_ready(timeout=0.2)
            if camera is None or self._stop.is_set():
                continue
            taken = camera.take()
            if taken is None:
                continue
            msg, received = taken
            t0 = time.perf_counter()
            try:
                self._process(camera, msg, received)
            except Exception as exc:  # noqa: BLE001 - logged by on_error; the loop must go on
                self._on_error(camera, exc)
            self.busy_time += time.perf_counter() - t0
