"""Benchmark: our StreamingTracker against Meta's SAM2VideoPredictor (a script, not a test).

    python bench/tracker.py            # Sa2VA's real SAM-2 (Hiera-L): tens of minutes on 2 CPU cores
    python bench/tracker.py --quick    # development: tiny trunk, fewer frames, a few minutes
    bench/gpu.sh                       # the same comparison on a GPU, at 640x480 in bfloat16

Measured side by side in one run, same frames, same SAM-2 config and weights (random, seeded):

1. Speed at SAM-2's real 1024 input with Sa2VA's real architecture (Hiera-L; with --quick or
   --speed-config tiny a tiny trunk, the fixtures' sam2_config shape): per tracked frame, ours / Meta's
   SAM2VideoPredictor for one box-prompted object (``ratio_1obj``; frame 0, the prompt frame,
   and predictor set-up excluded; the predictor has every frame decoded and normalised
   beforehand, we decode each frame in step()), and our per-object time at 4 objects / our
   1-object time (``ratio_4obj_per_object``).
2. Memory: our RSS after ``--rss-frames`` (10,000) frames vs after 100 frames
   (``rss_growth_10k``; tiny config at 64x64 input, so 10,000 frames take minutes on a CPU),
   and RSS growth per frame over ``--predictor-frames`` (200) frames side by side with the
   predictor (tiny config at 512 input, where a frame of predictor state is big enough to see).

Timings run the four streams (ours / predictor, 1 / 4 objects) in lockstep, frame by frame, so
a machine shared with other jobs slows them alike.

The last line printed is one JSON object with all figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # the predictor's progress bars

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sa2va_ros.model.sam2_config import build_sam2, sam2_model_config  # noqa: E402
from sa2va_ros.model.sam2_prompt import Sa2VASam2  # noqa: E402
from sa2va_ros.model.tracker import StreamingTracker, TrackerConfig  # noqa: E402
from sa2va_ros.testing.sam2_writer import tiny_sam2_config  # noqa: E402

#: The fixtures' tiny SAM-2 shape (Hiera embed 16, stages [1,1,3,1], 1 memory-attention layer).
FIXTURE_LIKE = dict(embed_dim=16, stages=(1, 1, 3, 1), global_att_blocks=(3, 4), dim_feedforward=1024)
#: SAM-2 input size of the side-by-side growth run: big enough for a frame of state to show in RSS.
GROWTH_SIZE = 512
BOXES = [(40, 30, 140, 120), (170, 40, 290, 150), (30, 140, 150, 230), (180, 150, 300, 230)]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_frames(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    """Squares drifting over a textured background."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    frames = []
    for i in range(n):
        f = base.copy()
        for k, (x0, y0, x1, y1) in enumerate(BOXES):
            sx, sy = int(x0 * w / 320), int(y0 * h / 240)
            ex, ey = int(x1 * w / 320), int(y1 * h / 240)
            dx = (i * (k + 1)) % max(1, (ex - sx) // 4)
            f[sy + 4 : ey - 4, sx + 4 + dx : ex - 4] = (200 + 10 * k, 60 * k % 255, 40)
        frames.append(f)
    return frames


def write_jpegs(frames: list[np.ndarray], folder: Path) -> list[np.ndarray]:
    """The predictor reads a JPEG folder; we feed ourselves the very same decoded pixels."""
    decoded = []
    for i, f in enumerate(frames):
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(f).save(path, quality=95)
        decoded.append(np.asarray(Image.open(path).convert("RGB")))
    return decoded


def meta_predictor(model: torch.nn.Module, config: dict) -> torch.nn.Module:
    """Meta's SAM2VideoPredictor from the same config and weights (Sa2VA's predictor flags =
    the class defaults: no hole filling, no non-overlap constraint)."""
    from hydra.utils import instantiate

    cfg = sam2_model_config(config)
    cfg._target_ = "sam2.sam2_video_predictor.SAM2VideoPredictor"
    predictor = instantiate(cfg, _recursive_=True)
    predictor.load_state_dict(model.state_dict())
    return predictor.eval()


class PredictorStream:
    """Meta's SAM2VideoPredictor advanced one frame at a time (its propagate_in_video generator),
    so its frames can be timed in lockstep with ours under the same machine load."""

    def __init__(self, predictor, folder: Path, n_objects: int):
        self.state = predictor.init_state(str(folder))  # set-up: decodes and normalises every frame
        for k in range(n_objects):
            box = np.array(BOXES[k], np.float32)
            predictor.add_new_points_or_box(self.state, frame_idx=0, obj_id=k + 1, box=box)
        self.frames = predictor.propagate_in_video(self.state)

    def step(self, frame: np.ndarray) -> None:  # the frame is already in its state
        next(self.frames)


class OurStream:
    def __init__(self, sam2: Sa2VASam2, n_objects: int, batch_objects: bool = True):
        self.tracker = StreamingTracker(sam2, TrackerConfig(batch_objects=batch_objects))
        for k in range(n_objects):
            self.tracker.add_object(box=BOXES[k])

    def step(self, frame: np.ndarray) -> None:
        self.tracker.step(frame)


def stored_bytes(obj, seen: set | None = None) -> int:
    seen = set() if seen is None else seen
    if isinstance(obj, torch.Tensor):
        key = (obj.untyped_storage().data_ptr(), obj.untyped_storage().nbytes())
        if key in seen:
            return 0
        seen.add(key)
        return obj.untyped_storage().nbytes()
    if isinstance(obj, dict):
        return sum(stored_bytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(stored_bytes(v, seen) for v in obj)
    return 0


def speed(args) -> dict:
    if args.speed_config == "tiny":
        config, label = tiny_sam2_config(**FIXTURE_LIKE), "tiny trunk (fixture shape) at 1024 input"
    elif args.speed_config == "hiera-l":
        config, label = None, "SAM-2 v2.0 Hiera-L architecture (Sa2VA's), random weights"
    else:
        config, label = json.loads(Path(args.speed_config).read_text()), args.speed_config
    model = build_sam2(config, seed=0)
    sam2 = Sa2VASam2(model)
    predictor = meta_predictor(model, config)
    frames = make_frames(args.frames, 240, 320)
    # Wall time by default; --clock cpu counts this process's CPU time instead, which a machine
    # shared with other jobs disturbs far less (use it with --threads 1).
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    totals = {"ours1": 0.0, "meta1": 0.0, "ours4": 0.0, "meta4": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        frames = write_jpegs(frames, Path(tmp))
        t0 = time.perf_counter()
        for f in frames[:3]:
            sam2.encode(f)
        backbone = (time.perf_counter() - t0) / 3
        for _ in range(args.repeats):
            streams = {
                "ours1": OurStream(sam2, 1, args.batch_objects),
                "meta1": PredictorStream(predictor, Path(tmp), 1),
                "ours4": OurStream(sam2, 4, args.batch_objects),
                "meta4": PredictorStream(predictor, Path(tmp), 4),
            }
            names = list(streams)
            for i, frame in enumerate(frames):
                # Lockstep: every stream does frame i before any does i + 1, in a rotating order,
                # so a busy machine slows all of them alike. Frame 0 (the prompt frame) is not timed.
                for name in names[i % 4 :] + names[: i % 4]:
                    t0 = clock()
                    streams[name].step(frame)
                    if i >= 1:
                        totals[name] += clock() - t0
            state_bytes = {
                "ours1": stored_bytes(streams["ours1"].tracker._tracks[1].bank.output_dict()),
                "meta1": stored_bytes(streams["meta1"].state["output_dict_per_obj"]) // len(frames),
            }
            del streams
    per_frame = {k: v / (args.repeats * (len(frames) - 1)) for k, v in totals.items()}
    return {
        "speed_config": label,
        "speed_frames": args.frames,
        "speed_clock": args.clock,
        "batch_objects": args.batch_objects,
        "backbone_ms": round(backbone * 1e3, 1),
        "ours_ms_per_frame_1obj": round(per_frame["ours1"] * 1e3, 1),
        "predictor_ms_per_frame_1obj": round(per_frame["meta1"] * 1e3, 1),
        "ours_ms_per_frame_4obj": round(per_frame["ours4"] * 1e3, 1),
        "predictor_ms_per_frame_4obj": round(per_frame["meta4"] * 1e3, 1),
        "ratio_1obj": round(per_frame["ours1"] / per_frame["meta1"], 3),
        "ratio_4obj_per_object": round(per_frame["ours4"] / 4 / per_frame["ours1"], 3),
        "predictor_ratio_4obj_per_object": round(per_frame["meta4"] / 4 / per_frame["meta1"], 3),
        "predictor_state_kb_per_frame_1obj_1024": round(state_bytes["meta1"] / 1024, 1),
        "ours_state_kb_1obj_1024": round(state_bytes["ours1"] / 1024, 1),
    }


def growth_side_by_side(n_frames: int, image_size: int) -> dict:
    """Growth per frame over the same frames, ours vs SAM2VideoPredictor (one box object): RSS
    and the bytes of tensors each keeps. The predictor decodes all frames in init_state, before
    the first reading; afterwards it keeps every frame's state, we keep a bounded window.
    """
    config = tiny_sam2_config(image_size=image_size)
    model = build_sam2(config, seed=0)
    frames = make_frames(n_frames, 64, 64, seed=2)
    box = (5, 5, 40, 40)
    warm = min(50, n_frames // 4)  # past the memory / pointer windows and allocator warm-up
    tracker = StreamingTracker(Sa2VASam2(model), TrackerConfig())
    tid = tracker.add_object(box=box)
    for i, frame in enumerate(frames):
        tracker.step(frame)
        if i + 1 == warm:
            gc.collect()
            ours_rss, ours_state = rss_bytes(), stored_bytes(tracker._tracks[tid].bank.output_dict())
    gc.collect()
    ours_rss = (rss_bytes() - ours_rss) / (n_frames - warm)
    ours_state = (stored_bytes(tracker._tracks[tid].bank.output_dict()) - ours_state) / (n_frames - warm)
    del tracker
    predictor = meta_predictor(model, config)
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(frames, Path(tmp))
        state = predictor.init_state(tmp)
        predictor.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=np.array(box, np.float32))
        for k, _ in enumerate(predictor.propagate_in_video(state)):
            if k + 1 == warm:
                gc.collect()
                pred_rss, pred_state = rss_bytes(), stored_bytes(state["output_dict_per_obj"])
        gc.collect()
        pred_rss = (rss_bytes() - pred_rss) / (n_frames - warm)
        pred_state = (stored_bytes(state["output_dict_per_obj"]) - pred_state) / (n_frames - warm)
    tag = f"{image_size}px"
    return {
        f"ours_rss_growth_kb_per_frame_{tag}": round(ours_rss / 1024, 2),
        f"predictor_rss_growth_kb_per_frame_{tag}": round(pred_rss / 1024, 2),
        f"ours_state_growth_kb_per_frame_{tag}": round(ours_state / 1024, 2),
        f"predictor_state_growth_kb_per_frame_{tag}": round(pred_state / 1024, 2),
    }


def memory(args) -> dict:
    """Our RSS over a long stream (tiny SAM-2 at 64x64 input so 10,000 frames take minutes)."""
    config = tiny_sam2_config(image_size=64)
    sam2 = Sa2VASam2(build_sam2(config, seed=0))
    frames = make_frames(50, 64, 64, seed=1)
    tracker = StreamingTracker(sam2, TrackerConfig())
    tracker.add_object(torch.randn(256, generator=torch.Generator().manual_seed(0)), label="language")
    tracker.add_object(box=(5, 5, 40, 40), label="box")
    rss_100 = None
    t0 = time.perf_counter()
    for i in range(args.rss_frames):
        tracker.step(frames[i % len(frames)])
        if i + 1 == 100:
            gc.collect()
            rss_100 = rss_bytes()
        if args.verbose and (i + 1) % 1000 == 0:
            print(f"  {i + 1} frames, RSS {rss_bytes() / 2**20:.1f} MiB", flush=True)
    gc.collect()
    rss_end = rss_bytes()
    per_frame = (time.perf_counter() - t0) / args.rss_frames
    result = {
        "rss_config": "tiny SAM-2 (Hiera embed 8, stages [1,1,2,1], 1 memory-attention layer) at 64x64 "
        "input, 64x64 frames, 2 objects (language + box)",
        "rss_frames": args.rss_frames,
        "rss_mb_at_100": round(rss_100 / 2**20, 2),
        "rss_mb_at_end": round(rss_end / 2**20, 2),
        "rss_growth_10k": round((rss_end - rss_100) / rss_100, 4),
        "ours_ms_per_frame_2obj_64px": round(per_frame * 1e3, 2),
        "bank_entries_max": max(len(t.bank) for t in tracker._tracks.values()),
        "bank_bound": max(t.bank.bound for t in tracker._tracks.values()),
        "growth_frames": args.predictor_frames,
    }
    del tracker
    result.update(growth_side_by_side(args.predictor_frames, image_size=GROWTH_SIZE))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="development: tiny SAM-2 trunk, fewer frames (a few minutes)"
    )
    parser.add_argument("--frames", type=int, default=None, help="frames of the 1024 speed run (default 12)")
    parser.add_argument("--repeats", type=int, default=None, help="speed passes to average (default 1)")
    parser.add_argument("--rss-frames", type=int, default=None, help="frames of our RSS run (default 10000)")
    parser.add_argument(
        "--predictor-frames",
        type=int,
        default=None,
        help="frames of the side-by-side growth run (default 200)",
    )
    parser.add_argument(
        "--speed-config",
        default=None,
        help="SAM-2 of the speed run: 'hiera-l' (the default: Sa2VA's real architecture, slow on a CPU), "
        "'tiny' (fixture-shaped trunk, 1024 input; the --quick default) or the path of a sam2_config.json",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time the speed run by wall clock or by process CPU time (robust on a shared machine)",
    )
    parser.add_argument(
        "--batch-objects",
        choices=("on", "off"),
        default="on",
        help="TrackerConfig.batch_objects of our tracker (on: the default)",
    )
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    args.speed_config = args.speed_config or ("tiny" if args.quick else "hiera-l")
    args.frames = args.frames or (6 if args.quick else 12)
    args.repeats = args.repeats or 1
    args.batch_objects = args.batch_objects == "on"
    args.rss_frames = args.rss_frames or (2000 if args.quick else 10_000)
    args.predictor_frames = args.predictor_frames or (60 if args.quick else 200)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result: dict = {"torch_threads": torch.get_num_threads()}
    if not args.skip_memory:  # first, while the process is small
        result.update(memory(args))
        print(
            f"memory @64px: RSS {result['rss_mb_at_100']} MiB after 100 frames, "
            f"{result['rss_mb_at_end']} MiB after {args.rss_frames} -> growth "
            f"{result['rss_growth_10k']:+.2%} (target within 2%); growth per frame over "
            f"{args.predictor_frames} frames at {GROWTH_SIZE}px, ours vs SAM2VideoPredictor: RSS "
            f"{result[f'ours_rss_growth_kb_per_frame_{GROWTH_SIZE}px']} vs "
            f"{result[f'predictor_rss_growth_kb_per_frame_{GROWTH_SIZE}px']} KiB, stored tensors "
            f"{result[f'ours_state_growth_kb_per_frame_{GROWTH_SIZE}px']} vs "
            f"{result[f'predictor_state_growth_kb_per_frame_{GROWTH_SIZE}px']} KiB",
            flush=True,
        )
    if not args.skip_speed:
        result.update(speed(args))
        print(
            f"speed @1024 ({args.frames} frames): ours {result['ours_ms_per_frame_1obj']} ms/frame vs "
            f"SAM2VideoPredictor {result['predictor_ms_per_frame_1obj']} ms/frame for 1 object -> ratio "
            f"{result['ratio_1obj']} (target <= 1.0); 4 objects {result['ours_ms_per_frame_4obj']} "
            f"ms/frame -> per object {result['ratio_4obj_per_object']} of 1 object (target <= 0.5); backbone "
            f"{result['backbone_ms']} ms",
            flush=True,
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
