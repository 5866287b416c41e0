"""The node's 3D stage (sa2va_ros/node/depth.py) without processes: real ROS message types, real
tracker result objects, rendered depth; what each input problem says and what the outputs hold."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS messages come from the venv made by scripts/setup.sh")

from sensor_msgs.msg import CameraInfo  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from sa2va_msgs.msg import ObjectArray  # noqa: E402
from sa2va_msgs.msg import TrackedObject as TrackedObjectMsg  # noqa: E402
from sa2va_ros.model.tracker import TrackedObject  # noqa: E402
from sa2va_ros.node import depth as D  # noqa: E402
from sa2va_ros.node import params as P  # noqa: E402
from sa2va_ros.node.image_codec import array_to_image  # noqa: E402

H, W = 120, 160
K = [150.0, 0.0, 79.5, 0.0, 150.0, 59.5, 0.0, 0.0, 1.0]
TOPICS = ("/aligned_depth_to_color/image_raw", "/camera_info")
PARAMS = P.NodeParams.defaults().replace(depth_enabled=True)


def _header(sec: int) -> Header:
    h = Header(frame_id="colour")
    h.stamp.sec = sec
    return h


def _info(k=K) -> CameraInfo:
    info = CameraInfo(width=W, height=H, distortion_model="plumb_bob", d=[0.0] * 5, k=list(k))
    info.header.frame_id = "cam_optical"
    return info


def _depth(sec: int, pixels=None, encoding="16UC1"):
    pixels = np.full((H, W), 2000, np.uint16) if pixels is None else pixels
    msg = array_to_image(pixels, encoding=encoding)
    msg.header.stamp.sec = sec
    return msg


def _object(oid: int, mask, state="tracking") -> TrackedObject:
    return TrackedObject(oid, f"obj{oid}", "", mask, 0.9, None, state, 0, False)


def _square(r0, r1, c0, c1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[r0:r1, c0:c1] = True
    return m


def _frame(depth: D.CameraDepth, sec: int, objects):
    array = ObjectArray(objects=[TrackedObjectMsg(id=o.id) for o in objects])
    return D.annotate_frame(depth, _header(sec), (H, W), objects, array, PARAMS, TOPICS), array


def test_each_missing_or_bad_input_gives_its_reason():
    depth = D.CameraDepth(PARAMS.depth_slop)
    objects = [_object(1, _square(40, 80, 60, 100))]
    (_, _), array = _frame(depth, 1, objects)
    assert array.objects[0].position_status == "no camera_info received on /camera_info"
    depth.on_info(_info([0.0] * 9))
    (_, _), array = _frame(depth, 1, objects)
    assert "K is all zero" in array.objects[0].position_status and not array.objects[0].position_valid
    level, message, _ = depth.diagnostics("active", PARAMS, TOPICS)
    assert level == D.WARN and "K is all zero" in message
    depth.on_info(_info())
    (_, _), array = _frame(depth, 1, objects)
    assert "no depth image received on /aligned_depth_to_color/image_raw" in array.objects[0].position_status
    depth.on_depth(_depth(5))
    (_, _), array = _frame(depth, 1, objects)
    assert (
        "no depth frame paired" in array.objects[0].position_status
        and "4.000 s away" in array.objects[0].position_status
    )
    level, message, values = depth.diagnostics("active", PARAMS, TOPICS)
    assert "do not match" in message and dict(values)["frames without depth (2D only)"] == 2
    depth.on_depth(_depth(6, np.zeros((H, W, 3), np.uint8), "rgb8"))
    (_, _), array = _frame(depth, 6, objects)
    assert "'rgb8' is not supported" in array.objects[0].position_status
    depth.on_depth(_depth(7, np.full((H, 77), 2000, np.uint16)))
    (_, _), array = _frame(depth, 7, [])  # the size is checked even with no object
    level, message, values = depth.diagnostics("active", PARAMS, TOPICS)
    assert "integer scale" in message and dict(values)["bad depth frames"] == 2
    depth.on_depth(_depth(8))
    (view, results), array = _frame(depth, 8, objects + [_object(2, _square(0, 10, 0, 10), state="lost")])
    first, lost = array.objects
    assert view is not None and first.position_valid and first.position_frame_id == "cam_optical"
    assert abs(first.position.z - 2.0) < 1e-3 and first.depth_points > 100
    assert not lost.position_valid and lost.position_status == "the object is not visible in this frame"
    assert depth.diagnostics("active", PARAMS, TOPICS)[0] == D.OK
    time.sleep(0.05)
    level, message, _ = depth.diagnostics("active", PARAMS.replace(depth_timeout=0.01), TOPICS)
    assert "stopped" in message and "2D tracking goes on" in message


def test_markers_have_stable_ids_and_are_deleted_when_the_object_goes():
    depth = D.CameraDepth(0.02)
    depth.on_info(_info())
    objects = [_object(3, _square(20, 60, 20, 60)), _object(7, _square(60, 100, 90, 140))]
    for sec in (1, 2):
        depth.on_depth(_depth(sec))
        (view, results), _ = _frame(depth, sec, objects)
        msg = D.markers(depth, _header(sec), view.frame_id, objects, results)
        assert sorted((m.ns, m.id, m.action) for m in msg.markers) == [
            ("labels", 3, Marker.ADD),
            ("labels", 7, Marker.ADD),
            ("objects", 3, Marker.ADD),
            ("objects", 7, Marker.ADD),
        ]
    box = next(m for m in msg.markers if m.ns == "objects" and m.id == 7)
    assert (
        box.type == Marker.CUBE
        and box.header.frame_id == "cam_optical"
        and abs(box.pose.position.z - 2.0) < 1e-3
    )
    label = next(m for m in msg.markers if m.ns == "labels" and m.id == 7)
    assert label.text == "7 obj7 2.00 m"
    depth.on_depth(_depth(3))
    (view, results), _ = _frame(depth, 3, objects[:1])  # object 7 is gone
    msg = D.markers(depth, _header(3), view.frame_id, objects[:1], results)
    deleted = sorted((m.ns, m.id) for m in msg.markers if m.action == Marker.DELETE)
    assert deleted == [("labels", 7), ("objects", 7)]
    assert depth.marker_ids == {3}


def test_cloud_layout_and_object_ids():
    depth = D.CameraDepth(0.02)
    depth.on_info(_info())
    depth.on_depth(_depth(1))
    objects = [_object(3, _square(20, 60, 20, 60)), _object(7, _square(60, 100, 90, 140))]
    (view, results), _ = _frame(depth, 1, objects)
    cloud = D.cloud(_header(1), view.frame_id, objects, results)
    points = np.frombuffer(bytes(cloud.data), D.CLOUD_DTYPE)
    assert cloud.point_step == 16 and cloud.width == len(points) == cloud.row_step // 16
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "object_id"]
    assert set(points["object_id"].tolist()) == {3, 7} and np.allclose(points["z"], 2.0, atol=1e-3)
    assert (points["object_id"] == 3).sum() <= PARAMS.cloud_points
