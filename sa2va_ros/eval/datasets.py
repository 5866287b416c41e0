"""Readers for the benchmark layouts the Sa2VA paper evaluates on, and a JSON-lines layout for yours.

Each reader returns a list of samples: one referring expression with its image or frames
and a way to load its ground truth lazily (datasets hold tens of thousands of masks).

Image layouts
  * ``refcoco``: the ``refer`` package layout used for RefCOCO / RefCOCO+ / RefCOCOg:
    ``<root>/<dataset>/refs(<splitBy>).p`` (a pickle of refs) + ``<root>/<dataset>/instances.json``
    (COCO images and annotations) and the COCO train2014 images.
  * ``jsonl``: one JSON object per line, ``{"image": ..., "expression": ..., "mask": ...}``.

Video layouts (``meta_expressions.json`` + frames + per-frame masks)
  * ``mevis`` (MeViS valid_u / valid), ``revos`` (ReVOS): masks in ``mask_dict.json`` as COCO
    RLE per annotation id and frame; an expression's target is the union of its ``anno_id``s.
  * ``refdavis`` (Ref-DAVIS17): DAVIS palette PNGs in ``Annotations/<video>/<frame>.png``
    (target = pixels equal to the expression's ``obj_id``), or Sa2VA's repackaged
    ``mask_dict.pkl`` whose annotation ids number the expressions in sorted order.
  * ``jsonl``: ``{"frames": dir, "expression": ..., "masks": dir}`` per line.

COCO polygons and RLE are decoded with pycocotools, the library the official evaluation
uses, so ground-truth pixels are identical to the ones the paper's numbers were scored on.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
from PIL import Image

from ..model.errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

# ----------------------------------------------------------------------------- prompts
# The official evaluation scripts' wording (projects/sa2va/evaluation): keep it verbatim,
# leading space included, or the numbers are not comparable.
IMAGE_PROMPT = "<image>\n Please segment {} in this image."
VIDEO_PROMPT = "<image>\nPlease segment {}."
VIDEO_QUESTION_PROMPT = "<image>\n {} Please respond with a segmentation mask."


def image_prompt(expression: str) -> str:
    """The text the official RefCOCO evaluation gives the model for ``expression``."""
    return IMAGE_PROMPT.format(expression)


def video_prompt(expression: str) -> str:
    """The text the official Ref-VOS evaluation gives the model (questions are worded apart)."""
    return VIDEO_QUESTION_PROMPT.format(expression) if "?" in expression else VIDEO_PROMPT.format(expression)


# ----------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class ImageSample:
    """One referring expression on one image."""

    id: str
    image_path: Path
    expression: str
    #: Returns the (H, W) bool target mask.
    load_gt: Callable[[], np.ndarray]
    #: Full model prompt when the layout gives one; otherwise :func:`image_prompt` is used.
    prompt: str | None = None

    @property
    def text(self) -> str:
        return self.prompt or image_prompt(self.expression)


@dataclass(frozen=True)
class VideoSample:
    """One referring expression on one video."""

    #: ``<video>/<expression id>``: also the sub-folder its predicted masks are written to
    #: (the MeViS / Ref-YouTube-VOS submission layout).
    id: str
    video: str
    frame_paths: tuple[Path, ...]
    #: File stems of the frames, in playing order; mask PNGs are named ``<frame name>.png``.
    frame_names: tuple[str, ...]
    expression: str
    #: Returns {frame name: (H, W) bool} for the annotated frames, or None without ground truth.
    load_gt: Callable[[], dict[str, np.ndarray]] | None
    #: ReVOS expression type (0 referring, 1 reasoning), else None.
    type_id: int | None = None
    prompt: str | None = None

    @property
    def text(self) -> str:
        return self.prompt or video_prompt(self.expression)


# ----------------------------------------------------------------------------- mask I/O


def read_mask_png(path: Path, object_id: int | None = None) -> np.ndarray:
    """Read a mask image as (H, W) bool: non-zero pixels, or pixels equal to ``object_id``.

    Palette ('P') PNGs are read as indices (DAVIS style); RGB(A) masks count a pixel as
    set when any colour channel is non-zero.
    """
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
            mode = im.mode
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read mask image {path}: {exc}") from exc
    if arr.ndim == 3:
        if object_id is not None:
            raise InputError(f"{path} is a {mode} colour image; object ids need a palette or grey PNG.")
        return np.any(arr[:, :, :3] != 0, axis=2)
    return arr != 0 if object_id is None else arr == object_id


def write_mask_png(path: Path, mask: np.ndarray) -> None:
    """Write a bool mask as an 8-bit PNG (0 / 255), the format the official scripts save."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(tmp, format="PNG")
    tmp.replace(path)  # never leave a half-written PNG behind an interrupted run


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from exc


def _coco():
    try:
        from pycocotools import mask as coco_mask
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise InputError("reading COCO-style masks needs pycocotools: pip install pycocotools") from exc
    return coco_mask


def decode_coco_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """Decode a COCO ``segmentation`` (polygon list, RLE dict or list of RLEs) to (H, W) bool.

    Several polygons of one annotation are united. (The official RefCOCO evaluation sums
    them in uint8 and a pixel covered twice then falls out of its 2-class histogram; such
    overlaps are rare, and here they simply count as object.)
    """
    coco_mask = _coco()
    if segmentation is None or (isinstance(segmentation, list) and not segmentation):
        return np.zeros((height, width), bool)
    if isinstance(segmentation, list) and isinstance(segmentation[0], list):  # polygons
        rles = coco_mask.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        rles = [
            segmentation
            if isinstance(segmentation["counts"], (str, bytes))
            else coco_mask.frPyObjects(segmentation, height, width)
        ]
    else:
        rles = list(segmentation)
    decoded = coco_mask.decode(rles)
    if decoded.ndim == 3:
        decoded = decoded.any(axis=2)
    return decoded.astype(bool)


def decode_rle(rle: dict | None, shape: tuple[int, int] | None = None) -> np.ndarray | None:
    """Decode one compressed COCO RLE (``{"size": [h, w], "counts": str}``); None stays None."""
    if not rle:
        return None if shape is None else np.zeros(shape, bool)
    return _coco().decode(rle).astype(bool)


def encode_rle(mask: np.ndarray) -> dict:
    """Encode a bool mask as a compressed COCO RLE with a str ``counts`` (JSON-friendly)."""
    rle = _coco().encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _load_json(path: Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as exc:
        raise InputError(f"{path} does not exist.") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc


def _load_pickle(path: Path) -> object:
    # The refer package and Sa2VA ship these as pickles; only open files you trust.
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except FileNotFoundError as exc:
        raise InputError(f"{path} does not exist.") from exc


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise InputError(f"{path} does not exist.")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{n} is not valid JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise InputError(f"{path}:{n} must be a JSON object.")
            rows.append(row)
    if not rows:
        raise InputError(f"{path} holds no sample.")
    return rows


def _need(row: dict, key: str, where: str) -> object:
    if key not in row or row[key] in (None, ""):
        raise InputError(f"{where}: missing '{key}'.")
    return row[key]


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


# ----------------------------------------------------------------------------- RefCOCO


#: Default ``splitBy`` of each refer dataset (refcocog also has "google").
REFER_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd", "refclef": "unc"}
#: Where the COCO train2014 images usually are, relative to the refer root.
_COCO_IMAGE_DIRS = (
    "images/mscoco/images/train2014",  # refer package
    "../glamm_data/images/coco2014/train2014",  # Sa2VA's data/ tree (data/ref_seg is the root)
    "images/train2014",
    "train2014",
    "../train2014",
)


def load_refcoco(
    root: Path,
    dataset: str = "refcoco",
    split: str = "val",
    split_by: str | None = None,
    image_dir: Path | None = None,
) -> list[ImageSample]:
    """Samples of a refer-layout split: one per (referred object, sentence), in file order."""
    root = Path(root)
    data_dir = root / dataset if (root / dataset).is_dir() else root
    split_by = split_by or REFER_SPLIT_BY.get(dataset, "unc")
    refs_file = data_dir / f"refs({split_by}).p"
    instances_file = data_dir / "instances.json"
    for f in (refs_file, instances_file):
        if not f.is_file():
            raise InputError(
                f"{f} not found: --data must be the folder holding {dataset}/refs({split_by}).p and "
                f"{dataset}/instances.json (e.g. Sa2VA's data/ref_seg)."
            )
    if image_dir is None:
        found = [root / c for c in _COCO_IMAGE_DIRS if (root / c).is_dir()]
        if not found:
            raise InputError(f"COCO train2014 images not found near {root}: give --images DIR.")
        image_dir = found[0]
    refs = _load_pickle(refs_file)
    instances = _load_json(instances_file)
    images = {img["id"]: img for img in instances["images"]}
    anns = {ann["id"]: ann for ann in instances["annotations"]}
    samples = []
    for ref in refs:
        if ref.get("split") != split:
            continue
        img = images[ref["image_id"]]
        ann = anns[ref["ann_id"]]
        gt = partial(decode_coco_segmentation, ann["segmentation"], img["height"], img["width"])
        for sent in ref["sentences"]:
            samples.append(
                ImageSample(
                    id=f"{ref['ref_id']}_{sent.get('sent_id', len(samples))}",
                    image_path=Path(image_dir) / img["file_name"],
                    expression=sent["sent"],
                    load_gt=gt,
                )
            )
    if not samples:
        splits = sorted({str(r.get("split")) for r in refs})
        raise InputError(
            f"no expression in split '{split}' of {refs_file}; splits there: {', '.join(splits)}."
        )
    return samples


def load_image_jsonl(path: Path) -> list[ImageSample]:
    """Samples from a JSON-lines file; relative paths are relative to the file's folder.

    Each line: ``{"image": "img.jpg", "expression": "the red mug", "mask": "mask.png"}``,
    optionally ``"id"``, ``"object_id"`` (palette index of the target in the mask) and
    ``"prompt"`` (the full text given to the model instead of the official wording).
    """
    path = Path(path)
    base = path.parent
    samples = []
    seen: set[str] = set()
    for n, row in enumerate(_read_jsonl(path)):
        where = f"{path} sample {n}"
        sid = str(row.get("id", n))
        if sid in seen:
            raise InputError(f"{where}: id '{sid}' is used twice.")
        seen.add(sid)
        mask = _resolve(base, str(_need(row, "mask", where)))
        samples.append(
            ImageSample(
                id=sid,
                image_path=_resolve(base, str(_need(row, "image", where))),
                expression=str(_need(row, "expression", where)),
                load_gt=partial(read_mask_png, mask, row.get("object_id")),
                prompt=row.get("prompt"),
            )
        )
    return samples


# ----------------------------------------------------------------------------- video


@dataclass(frozen=True)
class VideoLayout:
    """Where a benchmark keeps its files, relative to its root folder."""

    expressions: str
    frames: str
    masks: Sequence[str]  # candidates, first existing wins


VIDEO_LAYOUTS = {
    # data/video_datas/mevis/valid_u (or valid: no masks, predictions only)
    "mevis": VideoLayout("meta_expressions.json", "JPEGImages", ("mask_dict.json",)),
    # data/video_datas/revos: frames are <root>/<video>/<frame>.jpg
    "revos": VideoLayout("meta_expressions_valid_.json", ".", ("mask_dict.json",)),
    # data/video_datas/davis17 (Sa2VA) or ReferFormer's ref-davis
    "refdavis": VideoLayout(
        "meta_expressions/valid/meta_expressions.json",
        "valid/JPEGImages",
        ("valid/Annotations", "valid/mask_dict.pkl"),
    ),
}


def _frame_files(folder: Path, names: Sequence[str]) -> tuple[Path, ...]:
    for ext in IMAGE_EXTENSIONS:
        if (folder / f"{names[0]}{ext}").is_file():
            return tuple(folder / f"{n}{ext}" for n in names)
    raise InputError(f"frame '{names[0]}' not found in {folder} (tried {', '.join(IMAGE_EXTENSIONS)}).")


@lru_cache(maxsize=4)
def _cached_mask_dict(path: str) -> dict:
    return _load_pickle(Path(path)) if path.endswith(".pkl") else _load_json(Path(path))


def _gt_from_mask_dict(
    mask_file: Path, anno_ids: tuple, original_frames: tuple[str, ...], shape_hint: Path
) -> dict[str, np.ndarray]:
    masks = _cached_mask_dict(str(mask_file))
    h = w = None
    out: dict[str, np.ndarray] = {}
    for idx, name in enumerate(original_frames):
        m = None
        for anno in anno_ids:
            per_frame = masks.get(str(anno))
            if per_frame is None:
                raise InputError(f"annotation id {anno} is not in {mask_file}.")
            d = decode_rle(per_frame[idx])
            if d is not None:
                m = d if m is None else (m | d)
        if m is not None:
            h, w = m.shape
        out[name] = m
    if h is None:  # target absent from every frame: size from the frame images
        with Image.open(shape_hint) as im:
            w, h = im.size
    return {n: (np.zeros((h, w), bool) if m is None else m) for n, m in out.items()}


def _gt_from_pngs(folder: Path, obj_id: int | None, names: Sequence[str]) -> dict[str, np.ndarray]:
    gt = {n: read_mask_png(folder / f"{n}.png", obj_id) for n in names if (folder / f"{n}.png").is_file()}
    if not gt:
        raise InputError(f"no ground-truth PNG in {folder} is named like a frame (e.g. {names[0]}.png).")
    return gt


def load_meta_expressions(
    layout: str,
    root: Path,
    expressions: Path | None = None,
    frames: Path | None = None,
    masks: Path | None = None,
) -> list[VideoSample]:
    """Samples of a MeViS / ReVOS / Ref-DAVIS17 split (``layout`` names the benchmark).

    Frames are given to the model in sorted name order (as the official code does); ground
    truth is looked up by frame name. Without a mask file (MeViS valid, whose masks are
    held by the challenge server) the samples have ``load_gt=None``: predictions can be
    written for submission but not scored.
    """
    if layout not in VIDEO_LAYOUTS:
        raise InputError(
            f"unknown video layout '{layout}'; choose one of {', '.join(VIDEO_LAYOUTS)} or jsonl."
        )
    spec = VIDEO_LAYOUTS[layout]
    root = Path(root)
    exp_file = Path(expressions) if expressions else root / spec.expressions
    frame_root = Path(frames) if frames else root / spec.frames
    if masks is not None:
        mask_src: Path | None = Path(masks)
        if not mask_src.exists():
            raise InputError(f"{mask_src} does not exist.")
    else:
        mask_src = next((root / m for m in spec.masks if (root / m).exists()), None)
    videos = _load_json(exp_file)
    if not isinstance(videos, dict) or "videos" not in videos:
        raise InputError(f"{exp_file} has no top-level 'videos': not a meta_expressions.json file.")
    videos = videos["videos"]
    samples = []
    seq_anno = 0  # Sa2VA's Ref-DAVIS mask_dict numbers expressions in sorted order
    for vid in sorted(videos):
        vdata = videos[vid]
        original = tuple(vdata["frames"])
        names = tuple(sorted(original))
        paths = _frame_files(frame_root / vid, names)
        for exp_id in sorted(vdata["expressions"]):
            e = vdata["expressions"][exp_id]
            load_gt = None
            if mask_src is not None and mask_src.is_dir():  # DAVIS palette PNGs
                if "obj_id" not in e:
                    raise InputError(f"{exp_file}: {vid}/{exp_id} has no obj_id to select in {mask_src}.")
                load_gt = partial(_gt_from_pngs, mask_src / vid, int(e["obj_id"]), names)
            elif mask_src is not None:
                anno = tuple(e["anno_id"]) if "anno_id" in e else (seq_anno,)
                load_gt = partial(_gt_from_mask_dict, mask_src, anno, original, paths[0])
            seq_anno += 1
            samples.append(
                VideoSample(
                    id=f"{vid}/{exp_id}",
                    video=vid,
                    frame_paths=paths,
                    frame_names=names,
                    expression=e["exp"],
                    load_gt=load_gt,
                    type_id=e.get("type_id"),
                )
            )
    if not samples:
        raise InputError(f"{exp_file} lists no expression.")
    return samples


def load_video_jsonl(path: Path) -> list[VideoSample]:
    """Video samples from a JSON-lines file; relative paths are relative to the file's folder.

    Each line: ``{"frames": "clip1/frames", "expression": "the moving cup", "masks": "clip1/masks"}``:
    frames are the images of the folder in sorted name order, ground truth the PNGs of
    ``masks`` with the same stems (frames without one are not scored). Optional: ``"id"``,
    ``"object_id"`` (palette index), ``"prompt"``. Without ``masks`` nothing is scored.
    """
    path = Path(path)
    base = path.parent
    samples = []
    seen: set[str] = set()
    for n, row in enumerate(_read_jsonl(path)):
        where = f"{path} sample {n}"
        folder = _resolve(base, str(_need(row, "frames", where)))
        if not folder.is_dir():
            raise InputError(f"{where}: frames folder {folder} does not exist.")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise InputError(f"{where}: no image in {folder}.")
        sid = str(row.get("id", f"{folder.name}/{n}"))
        if sid in seen:
            raise InputError(f"{where}: id '{sid}' is used twice.")
        seen.add(sid)
        names = tuple(p.stem for p in files)
        load_gt = None
        if row.get("masks"):
            mfolder = _resolve(base, str(row["masks"]))
            if not mfolder.is_dir():
                raise InputError(f"{where}: masks folder {mfolder} does not exist.")
            load_gt = partial(_gt_from_pngs, mfolder, row.get("object_id"), names)
        samples.append(
            VideoSample(
                id=sid,
                video=folder.name,
                frame_paths=tuple(files),
                frame_names=names,
                expression=str(_need(row, "expression", where)),
                load_gt=load_gt,
                prompt=row.get("prompt"),
            )
        )
    return samples
