"""3D end to end over loopback DDS: the node in its own process with depth_enabled, the demo
camera (colour + registered depth + camera_info of a scene at known distances) in another, and
this test process as the planner; a second camera ("rear") fed by this process with bad depth
input, which must give clear statuses while its 2D tracking goes on.

The tiny checkpoint has random weights, so masks that come from the language model or from
SAM-2's memory are not object-shaped. The disc is therefore prompted with its own mask
(AddObject): on its grounding frame, SAM-2 (the real code) outputs that mask, and the 3D
position the node publishes for it must match the scene's true disc position.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy comes from the venv made by scripts/setup.sh")

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from node_harness import Planner, Process, node_args, ros_environment, write_model  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, RegionOfInterest  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from sa2va_msgs.msg import ObjectArray, TrackedObject  # noqa: E402
from sa2va_msgs.srv import AddObject, RemoveObjects, Segment  # noqa: E402
from sa2va_ros.demo_camera import DISTANCES, intrinsics, render, render_labels  # noqa: E402
from sa2va_ros.node.image_codec import array_to_image  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(600)]
W, H = 320, 240


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node_depth")
    model = write_model(tmp / "model", force_seg=True)
    env = ros_environment(tmp)
    rclpy.init()
    params = {
        "model": str(model),
        "device": "cpu",
        "cameras": ["", "rear"],
        "depth_enabled": True,
        "image_qos_reliability": "reliable",
        "presence_threshold": 0.3,
        "max_new_tokens": 32,
        "diagnostics_period": 0.5,
        "depth_timeout": 1.0,
    }
    node = Process("sa2va_node", node_args(params), env, tmp)
    camera = Process(
        "sa2va_demo_camera",
        ["--ros-args"]
        + sum((["-p", p] for p in (f"width:={W}", f"height:={H}", "rate:=5.0", "reliability:=reliable")), [])
        + ["-p", "still:=true", "-p", "frame_id:=demo_optical_frame"],
        env,
        tmp,
    )
    planner = Planner()
    for topic, kind in [
        ("objects", ObjectArray),
        ("objects_markers", MarkerArray),
        ("objects_cloud", PointCloud2),
        ("rear/objects", ObjectArray),
        ("/diagnostics", DiagnosticArray),
    ]:
        planner.listen(topic, kind)
    try:
        first = planner.wait_for("objects", timeout=180)
        assert first is not None, f"no objects from the node; its log:\n{node.log()}"
        yield planner, node
    finally:
        planner.close()
        node_rc = node.stop()
        camera.stop()
        rclpy.shutdown()
    assert node_rc == 0, f"sa2va_node did not exit cleanly ({node_rc}):\n{node.log()[-3000:]}"


def disc_truth() -> np.ndarray:
    """The visible-surface centroid of the demo scene's disc (a flat cut-out at a known distance)."""
    fx, fy, cx, cy = intrinsics(W, H)
    v, u = np.nonzero(render_labels(0, W, H) == 1)
    z = DISTANCES["disc"]
    return np.array([((u - cx) / fx).mean() * z, ((v - cy) / fy).mean() * z, z])


def xyz(p) -> np.ndarray:
    return np.array([p.x, p.y, p.z])


def test_objects_markers_and_cloud_carry_the_true_3d_position(system):
    planner, node = system
    mask = array_to_image((render_labels(0, W, H) == 1).astype(np.uint8) * 255)
    after = planner.count("objects")
    res = planner.call(AddObject, "add_object", AddObject.Request(label="disc", mask=mask))
    assert res.success, res.message
    oid = res.object_id

    def grounded(msg):
        return any(o.id == oid and o.state == TrackedObject.STATE_TRACKING for o in msg.objects)

    msg = planner.wait_for("objects", grounded, timeout=60, after=after)
    assert msg is not None, node.log()[-3000:]
    obj = next(o for o in msg.objects if o.id == oid)
    truth = disc_truth()
    assert obj.position_valid, obj.position_status
    assert obj.position_frame_id == "demo_optical_frame"
    err = np.linalg.norm(xyz(obj.position) - truth)
    assert err <= 0.01 + 0.01 * truth[2], (
        f"3D position {xyz(obj.position)} vs true {truth}: {err * 100:.1f} cm"
    )
    assert abs(obj.size.z) <= 0.02 + 0.02 * truth[2], "a flat disc has no depth extent"
    assert obj.depth_points >= 20
    # Markers: a box and a label with the object's id, in camera_info's frame.
    markers = planner.wait_for(
        "objects_markers",
        lambda m: any(k.ns == "objects" and k.id == oid and k.action == Marker.ADD for k in m.markers),
        timeout=30,
    )
    assert markers is not None, "no box marker for the object"
    box = next(k for k in markers.markers if k.ns == "objects" and k.id == oid)
    label = next(k for k in markers.markers if k.ns == "labels" and k.id == oid)
    assert box.type == Marker.CUBE and box.header.frame_id == "demo_optical_frame"
    assert label.type == Marker.TEXT_VIEW_FACING and "disc" in label.text
    # The cloud: x, y, z and object_id, points of this object at the disc's distance.
    cloud = planner.wait_for(
        "objects_cloud", lambda c: c.width > 0 and c.header.frame_id == "demo_optical_frame", timeout=30
    )
    assert cloud is not None, "no object cloud while subscribed"
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "object_id"]
    dtype = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("object_id", "<u4")])
    points = np.frombuffer(bytes(cloud.data), dtype)
    assert cloud.point_step == 16 and len(points) == cloud.width
    ids = set(points["object_id"].tolist())
    assert oid in ids
    # Removing the object deletes its markers.
    after_markers = planner.count("objects_markers")
    removed = planner.call(RemoveObjects, "remove_objects", RemoveObjects.Request(object_ids=[oid]))
    assert removed.success, removed.message
    gone = planner.wait_for(
        "objects_markers",
        lambda m: any(k.id == oid and k.action == Marker.DELETE for k in m.markers),
        timeout=30,
        after=after_markers,
    )
    assert gone is not None, "no DELETE marker after the object was removed"


def test_segment_reply_and_language_objects_carry_3d_fields(system):
    planner, _ = system
    res = planner.call(Segment, "segment", Segment.Request(prompt="the red circle", track=False))
    assert res.success, res.message
    assert res.objects, "force_seg: every answer grounds an object"
    for obj in res.objects:
        # Random-weight masks: a position or the reason there is none, always in the camera's frame.
        assert obj.position_frame_id == "demo_optical_frame"
        assert obj.position_valid or obj.position_status
        if obj.position_valid:
            assert 0.8 <= obj.position.z <= 3.1, "positions lie in the scene's depth range"


# --------------------------------------------------------------------------- bad input on "rear"


def _info(k) -> CameraInfo:
    info = CameraInfo(width=W, height=H, distortion_model="plumb_bob", d=[0.0] * 5)
    info.k = list(map(float, k))
    info.header.frame_id = "rear_optical_frame"
    return info


GOOD_K = [200.0, 0.0, (W - 1) / 2, 0.0, 200.0, (H - 1) / 2, 0.0, 0.0, 1.0]


def _feed(planner, seconds: float, info=None, depth=None, depth_offset=0.0, stop=None, sec0=[1000]) -> None:  # noqa: B006
    """Colour frames on rear/image at 5 Hz, each preceded by ``depth()`` and ``info`` (same stamp)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and not (stop is not None and stop.is_set()):
        sec0[0] += 1
        colour = array_to_image(render(0, W, H), encoding="rgb8")
        colour.header.stamp.sec, colour.header.frame_id = sec0[0], "rear"
        if info is not None:
            info.header.stamp = colour.header.stamp
            planner.publish("rear/camera_info", info)
        if depth is not None:
            d = depth()
            d.header.stamp.sec = sec0[0]
            d.header.stamp.nanosec = int(depth_offset * 1e9)
            planner.publish("rear/aligned_depth_to_color/image_raw", d)
        planner.publish("rear/image", colour)
        time.sleep(0.2)


def _good_depth() -> Image:
    return array_to_image(np.full((H, W), 1500, np.uint16), encoding="16UC1")


def _rear_status(planner, predicate, seconds: float = 15.0, **feed) -> dict:
    """The first rear diagnostics matching ``predicate`` while rear is fed (up to ``seconds``)."""
    stop = threading.Event()
    feeder = threading.Thread(target=_feed, args=(planner, seconds), kwargs={**feed, "stop": stop})
    feeder.start()
    seen = []
    counts = {t: planner.count(t) for t in ("/diagnostics", "rear/objects", "objects")}
    try:
        t0 = time.monotonic()
        while time.monotonic() < t0 + seconds:
            status = planner.diagnostics("camera rear", timeout=seconds)
            if status and predicate(status):
                return status
            seen.append((round(time.monotonic() - t0, 1), status and status["message"]))
    finally:
        stop.set()
        feeder.join()
    received = {t: planner.count(t) - n for t, n in counts.items()}
    raise AssertionError(
        f"no matching rear diagnostics; seen (s, message): {seen}; messages meanwhile: {received}"
    )


def _rear_object(planner) -> TrackedObject:
    after = planner.count("rear/objects")
    _feed(planner, 0.5)
    msg = planner.wait_for("rear/objects", lambda m: len(m.objects) > 0, timeout=20, after=after)
    assert msg is not None, "2D tracking stopped on rear"
    return msg.objects[0]


def test_bad_depth_input_gets_clear_statuses_and_2d_goes_on(system):
    planner, node = system
    _feed(planner, 1.0)  # a first frame, so an object can be prompted on it
    res = planner.call(
        AddObject,
        "add_object",
        AddObject.Request(
            camera="rear", label="box", box=RegionOfInterest(x_offset=40, y_offset=30, width=60, height=50)
        ),
    )
    assert res.success, res.message
    # No depth and no camera_info at all.
    s = _rear_status(planner, lambda s: "camera_info" in s["message"])
    assert "no camera_info received on /rear/camera_info" in s["message"]
    # K all zero.
    s = _rear_status(
        planner, lambda s: "K is all zero" in s["message"], info=_info([0.0] * 9), depth=_good_depth
    )
    assert "not calibrated" in s["message"]
    # Stamps that never match (depth stamped 0.5 s after its colour frame, slop 0.02 s).
    s = _rear_status(
        planner,
        lambda s: "do not match" in s["message"],
        info=_info(GOOD_K),
        depth=_good_depth,
        depth_offset=0.5,
    )
    assert "depth_slop" in s["message"] and int(s["frames without depth (2D only)"]) > 0
    obj = _rear_object(planner)
    assert not obj.position_valid and "no depth frame paired" in obj.position_status
    # An unsupported encoding.
    bad_encoding = lambda: array_to_image(np.zeros((H, W, 3), np.uint8), encoding="rgb8")  # noqa: E731
    s = _rear_status(
        planner, lambda s: "not supported" in s["message"], info=_info(GOOD_K), depth=bad_encoding
    )
    assert "16UC1" in s["message"] and int(s["bad depth frames"]) > 0
    # A size that fits no scaling.
    bad_size = lambda: array_to_image(np.full((100, 77), 1500, np.uint16), encoding="16UC1")  # noqa: E731
    s = _rear_status(planner, lambda s: "integer scale" in s["message"], info=_info(GOOD_K), depth=bad_size)
    # Good depth again: an object prompted with a mask gets the wall's 1.5 m on its grounding frame.
    stop = threading.Event()
    feeder = threading.Thread(
        target=_feed, args=(planner, 30.0), kwargs={"info": _info(GOOD_K), "depth": _good_depth, "stop": stop}
    )
    feeder.start()
    try:
        square = np.zeros((H, W), np.uint8)
        square[80:140, 100:180] = 255
        after = planner.count("rear/objects")
        added = planner.call(
            AddObject,
            "add_object",
            AddObject.Request(camera="rear", label="patch", mask=array_to_image(square)),
        )
        assert added.success, added.message

        def grounded(m):
            return any(o.id == added.object_id and o.state == TrackedObject.STATE_TRACKING for o in m.objects)

        msg = planner.wait_for("rear/objects", grounded, timeout=30, after=after)
    finally:
        stop.set()
        feeder.join()
    assert msg is not None, "the mask-prompted rear object was never tracked"
    patch = next(o for o in msg.objects if o.id == added.object_id)
    assert patch.position_valid, patch.position_status
    assert abs(patch.position.z - 1.5) < 0.01 + 0.015 and patch.position_frame_id == "rear_optical_frame"
    # The patch's centre, back-projected with GOOD_K: pixel (139.5, 109.5) -> x = (139.5 - 159.5) / 200 * 1.5.
    assert abs(patch.position.x - (-0.15)) < 0.03 and abs(patch.position.y - (-0.075)) < 0.03
    # The depth stream stops: 2D goes on, the status says so.
    s = _rear_status(planner, lambda s: "stopped" in s["message"], info=_info(GOOD_K))
    assert "2D tracking goes on" in s["message"]
    obj = _rear_object(planner)
    assert obj.id == res.object_id and not obj.position_valid
    assert node.alive()
