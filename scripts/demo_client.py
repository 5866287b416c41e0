"""The planner side of `make demo` (scripts/demo.sh): talk to a running sa2va node like a robot would.

Waits for the node to track the demo camera, sends the command "the red circle" on `command`,
asks a question through the `ask` service, and saves the first overlay image that shows the
tracked object as a PNG (the README's screenshot). Exits non-zero with the reason when any step
does not happen in time.

    python scripts/demo_client.py --out docs/overlay.png
    python scripts/demo_client.py --write-model .venv/demo_model   # only write the tiny model
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path


def write_model(out: Path) -> None:
    """A tiny offline checkpoint whose answers always ground an object ([SEG]).

    The weights are random, so the masks are arbitrary blobs: the demo shows the node's
    plumbing (topics, services, tracking, overlay), not segmentation quality. SAM-2 runs at
    256 px instead of 1024 (no weight depends on it) so a CPU tracks several frames a second.
    """
    from sa2va_ros.testing.sam2_writer import tiny_sam2_config
    from sa2va_ros.testing.tiny_checkpoint import write_tiny_checkpoint

    path = write_tiny_checkpoint(out, format="internvl", force_seg=True)
    (path / "sam2_config.json").write_text(json.dumps(tiny_sam2_config(image_size=256)))
    print(f"demo: wrote a tiny offline checkpoint to {path}")


def run(out: Path, command: str, timeout: float) -> int:
    import cv2
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from sa2va_msgs.msg import ObjectArray, Reply
    from sa2va_msgs.srv import Ask
    from sa2va_ros.node.image_codec import image_to_rgb8

    rclpy.init()
    node = Node("sa2va_demo_planner")
    lock = threading.Lock()
    state: dict = {"objects": {}, "overlays": [], "replies": []}

    def on_objects(msg: ObjectArray) -> None:
        with lock:
            state["objects"][(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg

    def on_overlay(msg: Image) -> None:
        with lock:
            state["overlays"].append(msg)

    node.create_subscription(ObjectArray, "objects", on_objects, 10)
    node.create_subscription(Image, "overlay", on_overlay, 10)
    node.create_subscription(Reply, "reply", lambda m: state["replies"].append(m), 10)
    commands = node.create_publisher(String, "command", 10)
    ask = node.create_client(Ask, "ask")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    deadline = time.monotonic() + timeout

    def wait(what: str, condition) -> None:
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"demo: timed out waiting for {what}")
            time.sleep(0.05)

    try:
        wait("the node to process camera frames (objects topic)", lambda: bool(state["objects"]))
        print("demo: the node is tracking the demo camera")
        reply = None
        while reply is None:  # resend until the node answers (it may just have come up)
            commands.publish(String(data=command))
            t0 = time.monotonic()
            while time.monotonic() - t0 < 5 and reply is None:
                reply = next((r for r in state["replies"] if r.request_text == command), None)
                time.sleep(0.05)
            if time.monotonic() > deadline:
                raise TimeoutError("demo: no reply to the command")
        print(f"demo: command '{command}' -> {reply.message}")
        if not reply.success:
            return 1
        ids = {o.id for o in reply.objects}
        if ask.wait_for_service(timeout_sec=10):
            done = threading.Event()
            future = ask.call_async(
                Ask.Request(question="What do you see?", source=Ask.Request.SOURCE_LATEST_FRAME)
            )
            future.add_done_callback(lambda f: done.set())
            if done.wait(60):
                r = future.result()
                print(
                    f"demo: ask 'What do you see?' -> raw answer {r.raw_text!r}, {len(r.objects)} object(s)"
                )

        def tracked_overlay():
            with lock:
                for msg in reversed(state["overlays"]):
                    key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
                    objects = state["objects"].get(key)
                    if objects and any(o.id in ids and o.mask_value for o in objects.objects):
                        return msg
            return None

        wait("an overlay showing the tracked object", lambda: tracked_overlay() is not None)
        overlay = tracked_overlay()
        rgb = image_to_rgb8(overlay)
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"demo: saved {out} ({overlay.width}x{overlay.height}, {out.stat().st_size // 1024} KiB)")
        print_positions(state, lock, ids)
        return 0
    except TimeoutError as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        rclpy.try_shutdown()  # wakes the executor, whose thread then ends
        executor.shutdown(timeout_sec=2)
        spinner.join(5)
        node.destroy_node()


def print_positions(state: dict, lock, ids: set) -> None:
    """The newest 3D fields of the tracked objects (the node runs with depth_enabled:=true)."""
    with lock:
        newest = max(state["objects"].items(), default=(None, None))[1]
    for obj in newest.objects if newest is not None else []:
        if obj.id not in ids:
            continue
        if obj.position_valid:
            p, s = obj.position, obj.size
            print(
                f"demo: object {obj.id} '{obj.label}' 3D position ({p.x:.3f}, {p.y:.3f}, {p.z:.3f}) m "
                f"in frame '{obj.position_frame_id}', box {s.x:.2f} x {s.y:.2f} x {s.z:.2f} m, "
                f"{obj.depth_points} depth points"
            )
        else:
            print(
                f"demo: object {obj.id} '{obj.label}' has no 3D position: "
                f"{obj.position_status or 'depth off'}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("docs/overlay.png"))
    parser.add_argument("--command", default="the red circle")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--write-model", type=Path, help="write the tiny demo checkpoint here and exit")
    args = parser.parse_args()
    if args.write_model:
        write_model(args.write_model)
        return 0
    return run(args.out, args.command, args.timeout)


if __name__ == "__main__":
    sys.exit(main())
