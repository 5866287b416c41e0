"""/diagnostics for the node: one status for the model and the language worker, one per camera.

What operators ask first when "nothing comes out": is the model loaded, do frames arrive, at
what rate are they processed, how many are dropped or refused, how late are the masks, is
the request queue full, how much GPU memory is in use. Each period's rates come from the
difference of the counters since the previous report.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from .camera import Camera

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


@dataclass
class NodeSnapshot:
    """Node-level facts for one report."""

    state: str  # unconfigured / loading / inactive / active / failed
    model: str
    device: str
    message: str = ""
    queue_depth: int = 0
    queue_size: int = 0
    background_depth: int = 0
    rejected: int = 0
    completed: int = 0
    worker_busy_s: float = 0.0
    gpu_memory_bytes: int | None = None
    rss_bytes: int = 0
    #: Request messages the middleware reported lost before they reached the node.
    requests_lost: int = 0


def _kv(key: str, value: object) -> KeyValue:
    return KeyValue(key=key, value=str(value))


def _ms(values: Sequence[float]) -> str:
    return f"{1000.0 * statistics.fmean(values):.1f}" if values else "n/a"


class Diagnostics:
    """Builds a DiagnosticArray per period; keeps the previous counters for rates."""

    def __init__(self, node_name: str):
        self.node_name = node_name
        self._previous: dict[str, tuple[float, int, int]] = {}
        #: camera -> (bad frames counted, the newest refusal, frames processed when it was seen,
        #: monotonic time it was seen): a refusal stays in the message until a frame is tracked.
        self._refusals: dict[str, tuple[int, str, int, float]] = {}
        self._previous_busy: tuple[float, float] | None = None

    def build(
        self, stamp, node: NodeSnapshot, cameras: Sequence[Camera], topic_of, depth_of=None
    ) -> DiagnosticArray:
        """``topic_of(camera)`` gives the camera's input topic name for the messages;
        ``depth_of(camera)`` its 3D input's (level, message, [(key, value)]) or None (no depth)."""
        now = time.monotonic()
        array = DiagnosticArray()
        array.header.stamp = stamp
        array.status.append(self._node_status(node, now))
        for camera in cameras:
            status = self._camera_status(camera, topic_of(camera), node.state, now)
            depth = depth_of(camera) if depth_of is not None else None
            if depth is not None:
                level, message, values = depth
                status.values.extend(_kv(k, v) for k, v in values)
                if level > status.level:  # a 3D problem shows when 2D is fine (2D problems come first)
                    status.level, status.message = level, message
            array.status.append(status)
        return array

    def _node_status(self, node: NodeSnapshot, now: float) -> DiagnosticStatus:
        level, message = OK, node.message or node.state
        if node.state in ("unconfigured", "failed"):
            level = ERROR if node.state == "failed" else WARN
        elif node.state == "loading":
            level = WARN
        elif node.queue_size and node.queue_depth >= node.queue_size:
            level, message = WARN, "language queue full: requests are being rejected"
        busy_fraction = "n/a"
        if self._previous_busy is not None and now > self._previous_busy[0]:
            busy_fraction = (
                f"{(node.worker_busy_s - self._previous_busy[1]) / (now - self._previous_busy[0]):.2f}"
            )
        self._previous_busy = (now, node.worker_busy_s)
        values = [
            _kv("state", node.state),
            _kv("model", node.model),
            _kv("device", node.device),
            _kv("language queue depth", node.queue_depth),
            _kv("language queue size", node.queue_size),
            _kv("re-grounding queue depth", node.background_depth),
            _kv("requests rejected", node.rejected),
            _kv("requests completed", node.completed),
            _kv("language worker busy fraction", busy_fraction),
            _kv("requests lost in transport", node.requests_lost),
            _kv("resident memory (MiB)", f"{node.rss_bytes / 2**20:.0f}"),
        ]
        if node.gpu_memory_bytes is not None:
            values.append(_kv("GPU memory allocated (MiB)", f"{node.gpu_memory_bytes / 2**20:.0f}"))
        return DiagnosticStatus(
            level=level,
            name=f"{self.node_name}: model",
            hardware_id=node.device,
            message=message,
            values=values,
        )

    def _refusal(self, camera: Camera, now: float) -> str:
        """The message for the camera's newest refused frame, or "" when there is nothing to say.

        A refusal (a PNG bomb, an unsupported encoding) is shown from the report after it until a
        frame is tracked again, not for one period only: after a single bad frame nothing else
        arrives, and a message that said "no image in the last 0.5 s" (or a report that came
        before the tracking thread got to the frame) hid why. Bad frames among good ones still show
        in the period they came in.
        """
        stats = camera.stats
        seen_count, error, processed_then, seen_at = self._refusals.get(camera.name, (0, "", 0, now))
        if stats.last_error and (stats.bad_frames != seen_count or stats.last_error != error):
            seen_count, error, processed_then, seen_at = stats.bad_frames, stats.last_error, -1, now
        if not error:
            return ""
        fresh = processed_then == -1
        if fresh:
            processed_then = stats.processed
        self._refusals[camera.name] = (seen_count, error, processed_then, seen_at)
        if not fresh and stats.processed != processed_then:
            return ""  # a frame was tracked since: the stream is fine again
        ago = f" {now - seen_at:.0f} s ago" if now - seen_at >= 1.0 else ""
        return f"last frame refused{ago}: {error}"

    def _camera_status(self, camera: Camera, topic: str, state: str, now: float) -> DiagnosticStatus:
        stats = camera.stats
        received, processed = stats.received, stats.processed
        t0, r0, p0 = self._previous.get(camera.name, (now, received, processed))
        self._previous[camera.name] = (now, received, processed)
        dt = now - t0
        in_rate = (received - r0) / dt if dt > 0 else 0.0
        out_rate = (processed - p0) / dt if dt > 0 else 0.0
        timings = list(stats.timings)
        stats.timings.clear()
        steps = [t[0] for t in timings]
        latencies = [t[1] for t in timings]
        stamp_latencies = [t[2] for t in timings if t[2] is not None]
        refusal = self._refusal(camera, now)
        level, message = OK, "tracking"
        if state == "active" and received == 0 and stats.lost_in_transport:
            level, message = WARN, f"images on {topic} are lost in transport (the log says why)"
        elif state == "active" and received == 0:
            level, message = WARN, f"no image received on {topic}"
        elif state == "active" and refusal:
            level, message = WARN, refusal
        elif state == "active" and dt > 0 and in_rate == 0.0:
            level, message = WARN, f"no image in the last {dt:.1f} s on {topic}"
        elif state != "active":
            message = f"node {state}"
        objects = camera.latest.objects if camera.latest is not None else []
        values = [
            _kv("topic", topic),
            _kv("input rate (Hz)", f"{in_rate:.2f}"),
            _kv("output rate (Hz)", f"{out_rate:.2f}"),
            _kv("frames received", received),
            _kv("frames processed", processed),
            _kv("frames dropped (newer frame arrived first)", stats.dropped),
            _kv("bad frames", stats.bad_frames),
            _kv("last bad frame", self._refusals[camera.name][1] if camera.name in self._refusals else ""),
            _kv("frames lost in transport", stats.lost_in_transport),
            _kv("tracker step (ms)", _ms(steps)),
            _kv("receive to publish latency (ms)", _ms(latencies)),
            _kv("stamp to publish latency (ms)", _ms(stamp_latencies)),
            _kv("objects", len(objects)),
            _kv("objects tracking", sum(o.state == "tracking" for o in objects)),
        ]
        return DiagnosticStatus(
            level=level,
            name=f"{self.node_name}: camera {camera.name or '(default)'}",
            hardware_id=topic,
            message=message,
            values=values,
        )
