"""`sa2va`: one-shot use of the model core from a terminal, no ROS needed.

The way users try a checkpoint before wiring it into a robot:

    sa2va segment  --model M --image IMG --prompt TEXT --out DIR
    sa2va chat     --model M [--image IMG] --prompt TEXT --out DIR
    sa2va describe --model M --image IMG (--mask PNG | --box x0,y0,x1,y1 | --point x,y) [--prompt T] --out DIR
    sa2va caption  --model M --image IMG --out DIR
    sa2va video    --model M (--frames DIR | --video FILE) --prompt TEXT --out DIR

Each writes DIR/result.json ("text", "token_ids", "masks" and more) and the masks as PNG
(0/255, the input's size).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _read_image(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise SystemExit(f"sa2va: cannot read image {path}: {exc}") from exc


def _read_mask(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L")) > 0
    except (OSError, ValueError) as exc:
        raise SystemExit(f"sa2va: cannot read mask {path}: {exc}") from exc


def _read_frames(frames_dir: str | None, video: str | None) -> list[np.ndarray]:
    if frames_dir:
        files = sorted(p for p in Path(frames_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SystemExit(f"sa2va: no image files ({', '.join(IMAGE_SUFFIXES)}) in {frames_dir}")
        return [_read_image(str(p)) for p in files]
    import cv2

    cap = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    if not frames:
        raise SystemExit(f"sa2va: could not read any frame from {video}")
    return frames


def _numbers(text: str, count: int, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count:
        raise SystemExit(f"sa2va: {what} must be {count} comma-separated numbers, got '{text}'")
    return values


def _save_mask(out: Path, name: str, mask: np.ndarray) -> str:
    from PIL import Image

    Image.fromarray(mask.astype(np.uint8) * 255).save(out / name)
    return name


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sa2va", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "--model", required=True, help="local checkpoint folder or hub id (e.g. ByteDance/Sa2VA-1B)"
        )
        p.add_argument("--out", required=True, help="output folder (created)")
        p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
        p.add_argument(
            "--dtype", default="auto", help="float32, bfloat16, float16 or auto (bf16 on GPU, fp32 on CPU)"
        )
        p.add_argument("--max-new-tokens", type=int, default=512)
        return p

    p = command("segment", "referring segmentation on one image")
    p.add_argument("--image", required=True)
    p.add_argument("--prompt", required=True)
    p = command("chat", "chat, with or without an image")
    p.add_argument("--image")
    p.add_argument("--prompt", required=True)
    p = command("describe", "describe a region given by a mask, a box or a point")
    p.add_argument("--image", required=True)
    region = p.add_mutually_exclusive_group(required=True)
    region.add_argument("--mask", help="PNG, non-zero = region")
    region.add_argument("--box", help="x0,y0,x1,y1 in pixels")
    region.add_argument("--point", help="x,y in pixels")
    p.add_argument("--prompt", default=None, help="default: the official region-description prompt")
    p = command("caption", "grounded caption: phrases with their masks")
    p.add_argument("--image", required=True)
    p = command("video", "referring segmentation on a video (official keyframe algorithm)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--frames", help="folder of frames (sorted by name)")
    source.add_argument("--video", help="video file readable by OpenCV")
    p.add_argument("--prompt", required=True)
    return parser


def run(args: argparse.Namespace) -> dict:
    """Run one command and write its outputs; returns what went into result.json."""
    from .model import Sa2VA

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = Sa2VA.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result: dict = {"command": args.command, "model": str(args.model)}
    if args.command == "video":
        frames = _read_frames(args.frames, args.video)
        r = model.video(frames, args.prompt, max_new_tokens=args.max_new_tokens)
        per_frame = [
            [_save_mask(out, f"mask{k}_frame{f:05d}.png", r.masks[k][f]) for k in range(len(r.masks))]
            for f in range(len(frames))
        ]
        result.update(text=r.text, token_ids=r.token_ids, masks=per_frame, num_frames=len(frames))
    elif args.command == "caption":
        image = _read_image(args.image)
        r = model.caption(image, max_new_tokens=args.max_new_tokens)
        names = [_save_mask(out, f"mask{k}.png", phrase.mask) for k, phrase in enumerate(r.phrases)]
        result.update(
            text=r.text, token_ids=r.token_ids, masks=names, phrases=[phrase.phrase for phrase in r.phrases]
        )
    else:
        image = _read_image(args.image) if getattr(args, "image", None) else None
        if args.command == "segment":
            r = model.segment(image, args.prompt, max_new_tokens=args.max_new_tokens)
        elif args.command == "chat":
            r = model.chat(args.prompt, image=image, max_new_tokens=args.max_new_tokens)
        else:
            region = {}
            if args.mask:
                region["mask"] = _read_mask(args.mask)
            elif args.box:
                region["box"] = _numbers(args.box, 4, "--box")
            else:
                region["point"] = _numbers(args.point, 2, "--point")
            r = model.describe(image, prompt=args.prompt, max_new_tokens=args.max_new_tokens, **region)
            if r.region_mask is not None:
                result["region_mask"] = _save_mask(out, "region.png", r.region_mask)
        names = [_save_mask(out, f"mask{k}.png", m) for k, m in enumerate(r.masks)]
        result.update(text=r.text, token_ids=r.token_ids, masks=names)
    result["timing_s"] = {"load": round(load_s, 3), "inference": round(time.perf_counter() - t0, 3)}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .model.errors import Sa2VAError

    try:
        result = run(args)
    except Sa2VAError as exc:
        print(f"sa2va: {exc}", file=sys.stderr)
        return 2
    print(result["text"])
    print(f"wrote {Path(args.out) / 'result.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
