"""The node's 3D stage: depth + camera_info in, 3D fields, markers and an object cloud out.

ROS wiring around :mod:`sa2va_ros.depth3d` (the geometry, ROS-free). Per camera, with
``depth_enabled``:

* the depth callback (on the frame intake thread) only stores the message in a
  :class:`StampPairer` (no decoding: an unpaired frame costs nothing); the camera_info callback
  rebuilds the calibration when it changes (its undistortion table is cached);
* on the tracking thread, right after the tracker step, each colour frame takes the depth
  frame with its stamp (or the nearest within ``depth_slop``); the drawn objects' masks give
  their 3D fields on ``objects``. A frame without a partner is tracked in 2D as always and
  counted; every 3D problem (no depth, stamps not matching, bad encoding or size, K all
  zero) becomes a reason on the objects and a status in /diagnostics, never a lost frame;
* ``objects_markers`` (visualization_msgs/MarkerArray: a box and a label per object, marker
  id = object id, DELETE when the object has no position any more) and ``objects_cloud``
  (sensor_msgs/PointCloud2 with x, y, z and object_id, only while subscribed and at most
  ``cloud_rate`` per second) follow the ``objects`` message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import Point, Vector3
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from visualization_msgs.msg import Marker, MarkerArray

from sa2va_ros.depth3d import (
    CameraModel,
    CameraModelError,
    DepthImage,
    DepthImageError,
    GeometrySettings,
    ObjectGeometry,
    StampPairer,
    measure,
)

from . import params as P
from .messages import fill_object, is_drawn
from .overlay import color_of

OK, WARN = DiagnosticStatus.OK, DiagnosticStatus.WARN
#: PointCloud2 layout: x, y, z float32 metres, object_id uint32 (16 bytes a point).
CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("object_id", "<u4")])
CLOUD_FIELDS = [
    PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
    PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
    PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
    PointField(name="object_id", offset=12, datatype=PointField.UINT32, count=1),
]


def settings_of(params: P.NodeParams) -> GeometrySettings:
    return GeometrySettings(
        min_depth=params.depth_min,
        max_depth=params.depth_max,
        erode_px=params.depth_erode_px,
        min_points=params.depth_min_points,
        max_points=params.cloud_points,
    )


def stamp_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass
class DepthView:
    """What a processed frame keeps of its depth, so answers about it get 3D positions too."""

    image: DepthImage
    camera: CameraModel
    frame_id: str
    settings: GeometrySettings

    def measure(self, mask: np.ndarray | None) -> ObjectGeometry | None:
        return None if mask is None else measure(mask, self.image, self.camera, self.settings)


class CameraDepth:
    """One camera's depth input, calibration, 3D publishers and counters."""

    def __init__(self, slop: float):
        self.pairer = StampPairer(slop)
        self.model: CameraModel | None = None
        self.frame_id = ""
        self.info_error = ""
        self.info_received = 0
        self.bad_depth = 0
        self.last_error = ""  # the latest depth / calibration problem, for /diagnostics
        self.with_position = 0  # objects with a position in the last frame
        self.depth_sub: Any = None
        self.info_sub: Any = None
        self.markers_pub: Any = None
        self.cloud_pub: Any = None
        self.marker_ids: set[int] = set()
        self.last_cloud = 0.0
        self._reported = (0, 0)  # pairing counters at the previous diagnostics report

    # -- the frame intake thread (frame_intake.py) --------------------------------------------

    def on_depth(self, msg: Image) -> None:
        self.pairer.add(stamp_ns(msg.header.stamp), msg)

    def on_info(self, msg: CameraInfo) -> None:
        self.info_received += 1
        self.frame_id = msg.header.frame_id
        try:
            model = CameraModel(msg.k, msg.d, msg.distortion_model, msg.width, msg.height)
        except CameraModelError as exc:
            self.model, self.info_error = None, str(exc)
            return
        self.info_error = ""
        if self.model is None or self.model.key() != model.key():
            self.model = model  # a new calibration: its undistortion table is built on first use

    # -- tracking thread ----------------------------------------------------------------------

    def view(
        self, header, colour: tuple[int, int], params: P.NodeParams, topics: tuple[str, str]
    ) -> tuple[DepthView | None, str]:
        """The depth of the colour frame ``header`` (of size ``colour`` (H, W)), or None and why not.

        Sizes are checked here, once per frame, so a depth image that cannot be registered to the
        colour image is reported even while no object is tracked."""
        self.pairer.slop = params.depth_slop
        model = self.model  # read once: the camera_info callback may replace it meanwhile
        if model is None:
            if self.info_error:
                return None, f"camera_info unusable: {self.info_error}"
            return None, f"no camera_info received on {topics[1]}"
        msg = self.pairer.match(stamp_ns(header.stamp))
        if msg is None:
            since = self.pairer.seconds_since_depth()
            if since is None:
                return None, f"no depth image received on {topics[0]}"
            gap = self.pairer.stats.last_gap
            near = f"nearest depth stamp {gap:.3f} s away" if gap is not None else "no depth frame kept"
            return (
                None,
                f"no depth frame paired with this colour frame ({near}, depth_slop {params.depth_slop:g} s)",
            )
        try:
            image = DepthImage.from_buffer(
                msg.data, msg.encoding, msg.width, msg.height, msg.step, msg.is_bigendian
            )
            model.rays(image.shape, colour)  # raises for sizes that fit no scaling (the table is cached)
        except DepthImageError as exc:
            self.bad_depth += 1
            self.last_error = str(exc)
            return None, str(exc)
        return DepthView(image, model, self.frame_id or header.frame_id, settings_of(params)), ""

    def diagnostics(
        self, state: str, params: P.NodeParams | None, topics: tuple[str, str]
    ) -> tuple[int, str, list]:
        """(level, message, [(key, value)]) of this camera's 3D input for /diagnostics."""
        stats = self.pairer.stats
        since = self.pairer.seconds_since_depth()
        timeout = params.depth_timeout if params else 1.0
        # Pairing since the previous report: a stream whose stamps stop matching (a restarted or
        # swapped driver) is reported as soon as it happens, not only when nothing ever matched.
        matched, unmatched = stats.matched - self._reported[0], stats.unmatched - self._reported[1]
        self._reported = (stats.matched, stats.unmatched)
        level, message = OK, ""
        if state == "active":
            if self.info_error:
                level, message = WARN, f"3D off: camera_info on {topics[1]} unusable: {self.info_error}"
            elif self.info_received == 0:
                level, message = WARN, f"3D off: no camera_info received on {topics[1]}"
            elif since is None:
                level, message = WARN, f"3D off: no depth image received on {topics[0]} (2D tracking goes on)"
            elif since > timeout:
                level, message = (
                    WARN,
                    f"3D off: the depth stream on {topics[0]} stopped {since:.1f} s ago "
                    "(2D tracking goes on)",
                )
            elif matched == 0 and unmatched > 0:
                gap = f"{stats.last_gap:.3f} s" if stats.last_gap is not None else "unknown"
                level, message = (
                    WARN,
                    "3D off: depth stamps do not match colour stamps (no frame paired since the last report; "
                    f"nearest {gap} away, depth_slop "
                    f"{params.depth_slop if params else 0:g} s): use depth registered to this colour camera "
                    "with synchronised stamps, or raise depth_slop",
                )
            elif self.last_error:
                level, message = WARN, f"last bad depth frame: {self.last_error}"
        self.last_error = ""
        values = [
            ("depth topic", topics[0]),
            ("camera_info topic", topics[1]),
            ("depth frames received", stats.depth_received),
            ("frames paired with depth", stats.matched),
            ("frames without depth (2D only)", stats.unmatched),
            ("bad depth frames", self.bad_depth),
            ("seconds since last depth", "n/a" if since is None else f"{since:.2f}"),
            ("objects with a 3D position", self.with_position),
            ("3D frame", self.frame_id or "n/a"),
        ]
        return level, message, values


def annotate_frame(
    depth: CameraDepth,
    header,
    colour: tuple[int, int],
    objects,
    array_msg,
    params: P.NodeParams,
    topics: tuple[str, str],
) -> tuple[DepthView | None, list[ObjectGeometry | None]]:
    """Fill the 3D fields of ``array_msg`` (the frame's ObjectArray); the results per object."""
    view, reason = depth.view(header, colour, params, topics)
    results: list[ObjectGeometry | None] = []
    frame_id = view.frame_id if view is not None else ""
    for obj, msg in zip(objects, array_msg.objects, strict=True):
        geometry = None
        why = reason
        if view is not None:
            if is_drawn(obj) and obj.mask is not None:
                try:
                    geometry = view.measure(obj.mask)
                except DepthImageError as exc:  # a size that fits no scaling: the same for every object
                    depth.bad_depth += 1
                    depth.last_error = str(exc)
                    view, reason, why, frame_id = None, str(exc), str(exc), ""
            else:
                why = "the object is not visible in this frame"
        results.append(geometry)
        fill_object(msg, geometry, frame_id, why)
    depth.with_position = sum(1 for g in results if g is not None and g.valid)
    return view, results


def markers(depth: CameraDepth, header, frame_id: str, objects, results) -> MarkerArray:
    """A box and a label per object with a position; DELETE for objects that lost theirs."""
    out = MarkerArray()
    shown: set[int] = set()
    for obj, geometry in zip(objects, results, strict=True):
        if geometry is None or not geometry.valid:
            continue
        oid = int(obj.id)
        shown.add(oid)
        r, g, b = (c / 255.0 for c in color_of(oid))
        center, size = geometry.center, np.maximum(geometry.size, 0.01)
        box = Marker(ns="objects", id=oid, type=Marker.CUBE, action=Marker.ADD)
        box.header.stamp, box.header.frame_id = header.stamp, frame_id
        box.pose.position = Point(x=float(center[0]), y=float(center[1]), z=float(center[2]))
        box.pose.orientation.w = 1.0
        box.scale = Vector3(x=float(size[0]), y=float(size[1]), z=float(size[2]))
        box.color.r, box.color.g, box.color.b, box.color.a = r, g, b, 0.45
        label = Marker(ns="labels", id=oid, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        label.header = box.header
        # Optical frame: y points down, so "above the box" is its smallest y.
        label.pose.position = Point(
            x=float(center[0]), y=float(center[1] - size[1] / 2 - 0.05), z=float(center[2])
        )
        label.pose.orientation.w = 1.0
        label.scale.z = 0.06
        label.color.r, label.color.g, label.color.b, label.color.a = r, g, b, 1.0
        label.text = f"{oid} {obj.label} {float(geometry.centroid[2]):.2f} m".strip()
        out.markers += [box, label]
    for oid in sorted(depth.marker_ids - shown):
        for ns in ("objects", "labels"):
            gone = Marker(ns=ns, id=oid, action=Marker.DELETE)
            gone.header.stamp, gone.header.frame_id = header.stamp, frame_id or depth.frame_id
            out.markers.append(gone)
    depth.marker_ids = shown
    return out


def cloud(header, frame_id: str, objects, results) -> PointCloud2:
    """The sub-sampled points of every object with a position, each tagged with its object id."""
    parts = []
    for obj, geometry in zip(objects, results, strict=True):
        if geometry is None or not geometry.valid or not len(geometry.points):
            continue
        part = np.empty(len(geometry.points), CLOUD_DTYPE)
        part["x"], part["y"], part["z"] = geometry.points[:, 0], geometry.points[:, 1], geometry.points[:, 2]
        part["object_id"] = int(obj.id)
        parts.append(part)
    points = np.concatenate(parts) if parts else np.empty(0, CLOUD_DTYPE)
    msg = PointCloud2(
        height=1,
        width=len(points),
        fields=CLOUD_FIELDS,
        is_bigendian=False,
        point_step=CLOUD_DTYPE.itemsize,
        row_step=CLOUD_DTYPE.itemsize * len(points),
        is_dense=True,
    )
    msg.header.stamp, msg.header.frame_id = header.stamp, frame_id
    msg.data = points.tobytes()
    return msg


def publish(
    depth: CameraDepth, header, view: DepthView | None, objects, results, params: P.NodeParams
) -> None:
    """Markers every frame (deletions must not be missed), the cloud while subscribed, rate-limited."""
    frame_id = view.frame_id if view is not None else depth.frame_id
    if depth.markers_pub is not None and (
        depth.marker_ids or any(g is not None and g.valid for g in results)
    ):
        depth.markers_pub.publish(markers(depth, header, frame_id, objects, results))
    if (
        view is None
        or depth.cloud_pub is None
        or params.cloud_rate <= 0
        or depth.cloud_pub.get_subscription_count() == 0
    ):
        return
    now = time.monotonic()
    if now - depth.last_cloud < 1.0 / params.cloud_rate:
        return
    depth.last_cloud = now
    depth.cloud_pub.publish(cloud(header, frame_id, objects, results))


def annotate_found(found, frame) -> None:
    """3D geometry for the objects of an answer (segment / ask replies), from the answered frame's depth."""
    view = getattr(frame, "depth", None) if frame is not None else None
    for f in found:
        if view is None:
            f.geometry = None
            continue
        try:
            f.geometry = view.measure(f.mask)
        except DepthImageError:
            f.geometry = None
        f.frame_id = view.frame_id
