"""How much the ROS node adds over a bare rclpy pair, and how much a busy language model slows tracking.

Runs sa2va_node in its own process on a tiny offline checkpoint (real loader, real SAM-2 code,
random weights; every answer grounds an object) and, in the same run, the bare rclpy relay of
bench/rclpy_pair.py in another process (no model, no sa2va code: it takes a frame, computes with
torch for as long as the node's median tracker step, sends a 640x480 mono8 image back and says
how long it really computed). Measured side by side:

1. node_overhead_ratio: this process publishes a 640x480 frame stamped with the wall clock, to
   the node and to the relay in turn (interleaved, same frames, one in flight at a time) and
   receives the node's label image / the relay's answer in its subscription callback. The node's
   overhead is receive - publish - the tracker's own step on that frame (``step_time`` of the
   node's ``objects`` message), the pair's is receive - publish - its work; the ratio of their
   medians is the headline figure (target <= 1.25): what the node adds beyond what ROS transport
   and executors cost anyway. ``latency_ratio`` (latency / step, per frame) is printed too.
2. busy_rate_ratio: masks per second while the language model is kept busy (back-to-back Ask
   requests on the newest frame) divided by masks per second while it is idle, with the camera
   publishing faster than the tracker can go (target >= 0.95; ``tracking_threads`` 1). Windows
   alternate idle, busy, idle, busy, idle (``--cycles``): each busy window is divided by the mean
   of the idle windows on both sides, so other jobs on a shared machine that come and go show up
   as differing idle windows (all printed) rather than as a ratio; the figure is the mean.

    python bench/node_latency.py [--frames 60 --seconds 10] [-p language_process:=true]
        [-p tracking_cpus:=0 -p language_cpus:=1]

The last line is JSON: {"node_overhead_ratio": ..., "busy_rate_ratio": ..., ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test" / "peers"))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--frames", type=int, default=60, help="frames timed for the latency ratio")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each rate window")
    p.add_argument("--cycles", type=int, default=3, help="busy windows, each between two idle ones")
    p.add_argument("--rate", type=float, default=30.0, help="camera rate of the rate windows (Hz)")
    p.add_argument("--sam2-size", type=int, default=256, help="SAM-2 input size of the tiny checkpoint")
    p.add_argument("--model", default="", help="use this checkpoint instead of writing a tiny one")
    p.add_argument("--device", default="cpu")
    p.add_argument("--tracking-threads", type=int, default=1, help="the node's tracking_threads")
    p.add_argument(
        "--image-qos",
        choices=("best_effort", "reliable"),
        default="best_effort",
        help="QoS of the frames sent to the node and to the bare relay (both alike)",
    )
    p.add_argument("-p", "--param", action="append", default=[], help="extra node parameter name:=value")
    return p.parse_args()


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM, and SIGKILL if it is still there after 10 s (an rclpy process may hang in shutdown)."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def main() -> int:
    args = parse_args()
    # DDS never leaves this machine; a domain no test or other bench here holds (unless given).
    from sa2va_ros.testing.ros_domain import bench_environment

    work = bench_environment("sa2va_bench_")
    # 640x480 rgb8 frames are 900 KB: above Fast DDS's default 512 KB shared-memory segment they are
    # lost when sent best_effort (config/fastdds_large_data.xml explains). Both processes use it.
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_large_data.xml"))

    import numpy as np
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from node_harness import Planner, Process, node_args, ros_environment, write_model
    from sensor_msgs.msg import Image

    from sa2va_msgs.msg import Command, ObjectArray, Reply
    from sa2va_msgs.srv import Ask
    from sa2va_ros.demo_camera import render
    from sa2va_ros.node.image_codec import array_to_image

    if args.model:
        model = Path(args.model)
    else:
        print(f"writing a tiny checkpoint (SAM-2 at {args.sam2_size} px) ...", flush=True)
        model = write_model(work / "model", force_seg=True, sam2_image_size=args.sam2_size)
    params = {
        "model": str(model),
        "device": args.device,
        "presence_threshold": 0.3,
        "language_queue_size": 4,
        "tracking_threads": args.tracking_threads,
        "image_qos_reliability": args.image_qos,
    }
    for item in args.param:
        key, _, value = item.partition(":=")
        params[key] = value
    node = Process("sa2va_node", node_args(params), ros_environment(work), work)
    rclpy.init(args=[])  # not sys.argv: this script's -p options are the node's, not ROS remaps
    planner = Planner("bench")
    planner.listen("masks", Image)
    planner.listen("objects", ObjectArray)
    planner.listen("reply", Reply)
    planner.listen("/diagnostics", DiagnosticArray)
    planner.listen("pair_back", Image)  # the bare relay's answers (reliable, as the node's masks)
    relay = None
    w, h = args.width, args.height
    frames = [render(i, w, h) for i in range(60)]
    counter = [0]
    reliable = args.image_qos == "reliable"

    def publish_frame(index: int, topic: str = "image") -> tuple[int, int]:
        msg = array_to_image(frames[index % len(frames)], encoding="rgb8")
        now = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = now // 10**9, now % 10**9
        msg.header.frame_id = "bench"
        planner.publish(topic, msg, reliable=reliable)  # camera drivers: best effort (sensor-data QoS)
        return msg.header.stamp.sec, msg.header.stamp.nanosec

    def pair_answer(stamp, timeout=10.0):
        return planner.wait_for("pair_back", lambda m: stamp_of(m) == stamp, timeout=timeout)

    def stamp_of(msg) -> tuple[int, int]:
        return msg.header.stamp.sec, msg.header.stamp.nanosec

    def mask_of(stamp, timeout=60.0):
        return planner.wait_for(
            "masks", lambda m: (m.header.stamp.sec, m.header.stamp.nanosec) == stamp, timeout=timeout
        )

    try:
        # Bring-up: the node is up once it answers a frame.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if mask_of(publish_frame(0), timeout=2.0) is not None:
                break
            if not node.alive():
                raise SystemExit(f"sa2va_node exited:\n{node.log()}")
        else:
            raise SystemExit(f"sa2va_node never answered:\n{node.log()}")
        reply = planner.request(Command.ADD, "bench", text="the red circle")
        if reply is None or not reply.success:
            raise SystemExit(f"could not ground an object: {reply and reply.message}")
        warm_steps = []
        for i in range(10):  # warm-up, and the object's keyframes
            stamp = publish_frame(i)
            mask_of(stamp)
            objects = planner.wait_for("objects", lambda m, s=stamp: stamp_of(m) == s, timeout=10.0)
            if objects is not None and i >= 5:
                warm_steps.append(float(objects.step_time))
        hold = statistics.median(warm_steps)

        # The bare relay holds each frame as long as the node's median tracker step, computing
        # with torch on as many threads as the node's tracking loop.
        relay = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "bench" / "rclpy_pair.py"),
                "--role",
                "relay",
                "--work",
                "torch",
                "--hold",
                f"{hold:.4f}",
                "--threads",
                str(args.tracking_threads),
                *(["--reliable"] if reliable else []),
            ],
            env=os.environ,
        )
        deadline = time.monotonic() + 60
        while pair_answer(publish_frame(0, "pair_image"), timeout=1.0) is None:
            if time.monotonic() > deadline or relay.poll() is not None:
                raise SystemExit("the bare rclpy relay never answered")
        for i in range(3):
            pair_answer(publish_frame(i, "pair_image"))

        # 1. latency, one frame in flight, node and bare pair interleaved on the same frames
        print(
            f"latency: {args.frames} frames of {w}x{h}, one in flight, node and bare pair (hold "
            f"{1000 * hold:.1f} ms) interleaved ...",
            flush=True,
        )
        latencies, steps, node_over, pair_over = [], [], [], []
        diag_start = planner.count("/diagnostics")
        for i in range(args.frames):
            for target in ("node", "pair") if i % 2 == 0 else ("pair", "node"):
                if target == "pair":
                    for _ in range(3):  # best effort: a frame may be lost; send another
                        stamp = publish_frame(i, "pair_image")
                        answer = pair_answer(stamp, timeout=5.0)
                        if answer is not None:
                            break
                    else:
                        raise SystemExit("three frames in a row got no answer from the bare relay")
                    sent = stamp[0] + stamp[1] * 1e-9
                    pair_over.append(
                        planner.arrival_of("pair_back", answer) - sent - float(answer.header.frame_id)
                    )
                    continue
                for _ in range(3):  # best effort: a frame may be lost; send another
                    stamp = publish_frame(i)
                    msg = mask_of(stamp, timeout=10.0)
                    if msg is not None:
                        break
                else:
                    raise SystemExit("three frames in a row got no mask from the node")
                objects = planner.wait_for("objects", lambda m, s=stamp: stamp_of(m) == s, timeout=10.0)
                if objects is None:
                    raise SystemExit("a frame got a mask but no objects message")
                # Received = when this process's subscription callback got it (not when the main
                # thread woke up to look: that wake-up is this script's, not the node's).
                arrived = planner.arrival_of("masks", msg)
                latencies.append(arrived - (stamp[0] + stamp[1] * 1e-9))
                steps.append(float(objects.step_time))  # the tracker's own time on this very frame
                node_over.append(latencies[-1] - steps[-1])
        stop_process(relay)
        relay = None
        node_median, pair_median = statistics.median(node_over), statistics.median(pair_over)
        print(
            f"node overhead median {1000 * node_median:.1f} ms vs bare pair {1000 * pair_median:.1f} ms "
            f"-> node_overhead_ratio {node_median / pair_median:.3f}",
            flush=True,
        )
        time.sleep(1.5)  # one more diagnostics period covers the last frames
        # The node's own timings of those frames, from /diagnostics: each report holds the means
        # over the frames processed since the previous one ("frames processed" says how many).
        inside: dict[str, list[float]] = {"receive": [], "stamp": []}
        keys = {"receive": "receive to publish latency (ms)", "stamp": "stamp to publish latency (ms)"}
        processed = None
        for diag in planner.messages["/diagnostics"][diag_start - 1 if diag_start else 0 :]:
            for status in diag.status:
                if ": camera" not in status.name:
                    continue
                values = {kv.key: kv.value for kv in status.values}
                count = int(values["frames processed"])
                n = count - processed if processed is not None else 0
                processed = count
                for name, key in keys.items():
                    if n > 0 and values[key] != "n/a":
                        inside[name] += [float(values[key]) / 1000.0] * n
        node_receive = statistics.fmean(inside["receive"]) if inside["receive"] else float("nan")
        node_stamp = statistics.fmean(inside["stamp"]) if inside["stamp"] else float("nan")
        # Paired per frame: each frame's latency over the tracker's step on that frame. The
        # median is the headline: on a small shared machine a few frames stall for reasons of
        # the OS scheduler (see README); the mean and p90 are reported next to it.
        ratios = [lat / st for lat, st in zip(latencies, steps, strict=True) if st > 0]
        step = statistics.fmean(steps)
        latency = statistics.fmean(latencies)

        # 2. tracking rate, language worker idle / busy / idle
        stop = threading.Event()

        def camera() -> None:
            period = 1.0 / args.rate
            next_t = time.monotonic()
            while not stop.is_set():
                publish_frame(counter[0])
                counter[0] += 1
                next_t += period
                time.sleep(max(0.0, next_t - time.monotonic()))

        window_steps: list[float] = []  # the tracker's median step (s) in each window, in order

        window_inputs: list[float] = []  # frames/s reaching the node in each window (its diagnostics)

        def rate(seconds: float) -> float:
            start_n, start_o, t0 = planner.count("masks"), planner.count("objects"), time.monotonic()
            start_d = planner.count("/diagnostics")
            time.sleep(seconds)
            inputs = [
                float(kv.value)
                for d in planner.messages["/diagnostics"][start_d + 1 :]  # the first one spans the gap
                for st in d.status
                if ": camera" in st.name
                for kv in st.values
                if kv.key == "input rate (Hz)"
            ]
            window_inputs.append(statistics.median(inputs) if inputs else float("nan"))
            hz = (planner.count("masks") - start_n) / (time.monotonic() - t0)
            # The tracker's own step time on those frames: if it grows in a busy window, the
            # language model slowed the step itself (CPU, interpreter); if not, the frames waited.
            steps_in = [
                float(m.step_time) for m in planner.messages["objects"][start_o : planner.count("objects")]
            ]
            window_steps.append(statistics.median(steps_in) if steps_in else float("nan"))
            return hz

        asked = [0]
        busy_flag = threading.Event()

        def language_load() -> None:
            while busy_flag.is_set():
                try:
                    r = planner.call(Ask, "ask", Ask.Request(question="What is in the image?", source=0))
                except TimeoutError as exc:  # reported; the rate windows go on
                    print(f"language load: {exc}", flush=True)
                    continue
                asked[0] += bool(r.success)

        def busy_window() -> tuple[float, list[float]]:
            """One rate window with two clients asking back to back; the worker's busy fractions."""
            busy_flag.set()
            loaders = [threading.Thread(target=language_load, daemon=True) for _ in range(2)]
            for t in loaders:
                t.start()
            time.sleep(1.0)
            diag_from = planner.count("/diagnostics")
            hz = rate(args.seconds)
            fractions = [
                float(kv.value)
                for d in planner.messages["/diagnostics"][diag_from:]
                for s in d.status
                if s.name.endswith(": model")
                for kv in s.values
                if kv.key == "language worker busy fraction" and kv.value != "n/a"
            ]
            busy_flag.clear()
            for t in loaders:
                t.join(120)
            time.sleep(1.0)
            return hz, fractions

        cam = threading.Thread(target=camera, daemon=True)
        cam.start()
        time.sleep(2.0)
        print(
            f"tracking rate: {args.seconds:g} s windows, idle and busy alternating ({args.cycles} busy), "
            f"camera at {args.rate:g} Hz ...",
            flush=True,
        )
        # Idle, then (busy, idle) x cycles: each busy window is judged against the idle windows on
        # both sides of it, so a change of the machine's load (other jobs) during the run shows up
        # as a difference between idle windows instead of as a busy/idle ratio.
        idles, busies, busy_fraction = [rate(args.seconds)], [], []
        for _ in range(args.cycles):
            hz, fractions = busy_window()
            busies.append(hz)
            busy_fraction += fractions
            idles.append(rate(args.seconds))
            print(f"  idle {idles[-2]:.2f} Hz, busy {hz:.2f} Hz, idle {idles[-1]:.2f} Hz", flush=True)
        stop.set()
        cam.join(5)
    finally:
        if relay is not None:
            stop_process(relay)
        planner.close()
        rc = node.stop()
        rclpy.try_shutdown()
    idle = statistics.fmean(idles)
    busy = statistics.fmean(busies)
    # Each busy window over the mean of its two neighbouring idle windows; their mean is the figure.
    window_ratios = [
        b / ((i0 + i1) / 2) for b, i0, i1 in zip(busies, idles[:-1], idles[1:], strict=True) if i0 + i1 > 0
    ]
    result = {
        "node_overhead_ratio": round(node_median / pair_median, 3),
        "node_overhead_ms_median": round(1000 * node_median, 2),
        "pair_overhead_ms_median": round(1000 * pair_median, 2),
        "node_overhead_ms_p90": round(1000 * float(np.percentile(node_over, 90)), 2),
        "pair_overhead_ms_p90": round(1000 * float(np.percentile(pair_over, 90)), 2),
        "pair_hold_ms": round(1000 * hold, 2),
        "tracking_threads": args.tracking_threads,
        "image_qos": args.image_qos,
        "language_process": params.get("language_process", "false"),
        "language_sched_idle": params.get("language_sched_idle", "true (default)"),
        "tracking_cpus": params.get("tracking_cpus", ""),
        "language_cpus": params.get("language_cpus", ""),
        "latency_ratio": round(statistics.median(ratios), 3),
        # None when no mask arrived while idle: the transport stalled (printed below), not a ratio.
        "busy_rate_ratio": round(statistics.fmean(window_ratios), 3) if window_ratios else None,
        "busy_rate_ratio_windows": [round(r, 3) for r in window_ratios],
        "latency_ratio_of_means": round(latency / step, 3),
        "latency_ratio_p90": round(float(np.percentile(ratios, 90)), 3),
        "latency_ms_median": round(1000 * statistics.median(latencies), 2),
        "latency_ms_mean": round(1000 * latency, 2),
        "latency_p90_ms": round(1000 * float(np.percentile(latencies, 90)), 2),
        "tracker_step_ms_median": round(1000 * statistics.median(steps), 2),
        "tracker_step_ms_mean": round(1000 * step, 2),
        "node_receive_to_publish_ms": round(1000 * node_receive, 2),
        "node_stamp_to_publish_ms": round(1000 * node_stamp, 2),
        "idle_rate_hz": round(idle, 2),
        "busy_rate_hz": round(busy, 2),
        "idle_windows_hz": [round(r, 2) for r in idles],
        # All windows in order (idle, busy, idle, ...): the tracker's median step in each.
        "step_ms_windows": [round(1000 * t, 1) for t in window_steps],
        # ... and the rate at which frames reached the node (a starved tracker waits for frames).
        "node_input_hz_windows": [round(r, 1) for r in window_inputs],
        "busy_windows_hz": [round(r, 2) for r in busies],
        "load_average": round(os.getloadavg()[0], 2),
        "worker_busy_fraction": round(statistics.fmean(busy_fraction), 2) if busy_fraction else None,
        "asks_answered": asked[0],
        "image": f"{w}x{h}",
        "sam2_input": args.sam2_size,
        "node_exit_code": rc,
    }
    print()
    print(f"{'':32s}{'node':>12s}{'bare pair':>12s}{'ratio':>8s}  target")
    print(
        f"{'overhead: latency - work (ms)':32s}{result['node_overhead_ms_median']:12.1f}"
        f"{result['pair_overhead_ms_median']:12.1f}{result['node_overhead_ratio']:8.3f}  <= 1.25 (medians)"
    )
    print(f"{'  p90 (ms)':32s}{result['node_overhead_ms_p90']:12.1f}{result['pair_overhead_ms_p90']:12.1f}")
    print(f"{'':32s}{'node':>12s}{'tracker':>12s}{'ratio':>8s}  target")
    print(
        f"{'publish -> mask latency (ms)':32s}{result['latency_ms_median']:12.1f}"
        f"{result['tracker_step_ms_median']:12.1f}{result['latency_ratio']:8.3f}  <= 1.10 (median)"
    )
    print(
        f"{'  (means; p90 of per-frame ratio)':32s}{1000 * latency:12.1f}{1000 * step:12.1f}"
        f"{result['latency_ratio_of_means']:8.3f}  p90 {result['latency_ratio_p90']}"
    )
    print(
        f"{'tracking rate (Hz), busy / idle':32s}{busy:12.2f}{idle:12.2f}"
        f"{result['busy_rate_ratio'] or float('nan'):8.3f}  >= 0.95"
    )
    print(
        f"(idle windows {result['idle_windows_hz']} Hz, busy windows {result['busy_windows_hz']} Hz; tracker "
        f"step in each window, idle/busy alternating, {result['step_ms_windows']} ms; frames reaching "
        f"the node {result['node_input_hz_windows']} Hz; "
        f"language worker busy fraction {result['worker_busy_fraction']}; "
        f"load average {result['load_average']})"
    )
    print(
        f"(inside the node: receive -> published {1000 * node_receive:.1f} ms, camera stamp -> published "
        f"{1000 * node_stamp:.1f} ms)"
    )
    print(json.dumps(result))
    # The checkpoint and logs (26 MB a run) are kept only when the node failed, for its log.
    if rc == 0:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"(checkpoint and logs kept in {work})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
