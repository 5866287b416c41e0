"""Soak: a camera stream and a steady mix of requests against sa2va_node for a long time.

Runs sa2va_node in its own process on the tiny offline checkpoint the tests use (real loader,
real SAM-2 code, random weights; every answer grounds an object), publishes frames at a fixed
rate and, from a second thread, sends a mix of requests one after the other: ADD and ASK
commands, Ask and describe_region calls, add_object boxes, a few invalid requests (which must be
refused), and a CLEAR now and then so the object count stays bounded. Every ``--report``
seconds it prints the node's RSS, the request latency and the counters; it ends with ONE JSON
line, whose ``rss_end_vs_first_minute`` is the figure the issue asks for (target <= 1.10).

    python bench/soak.py --minutes 30 [--width 320 --height 240 --rate 10]

Not part of CI: it runs for as long as you ask.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test" / "peers"))
MB = 1 << 20


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="how long to stream and ask")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--rate", type=float, default=10.0, help="camera frames per second")
    p.add_argument("--report", type=float, default=30.0, help="seconds between progress lines")
    p.add_argument("--clear-every", type=int, default=20, help="requests between two CLEARs")
    p.add_argument("--model", default="", help="use this checkpoint instead of writing a tiny one")
    p.add_argument("--device", default="cpu")
    return p.parse_args()


def rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    args = parse_args()
    # DDS never leaves this machine; a domain no test or other bench here holds (unless given).
    from sa2va_ros.testing.ros_domain import bench_environment

    work = bench_environment("sa2va_soak_")

    import rclpy
    from node_harness import Planner, Process, node_args, ros_environment, write_model
    from sensor_msgs.msg import Image, RegionOfInterest

    from sa2va_msgs.msg import Command, Reply
    from sa2va_msgs.srv import AddObject, Ask, DescribeRegion
    from sa2va_ros.demo_camera import render
    from sa2va_ros.node.image_codec import array_to_image

    model = Path(args.model) if args.model else write_model(work / "model", force_seg=True)
    params = {
        "model": str(model),
        "device": args.device,
        "presence_threshold": 0.3,
        "language_queue_size": 4,
        "max_new_tokens": 24,
    }
    node = Process("sa2va_node", node_args(params), ros_environment(work), work)
    rclpy.init()
    planner = Planner("soak")
    planner.listen("masks", Image, reliable=False)
    planner.listen("reply", Reply, depth=200)
    w, h = args.width, args.height
    frames = [array_to_image(render(i, w, h), encoding="rgb8") for i in range(30)]
    stop = threading.Event()
    counters = {
        "frames_sent": 0,
        "requests": 0,
        "ok": 0,
        "refused": 0,
        "unanswered": 0,
        "invalid_accepted": 0,
    }
    latencies: list[float] = []
    lock = threading.Lock()

    def camera() -> None:
        period, index = 1.0 / args.rate, 0
        next_time = time.monotonic()
        while not stop.is_set():
            msg = frames[index % len(frames)]
            now = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = now // 10**9, now % 10**9
            planner.publish("image", msg, reliable=False)
            counters["frames_sent"] += 1
            index += 1
            next_time += period
            stop.wait(max(0.0, next_time - time.monotonic()))

    def one_request(i: int) -> tuple[bool | None, bool]:
        """(success or None when unanswered, whether the request was deliberately invalid)."""
        kind = i % 7
        if i % args.clear_every == 0:
            reply = planner.request(Command.CLEAR, f"clear-{i}")
            return (reply.success if reply else None), False
        if kind == 0:
            reply = planner.request(Command.ADD, f"add-{i}", text="the red circle")
            return (reply.success if reply else None), False
        if kind == 1:
            reply = planner.request(Command.ASK, f"ask-{i}", text="What is in the picture?")
            return (reply.success if reply else None), False
        if kind == 2:
            r = planner.call(Ask, "ask", Ask.Request(question="Describe the scene.", source=2), timeout=120)
            return r.success, False
        if kind == 3:
            request = DescribeRegion.Request(use_point=True, point_x=w / 2.0, point_y=h / 2.0)
            return planner.call(DescribeRegion, "describe_region", request, timeout=120).success, False
        if kind == 4:
            box = RegionOfInterest(x_offset=w // 4, y_offset=h // 4, width=w // 4, height=h // 4)
            return planner.call(
                AddObject, "add_object", AddObject.Request(box=box), timeout=120
            ).success, False
        if kind == 5:  # invalid: a box outside the frame
            box = RegionOfInterest(x_offset=10 * w, y_offset=10 * h, width=50, height=50)
            return planner.call(
                AddObject, "add_object", AddObject.Request(box=box), timeout=120
            ).success, True
        reply = planner.request(Command.REMOVE, f"rm-empty-{i}")  # invalid: REMOVE without ids
        return (reply.success if reply else None), True

    def requester() -> None:
        i = 0
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                success, invalid = one_request(i)
            except TimeoutError:
                success, invalid = None, False
            elapsed = time.monotonic() - t0
            with lock:
                counters["requests"] += 1
                if success is None:
                    counters["unanswered"] += 1
                elif invalid and success:
                    counters["invalid_accepted"] += 1
                elif success:
                    counters["ok"] += 1
                    latencies.append(elapsed)
                else:
                    counters["refused"] += 1
            i += 1

    try:
        deadline = time.monotonic() + 300
        while planner.count("masks") == 0 and time.monotonic() < deadline:
            planner.publish("image", frames[0], reliable=False)
            time.sleep(0.5)
            if not node.alive():
                raise SystemExit(f"sa2va_node exited:\n{node.log()[-3000:]}")
        if planner.count("masks") == 0:
            raise SystemExit(f"sa2va_node never answered a frame:\n{node.log()[-3000:]}")
        pid = node.proc.pid
        threads = [
            threading.Thread(target=camera, daemon=True),
            threading.Thread(target=requester, daemon=True),
        ]
        for t in threads:
            t.start()
        t_start = time.monotonic()
        end = t_start + 60.0 * args.minutes
        samples: list[dict] = []
        rss_first_minute = None
        next_report = t_start + min(args.report, 60.0)
        while time.monotonic() < end:
            time.sleep(max(0.0, min(next_report, end) - time.monotonic()))
            now = time.monotonic() - t_start
            with lock:
                window = list(latencies)
                latencies.clear()
                snapshot = dict(counters)
            rss = rss_of(pid)
            if rss_first_minute is None and now >= 59.0:
                rss_first_minute = rss
            sample = {
                "t_s": round(now),
                "rss_mb": round(rss / MB, 1),
                "latency_p50_s": round(statistics.median(window), 3) if window else None,
                "latency_p90_s": round(percentile(window, 0.9), 3) if window else None,
                "masks": planner.count("masks"),
                **snapshot,
            }
            samples.append(sample)
            print(" ".join(f"{k}={v}" for k, v in sample.items()), flush=True)
            next_report += args.report
            if not node.alive():
                raise SystemExit(f"sa2va_node exited:\n{node.log()[-3000:]}")
        stop.set()
        for t in threads:
            t.join(120)
        time.sleep(3.0)  # the worker goes idle and trims
        rss_end = rss_of(pid)
        tracebacks = node.log().count("Traceback")
    finally:
        stop.set()
        planner.close()
        rc = node.stop()
        rclpy.shutdown()
    first = rss_first_minute or samples[0]["rss_mb"] * MB
    result = {
        "minutes": args.minutes,
        "frame": f"{w}x{h}",
        "rss_first_minute_mb": round(first / MB, 1),
        "rss_end_mb": round(rss_end / MB, 1),
        "rss_max_mb": max(s["rss_mb"] for s in samples),
        "rss_end_vs_first_minute": round(rss_end / first, 3),
        "tracebacks": tracebacks,
        "node_exit_code": rc,
        **{k: counters[k] for k in counters},
        "masks": samples[-1]["masks"],
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
