"""Camera frames are taken by the node's own thread (sa2va_ros/node/frame_intake.py), never by an
executor: a real Sa2VANode in this process tracks frames that a planner publishes while nothing
spins the node, stops taking them when deactivated and takes them again when reactivated. And an
rclpy executor never runs the callback of a subscription in a TakenByFrameIntake group.
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
from node_harness import Planner, node_args, write_model  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from sa2va_ros.node.frame_intake import TakenByFrameIntake  # noqa: E402
from sa2va_ros.node.image_codec import array_to_image  # noqa: E402
from sa2va_ros.node.node import Sa2VANode  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]
#: Its own namespace and name: no later test's node or planner meets this one's graph entries.
NS = "/intake_test"


def frame(sec: int) -> Image:
    rgb = np.random.default_rng(sec).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    msg = array_to_image(rgb, None, "rgb8")
    msg.header.stamp.sec = sec
    return msg


def masks_for(planner: Planner, first: int, count: int, timeout: float = 60.0) -> set[int]:
    """Publish frames stamped first, first + 1, ... until ``count`` of them came back as masks."""
    got: set[int] = set()
    sec = first
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        planner.publish(f"{NS}/image", frame(sec))
        time.sleep(0.2)
        got = {m.header.stamp.sec for m in planner.messages[f"{NS}/masks"] if m.header.stamp.sec >= first}
        sec += 1
    return got


def intake_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sa2va-frames"]


def test_frames_are_tracked_while_no_executor_spins_the_node(tmp_path):
    model = write_model(tmp_path / "model", force_seg=True)
    rclpy.init()
    context = rclpy.Context()
    rclpy.init(context=context)
    params = {"model": str(model), "device": "cpu", "autostart": False, "diagnostics_period": 60.0}
    node = Sa2VANode(
        "sa2va", context=context, cli_args=node_args(params, "intake_node") + ["-r", f"__ns:={NS}"]
    )
    planner = Planner("intake_planner", node=f"{NS}/intake_node")
    planner.listen(f"{NS}/masks", Image)
    try:
        assert node.bring_up()  # configure + activate in this thread; no executor has the node
        assert len(intake_threads()) == 1
        assert len(masks_for(planner, 100, 3)) >= 3, "frames were not tracked without an executor"
        camera = node._cameras[0]
        assert camera.stats.received >= camera.stats.processed >= 3

        t0 = time.monotonic()
        node.trigger_deactivate()
        assert time.monotonic() - t0 < 5.0, "deactivate waited for the intake thread"
        assert not intake_threads(), "the intake thread outlived deactivate"
        received = camera.stats.received
        for sec in range(200, 205):
            planner.publish(f"{NS}/image", frame(sec))
            time.sleep(0.05)
        time.sleep(0.5)
        assert camera.stats.received == received, "frames were taken while the node was inactive"

        node.trigger_activate()
        assert len(masks_for(planner, 300, 2)) >= 2, "frames were not tracked after reactivating"
        assert len(intake_threads()) == 1
    finally:
        planner.close()
        node.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        rclpy.shutdown()
    assert not intake_threads()


def test_executors_leave_frame_intake_subscriptions_alone():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("intake_group", context=context)
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    called: dict[str, int] = {"intake": 0, "other": 0}

    def count(name: str):
        def on_message(_msg: String) -> None:
            called[name] += 1

        return on_message

    node.create_subscription(String, "frames", count("intake"), qos, callback_group=TakenByFrameIntake())
    node.create_subscription(String, "frames", count("other"), qos)
    pub = node.create_publisher(String, "frames", qos)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 10
        while pub.get_subscription_count() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        for i in range(5):
            pub.publish(String(data=str(i)))
        deadline = time.monotonic() + 10
        while called["other"] < 5 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        for _ in range(5):  # nothing else is left for the executor to run
            executor.spin_once(timeout_sec=0.05)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert called == {"intake": 0, "other": 5}
