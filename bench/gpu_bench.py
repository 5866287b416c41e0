"""GPU benchmark at real sizes (random weights), one run, side by side; run it with bench/gpu.sh.

    bench/gpu.sh                 # on a CUDA machine: real sizes, bf16, a few minutes
    bench/gpu.sh --cpu-smoke     # the same code on the CPU with tiny sizes (CI keeps it working)

Measured in this one process, on the same 640x480 frames:

1. tracking: our StreamingTracker and Meta's SAM2VideoPredictor, same SAM-2 (Sa2VA's Hiera-L)
   and weights, box-prompted, 1 and 4 objects: frames/s and ms/frame (prompt frame and warm-up
   frames excluded), bfloat16 autocast as the official code runs SAM-2 on a GPU; peak GPU memory.
2. grounding latency of Sa2VA-1B and -4B shapes: image encoding (tiling + InternViT + projector,
   up to the language model's first forward), prefill, per generated token, and [SEG] to mask
   (SAM-2 on the image with the [SEG] embedding); peak GPU memory.
3. tracking frames/s while grounding requests run back to back, over idle frames/s, per model
   size: on another thread of this process (sa2va_node's default) and in a process of their own
   (``language_process:=true``, sa2va_ros.model.language_process); peak GPU memory of this process
   (the language process's own memory is not included).

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import realsize  # noqa: E402
import tracker as tracker_bench  # noqa: E402  (bench/tracker.py: frames, Meta's predictor)

from sa2va_ros.model.language_process import RemoteSa2VA  # noqa: E402
from sa2va_ros.model.sa2va import Grounding, Sa2VA  # noqa: E402
from sa2va_ros.model.sam2_config import build_sam2  # noqa: E402
from sa2va_ros.model.sam2_prompt import Sa2VASam2  # noqa: E402
from sa2va_ros.model.tracker import StreamingTracker, TrackerConfig  # noqa: E402
from sa2va_ros.testing.sam2_writer import tiny_sam2_config  # noqa: E402

WIDTH, HEIGHT = 640, 480
PROMPT = "<image>\nPlease segment the red box."
#: bench/tracker.py's boxes are given on a 320x240 frame.
BOXES = [tuple(2 * v for v in b) for b in tracker_bench.BOXES]


class Clock:
    """Wall time that waits for the GPU first, so a reading covers the kernels it launched."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


# ------------------------------------------------------------------------------- 1. tracking


def track_ours(sam2: Sa2VASam2, frames, n_objects: int, warmup: int, clock: Clock) -> list[float]:
    tracker = StreamingTracker(sam2, TrackerConfig())
    for k in range(n_objects):
        tracker.add_object(box=BOXES[k])
    times = []
    for i, frame in enumerate(frames):
        t0 = clock()
        objects = tracker.step(frame)
        [o.mask for o in objects]  # the masks, on the CPU, as the node publishes them
        if i >= warmup:
            times.append(clock() - t0)
    return times


def track_meta(predictor, folder: Path, n_objects: int, warmup: int, clock: Clock, dtype) -> list[float]:
    device = next(predictor.parameters()).device
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    times = []
    with torch.inference_mode(), autocast:
        state = predictor.init_state(str(folder))
        for k in range(n_objects):
            predictor.add_new_points_or_box(
                state, frame_idx=0, obj_id=k + 1, box=np.array(BOXES[k], np.float32)
            )
        frames = predictor.propagate_in_video(state)
        i = 0
        while True:
            t0 = clock()
            try:
                _, _, masks = next(frames)
            except StopIteration:
                break
            (masks > 0).cpu()  # the masks, on the CPU, as ours are
            if i >= warmup:
                times.append(clock() - t0)
            i += 1
    predictor.reset_state(state)
    return times


def tracking(args, device: torch.device, dtype: torch.dtype, clock: Clock) -> dict:
    config = tiny_sam2_config(image_size=256) if args.cpu_smoke else None
    model = build_sam2(config, seed=0)
    predictor = tracker_bench.meta_predictor(model, config).to(device)
    sam2 = Sa2VASam2(model, device=device, dtype=dtype)
    frames = tracker_bench.make_frames(args.frames, HEIGHT, WIDTH)
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        frames = tracker_bench.write_jpegs(frames, Path(tmp))
        for n in (1, 4):
            for name in ("ours", "meta"):
                reset_peak(device)
                if name == "ours":
                    times = track_ours(sam2, frames, n, args.warmup, clock)
                else:
                    times = track_meta(predictor, Path(tmp), n, args.warmup, clock, dtype)
                ms = 1e3 * statistics.fmean(times)
                result[f"{name}_ms_per_frame_{n}obj"] = round(ms, 2)
                result[f"{name}_fps_{n}obj"] = round(1e3 / ms, 2)
                result[f"{name}_peak_gpu_mb_{n}obj"] = peak_mb(device)
            result[f"ratio_{n}obj"] = round(
                result[f"ours_ms_per_frame_{n}obj"] / result[f"meta_ms_per_frame_{n}obj"], 3
            )
    del predictor, sam2, model
    return result


# ------------------------------------------------------------------------------ 2. grounding


class PhaseTimer:
    """Forward hooks on the vision tower and the language model: when each pass starts and ends."""

    def __init__(self, model: Sa2VA, clock: Clock):
        self.clock = clock
        self.vision: list[tuple[float, float]] = []
        self.llm: list[tuple[float, float]] = []
        self._start: dict[str, float] = {}
        mllm = model.mllm
        self._handles = []
        for name, module, log in (
            ("vision", mllm.vision_model, self.vision),
            ("llm", mllm.language_model, self.llm),
        ):
            self._handles.append(module.register_forward_pre_hook(self._pre(name)))
            self._handles.append(module.register_forward_hook(self._post(name, log)))

    def _pre(self, name: str):
        def hook(module, inputs):
            self._start[name] = self.clock()

        return hook

    def _post(self, name: str, log: list):
        def hook(module, inputs, output):
            log.append((self._start[name], self.clock()))

        return hook

    def clear(self) -> None:
        self.vision.clear()
        self.llm.clear()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def ground_once(model: Sa2VA, timer: PhaseTimer, frame: np.ndarray, tokens: int, clock: Clock) -> dict:
    timer.clear()
    t0 = clock()
    g = model.ground(frame, PROMPT, max_new_tokens=tokens)
    if not g.seg_embeddings.shape[0]:  # a random model rarely says [SEG]: time SAM-2 with one anyway
        g = Grounding(g.text, g.token_ids, torch.randn(1, 256, generator=torch.Generator().manual_seed(0)))
    t1 = clock()
    model.masks_for(frame, g)
    t2 = clock()
    llm = timer.llm
    first_start, first_end = llm[0]
    n_tokens = len(g.token_ids)
    return {
        "vit_ms": 1e3 * sum(e - s for s, e in timer.vision),
        "image_encoding_ms": 1e3 * (first_start - t0),
        "prefill_ms": 1e3 * (first_end - first_start),
        "per_token_ms": 1e3 * (llm[-1][1] - first_end) / max(1, len(llm) - 1),
        "tokens": n_tokens,
        "seg_to_mask_ms": 1e3 * (t2 - t1),
        "ground_total_ms": 1e3 * (t1 - t0),
    }


def grounding(model: Sa2VA, frame: np.ndarray, args, clock: Clock, device: torch.device) -> dict:
    timer = PhaseTimer(model, clock)
    try:
        ground_once(model, timer, frame, args.tokens, clock)  # warm-up (kernels, allocator)
        reset_peak(device)
        runs = [ground_once(model, timer, frame, args.tokens, clock) for _ in range(args.ground_repeats)]
    finally:
        timer.remove()
    out = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0] if k != "tokens"}
    out["tokens"] = runs[0]["tokens"]
    out["prefill_tokens"] = int(timer_prompt_tokens(model, frame))
    out["peak_gpu_mb"] = peak_mb(device)
    return out


def timer_prompt_tokens(model: Sa2VA, frame: np.ndarray) -> int:
    """Length of the prompt the language model prefills (image tokens included)."""
    prepared = model.mllm.prepare(PROMPT, [frame])
    return int(prepared.input_ids.shape[-1])


# ------------------------------------------------------------------------- 3. busy vs idle


def language_threads(threads: int) -> int:
    """sa2va_node's language_threads: 0 means half the CPU cores, so tracking keeps the rest."""
    return threads or max(1, (os.cpu_count() or 2) // 2)


def language_thread_setup(threads: int, nice: int) -> None:
    """What sa2va_node does to its language worker thread: its own torch threads, niced (Linux).

    Without it both sides use torch's default thread count and oversubscribe a small CPU (the
    in-process figure then says more about the machine than about the design).
    """
    torch.set_num_threads(language_threads(threads))
    if nice > 0 and hasattr(os, "setpriority"):
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))


def busy_vs_idle(language, model: Sa2VA, frames, args, clock: Clock, device: torch.device) -> dict:
    """Tracking rate with the language model idle, then grounding back to back on another thread.

    ``language`` runs the groundings: ``model`` itself (a thread of this process, as sa2va_node
    runs them by default) or a RemoteSa2VA (its own process, ``language_process:=true``).
    """
    tracker = model.new_tracker()
    tracker.add_object(box=BOXES[0])
    stop, busy = threading.Event(), threading.Event()
    steps: list[float] = []  # completion times of tracked frames

    def track() -> None:
        i = 0
        while not stop.is_set():
            objects = tracker.step(frames[i % len(frames)])
            [o.mask for o in objects]
            steps.append(clock())
            i += 1

    grounded = [0]

    failed: list[BaseException] = []

    def ground_loop() -> None:
        if language is model:  # a thread of this process: as sa2va_node's language worker thread
            language_thread_setup(args.language_threads, args.language_nice)
        try:
            while not stop.is_set():
                if not busy.is_set():
                    time.sleep(0.01)
                    continue
                language.segment(frames[0], PROMPT, max_new_tokens=args.tokens)
                grounded[0] += 1
        except BaseException as exc:  # noqa: BLE001 - re-raised by the measuring thread
            failed.append(exc)

    def rate(seconds: float) -> float:
        n0, t0 = len(steps), time.perf_counter()
        time.sleep(seconds)
        return (len(steps) - n0) / (time.perf_counter() - t0)

    threads = [threading.Thread(target=track, daemon=True), threading.Thread(target=ground_loop, daemon=True)]
    for t in threads:
        t.start()
    try:
        rate(args.settle)  # warm-up
        reset_peak(device)
        idle = rate(args.window)
        busy.set()
        rate(args.settle)
        # At least one whole grounding inside the window, however slow the model is.
        n_before, steps_before, t0 = grounded[0], len(steps), time.perf_counter()
        time.sleep(args.window)
        while grounded[0] == n_before and not failed and time.perf_counter() - t0 < 300:
            time.sleep(0.02)
        if failed:
            raise RuntimeError("grounding failed while tracking") from failed[0]
        busy_rate = (len(steps) - steps_before) / (time.perf_counter() - t0)
        busy.clear()
        groundings = grounded[0] - n_before
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    return {
        "idle_fps": round(idle, 2),
        "busy_fps": round(busy_rate, 2),
        "busy_rate_ratio": round(busy_rate / idle, 3) if idle else None,
        "groundings_in_window": groundings,
        "peak_gpu_mb": peak_mb(device),
    }


# ------------------------------------------------------------------------------------ main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-smoke", action="store_true", help="CPU, tiny sizes, few frames (CI)")
    p.add_argument("--sizes", default=None, help="comma-separated model sizes (default 1b,4b; smoke: tiny)")
    p.add_argument("--frames", type=int, default=None, help="tracked frames per stream (default 60; smoke 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed frames after the prompt frame")
    p.add_argument("--tokens", type=int, default=None, help="generated tokens per grounding (default 32)")
    p.add_argument("--ground-repeats", type=int, default=None, help="timed groundings per size (default 5)")
    p.add_argument("--window", type=float, default=None, help="seconds of each rate window (default 8)")
    p.add_argument("--settle", type=float, default=None, help="seconds before each rate window (default 2)")
    p.add_argument("--skip-tracking", action="store_true")
    p.add_argument(
        "--language-process",
        choices=("on", "off"),
        default="on",
        help="also measure tracking under load with the language model in its own process (default on)",
    )
    p.add_argument(
        "--language-threads",
        type=int,
        default=0,
        help="torch CPU threads of the language side, thread or process (0: half the cores, as sa2va_node)",
    )
    p.add_argument(
        "--language-nice",
        type=int,
        default=19,
        help="niceness added to the language side, thread or process (default 19, as sa2va_node)",
    )
    p.add_argument(
        "--no-language-sched-idle",
        dest="language_sched_idle",
        action="store_false",
        help="the language process niced instead of SCHED_IDLE (sa2va_node's language_sched_idle:=false)",
    )
    p.add_argument("--workdir", default=None, help="where checkpoints are written (default: a temp dir)")
    args = p.parse_args(argv)
    smoke = args.cpu_smoke
    args.sizes = (args.sizes or ("tiny" if smoke else "1b,4b")).split(",")
    args.frames = args.frames or (4 if smoke else 60)
    args.warmup = args.warmup if args.warmup is not None else (1 if smoke else 5)
    args.tokens = args.tokens or (6 if smoke else 32)
    args.ground_repeats = args.ground_repeats or (2 if smoke else 5)
    args.window = args.window or (1.5 if smoke else 8.0)
    args.language_process = args.language_process == "on"
    args.settle = args.settle or (0.5 if smoke else 2.0)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cpu_smoke:
        device, dtype = torch.device("cpu"), torch.float32
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run `bench/gpu.sh --cpu-smoke` on a CPU")
        device, dtype = torch.device("cuda"), torch.bfloat16
    clock = Clock(device)
    torch.manual_seed(0)
    result: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype).replace("torch.", ""),
        "image": f"{WIDTH}x{HEIGHT}",
        "frames": args.frames,
        "tokens": args.tokens,
        "language_threads": language_threads(args.language_threads),
        "language_nice": args.language_nice,
        "language_sched_idle": args.language_sched_idle,
    }
    t_start = time.perf_counter()
    if not args.skip_tracking:
        print(
            f"tracking: {args.frames} frames of {WIDTH}x{HEIGHT}, ours vs SAM2VideoPredictor ...", flush=True
        )
        result["tracking"] = tracking(args, device, dtype, clock)
        tr = result["tracking"]
        head = f"{'ours':>10s}{'Meta':>10s}{'ratio':>8s}{'ours fps':>10s}{'Meta fps':>10s}"
        print(f"{'tracking (ms/frame)':28s}{head}")
        for n in (1, 4):
            ours, meta = tr[f"ours_ms_per_frame_{n}obj"], tr[f"meta_ms_per_frame_{n}obj"]
            fps = f"{tr[f'ours_fps_{n}obj']:10.1f}{tr[f'meta_fps_{n}obj']:10.1f}"
            peak = (
                f"peak GPU MB ours {tr[f'ours_peak_gpu_mb_{n}obj']} / Meta {tr[f'meta_peak_gpu_mb_{n}obj']}"
            )
            print(f"{f'  {n} object(s)':28s}{ours:10.1f}{meta:10.1f}{tr[f'ratio_{n}obj']:8.3f}{fps}   {peak}")
    frames = tracker_bench.make_frames(max(args.frames, 8), HEIGHT, WIDTH)
    specs = realsize.SMOKE_SIZES if args.cpu_smoke else realsize.REAL_SIZES
    sam2_config = tiny_sam2_config(image_size=256) if args.cpu_smoke else None
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        for size in args.sizes:
            if size not in specs:
                raise SystemExit(f"unknown size {size!r}: one of {sorted(specs)}")
            t0 = time.perf_counter()
            path = realsize.write_checkpoint(
                Path(work) / size,
                specs[size],
                sam2_config=sam2_config,
                dtype=torch.bfloat16 if device.type == "cuda" else torch.float32,
            )
            written = time.perf_counter() - t0
            model = Sa2VA.from_pretrained(str(path), device=str(device), dtype=dtype)
            loaded = time.perf_counter() - t0 - written
            reset_peak(device)
            entry = {"checkpoint_write_s": round(written, 1), "load_s": round(loaded, 1)}
            entry["grounding"] = grounding(model, frames[0], args, clock, device)
            gr = entry["grounding"]
            print(
                f"grounding {size}: image encoding {gr['image_encoding_ms']:.1f} ms "
                f"(ViT {gr['vit_ms']:.1f}), prefill {gr['prefill_ms']:.1f} ms "
                f"({gr['prefill_tokens']} tokens), "
                f"{gr['per_token_ms']:.2f} ms/token ({gr['tokens']} tokens), [SEG] -> mask "
                f"{gr['seg_to_mask_ms']:.1f} ms; peak GPU MB {gr['peak_gpu_mb']}",
                flush=True,
            )
            entry["busy"] = busy_vs_idle(model, model, frames, args, clock, device)
            if args.language_process:
                remote = RemoteSa2VA(
                    str(path),
                    device=str(device),
                    dtype=dtype,
                    threads=language_threads(args.language_threads),
                    nice=args.language_nice,
                    idle=args.language_sched_idle,
                )
                try:
                    entry["busy_language_process"] = busy_vs_idle(remote, model, frames, args, clock, device)
                finally:
                    remote.close()
            for key, how in (("busy", "a thread"), ("busy_language_process", "its own process")):
                if key in entry:
                    b = entry[key]
                    print(
                        f"tracking {size} while grounding back to back in {how}: {b['busy_fps']} fps vs "
                        f"idle {b['idle_fps']} fps -> {b['busy_rate_ratio']} ({b['groundings_in_window']} "
                        f"groundings); peak GPU MB of this process {b['peak_gpu_mb']}",
                        flush=True,
                    )
            result[size] = entry
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
            (Path(work) / size / "model.safetensors").unlink()
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
