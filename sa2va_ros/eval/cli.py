"""``sa2va-eval``: benchmark a Sa2VA checkpoint, replay a ROS 2 bag, or score masks on disk.

Every command prints a table, then the summary as ONE JSON line, always the last line of
stdout (progress bars and logs go to stderr), so scripts can do ``| tail -n 1``. Scores
are in percent, like the paper.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from ..model.errors import InputError, Sa2VAError
from . import datasets, results, runner, score

log = logging.getLogger("sa2va_ros.eval")

EPILOG = """\
examples:
  sa2va-eval image --model ByteDance/Sa2VA-4B --layout refcoco --data data/ref_seg \\
      --dataset refcoco --split val --out runs/refcoco_val
  sa2va-eval video --model ByteDance/Sa2VA-4B --layout mevis --data data/video_datas/mevis/valid_u \\
      --method both --out runs/mevis_valid_u
  sa2va-eval bag --model ByteDance/Sa2VA-1B --bag my_bag --topic /camera/image_raw \\
      --prompt "the red mug" --gt my_bag_gt --out runs/my_bag
  sa2va-eval score --kind video --pred runs/x/offline/masks --gt my_gt_masks

The last line of stdout is the summary JSON: cIoU, gIoU, count (images) or J, F, J&F,
count (videos, bags), in percent. Rerunning a command with the same --out resumes it.
"""


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model", required=True, help="checkpoint folder or Hugging Face id (e.g. ByteDance/Sa2VA-4B)"
    )
    g.add_argument(
        "--device", default="auto", help="auto (default: the GPU when there is one), cuda, cuda:1, cpu"
    )
    g.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="auto: bfloat16 on a GPU (as the paper's evaluation), float32 on the CPU",
    )


def _add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output folder: per-sample results.jsonl, masks/, summary.json; rerun to resume",
    )
    g.add_argument("--overwrite", action="store_true", help="discard the results of an earlier run in --out")
    g.add_argument(
        "--no-save-masks", dest="save_masks", action="store_false", help="do not write predicted masks as PNG"
    )
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    g.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        metavar="N",
        help="cap each answer at N tokens (default: the official 2048; answers are 'Sure, [SEG].')",
    )


def _add_tracker_args(p: argparse.ArgumentParser, ground_default: int) -> None:
    g = p.add_argument_group("streaming tracker")
    g.add_argument(
        "--ground-frames",
        metavar="N",
        type=int,
        default=ground_default,
        help="frames the MLLM sees before tracking starts: 1 = a single image (what the ROS node "
        f"does with its current frame), more = video keyframes (default {ground_default})",
    )
    g.add_argument(
        "--keyframes",
        metavar="N",
        type=int,
        default=5,
        help="frames the tracker conditions on the [SEG] embedding after grounding (default 5, "
        "the official value)",
    )
    g.add_argument(
        "--original-sam2-weights",
        metavar="FILE",
        type=Path,
        default=None,
        help="Meta's SAM-2 Hiera-L weights: propagate with the original decoder (Sa2VA-i)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sa2va-eval",
        description="Evaluate Sa2VA on referring segmentation benchmarks or ROS 2 bags; score masks on disk.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (to stderr)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "image",
        help="image referring segmentation (cIoU, gIoU): RefCOCO/+/g or JSON lines",
    )
    _add_model_args(p)
    g = p.add_argument_group("data")
    g.add_argument(
        "--layout",
        required=True,
        choices=["refcoco", "jsonl"],
        help="refcoco: the refer layout (refs(unc).p + instances.json); jsonl: your own file",
    )
    g.add_argument(
        "--data",
        required=True,
        type=Path,
        help="refcoco: folder holding <dataset>/refs(...).p (e.g. data/ref_seg); jsonl: the file",
    )
    g.add_argument(
        "--dataset",
        default="refcoco",
        choices=sorted(datasets.REFER_SPLIT_BY),
        help="refer dataset (default refcoco)",
    )
    g.add_argument(
        "--split",
        default="val",
        help="refer split (default val): val, testA, testB (refcoco/+); val, test (refcocog)",
    )
    g.add_argument("--split-by", default=None, help="refer splitBy (default: unc; umd for refcocog)")
    g.add_argument(
        "--images",
        type=Path,
        default=None,
        metavar="DIR",
        help="COCO train2014 images (default: found near --data)",
    )
    g.add_argument(
        "--limit", type=int, default=None, metavar="N", help="only the first N expressions (a quick check)"
    )
    _add_run_args(p)

    p = sub.add_parser(
        "video",
        help="video referring segmentation (J, F, J&F): MeViS, Ref-DAVIS17, ReVOS or JSON lines",
    )
    _add_model_args(p)
    g = p.add_argument_group("data")
    g.add_argument(
        "--layout",
        required=True,
        choices=[*datasets.VIDEO_LAYOUTS, "jsonl"],
        help="benchmark layout, or jsonl for your own file",
    )
    g.add_argument(
        "--data",
        required=True,
        type=Path,
        help="benchmark root (e.g. data/video_datas/mevis/valid_u), or the .jsonl file",
    )
    g.add_argument(
        "--expressions", type=Path, default=None, help="meta_expressions JSON (default: per layout)"
    )
    g.add_argument(
        "--frames", type=Path, default=None, help="frames root, <video>/<frame>.jpg (default: per layout)"
    )
    g.add_argument(
        "--masks",
        type=Path,
        default=None,
        help="mask_dict.json/.pkl or Annotations folder (default: per layout; none = predict only)",
    )
    g.add_argument(
        "--limit", type=int, default=None, metavar="N", help="only the first N expressions (a quick check)"
    )
    p.add_argument(
        "--method",
        default="offline",
        choices=["offline", "streaming", "both"],
        help="offline (default): the official keyframe algorithm (model.video); streaming: model.ground "
        "+ the streaming tracker, frame by frame; both: side by side",
    )
    _add_tracker_args(p, ground_default=runner.DEFAULT_STREAMING_GROUND_FRAMES)
    _add_run_args(p)

    p = sub.add_parser(
        "bag",
        help="replay a ROS 2 bag's image topic through the streaming tracker",
    )
    _add_model_args(p)
    g = p.add_argument_group("data")
    g.add_argument(
        "--bag", required=True, type=Path, help="rosbag2 folder (mcap or sqlite3) or its .mcap/.db3 file"
    )
    g.add_argument("--topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    what = g.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--prompt", help="what to track, e.g. 'the red mug' (worded as the official video prompt)"
    )
    what.add_argument("--raw-prompt", help="the exact text given to the model instead")
    g.add_argument(
        "--gt",
        type=Path,
        default=None,
        help="ground-truth PNGs named by frame index (000012.png) or header stamp in ns",
    )
    g.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    _add_tracker_args(p, ground_default=1)
    _add_run_args(p)

    p = sub.add_parser(
        "score",
        help="score predicted mask PNGs against ground-truth PNGs (no model)",
    )
    p.add_argument("--pred", required=True, type=Path, help="predicted masks (same names as --gt)")
    p.add_argument("--gt", required=True, type=Path, help="ground-truth masks")
    p.add_argument(
        "--kind",
        required=True,
        choices=["image", "video"],
        help="image: one PNG per image; video: one sub-folder of frame PNGs per video",
    )
    p.add_argument(
        "--missing-as-empty",
        action="store_true",
        help="score a ground-truth mask without prediction as an empty prediction instead of failing",
    )
    p.add_argument("--out", type=Path, default=None, help="also write results.jsonl and summary.json here")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


# ----------------------------------------------------------------------------- commands


def _load_model(args: argparse.Namespace):
    from ..model import Sa2VA  # imported here: scoring needs no torch

    log.info("loading %s", args.model)
    return Sa2VA.from_pretrained(args.model, device=args.device, dtype=args.dtype)


def _tracker_config(args: argparse.Namespace):
    from ..model import TrackerConfig

    return TrackerConfig(num_keyframes=args.keyframes, original_sam2_weights=args.original_sam2_weights)


def _options(args: argparse.Namespace, tracker_config: object | None = None) -> runner.RunOptions:
    if getattr(args, "ground_frames", 1) < 1:
        raise InputError("--ground-frames must be at least 1.")
    return runner.RunOptions(
        save_masks=args.save_masks,
        progress=args.progress,
        max_new_tokens=args.max_new_tokens,
        ground_frames=getattr(args, "ground_frames", runner.DEFAULT_STREAMING_GROUND_FRAMES),
        tracker_config=tracker_config,
    )


#: Arguments that change the predictions: resuming an output folder requires the same values.
MODEL_KEYS = ("model", "dtype", "max_new_tokens")
TRACKER_KEYS = ("ground_frames", "keyframes", "original_sam2_weights")


def _settings(args: argparse.Namespace, keys: Sequence[str]) -> dict:
    out = {"command": args.command}
    for k in keys:
        v = getattr(args, k, None)
        out[k] = str(v) if isinstance(v, Path) else v
    return out


def _limit(samples: list, limit: int | None) -> list:
    if limit is not None and limit < 1:
        raise InputError("--limit must be at least 1.")
    return samples[:limit] if limit else samples


def _cmd_image(args: argparse.Namespace) -> tuple[dict, str]:
    if args.layout == "refcoco":
        samples = datasets.load_refcoco(args.data, args.dataset, args.split, args.split_by, args.images)
        name = f"{args.dataset} {args.split}"
    else:
        samples = datasets.load_image_jsonl(args.data)
        name = args.data.name
    samples = _limit(samples, args.limit)
    keys = [*MODEL_KEYS, "layout", "data", "dataset", "split", "split_by", "images"]
    out = results.prepare_out_dir(args.out, _settings(args, keys), args.overwrite)
    model = _load_model(args)
    summary = runner.evaluate_images(model, samples, out, _options(args))
    return summary, results.format_table({name: summary}, ["count", "cIoU", "gIoU"])


def _video_table(by_method: dict) -> str:
    rows = {}
    for m, s in by_method.items():
        rows[m] = s
        for t, part in s.get("by_type", {}).items():
            rows[f"  {t}"] = part
    return results.format_table(rows, ["count", "J", "F", "J&F", "fps"])


def _cmd_video(args: argparse.Namespace) -> tuple[dict, str]:
    if args.layout == "jsonl":
        samples = datasets.load_video_jsonl(args.data)
    else:
        samples = datasets.load_meta_expressions(
            args.layout, args.data, args.expressions, args.frames, args.masks
        )
    samples = _limit(samples, args.limit)
    if samples[0].load_gt is None:
        log.warning("no ground-truth masks found: predictions are written but not scored")
    methods = ["offline", "streaming"] if args.method == "both" else [args.method]
    keys = [*MODEL_KEYS, *TRACKER_KEYS, "layout", "data", "expressions", "frames", "masks"]
    out = results.prepare_out_dir(args.out, _settings(args, keys), args.overwrite)
    model = _load_model(args)
    config = _tracker_config(args) if "streaming" in methods else None
    by_method = runner.evaluate_videos(
        model, samples, out, methods, _options(args, config), by_type=args.layout == "revos"
    )
    # Headline = the official algorithm when it ran; every method is under "by_method".
    head = "offline" if "offline" in by_method else methods[0]
    summary = {**by_method[head], "method": head}
    if len(by_method) > 1:
        summary["by_method"] = by_method
    return summary, _video_table(by_method)


def _cmd_bag(args: argparse.Namespace) -> tuple[dict, str]:
    text = args.raw_prompt if args.raw_prompt else runner.default_bag_text(args.prompt)
    keys = [*MODEL_KEYS, *TRACKER_KEYS, "bag", "topic", "prompt", "raw_prompt", "gt", "max_frames"]
    out = results.prepare_out_dir(args.out, _settings(args, keys), args.overwrite)
    model = _load_model(args)
    summary = runner.evaluate_bag(
        model,
        args.bag,
        args.topic,
        text,
        out,
        gt_dir=args.gt,
        max_frames=args.max_frames,
        options=_options(args, _tracker_config(args)),
    )
    summary["method"] = "streaming"
    return summary, results.format_table(
        {args.topic: summary}, ["frames", "scored_frames", "J", "F", "J&F", "fps"]
    )


def _cmd_score(args: argparse.Namespace) -> tuple[dict, str]:
    out = None
    if args.out is not None:
        out = results.prepare_out_dir(args.out, _settings(args, ["pred", "gt", "kind", "missing_as_empty"]))
    fn = score.score_images if args.kind == "image" else score.score_videos
    summary = fn(args.pred, args.gt, out, missing_as_empty=args.missing_as_empty, progress=args.progress)
    cols = ["count", "cIoU", "gIoU"] if args.kind == "image" else ["count", "J", "F", "J&F"]
    return summary, results.format_table({str(args.pred): summary}, cols)


COMMANDS = {"image": _cmd_image, "video": _cmd_video, "bag": _cmd_bag, "score": _cmd_score}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sa2va-eval`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        summary, table = COMMANDS[args.command](args)
    except InputError as exc:
        print(f"sa2va-eval: error: {exc}", file=sys.stderr)
        return 2
    except Sa2VAError as exc:
        print(f"sa2va-eval: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sa2va-eval: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
    summary = results.round_floats(summary)
    out = getattr(args, "out", None)
    if out is not None:
        results.write_summary(out, summary)
    print(table)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
