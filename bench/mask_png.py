"""What encoding a mask as PNG costs the node, with the shipped settings and with zlib level 9.

Every answer to Ask / Segment / Describe carries each found object's mask as a 1-bit PNG and a
label image as an 8-bit PNG (sa2va_ros/node/mask_codec.py); ``object_masks`` adds one PNG per
object to every frame's ``objects``. zlib's level 9 (what the node used until now) costs time that
depends on the mask: little for a smooth object, ten times more for a speckled one, which is what
a random-weight demo model or an uncertain real one produces. The node now uses zlib's run-length
strategy (and no row filter where OpenCV offers the choice). Masks at 640x480: one disc, four
discs (label image with four values) and speckle (blocks of a 80x60 random field, about 20% set);
``--model`` adds the mask the tiny demo model gives for a question (the one bench/node_latency.py
asks back to back).

    python bench/mask_png.py [--model] [--repeats 30]

Prints the median time and bytes of each; the last line is JSON with ``worst_ms`` of each setting
(the slowest mask, 1-bit plus 8-bit encodings of one answer) and ``worst_ratio`` (shipped / level 9).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test" / "peers"))


def masks(with_model: bool) -> dict:
    import numpy as np

    yy, xx = np.mgrid[:480, :640]
    disc = (yy - 240) ** 2 + (xx - 320) ** 2 < 100**2
    four = np.zeros((480, 640), np.uint8)
    for k in range(4):
        four[(yy - 100 - 90 * k) ** 2 + (xx - 120 - 120 * k) ** 2 < 70**2] = k + 1
    rng = np.random.default_rng(0)
    speckle = np.kron(rng.random((60, 80)) > 0.8, np.ones((8, 8), bool))
    out = {"disc": disc, "four discs": four, "speckle": speckle}
    if with_model:
        import torch
        from node_harness import write_model

        from sa2va_ros.demo_camera import render
        from sa2va_ros.model import Sa2VA

        torch.set_num_threads(1)
        with tempfile.TemporaryDirectory(prefix="sa2va_png_") as tmp:
            path = write_model(Path(tmp) / "model", force_seg=True, sam2_image_size=256)
            model = Sa2VA.from_pretrained(str(path), device="cpu", dtype="float32")
        answer = model.chat("What is in the image?", render(3, 640, 480), max_new_tokens=16)
        out["demo model answer"] = np.asarray(answer.masks[0], bool)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="store_true", help="add the tiny demo model's answer mask")
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()

    import cv2
    import numpy as np

    from sa2va_ros.node import mask_codec

    level9 = [int(cv2.IMWRITE_PNG_COMPRESSION), 9]
    settings = {
        "level 9": (level9, level9 + [int(cv2.IMWRITE_PNG_BILEVEL), 1]),
        "shipped": (mask_codec.PNG_PARAMS, mask_codec.BILEVEL_PNG_PARAMS),
    }

    def timed(pixels, params) -> tuple[float, int]:
        times, size = [], 0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ok, encoded = cv2.imencode(".png", pixels, params)
            times.append(time.perf_counter() - t0)
            assert ok
            size = len(encoded)
        return 1000 * statistics.median(times), size

    worst = {name: 0.0 for name in settings}
    print(f"{'mask':<20}{'setting':<10}{'1-bit ms':>10}{'bytes':>8}{'8-bit ms':>10}{'bytes':>8}")
    for name, mask in masks(args.model).items():
        label = mask.astype(np.uint8)
        bilevel = np.where(mask > 0, np.uint8(255), np.uint8(0))
        for setting, (params8, params1) in settings.items():
            ms1, b1 = timed(bilevel, params1)
            ms8, b8 = timed(label, params8)
            # Round trip: whatever the setting, the pixels come back exactly.
            back = cv2.imdecode(cv2.imencode(".png", label, params8)[1], cv2.IMREAD_UNCHANGED)
            assert np.array_equal(back, label), f"{setting} lost pixels of {name}"
            worst[setting] = max(worst[setting], ms1 + ms8)
            print(f"{name:<20}{setting:<10}{ms1:>10.2f}{b1:>8}{ms8:>10.2f}{b8:>8}")
    summary = {
        "worst_ms": {k: round(v, 2) for k, v in worst.items()},
        "worst_ratio": round(worst["shipped"] / worst["level 9"], 3),
        "opencv": cv2.__version__,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
