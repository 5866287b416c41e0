"""Running a Sa2VA model over evaluation samples, recording per-sample results as it goes.

Two ways of segmenting a video are evaluated side by side:
  * ``offline``: the official keyframe algorithm (``model.video``): the MLLM sees the first
    frames, SAM-2 then segments the whole clip with the [SEG] embedding;
  * ``streaming``: what the robot runs: ``model.ground`` on the first ``ground_frames``
    frames gives the [SEG] embedding, then the streaming tracker sees one frame at a time.
Prediction rules follow the official evaluation scripts: an image's masks are united (the
official RefCOCO script ORs every [SEG] mask), a video keeps its first [SEG] object, and no
[SEG] in the answer means an empty prediction.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..model.errors import InputError
from . import metrics
from .bags import BagFrame, iter_bag_images, match_gt_names
from .datasets import (
    ImageSample,
    VideoSample,
    read_mask_png,
    read_rgb,
    video_prompt,
    write_mask_png,
)
from .results import MASKS_DIR, RESULTS_FILE, ResultStore, safe_relpath

METHODS = ("offline", "streaming")
#: The streaming method grounds on one frame by default, as a robot does on its current frame.
DEFAULT_STREAMING_GROUND_FRAMES = 1


@dataclass(frozen=True)
class RunOptions:
    """How to run the model and what to keep, shared by every evaluation."""

    #: Write predicted masks as PNG (needed for challenge submissions and ``score``).
    save_masks: bool = True
    progress: bool = True
    #: Generation budget per answer; None = the model's default (the official 2048).
    max_new_tokens: int | None = None
    #: Streaming method: frames the MLLM sees before tracking starts (1 = a single image).
    ground_frames: int = DEFAULT_STREAMING_GROUND_FRAMES
    #: Streaming method: a ``TrackerConfig`` (None = the tracker's defaults).
    tracker_config: object | None = None


# ----------------------------------------------------------------------------- predictions


def _bool(mask: object) -> np.ndarray:
    arr = mask.detach().cpu().numpy() if hasattr(mask, "detach") else np.asarray(mask)
    return arr.astype(bool)


def _gen_kwargs(max_new_tokens: int | None) -> dict:
    return {} if max_new_tokens is None else {"max_new_tokens": max_new_tokens}


def predict_image(
    model, image: np.ndarray, text: str, max_new_tokens: int | None = None
) -> tuple[np.ndarray | None, str]:
    """The union of the answer's [SEG] masks (None when it has none) and the answer text."""
    r = model.segment(image, text, **_gen_kwargs(max_new_tokens))
    if not r.masks:
        return None, r.text
    mask = _bool(r.masks[0]).copy()
    for m in r.masks[1:]:
        mask |= _bool(m)
    return mask, r.text


def predict_video_offline(
    model, frames: Sequence[np.ndarray], text: str, max_new_tokens: int | None = None
) -> tuple[list[np.ndarray] | None, str]:
    """Masks of the first [SEG] object on every frame with the official keyframe algorithm."""
    v = model.video(list(frames), text, **_gen_kwargs(max_new_tokens))
    if not v.masks:
        return None, v.text
    masks = [_bool(m) for m in v.masks[0]]
    if len(masks) != len(frames):
        raise InputError(f"model.video returned {len(masks)} masks for {len(frames)} frames.")
    return masks, v.text


def predict_video_streaming(
    model,
    frames: Iterable[np.ndarray],
    text: str,
    ground_frames: int = DEFAULT_STREAMING_GROUND_FRAMES,
    tracker_config: object | None = None,
    label: str = "",
    max_new_tokens: int | None = None,
) -> Iterator[tuple[np.ndarray | None, str]]:
    """Ground on the first ``ground_frames`` frames, then track frame by frame.

    With one grounding frame the MLLM sees it as a single (tiled) image, as the ROS node
    does with the current camera frame; with more, they go in as video keyframes. Yields
    (mask or None, answer text) per frame as soon as the tracker produced it, so a caller
    can write the masks of a long recording without holding them all.
    """
    it = iter(frames)
    head = list(itertools.islice(it, max(1, ground_frames)))
    if not head:
        return
    if len(head) == 1:
        g = model.ground(head[0], text, **_gen_kwargs(max_new_tokens))
    else:
        g = model.ground(head, text, video=True, **_gen_kwargs(max_new_tokens))
    emb = g.seg_embeddings
    if emb is None or len(emb) == 0:  # no [SEG]: nothing to track, empty masks
        for _ in itertools.chain(head, it):
            yield None, g.text
        return
    tracker = model.new_tracker(tracker_config)
    tid = tracker.add_object(embedding=emb[0], label=label, prompt=text)
    for frame in itertools.chain(head, it):
        objs = tracker.step(frame)
        mask = next((o.mask for o in objs if o.id == tid), None)
        yield (None if mask is None else _bool(mask)), g.text


# ----------------------------------------------------------------------------- datasets


def _progress(total: int, done: int, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=done, desc=desc, unit="sample", disable=not enabled, dynamic_ncols=True)


def evaluate_images(
    model, samples: Sequence[ImageSample], out: Path, options: RunOptions = RunOptions()
) -> dict:
    """Run ``model`` on every image sample not yet in ``out`` and return the cIoU/gIoU summary."""
    out = Path(out)
    store = ResultStore(out / RESULTS_FILE)
    todo = [s for s in samples if s.id not in store]
    done = store.records([s.id for s in samples])
    inter, union = sum(r["intersection"] for r in done), sum(r["union"] for r in done)  # running cIoU
    with _progress(len(samples), len(done), "images", options.progress) as bar:
        for s in todo:
            rel = safe_relpath(s.id)
            image = read_rgb(s.image_path)
            t0 = time.perf_counter()
            mask, answer = predict_image(model, image, s.text, options.max_new_tokens)
            dt = time.perf_counter() - t0
            gt = s.load_gt()
            rec = {"id": s.id, "expression": s.expression, "answer": answer, "found": mask is not None}
            rec.update(metrics.image_sample_scores(mask, gt))
            rec["seconds"] = dt
            if options.save_masks:
                write_mask_png(
                    out / MASKS_DIR / f"{rel}.png", mask if mask is not None else np.zeros_like(gt)
                )
            store.add(rec)
            inter += rec["intersection"]
            union += rec["union"]
            bar.update(1)
            bar.set_postfix(cIoU=f"{100 * inter / max(union, 1):.1f}", refresh=False)
    records = store.records([s.id for s in samples])
    summary = metrics.summarize_image(records)
    summary["seconds_per_sample"] = float(np.mean([r["seconds"] for r in records])) if records else 0.0
    return summary


def _read_frames(sample: VideoSample) -> list[np.ndarray]:
    frames = [read_rgb(p) for p in sample.frame_paths]
    sizes = {f.shape[:2] for f in frames}
    if len(sizes) > 1:
        raise InputError(f"frames of {sample.video} have different sizes {sorted(sizes)}.")
    return frames


def _run_video_method(
    model, method: str, frames: list[np.ndarray], sample: VideoSample, options: RunOptions
) -> tuple[list[np.ndarray | None], str]:
    if method == "offline":
        masks, answer = predict_video_offline(model, frames, sample.text, options.max_new_tokens)
        return (masks if masks is not None else [None] * len(frames)), answer
    results = list(
        predict_video_streaming(
            model,
            frames,
            sample.text,
            options.ground_frames,
            options.tracker_config,
            label=sample.expression,
            max_new_tokens=options.max_new_tokens,
        )
    )
    return [mask for mask, _ in results], (results[0][1] if results else "")


def summarize_video_records(records: Sequence[dict], by_type: bool = False) -> dict:
    """The J/F summary of records; records without ground truth only count as predictions."""
    scored = [r for r in records if "J" in r]
    if scored:
        summary = metrics.summarize_video(scored, by_type=by_type)
    else:
        summary = {"J": None, "F": None, "J&F": None, "count": 0}
    summary["predicted"] = len(records)
    frames = sum(r.get("n_frames", 0) for r in records)
    seconds = sum(r.get("seconds", 0.0) for r in records)
    summary["fps"] = frames / seconds if seconds > 0 else None
    return summary


def evaluate_videos(
    model,
    samples: Sequence[VideoSample],
    out: Path,
    methods: Sequence[str] = ("offline",),
    options: RunOptions = RunOptions(),
    by_type: bool = False,
) -> dict:
    """Run each method on every video sample not yet done; results go to ``out/<method>/``.

    Returns {method: summary}. Masks are written as ``out/<method>/masks/<video>/<exp>/<frame>.png``
    (the MeViS / Ref-YouTube-VOS submission layout: zip ``masks`` renamed ``Annotations``).
    """
    for m in methods:
        if m not in METHODS:
            raise InputError(f"unknown method '{m}'; choose from {', '.join(METHODS)}.")
    out = Path(out)
    stores = {m: ResultStore(out / m / RESULTS_FILE) for m in methods}
    todo = [s for s in samples if any(s.id not in stores[m] for m in methods)]
    with _progress(len(samples), len(samples) - len(todo), "videos", options.progress) as bar:
        for s in todo:
            rel = safe_relpath(s.id)
            frames = _read_frames(s)
            gt = s.load_gt() if s.load_gt is not None else None
            for m in methods:
                if s.id in stores[m]:
                    continue
                t0 = time.perf_counter()
                masks, answer = _run_video_method(model, m, frames, s, options)
                dt = time.perf_counter() - t0
                rec = {
                    "id": s.id,
                    "video": s.video,
                    "expression": s.expression,
                    "answer": answer,
                    "found": any(x is not None for x in masks),
                    "n_frames": len(frames),
                    "seconds": dt,
                }
                if s.type_id is not None:
                    rec["type_id"] = s.type_id
                if gt is not None:
                    by_name = dict(zip(s.frame_names, masks, strict=True))
                    rec.update(metrics.video_sample_scores(by_name, gt))
                if options.save_masks:
                    blank = np.zeros(frames[0].shape[:2], bool)
                    for name, mask in zip(s.frame_names, masks, strict=True):
                        write_mask_png(
                            out / m / MASKS_DIR / rel / f"{name}.png", mask if mask is not None else blank
                        )
                stores[m].add(rec)
            bar.update(1)
    ids = [s.id for s in samples]
    return {m: summarize_video_records(stores[m].records(ids), by_type=by_type) for m in methods}


# ----------------------------------------------------------------------------- ROS 2 bags


def _gt_stems(gt_dir: Path | None) -> list[str]:
    if gt_dir is None:
        return []
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise InputError(f"--gt {gt_dir} is not a folder.")
    stems = sorted(p.stem for p in gt_dir.glob("*.png"))
    if not stems:
        raise InputError(f"no PNG in {gt_dir}: name ground-truth masks by frame index or stamp (ns).")
    return stems


def evaluate_bag(
    model,
    bag: Path,
    topic: str,
    text: str,
    out: Path,
    gt_dir: Path | None = None,
    max_frames: int | None = None,
    options: RunOptions = RunOptions(),
) -> dict:
    """Replay ``topic`` of ``bag`` through the streaming tracker as fast as it runs.

    Writes ``masks/<index:06d>.png`` and ``frames.jsonl`` (index, stamp, mask area, time)
    and scores against ``gt_dir`` PNGs named by frame index or stamp when given. A bag is
    one sample: a finished replay in ``out`` is not repeated.
    """
    out = Path(out)
    store = ResultStore(out / RESULTS_FILE)
    stems = _gt_stems(gt_dir)
    if "bag" not in store:
        numbers = {int(s) for s in stems if s.isdigit()}
        kept: dict[int, np.ndarray | None] = {}  # predictions of frames that may have ground truth
        seen: list[tuple[int, int]] = []
        frames_log = out / "frames.jsonl"
        frames_log.parent.mkdir(parents=True, exist_ok=True)
        t_start = time.perf_counter()
        model_seconds = 0.0
        timed = _TimedFrames(iter_bag_images(bag, topic, max_frames=max_frames))
        results = predict_video_streaming(
            model,
            timed,
            text,
            options.ground_frames,
            options.tracker_config,
            label=text,
            max_new_tokens=options.max_new_tokens,
        )
        answer = ""
        with (
            open(frames_log, "w", encoding="utf-8") as log,
            tqdm(desc="frames", unit="frame", disable=not options.progress, dynamic_ncols=True) as bar,
        ):
            while True:
                t0, read0 = time.perf_counter(), timed.read_seconds
                try:
                    mask, answer = next(results)
                except StopIteration:
                    break
                # Model time only: reading/decoding the bag is not what a robot would pay.
                step_s = time.perf_counter() - t0 - (timed.read_seconds - read0)
                model_seconds += step_s
                frame = timed.pop()
                seen.append((frame.index, frame.stamp_ns))
                if frame.index in numbers or frame.stamp_ns in numbers:
                    kept[frame.index] = mask
                name = f"{frame.index:06d}.png"
                if options.save_masks:
                    write_mask_png(
                        out / MASKS_DIR / name,
                        mask if mask is not None else np.zeros(frame.image.shape[:2], bool),
                    )
                area = int(mask.sum()) if mask is not None else 0
                log.write(
                    json.dumps(
                        {
                            "index": frame.index,
                            "stamp_ns": frame.stamp_ns,
                            "mask": name,
                            "area": area,
                            "ms": 1000 * step_s,
                        }
                    )
                    + "\n"
                )
                bar.update(1)
        if not seen:
            raise InputError(f"topic '{topic}' of {bag} holds no image.")
        rec: dict = {
            "id": "bag",
            "bag": str(bag),
            "topic": topic,
            "answer": answer,
            "n_frames": len(seen),
            "seconds": model_seconds,
            "wall_seconds": time.perf_counter() - t_start,
        }
        if stems:
            mapping = match_gt_names(stems, seen)
            gts = {name: read_mask_png(Path(gt_dir) / f"{name}.png") for name in stems}
            preds = {name: kept.get(idx) for name, idx in mapping.items()}
            rec.update(metrics.video_sample_scores(preds, gts))
            rec["scored_frames"] = rec.pop("frames")
        store.add(rec)
    rec = store.records(["bag"])[0]
    summary = summarize_video_records([rec])
    summary["frames"] = rec["n_frames"]
    summary["scored_frames"] = rec.get("scored_frames", 0)
    return summary


class _TimedFrames:
    """Wraps the bag iterator, remembering each frame and the time spent reading and decoding."""

    def __init__(self, frames: Iterator[BagFrame]) -> None:
        self._frames = frames
        self._pending: list[BagFrame] = []
        self.read_seconds = 0.0

    def __iter__(self) -> _TimedFrames:
        return self

    def __next__(self) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            f = next(self._frames)
        finally:
            self.read_seconds += time.perf_counter() - t0
        self._pending.append(f)
        return f.image

    def pop(self) -> BagFrame:
        """The oldest frame handed out whose result has not been collected yet."""
        return self._pending.pop(0)


def default_bag_text(expression: str) -> str:
    """The text given to the model for a bag command: the official video wording."""
    return video_prompt(expression)
