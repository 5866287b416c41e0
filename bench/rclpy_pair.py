"""The floor under bench/node_latency.py: a bare rclpy pair, no model, no sa2va node.

A "camera" process publishes a 640x480 rgb8 frame (sensor-data QoS), a "relay" process takes it
in a subscription, holds it for 50 ms (``--hold``) in a worker thread and publishes a 640x480 mono8
image back (reliable), as sa2va_node does with its tracker step and ``masks``. Printed: round trip
minus the work the relay really did (it reports it in the answer), i.e. what ROS transport and
executors alone cost, with the worker either sleeping (``--work sleep``: CPU idle) or computing
with torch (``--work torch``: CPU busy, as a tracker is). bench/node_latency.py runs the same relay
interleaved with the node, as the node's floor. The relay spins rclpy's SingleThreadedExecutor (what
``rclpy.spin`` uses); ``--executor multi`` shows what rclpy's MultiThreadedExecutor costs instead
while the worker computes, ``--executor handoff`` what sa2va_node's executor does.

    python bench/rclpy_pair.py --work sleep
    python bench/rclpy_pair.py --work torch --threads 1 [--executor single|multi|handoff]

The last line is JSON: {"work": ..., "overhead_ms_median": ..., "overhead_ms_p90": ..., ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOLD_S = 0.05


def make_executor(kind: str):
    """The relay's executor: rclpy's own (``single``: what ``rclpy.spin`` uses; ``multi``: rclpy's
    MultiThreadedExecutor with 4 threads) or the node's (``handoff``: sa2va_ros.node.executor)."""
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    if kind == "multi":
        return MultiThreadedExecutor(num_threads=4)
    if kind == "handoff":
        from sa2va_ros.node.executor import HandoffExecutor

        return HandoffExecutor(4)
    return SingleThreadedExecutor()


def relay(
    work: str, hold_s: float = HOLD_S, threads: int = 0, reliable: bool = False, executor: str = "single"
) -> None:
    """Take frames on ``pair_image``, hold each ``hold_s`` in a worker thread, answer on ``pair_back``.

    The answer's ``header.frame_id`` carries the time the work really took (seconds), so a
    receiver can subtract it exactly (bench/node_latency.py does).
    """
    import numpy as np
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from sa2va_ros.node.image_codec import array_to_image

    rclpy.init()
    node = Node("pair_relay")
    pub = node.create_publisher(
        Image, "pair_back", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    cond, slot = threading.Condition(), []

    def on_image(msg: Image) -> None:
        with cond:
            slot[:] = [msg]
            cond.notify()

    image_qos = qos_profile_sensor_data
    if reliable:  # as sa2va_node with image_qos_reliability:=reliable
        image_qos = QoSProfile(depth=qos_profile_sensor_data.depth, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, "pair_image", on_image, image_qos)
    labels = np.zeros((480, 640), np.uint8)

    def worker() -> None:
        import torch

        if threads > 0:
            torch.set_num_threads(threads)
        a = torch.randn(128, 128)  # small steps: the hold ends within a fraction of a millisecond
        while True:
            with cond:
                while not slot:
                    cond.wait()
                msg = slot.pop()
            t0 = time.perf_counter()
            if work == "sleep":
                time.sleep(hold_s)
            else:
                while time.perf_counter() - t0 < hold_s:
                    a @ a
            msg.header.frame_id = f"{time.perf_counter() - t0:.6f}"
            pub.publish(array_to_image(labels, msg.header, "mono8"))

    threading.Thread(target=worker, daemon=True).start()
    spinner = make_executor(executor)
    spinner.add_node(node)
    try:
        spinner.spin()
    except (KeyboardInterrupt, ExternalShutdownException):  # SIGTERM from the camera / node_latency
        pass


def camera(frames: int) -> list[float]:
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from sa2va_ros.node.image_codec import array_to_image

    rclpy.init()
    node = Node("pair_camera")
    pub = node.create_publisher(Image, "pair_image", qos_profile_sensor_data)
    arrived: dict[tuple[int, int], float] = {}
    event = threading.Event()

    def on_back(msg: Image) -> None:
        # Minus the work the relay really did (its frame_id), not the nominal hold.
        arrived[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = time.time() - float(msg.header.frame_id)
        event.set()

    node.create_subscription(
        Image, "pair_back", on_back, QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    )
    executor = SingleThreadedExecutor()  # one subscription; this thread publishes
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    overheads: list[float] = []
    deadline = time.monotonic() + 60 + 2 * frames
    while len(overheads) < frames and time.monotonic() < deadline:
        msg = array_to_image(frame, None, "rgb8")
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = now // 10**9, now % 10**9
        event.clear()
        pub.publish(msg)
        if not event.wait(1.0 if not overheads else 10.0):
            continue  # discovery not done yet, or a best-effort frame lost: send another
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if key in arrived:
            overheads.append(1000 * (arrived[key] - now / 1e9))
    return overheads


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", choices=("sleep", "torch"), default="sleep")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--hold", type=float, default=HOLD_S, help="seconds of work per frame (default 0.05)")
    p.add_argument("--threads", type=int, default=0, help="torch threads of the relay's work (0: torch's)")
    p.add_argument(
        "--executor",
        choices=("single", "multi", "handoff"),
        default="single",
        help="the relay's executor: rclpy's SingleThreadedExecutor (default), rclpy's "
        "MultiThreadedExecutor, or sa2va_node's HandoffExecutor",
    )
    p.add_argument("--reliable", action="store_true", help=argparse.SUPPRESS)  # relay: reliable images
    p.add_argument("--role", choices=("camera", "relay"), default="camera", help=argparse.SUPPRESS)
    args = p.parse_args()
    # DDS never leaves this machine; a domain no test or other bench here holds (unless given).
    from sa2va_ros.testing.ros_domain import isolate

    isolate()
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_large_data.xml"))
    sys.path.insert(0, str(REPO))
    if args.role == "relay":
        relay(args.work, args.hold, args.threads, args.reliable, args.executor)
        return 0
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            *("--role", "relay", "--work", args.work, "--hold", str(args.hold)),
            *("--threads", str(args.threads), "--executor", args.executor),
        ],
        env=os.environ,
    )
    try:
        overheads = camera(args.frames)
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:  # an rclpy process may hang in shutdown
            child.kill()
            child.wait(10)
    if not overheads:
        print("no frame came back", file=sys.stderr)
        return 1
    overheads.sort()
    result = {
        "work": args.work,
        "executor": args.executor,
        "frames": len(overheads),
        "overhead_ms_median": round(statistics.median(overheads), 1),
        "overhead_ms_p90": round(overheads[int(0.9 * (len(overheads) - 1))], 1),
        "overhead_ms_max": round(overheads[-1], 1),
        "overhead_ms_mean": round(statistics.fmean(overheads), 1),
    }
    print(json.dumps(result))
    os._exit(0)  # the executor thread may still be spinning


if __name__ == "__main__":
    sys.exit(main())
