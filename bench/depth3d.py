"""Benchmark: the node's 3D stage against the tracker step it follows (a script, not a test).

    python bench/depth3d.py [--frames 40 --width 640 --height 480]

Measured side by side in one run, frame by frame, on a rendered RGB-D scene (two spheres and
two turned boxes at 0.6-2.9 m in front of a wall, 1 % depth noise, flying pixels, holes):

* the tracker's step on the colour frame (the tiny checkpoint of the node tests: real SAM-2
  code, random weights, SAM-2 at 256 px), with 4 objects prompted by their boxes;
* the 3D step of the same frame as the node runs it: the 16UC1 depth message's bytes wrapped
  (:meth:`DepthImage.from_buffer`), then :func:`measure_all` on the 4 objects' masks
  (the scene's true masks grown by 2 px, as a segmentation that spills onto the background;
  the random-weight tracker's own masks are not object-shaped).

Headline: median 3D time / median tracker step time (target <= 0.05). Also printed: the same
with the tracker's own masks, the 3D step timed alone (no tracker step in between), and the
one-off cost of the undistortion table (a plumb_bob calibration, cached per calibration). The
last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test"))
sys.path.insert(0, str(REPO / "test" / "peers"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = p.parse_args()

    import numpy as np
    import torch
    from _depth_scene import Box, Intrinsics, Sphere, add_defects, bleed, cast, to_16uc1
    from node_harness import write_model

    from sa2va_ros.depth3d import CameraModel, DepthImage, measure_all
    from sa2va_ros.model import Sa2VA, TrackerConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    w, h = args.width, args.height
    cam = Intrinsics(fx=615.0 * w / 640, fy=615.0 * w / 640, cx=(w - 1) / 2, cy=(h - 1) / 2)
    shapes = [
        Sphere((-0.25, -0.1, 0.8), 0.08),
        Sphere((0.45, 0.2, 1.8), 0.12),
        Box((0.1, -0.15, 1.2), (0.08, 0.06, 0.05), 0.5),
        Box((-0.7, 0.35, 2.6), (0.15, 0.1, 0.1), -0.6),
    ]
    depth, label = cast(shapes, 3.5, cam, h, w)
    palette = np.array(
        [[90, 110, 130], [220, 30, 30], [30, 190, 60], [40, 70, 220], [230, 200, 40]], np.uint8
    )
    rgb = palette[label]
    true_masks = [bleed(label == i + 1, 2) for i in range(len(shapes))]
    boxes = []
    for m in true_masks:
        ys, xs = np.nonzero(m)
        boxes.append((float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
    rng = np.random.default_rng(0)
    depth_msgs = [to_16uc1(add_defects(depth, label, rng)).tobytes() for _ in range(4)]
    model_cam = CameraModel(cam.k, (), "plumb_bob", w, h)
    model_cam.rays((h, w), (h, w))

    t0 = time.perf_counter()
    CameraModel(cam.k, (-0.28, 0.09, 0.001, -0.0015, 0.0), "plumb_bob", w, h).rays((h, w), (h, w))
    table_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        print("writing the tiny checkpoint (SAM-2 at 256 px) ...", flush=True)
        model = Sa2VA.from_pretrained(str(write_model(Path(tmp) / "model")), device="cpu", dtype="float32")
        tracker = model.new_tracker(TrackerConfig())
        for box in boxes:
            tracker.add_object(box=box)
        for _ in range(3):  # grounding frame and warm-up
            objects = tracker.step(rgb)
        steps, geo_true, geo_tracker = [], [], []
        for i in range(args.frames):
            t0 = time.perf_counter()
            objects = tracker.step(rgb)
            t1 = time.perf_counter()
            image = DepthImage.from_buffer(depth_msgs[i % len(depth_msgs)], "16UC1", w, h, 2 * w, False)
            results = measure_all(true_masks, image, model_cam)
            t2 = time.perf_counter()
            image = DepthImage.from_buffer(depth_msgs[i % len(depth_msgs)], "16UC1", w, h, 2 * w, False)
            measure_all([o.mask for o in objects], image, model_cam)
            t3 = time.perf_counter()
            steps.append(t1 - t0)
            geo_true.append(t2 - t1)
            geo_tracker.append(t3 - t2)
        assert all(r.valid for r in results), [r.reason for r in results]
        # The 3D step alone, no tracker step in between (torch's worker threads spin for a while
        # after a step and compete for the CPU with what follows it in the interleaved loop).
        alone = []
        for i in range(args.frames):
            t0 = time.perf_counter()
            image = DepthImage.from_buffer(depth_msgs[i % len(depth_msgs)], "16UC1", w, h, 2 * w, False)
            measure_all(true_masks, image, model_cam)
            alone.append(time.perf_counter() - t0)
    step = statistics.median(steps)
    geo = statistics.median(geo_true)
    geo_own = statistics.median(geo_tracker)
    print(f"{w}x{h}, {len(shapes)} objects, {args.frames} frames, torch threads {torch.get_num_threads()}")
    print(f"tracker step           median {step * 1000:8.2f} ms")
    print(f"3D step (object masks)  median {geo * 1000:8.2f} ms   ratio {geo / step:.4f}  (target <= 0.05)")
    print(f"3D step (tracker masks) median {geo_own * 1000:8.2f} ms   ratio {geo_own / step:.4f}")
    alone_ms = statistics.median(alone) * 1000
    print(f"3D step alone (object masks, no tracker step in between) median {alone_ms:.2f} ms")
    print(f"undistortion table (plumb_bob, once per calibration): {table_s * 1000:.1f} ms")
    print(
        json.dumps(
            {
                "width": w,
                "height": h,
                "objects": len(shapes),
                "frames": args.frames,
                "tracker_step_ms": round(step * 1000, 3),
                "depth3d_ms": round(geo * 1000, 3),
                "ratio_3d_to_tracker": round(geo / step, 4),
                "depth3d_tracker_masks_ms": round(geo_own * 1000, 3),
                "ratio_3d_tracker_masks": round(geo_own / step, 4),
                "depth3d_alone_ms": round(alone_ms, 3),
                "undistortion_table_ms": round(table_s * 1000, 1),
                "cpu_count": os.cpu_count(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
