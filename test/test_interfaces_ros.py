"""The generated interfaces are real: a separate process publishes every message type, calls every
service type and runs the Chat action over loopback DDS; this process checks every field."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy comes from the venv made by scripts/setup.sh")
from rclpy.action import ActionServer  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy  # noqa: E402

PEERS = Path(__file__).resolve().parent / "peers"
sys.path.insert(0, str(PEERS))
import interface_samples as s  # noqa: E402

from sa2va_msgs.action import Chat  # noqa: E402
from sa2va_msgs.srv import AddObject, Ask, DescribeRegion, RemoveObjects, Segment  # noqa: E402


class Receiver(Node):
    """Subscribes to every sample topic and serves every sample service / the action."""

    def __init__(self) -> None:
        super().__init__("interface_receiver")
        qos = QoSProfile(
            depth=10,
            reliability=QoSReliabilityPolicy.RELIABLE,
            durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.received: dict[str, object] = {}
        for name, (msg_type, _) in s.MESSAGES.items():
            self.create_subscription(
                msg_type, f"sample/{name}", lambda m, n=name: self.received.__setitem__(n, m), qos
            )
        self.create_service(Segment, "sample/segment", self.segment)
        self.create_service(Ask, "sample/ask", self.ask)
        self.create_service(DescribeRegion, "sample/describe_region", self.describe)
        self.create_service(AddObject, "sample/add_object", self.add_object)
        self.create_service(RemoveObjects, "sample/remove_objects", self.remove)
        ActionServer(self, Chat, "sample/chat", self.chat)

    def segment(self, req, res):
        res.success = req.track and req.image == s.image(1) and req.camera == "front"
        res.text = f"{req.prompt}|{int(req.track)}"
        res.objects = [s.tracked_object(1)]
        res.masks = s.png(1)
        return res

    def ask(self, req, res):
        res.success = req.source == Ask.Request.SOURCE_RECENT_FRAMES and req.image.width == 0
        res.text, res.raw_text = f"{req.question}|{req.source}", req.camera
        return res

    def describe(self, req, res):
        res.success = req.mask == s.image(2)
        res.text = f"{req.point_x},{req.point_y},{req.object_id},{req.box.width}"
        res.mask = s.png(2)
        return res

    def add_object(self, req, res):
        res.success = (
            list(req.points_x) == [1.0, 2.0] and list(req.point_labels) == [1, 0] and req.label == "cup"
        )
        res.object_id = len(req.points_y)
        return res

    def remove(self, req, res):
        res.removed = [i for i in req.object_ids if i < 10]
        res.unknown = [i for i in req.object_ids if i >= 10]
        res.success = not res.unknown
        return res

    def chat(self, handle):
        goal = handle.request
        words = [goal.prompt, *goal.history_user, *goal.history_assistant]
        text = ""
        for i, word in enumerate(words):
            delta = word if i == 0 else " " + word
            text += delta
            handle.publish_feedback(Chat.Feedback(text=text, delta=delta, tokens=i + 1))
            time.sleep(0.05)
        handle.succeed()
        return Chat.Result(success=len(words) <= goal.max_new_tokens, text=text, raw_text=text)


@pytest.mark.ros
def test_every_interface_crosses_processes(ros_env):
    rclpy.init()
    node = Receiver()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        peer = subprocess.run(
            [sys.executable, str(PEERS / "interface_peer.py")],
            env=ros_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        deadline = time.monotonic() + 10
        while len(node.received) < len(s.MESSAGES) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()
    assert peer.returncode == 0, f"peer failed:\n{peer.stdout}\n{peer.stderr}"
    assert set(node.received) == set(s.MESSAGES), f"missing messages: {set(s.MESSAGES) - set(node.received)}"
    for name, (_, make) in s.MESSAGES.items():
        assert node.received[name] == make(3), f"{name} arrived with different fields"
    received = node.received["object_array"]
    assert received.objects[0].bbox.x_offset == 13 and received.objects[1].state == 2
    assert received.header.stamp.sec == 1700000003 and received.step_time == 0.75
