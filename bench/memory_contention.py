"""How much a low-priority process on another CPU slows the tracker through shared memory alone.

No ROS, no language model: the tiny demo tracker (SAM-2 at 256 px, one box-prompted object, one
torch thread) steps on 640x480 frames in windows, alternately alone and next to a "neighbour"
process under Linux's SCHED_IDLE policy (what sa2va_node's language process runs under) on one torch
thread. The neighbour either multiplies a cache-resident 128x128 matrix (compute only) or streams a
40 MB matrix through a matrix-vector product, as a language model's generation streams its weights.
The scheduler gives the tracker its CPU either way; what differs is cache and memory traffic, so
this bounds what any process or priority design can reach in bench/node_latency.py's busy windows.

    python bench/memory_contention.py [--seconds 8]

Prints each window's median step; the last line is JSON: {"alone_ms": [...], "compute_ms": [...],
"streaming_ms": [...], "compute_ratio": ..., "streaming_ratio": ...} (ratios: median step next to
the neighbour / the median of the alone windows).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test" / "peers"))

NEIGHBOUR = """
import os, torch
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
torch.set_num_threads(1)
a = torch.randn({rows}, {cols})
b = a if {rows} == {cols} else torch.randn({cols}, 1)
while True:
    a @ b
"""
NEIGHBOURS = {"compute": (128, 128), "streaming": (10000, 1000)}  # 64 KB / 40 MB of float32


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="length of each window")
    args = p.parse_args()
    if not hasattr(os, "SCHED_IDLE"):
        print("needs Linux (SCHED_IDLE)", file=sys.stderr)
        return 2

    import torch
    from node_harness import write_model  # the tiny demo checkpoint bench/node_latency.py uses

    from sa2va_ros.demo_camera import render
    from sa2va_ros.model import Sa2VA

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="sa2va_contention_") as tmp:
        path = write_model(Path(tmp) / "model", force_seg=True, sam2_image_size=256)
        model = Sa2VA.from_pretrained(str(path), device="cpu", dtype="float32")
    tracker = model.new_tracker()
    tracker.add_object(box=(200, 150, 400, 330))
    frames = [render(i, 640, 480) for i in range(30)]

    def window(seconds: float) -> float:
        steps, end, i = [], time.perf_counter() + seconds, 0
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            tracker.step(frames[i % len(frames)])
            steps.append(time.perf_counter() - t0)
            i += 1
        return 1000 * statistics.median(steps)

    window(3.0)  # warm-up: the object's conditioning frames
    results: dict[str, list[float]] = {"alone": [], "compute": [], "streaming": []}
    for kind in ("alone", "streaming", "alone", "compute", "alone", "streaming", "alone"):
        neighbour = None
        if kind != "alone":
            rows, cols = NEIGHBOURS[kind]
            code = NEIGHBOUR.format(rows=rows, cols=cols)
            neighbour = subprocess.Popen([sys.executable, "-c", code])
            time.sleep(1.0)  # torch imported, loop running
        try:
            step = window(args.seconds)
        finally:
            if neighbour is not None:
                neighbour.kill()
                neighbour.wait()
        results[kind].append(round(step, 2))
        print(f"{kind:>9}: median step {step:.2f} ms", flush=True)
    alone = statistics.median(results["alone"])
    summary = {f"{k}_ms": v for k, v in results.items()}
    for kind in NEIGHBOURS:
        summary[f"{kind}_ratio"] = round(statistics.median(results[kind]) / alone, 3)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
