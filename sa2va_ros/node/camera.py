"""Per-camera state: the newest-frame slot, the tracker, the last results and recent frames.

One node serves several cameras with one model; each camera keeps its own tracker, objects
and statistics here. The frame intake (frame_intake.py) only calls :meth:`Camera.offer` (store
the message, count the one it replaces as dropped): decoding and tracking happen on the tracking thread,
so a slow model never backs up a DDS queue and a stale frame is never processed.
:class:`FrameScheduler` hands cameras with a waiting frame to the tracking loop in
round-robin order, so a fast camera cannot starve a slow one.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Frame:
    """A decoded, processed frame and what the tracker found on it."""

    header: Any  # std_msgs/Header of the source image
    rgb: np.ndarray  # (H, W, 3) uint8
    objects: list  # list[TrackedObject] of the tracker for this frame
    received: float  # time.monotonic() when the message arrived
    depth: Any = None  # depth.DepthView paired with this frame (RGB-D cameras), or None


@dataclass
class CameraStats:
    """Counters read (and differenced) by the diagnostics."""

    received: int = 0
    dropped: int = 0
    processed: int = 0
    bad_frames: int = 0
    #: Samples the middleware reported lost before they reached the callback.
    lost_in_transport: int = 0
    #: Recent (step seconds, receive -> published seconds, stamp -> published seconds or None).
    timings: collections.deque = field(default_factory=lambda: collections.deque(maxlen=200))
    last_error: str = ""


class Camera:
    """One camera stream of the node."""

    def __init__(
        self,
        name: str,
        tracker: Any,
        recent_frames: int = 5,
        recent_period: float = 0.5,
        history: int = 30,
    ):
        self.name = name
        #: Prefix of this camera's topics ("" or "front/").
        self.prefix = f"{name.strip('/')}/" if name.strip("/") else ""
        self.tracker = tracker
        self.stats = CameraStats()
        self._lock = threading.Lock()
        self._pending: tuple[Any, float] | None = None
        self._latest: Frame | None = None
        self._recent: collections.deque[Frame] = collections.deque(maxlen=max(1, recent_frames))
        self.recent_period = recent_period
        #: The last processed frames by header stamp (ns), for prompts that name their frame: a
        #: detector's box from frame t must land on frame t, not on the newest one.
        self._history: collections.OrderedDict[int, Frame] = collections.OrderedDict()
        self.history_size = max(1, history)
        #: Objects whose re-grounding is queued or running (never queue one twice).
        self.regrounding: set[int] = set()
        #: object id -> monotonic time of the last (re-)grounding.
        self.last_reground: dict[int, float] = {}
        #: object id -> the referring expression that re-grounds it (None: SAM-2 prompt only).
        self.expressions: dict[int, str | None] = {}
        # ROS entities, set by the node.
        self.subscription: Any = None
        self.masks_pub: Any = None
        self.objects_pub: Any = None
        self.overlay_pub: Any = None
        #: depth.CameraDepth when depth_enabled (3D input, publishers, counters), else None.
        self.depth: Any = None
        self.detections_pub: Any = None  # vision_msgs/Detection2DArray, when vision_msgs is installed
        self.last_overlay = 0.0
        self.qos_warned = False
        self.transport_warned = False
        self.subscribed_at = 0.0

    def topic(self, name: str) -> str:
        """This camera's topic ``name`` (relative, so the node namespace applies)."""
        return self.prefix + name

    # -- the frame intake side ---------------------------------------------------------------

    def offer(self, msg: Any) -> bool:
        """Keep ``msg`` as the newest frame. Returns True when it replaced an unprocessed one."""
        now = time.monotonic()
        with self._lock:
            replaced = self._pending is not None
            self._pending = (msg, now)
            self.stats.received += 1
            if replaced:
                self.stats.dropped += 1
        return replaced

    def has_pending(self) -> bool:
        with self._lock:
            return self._pending is not None

    def take(self) -> tuple[Any, float] | None:
        """The waiting message and its arrival time (the slot is emptied), or None."""
        with self._lock:
            pending, self._pending = self._pending, None
            return pending

    # -- results ------------------------------------------------------------------------------

    def remember(self, frame: Frame) -> None:
        """Record a processed frame as the newest, and in the recent ring when due."""
        with self._lock:
            self._latest = frame
            key = stamp_ns(frame.header)
            if key:
                self._history[key] = frame
                self._history.move_to_end(key)
                while len(self._history) > self.history_size:
                    self._history.popitem(last=False)
            if not self._recent or frame.received - self._recent[-1].received >= self.recent_period:
                self._recent.append(frame)

    @property
    def latest(self) -> Frame | None:
        with self._lock:
            return self._latest

    def frame_at(self, stamp: int) -> Frame | None:
        """The processed frame whose header stamp is ``stamp`` (ns), if still held."""
        with self._lock:
            return self._history.get(stamp)

    def held_stamps(self) -> tuple[int, int, int] | None:
        """(count, oldest, newest) stamps (ns) of the held frames, or None when none is held."""
        with self._lock:
            if not self._history:
                return None
            keys = list(self._history)
            return len(keys), keys[0], keys[-1]

    def recent(self, count: int) -> list[Frame]:
        """Up to ``count`` recent frames, oldest first, the newest frame always last."""
        with self._lock:
            frames = list(self._recent)
            latest = self._latest
        if latest is not None and (not frames or frames[-1] is not latest):
            frames.append(latest)
        return frames[-count:]

    def resize_recent(self, count: int) -> None:
        with self._lock:
            if self._recent.maxlen != count:
                self._recent = collections.deque(self._recent, maxlen=max(1, count))

    def on_added(self, object_id: int, expression: str | None) -> None:
        """Remember how to re-ground a new object (and that it was grounded just now)."""
        self.expressions[object_id] = expression
        self.last_reground[object_id] = time.monotonic()

    def forget_objects(self, ids: Sequence[int]) -> None:
        for object_id in ids:
            self.regrounding.discard(object_id)
            self.last_reground.pop(object_id, None)
            self.expressions.pop(object_id, None)


def stamp_ns(header_or_time: Any) -> int:
    """A header's (or builtin_interfaces/Time's) stamp in nanoseconds; 0 for a zero stamp."""
    t = getattr(header_or_time, "stamp", header_or_time)
    return int(t.sec) * 1_000_000_000 + int(t.nanosec)


class FrameScheduler:
    """Round-robin over cameras with a waiting frame; wakes the tracking loop on new frames."""

    def __init__(self, cameras: Sequence[Camera]):
        self.cameras = list(cameras)
        self._cond = threading.Condition()
        self._next = 0

    def offer(self, camera: Camera, msg: Any) -> None:
        camera.offer(msg)
        with self._cond:
            self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def next_ready(self, timeout: float) -> Camera | None:
        """The next camera (after the last one served) with a waiting frame; None on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                n = len(self.cameras)
                for k in range(n):
                    camera = self.cameras[(self._next + k) % n]
                    if camera.has_pending():
                        self._next = (self._next + k + 1) % n
                        return camera
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
