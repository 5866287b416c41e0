"""sa2va_node with ``language_process:=true``: the same answers over ROS, the model in a child process.

The node runs in its own process with a tiny model whose answers always ground an object; this
test is the camera and the planner. The language model's process must appear under the node and
go away with it.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy comes from the venv made by scripts/setup.sh")

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from node_harness import Planner, Process, node_args, ros_environment, write_model  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from sa2va_msgs.msg import Command, ObjectArray, Reply  # noqa: E402
from sa2va_msgs.srv import Ask, Segment  # noqa: E402
from sa2va_ros.demo_camera import render  # noqa: E402
from sa2va_ros.node.image_codec import array_to_image  # noqa: E402
from sa2va_ros.node.mask_codec import decode_mask  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(600)]
W, H = 160, 120


def test_node_with_the_language_model_in_its_own_process(tmp_path):
    model = write_model(tmp_path / "model", force_seg=True)
    env = ros_environment(tmp_path)
    rclpy.init()
    params = {
        "model": str(model),
        "device": "cpu",
        "language_process": True,
        "presence_threshold": 0.3,
        "max_new_tokens": 16,
    }
    pinned = len(os.sched_getaffinity(0)) >= 2
    if pinned:  # tracking and the language model on CPUs of their own (2 CPUs are enough)
        first, second = sorted(os.sched_getaffinity(0))[:2]
        params.update(tracking_cpus=str(first), language_cpus=str(second))
    node = Process("sa2va_node", node_args(params), env, tmp_path)
    planner = Planner()
    for topic, kind in [("masks", Image), ("objects", ObjectArray), ("reply", Reply)]:
        planner.listen(topic, kind)
    stamp = [100]

    def frame() -> None:
        msg = array_to_image(render(stamp[0], W, H), encoding="rgb8")
        msg.header.stamp.sec = stamp[0]
        stamp[0] += 1
        planner.publish("image", msg, reliable=False)

    try:
        deadline = time.monotonic() + 240
        while planner.count("masks") == 0 and time.monotonic() < deadline:
            assert node.alive(), node.log()
            frame()
            time.sleep(0.3)
        assert planner.count("masks"), f"no masks from the node; its log:\n{node.log()}"
        children = psutil.Process(node.proc.pid).children(recursive=True)
        assert any("spawn" in " ".join(c.cmdline()) for c in children), [c.cmdline() for c in children]
        # language_sched_idle (the default) puts every thread of the language process under
        # SCHED_IDLE and none of the node's: a lowered thread of the node would be preempted while
        # holding the tracking loop's interpreter lock.
        child = next(c for c in children if "spawn" in " ".join(c.cmdline()))
        assert {os.sched_getscheduler(t.id) for t in child.threads()} == {os.SCHED_IDLE}
        assert {os.sched_getscheduler(t.id) for t in psutil.Process(node.proc.pid).threads()} == {
            os.SCHED_OTHER
        }
        assert f"language process {child.pid}: SCHED_IDLE" in node.log()
        if pinned:  # every thread of the language process on its CPU; the tracking thread on its own
            assert {frozenset(os.sched_getaffinity(t.id)) for t in child.threads()} == {frozenset({second})}
            node_cpus = [
                frozenset(os.sched_getaffinity(t.id)) for t in psutil.Process(node.proc.pid).threads()
            ]
            assert frozenset({first}) in node_cpus, node_cpus
            assert node_cpus[0] == frozenset(os.sched_getaffinity(0)), "the node's main thread was pinned"

        reply = planner.request(Command.ADD, "add-1", text="the red circle")
        assert reply is not None and reply.success, reply and reply.message
        assert reply.objects and reply.objects[0].label
        tracked = reply.objects[0].id
        for _ in range(5):
            frame()
            time.sleep(0.2)
        objects = planner.wait_for("objects", lambda m: any(o.id == tracked for o in m.objects), timeout=30)
        assert objects is not None, "the grounded object is not tracked"

        seg = planner.call(Segment, "segment", Segment.Request(prompt="the red circle", track=False))
        assert seg.success and seg.objects, seg.message
        assert decode_mask(seg.objects[0].mask).shape[1] == W  # each object's own mask (PNG)
        bad = planner.call(Ask, "ask", Ask.Request(question="   ", source=0))
        assert not bad.success and "empty" in bad.message
        ok = planner.call(Ask, "ask", Ask.Request(question="What is this?", source=0))
        assert ok.success, ok.message
    finally:
        planner.close()
        rc = node.stop()
        rclpy.shutdown()
    assert rc == 0, node.log()[-3000:]
    time.sleep(1.0)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE], (
        "the language process outlived the node"
    )
