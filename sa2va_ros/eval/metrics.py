"""Segmentation metrics used by the Sa2VA paper, written from their published definitions.

Image referring segmentation (RefCOCO / + / g) reports
  * cIoU: cumulative intersection over cumulative union across every expression, and
  * gIoU: the mean of the per-expression IoUs (an empty prediction of an empty target
    counts as IoU 1, as in the official evaluation).

Video referring segmentation (MeViS, Ref-DAVIS17, ReVOS) reports, per expression, the
means over frames of
  * J: region similarity (Jaccard index, 1 when both masks are empty), and
  * F: the boundary F-measure of the DAVIS benchmark (Perazzi et al. 2016, and the
    davis2017-evaluation toolkit): boundaries are 1-pixel maps from ``seg2bmap``, a
    boundary pixel matches when the other boundary lies within a disk of radius
    ceil(0.008 x image diagonal) pixels;
and then averages those over expressions; J&F = (J + F) / 2.

Everything here is plain numpy + OpenCV (the dilation), so scores can be computed for any
method's masks without torch or the model. Summaries are in percent, like the paper.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import cv2
import numpy as np

from ..model.errors import InputError

#: DAVIS boundary tolerance as a fraction of the image diagonal (davis2017-evaluation).
DAVIS_BOUND_TH = 0.008


def _as_bool(mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.ndim != 2:
        raise InputError(f"{name} has shape {mask.shape}; a mask must be 2-D (H, W).")
    return mask if mask.dtype == bool else mask != 0


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, g = _as_bool(pred, "prediction"), _as_bool(gt, "ground truth")
    if p.shape != g.shape:
        raise InputError(
            f"prediction mask is {p.shape[1]}x{p.shape[0]} but ground truth is {g.shape[1]}x{g.shape[0]}: "
            "masks must be at the original image size."
        )
    return p, g


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int]:
    """Pixel counts of pred AND gt and pred OR gt."""
    p, g = _pair(pred, gt)
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))


def iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Jaccard index; 1.0 when both masks are empty (nothing to find, nothing found)."""
    inter, union = intersection_union(pred, gt)
    return 1.0 if union == 0 else inter / union


#: J of the DAVIS benchmark is exactly the IoU above.
region_similarity = iou


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """1-pixel-wide boundary map of a binary mask, as the DAVIS/BSDS ``seg2bmap`` defines it.

    A pixel is on the boundary when it differs from its east, south or south-east
    neighbour, so boundaries sit half a pixel towards the origin of the true contour. On
    the last row only the east neighbour is compared, on the last column only the south
    one, and the bottom-right pixel is never a boundary: the image border itself is never
    a boundary. (Quirk of the definition, kept: a mask covering the whole frame has no
    boundary at all, so its F against an empty mask is 1 while its J is 0.)
    """
    seg = _as_bool(mask, "mask")
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def disk(radius: int) -> np.ndarray:
    """Disk structuring element: offsets (dy, dx) with dy^2 + dx^2 <= radius^2 (skimage's ``disk``)."""
    r = int(radius)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return ((yy * yy + xx * xx) <= r * r).astype(np.uint8)


def boundary_radius(shape: tuple[int, int], bound_th: float = DAVIS_BOUND_TH) -> int:
    """Matching tolerance in pixels: ``bound_th`` itself when >= 1, else that fraction of the diagonal."""
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(shape[0], shape[1])))


def boundary_f_measure(pred: np.ndarray, gt: np.ndarray, bound_th: float = DAVIS_BOUND_TH) -> float:
    """DAVIS boundary F-measure of one frame.

    Precision = fraction of predicted boundary pixels within the tolerance of the true
    boundary; recall = the converse. Edge cases follow the DAVIS definition: both
    boundaries empty -> F = 1; exactly one empty -> F = 0.
    """
    p, g = _pair(pred, gt)
    p_bound = seg2bmap(p)
    g_bound = seg2bmap(g)
    n_pred = int(np.count_nonzero(p_bound))
    n_gt = int(np.count_nonzero(g_bound))
    if n_pred == 0 and n_gt == 0:
        return 1.0
    if n_pred == 0 or n_gt == 0:
        return 0.0
    kernel = disk(boundary_radius(p.shape, bound_th))
    # OpenCV's dilation is much faster than scipy/skimage on large frames, and is
    # exact for binary images.
    p_near = cv2.dilate(p_bound.astype(np.uint8), kernel) > 0
    g_near = cv2.dilate(g_bound.astype(np.uint8), kernel) > 0
    precision = np.count_nonzero(p_bound & g_near) / n_pred
    recall = np.count_nonzero(g_bound & p_near) / n_gt
    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


# ----------------------------------------------------------------------------- per sample


def image_sample_scores(pred: np.ndarray | None, gt: np.ndarray) -> dict:
    """Scores of one image expression; ``pred=None`` (no [SEG] in the answer) is an empty mask."""
    gt_b = _as_bool(gt, "ground truth")
    if pred is None:
        pred = np.zeros_like(gt_b)
    inter, union = intersection_union(pred, gt_b)
    return {"intersection": inter, "union": union, "iou": 1.0 if union == 0 else inter / union}


def video_sample_scores(
    preds: Mapping[str, np.ndarray | None] | Sequence[np.ndarray | None],
    gts: Mapping[str, np.ndarray] | Sequence[np.ndarray],
    bound_th: float = DAVIS_BOUND_TH,
) -> dict:
    """J and F of one video expression: means over the frames that have ground truth.

    ``preds`` / ``gts`` are sequences (same length) or mappings from frame name to mask;
    with mappings only the frames present in ``gts`` are scored and a frame missing from
    ``preds`` (or ``None``) counts as an empty prediction.
    """
    if isinstance(gts, Mapping):
        names = list(gts.keys())
        gt_list = [gts[n] for n in names]
        if isinstance(preds, Mapping):
            pred_list = [preds.get(n) for n in names]
        else:
            raise InputError("ground truth is keyed by frame name; give predictions keyed the same way.")
    else:
        gt_list = list(gts)
        pred_list = list(preds.values()) if isinstance(preds, Mapping) else list(preds)
        if len(pred_list) != len(gt_list):
            raise InputError(
                f"{len(pred_list)} predicted frames for {len(gt_list)} ground-truth frames: they must match."
            )
    if not gt_list:
        raise InputError("a video sample has no annotated frame to score.")
    js, fs = [], []
    for pred, gt in zip(pred_list, gt_list, strict=True):
        g = _as_bool(gt, "ground truth")
        p = np.zeros_like(g) if pred is None else pred
        js.append(iou(p, g))
        fs.append(boundary_f_measure(p, g, bound_th))
    return {"J": float(np.mean(js)), "F": float(np.mean(fs)), "frames": len(gt_list)}


# ----------------------------------------------------------------------------- summaries


def summarize_image(samples: Iterable[Mapping]) -> dict:
    """cIoU and gIoU (percent) and count over per-sample results of :func:`image_sample_scores`.

    With no union at all (every target and prediction empty) cIoU is 0, as in the
    official evaluation (0 / (0 + eps)).
    """
    inter = union = 0
    ious: list[float] = []
    for s in samples:
        inter += int(s["intersection"])
        union += int(s["union"])
        ious.append(float(s["iou"]))
    return {
        "cIoU": 100.0 * inter / union if union else 0.0,
        "gIoU": 100.0 * float(np.mean(ious)) if ious else 0.0,
        "count": len(ious),
    }


def _jf(samples: Sequence[Mapping]) -> dict:
    if not samples:
        return {"J": 0.0, "F": 0.0, "J&F": 0.0, "count": 0}
    j = 100.0 * float(np.mean([s["J"] for s in samples]))
    f = 100.0 * float(np.mean([s["F"] for s in samples]))
    return {"J": j, "F": f, "J&F": (j + f) / 2, "count": len(samples)}


#: ReVOS expression types (meta_expressions ``type_id``) and how its paper names them.
REVOS_TYPES = {0: "referring", 1: "reason"}


def summarize_video(samples: Iterable[Mapping], by_type: bool = False) -> dict:
    """J, F, J&F (percent) and count over per-sample results of :func:`video_sample_scores`.

    J and F are averaged over expressions first, then J&F = (J + F) / 2. With
    ``by_type`` (ReVOS), the headline numbers are ReVOS's "overall": the mean of the
    referring (type 0) and reasoning (type 1) subsets' scores, each subset averaged over
    its own expressions, as the official ReVOS evaluation does; the subsets are reported too.
    """
    samples = list(samples)
    if not by_type:
        return _jf(samples)
    parts = {name: _jf([s for s in samples if s.get("type_id") == t]) for t, name in REVOS_TYPES.items()}
    present = [p for p in parts.values() if p["count"]]
    if not present:
        raise InputError("by-type (ReVOS) summary asked for, but no sample has type_id 0 or 1.")
    out = {k: float(np.mean([p[k] for p in present])) for k in ("J", "F", "J&F")}
    out["count"] = sum(p["count"] for p in present)
    out["by_type"] = parts
    return out
