"""Tiny synthetic datasets in every layout sa2va-eval reads (shared by the eval tests).

Each writer draws a few small frames with a coloured square moving over a grey background
and returns the ground-truth masks it wrote, so tests can check what the readers decode.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

H, W = 48, 64


def moving_square(n: int, start: int = 4, size: int = 12, step: int = 3, colour=(220, 40, 40)):
    """n RGB frames (H, W, 3) and their (H, W) bool masks."""
    frames, masks = [], []
    for i in range(n):
        img = np.full((H, W, 3), 90, np.uint8)
        m = np.zeros((H, W), bool)
        x = start + step * i
        m[10 : 10 + size, x : x + size] = True
        img[m] = colour
        frames.append(img)
        masks.append(m)
    return frames, masks


def rle(mask: np.ndarray) -> dict:
    r = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def save_rgb(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(img).save(path)


def save_mask(path: Path, mask: np.ndarray, value: int = 255) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.where(mask, value, 0).astype(np.uint8)).save(path)


# ----------------------------------------------------------------------------- model


def write_fast_tiny_checkpoint(path: Path) -> str:
    """A force-[SEG] tiny checkpoint whose SAM-2 takes 256x256 inputs instead of 1024.

    The input size sets no weight shape, and 16x fewer SAM-2 pixels keep the end-to-end
    tests within their time budget on a small CPU.
    """
    from sa2va_ros.testing.sam2_writer import tiny_sam2_config
    from sa2va_ros.testing.tiny_checkpoint import write_tiny_checkpoint

    ckpt = write_tiny_checkpoint(path, force_seg=True)
    (ckpt / "sam2_config.json").write_text(json.dumps(tiny_sam2_config(image_size=256)))
    return str(ckpt)


def run_cli(capsys, *argv: str) -> dict:
    """Run sa2va-eval with a model on the CPU; return the summary (its last stdout line)."""
    from sa2va_ros.eval.cli import main

    code = main([*argv, "--no-progress", "--device", "cpu", "--dtype", "float32"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- images


def write_refcoco(root: Path) -> dict[str, np.ndarray]:
    """refer layout: root/refcoco/{refs(unc).p, instances.json} + COCO-style image folder.

    Three val expressions (targets: a polygon, a compressed RLE) and one train expression
    (an uncompressed RLE). Returns {sample id: gt mask}.
    """
    frames, masks = moving_square(2)
    img_dir = root / "images" / "mscoco" / "images" / "train2014"
    images = []
    for i, f in enumerate(frames):
        name = f"COCO_train2014_{i:012d}.jpg"
        save_rgb(img_dir / name, f)
        images.append({"id": 100 + i, "file_name": name, "height": H, "width": W})
    # polygon of the square on image 0: pycocotools fills the polygon's pixel area
    y0, x0 = 10, 4
    poly = [[x0, y0, x0 + 12, y0, x0 + 12, y0 + 12, x0, y0 + 12]]
    poly_mask = coco_mask.decode(coco_mask.frPyObjects(poly, H, W))[:, :, 0].astype(bool)
    other = np.zeros((H, W), bool)
    other[30:40, 40:60] = True
    # uncompressed RLE: column-major run lengths starting with background
    flat = other.flatten(order="F").astype(np.uint8)
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    anns = [
        {"id": 1, "image_id": 100, "category_id": 1, "segmentation": poly, "iscrowd": 0},
        {"id": 2, "image_id": 101, "category_id": 1, "segmentation": rle(masks[1]), "iscrowd": 0},
        {
            "id": 3,
            "image_id": 101,
            "category_id": 1,
            "segmentation": {"size": [H, W], "counts": runs},
            "iscrowd": 1,
        },
    ]
    refs = [
        {
            "ref_id": 7,
            "ann_id": 1,
            "image_id": 100,
            "category_id": 1,
            "split": "val",
            "sentences": [{"sent_id": 70, "sent": "red square"}, {"sent_id": 71, "sent": "the left box"}],
        },
        {
            "ref_id": 8,
            "ann_id": 2,
            "image_id": 101,
            "category_id": 1,
            "split": "val",
            "sentences": [{"sent_id": 80, "sent": "red square"}],
        },
        {
            "ref_id": 9,
            "ann_id": 3,
            "image_id": 101,
            "category_id": 1,
            "split": "train",
            "sentences": [{"sent_id": 90, "sent": "bottom right"}],
        },
    ]
    d = root / "refcoco"
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f)
    inst = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    (d / "instances.json").write_text(json.dumps(inst))
    return {"7_70": poly_mask, "7_71": poly_mask, "8_80": masks[1], "9_90": other}


def write_image_jsonl(root: Path, n: int = 3) -> tuple[Path, dict[str, np.ndarray]]:
    frames, masks = moving_square(n)
    lines, gts = [], {}
    for i, (f, m) in enumerate(zip(frames, masks, strict=True)):
        save_rgb(root / "img" / f"{i}.png", f)
        save_mask(root / "gt" / f"{i}.png", m)
        lines.append(
            {"id": f"s{i}", "image": f"img/{i}.png", "expression": "the red square", "mask": f"gt/{i}.png"}
        )
        gts[f"s{i}"] = m
    path = root / "samples.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path, gts


# ----------------------------------------------------------------------------- videos


def _frame_names(n: int) -> list[str]:
    return [f"{i:05d}" for i in range(n)]


def write_mevis(root: Path, n_frames: int = 6) -> dict[str, dict[str, np.ndarray]]:
    """MeViS valid_u layout; vid_b's expression targets two objects (union of anno ids)."""
    exp = {"videos": {}}
    mask_dict = {}
    gts: dict[str, dict[str, np.ndarray]] = {}
    anno = 0
    for v, offset in (("vid_a", 0), ("vid_b", 20)):
        frames, masks = moving_square(n_frames, start=4 + offset)
        second = np.zeros((H, W), bool)
        second[32:40, 8:20] = True
        names = _frame_names(n_frames)
        for name, f in zip(names, frames, strict=True):
            save_rgb(root / "JPEGImages" / v / f"{name}.jpg", f)
        # object absent from the last frame: stored as None, as MeViS does
        mask_dict[str(anno)] = [rle(m) if i < n_frames - 1 else None for i, m in enumerate(masks)]
        mask_dict[str(anno + 1)] = [rle(second)] * n_frames
        expressions = {"0": {"exp": "the moving square", "obj_id": [0], "anno_id": [anno]}}
        gts[f"{v}/0"] = {
            n: (m if i < n_frames - 1 else np.zeros_like(m))
            for i, (n, m) in enumerate(zip(names, masks, strict=True))
        }
        if v == "vid_b":
            expressions["1"] = {"exp": "both things?", "obj_id": [0, 1], "anno_id": [anno, anno + 1]}
            gts[f"{v}/1"] = {n: gts[f"{v}/0"][n] | second for n in names}
        anno += 2
        exp["videos"][v] = {"frames": names, "expressions": expressions}
    (root / "meta_expressions.json").write_text(json.dumps(exp))
    (root / "mask_dict.json").write_text(json.dumps(mask_dict))
    return gts


def write_revos(root: Path, n_frames: int = 5) -> dict[str, int]:
    """ReVOS layout: frames at root/<video>/, one referring and one reasoning expression."""
    frames, masks = moving_square(n_frames)
    names = _frame_names(n_frames)
    for name, f in zip(names, frames, strict=True):
        save_rgb(root / "UVO" / "clip1" / f"{name}.jpg", f)
    exp = {
        "videos": {
            "UVO/clip1": {
                "frames": names,
                "height": H,
                "width": W,
                "expressions": {
                    "0": {"exp": "the red square", "anno_id": [5], "type_id": 0},
                    "1": {"exp": "what moves right?", "anno_id": [5], "type_id": 1},
                },
            }
        }
    }
    (root / "meta_expressions_valid_.json").write_text(json.dumps(exp))
    (root / "mask_dict.json").write_text(json.dumps({"5": [rle(m) for m in masks]}))
    return {"UVO/clip1/0": 0, "UVO/clip1/1": 1}


def write_refdavis(
    root: Path, n_frames: int = 5, pickle_masks: bool = False
) -> dict[str, dict[str, np.ndarray]]:
    """Ref-DAVIS17 layout: palette Annotations (obj 1 = square, obj 2 = bar) or Sa2VA's mask_dict.pkl."""
    frames, masks = moving_square(n_frames)
    bar = np.zeros((H, W), bool)
    bar[36:44, :] = True
    names = _frame_names(n_frames)
    palette = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9)
    for name, f, m in zip(names, frames, masks, strict=True):
        save_rgb(root / "valid" / "JPEGImages" / "bike" / f"{name}.jpg", f)
        if not pickle_masks:
            lab = np.zeros((H, W), np.uint8)
            lab[m] = 1
            lab[bar] = 2
            im = Image.fromarray(lab, mode="P")
            im.putpalette(palette)
            p = root / "valid" / "Annotations" / "bike" / f"{name}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            im.save(p)
    exp = {
        "videos": {
            "bike": {
                "frames": names,
                "expressions": {
                    "0": {"exp": "a red square", "obj_id": "1"},
                    "1": {"exp": "a grey bar", "obj_id": "2"},
                },
            }
        }
    }
    p = root / "meta_expressions" / "valid" / "meta_expressions.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(exp))
    square_gt = {n: m & ~bar for n, m in zip(names, masks, strict=True)}
    bar_gt = dict.fromkeys(names, bar)
    if pickle_masks:  # Sa2VA's repackaging: annotation ids number the expressions in sorted order
        md = {"0": [rle(square_gt[n]) for n in names], "1": [rle(bar) for _ in names]}
        with open(root / "valid" / "mask_dict.pkl", "wb") as f:
            pickle.dump(md, f)
    return {"bike/0": square_gt, "bike/1": bar_gt}


def write_video_jsonl(root: Path, n_frames: int = 5) -> tuple[Path, dict[str, dict[str, np.ndarray]]]:
    """Two clips; the second is annotated on every other frame only."""
    lines, gts = [], {}
    for c in range(2):
        frames, masks = moving_square(n_frames, start=4 + 10 * c)
        names = _frame_names(n_frames)
        gt = {}
        for i, (name, f, m) in enumerate(zip(names, frames, masks, strict=True)):
            save_rgb(root / f"clip{c}" / "frames" / f"{name}.jpg", f)
            if c == 0 or i % 2 == 0:
                save_mask(root / f"clip{c}" / "masks" / f"{name}.png", m)
                gt[name] = m
        lines.append(
            {
                "id": f"clip{c}",
                "frames": f"clip{c}/frames",
                "masks": f"clip{c}/masks",
                "expression": "the red square",
            }
        )
        gts[f"clip{c}"] = gt
    path = root / "videos.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path, gts


# ----------------------------------------------------------------------------- bags


def write_image_bag(
    path: Path,
    frames: list[np.ndarray],
    *,
    topic: str = "/camera/image_raw",
    encoding: str = "rgb8",
    storage: str = "mcap",
    pad: int = 0,
    stamp0: int = 1_700_000_000,
    compressed: str | None = None,
) -> list[int]:
    """A rosbag2 of ``frames`` on ``topic`` (Image in ``encoding``, or CompressedImage); returns stamps."""
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    Header = ts.types["std_msgs/msg/Header"]
    Time = ts.types["builtin_interfaces/msg/Time"]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    stamps = []
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
        conn = writer.add_connection(topic, msgtype, typestore=ts)
        for i, rgb in enumerate(frames):
            sec, nsec = stamp0 + i // 10, (i % 10) * 100_000_000
            header = Header(stamp=Time(sec=sec, nanosec=nsec), frame_id="camera")
            if compressed:
                ok, buf = cv2.imencode(f".{compressed}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                assert ok
                msg = ts.types[msgtype](header=header, format=compressed, data=buf.reshape(-1))
            else:
                pix = {
                    "rgb8": rgb,
                    "bgr8": rgb[:, :, ::-1],
                    "mono8": rgb[:, :, 0],
                    "rgba8": np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]),
                    "bgra8": np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 255, np.uint8)]),
                }[encoding]
                rows = pix.reshape(pix.shape[0], -1)
                rows = np.hstack([rows, np.zeros((rows.shape[0], pad), np.uint8)])  # row padding
                msg = ts.types[msgtype](
                    header=header,
                    height=rgb.shape[0],
                    width=rgb.shape[1],
                    encoding=encoding,
                    is_bigendian=0,
                    step=rows.shape[1],
                    data=np.ascontiguousarray(rows).reshape(-1),
                )
            t = sec * 1_000_000_000 + nsec
            stamps.append(t)
            writer.write(conn, t, ts.serialize_cdr(msg, msgtype))
    return stamps
