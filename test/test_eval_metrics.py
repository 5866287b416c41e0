"""Metric tests on synthetic masks whose scores are known by hand, plus a brute-force
re-implementation of the DAVIS J&F definition (davis2017-evaluation: region Jaccard; boundary
F-measure from seg2bmap boundaries matched within ceil(0.008 x diagonal) pixels, i.e. a disk)
to check the fast version against on random shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sa2va_ros.eval import metrics as M
from sa2va_ros.model.errors import InputError


def square(shape, top, left, size_y, size_x=None):
    m = np.zeros(shape, bool)
    m[top : top + size_y, left : left + (size_x or size_y)] = True
    return m


# ----------------------------------------------------------------- independent reference


def ref_boundary(mask: np.ndarray) -> set[tuple[int, int]]:
    """Boundary pixels per the seg2bmap definition, one pixel at a time."""
    h, w = mask.shape

    def at(y, x):
        return bool(mask[y, x]) if y < h and x < w else False

    out = set()
    for y in range(h):
        for x in range(w):
            v = at(y, x)
            if y == h - 1 and x == w - 1:
                continue  # seg2bmap clears the bottom-right pixel
            if y == h - 1:
                diff = v != at(y, x + 1)  # last row: east neighbour only
            elif x == w - 1:
                diff = v != at(y + 1, x)  # last column: south neighbour only
            else:
                diff = v != at(y, x + 1) or v != at(y + 1, x) or v != at(y + 1, x + 1)
            if diff:
                out.add((y, x))
    return out


def ref_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = 0.008) -> float:
    r = math.ceil(bound_th * math.sqrt(pred.shape[0] ** 2 + pred.shape[1] ** 2))
    bp, bg = ref_boundary(pred), ref_boundary(gt)
    if not bp and not bg:
        return 1.0
    if not bp or not bg:
        return 0.0

    def near(a, others):  # Euclidean distance <= r to some pixel of the other boundary
        return any((a[0] - o[0]) ** 2 + (a[1] - o[1]) ** 2 <= r * r for o in others)

    precision = sum(near(p, bg) for p in bp) / len(bp)
    recall = sum(near(g, bp) for g in bg) / len(bg)
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def ref_j(pred: np.ndarray, gt: np.ndarray) -> float:
    inter = sum(1 for p, g in zip(pred.ravel(), gt.ravel(), strict=True) if p and g)
    union = sum(1 for p, g in zip(pred.ravel(), gt.ravel(), strict=True) if p or g)
    return 1.0 if union == 0 else inter / union


def random_blob(rng, shape, n_discs=3):
    m = np.zeros(shape, bool)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for _ in range(n_discs):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        rad = rng.integers(1, max(2, min(shape) // 3))
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rad * rad
    return m


# ----------------------------------------------------------------- hand-known values


def test_boundary_radius_is_ceil_of_diagonal_fraction():
    assert M.boundary_radius((20, 20)) == 1  # 0.008 * 28.3 = 0.23 -> 1
    assert M.boundary_radius((100, 100)) == 2  # 1.13 -> 2
    assert M.boundary_radius((480, 854)) == 8  # DAVIS 480p: 0.008 * 979.7 = 7.84 -> 8
    assert M.boundary_radius((480, 854), bound_th=3) == 3  # >= 1 means pixels


def test_disk_is_euclidean():
    assert M.disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert M.disk(2).sum() == 13


def test_seg2bmap_square_is_closed_ring_of_4n():
    m = square((30, 30), 10, 10, 8)
    b = M.seg2bmap(m)
    assert b.sum() == 4 * 8
    assert b[9, 9] and b[9, 17] and b[17, 17] and b[17, 9]  # ring corners, half a pixel up-left
    assert not b[10, 10]  # interior
    assert set(zip(*np.nonzero(b), strict=True)) == ref_boundary(m)


def test_seg2bmap_never_marks_the_image_border():
    assert M.seg2bmap(np.ones((5, 7), bool)).sum() == 0
    touching = np.zeros((6, 6), bool)
    touching[:, 3:] = True  # touches top, bottom and right borders: only the inner edge
    b = M.seg2bmap(touching)
    assert set(zip(*np.nonzero(b), strict=True)) == {(y, 2) for y in range(6)}


def test_empty_vs_empty():
    z = np.zeros((10, 12), bool)
    assert M.iou(z, z) == 1.0
    assert M.boundary_f_measure(z, z) == 1.0
    assert M.image_sample_scores(z, z) == {"intersection": 0, "union": 0, "iou": 1.0}


def test_empty_prediction_of_object_and_object_where_none():
    z = np.zeros((10, 12), bool)
    obj = square(z.shape, 2, 3, 4)
    for pred, gt in ((z, obj), (obj, z)):
        assert M.iou(pred, gt) == 0.0
        assert M.boundary_f_measure(pred, gt) == 0.0
    assert M.image_sample_scores(None, obj) == {"intersection": 0, "union": 16, "iou": 0.0}


def test_full_masks():
    full = np.ones((10, 12), bool)
    z = np.zeros_like(full)
    assert M.iou(full, full) == 1.0 and M.boundary_f_measure(full, full) == 1.0
    # DAVIS quirk: neither a full-frame mask nor an empty one has a boundary, so F = 1.
    assert M.iou(full, z) == 0.0 and M.boundary_f_measure(full, z) == 1.0
    assert ref_f(full, z) == 1.0
    half = full.copy()
    half[:, 6:] = False
    assert M.iou(half, full) == 0.5


def test_one_pixel_objects():
    shape = (20, 20)  # tolerance 1 px
    gt = square(shape, 5, 5, 1)
    assert M.iou(gt, gt) == 1.0 and M.boundary_f_measure(gt, gt) == 1.0
    one = square(shape, 5, 6, 1)  # 1 px right: no overlap but boundaries within 1 px
    assert M.iou(one, gt) == 0.0
    assert M.boundary_f_measure(one, gt) == 1.0
    two = square(shape, 5, 7, 1)  # 2 px right: half of each 4-pixel boundary matches
    assert M.boundary_f_measure(two, gt) == pytest.approx(0.5)
    diag = square(shape, 6, 6, 1)  # 1 px diagonal: 3 of 4 boundary pixels within the cross
    assert M.boundary_f_measure(diag, gt) == pytest.approx(0.75)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_square_shifted_by_k_pixels(k):
    shape, n = (100, 100), 40  # tolerance ceil(0.008 * 141.4) = 2 px
    gt = square(shape, 30, 30, n)
    pred = square(shape, 30, 30 + k, n)
    assert M.iou(pred, gt) == pytest.approx((n - k) / (n + k))
    # k <= 2: every boundary pixel has its counterpart k px away -> F = 1.
    # k = 3: of the 4n pixels of each ring, the two horizontal sides match (n each, the last
    # overhanging pixel excepted) plus 2 + 2 pixels of the inner vertical side near the
    # corners -> P = R = (2n + 4) / 4n.
    expected = 1.0 if k <= 2 else (2 * n + 4) / (4 * n)
    assert M.boundary_f_measure(pred, gt) == pytest.approx(expected)
    assert M.boundary_f_measure(pred, gt) == pytest.approx(ref_f(pred, gt))


@pytest.mark.parametrize("k,expected", [(1, 1.0), (2, 1.0), (3, 0.0)])
def test_full_height_stripe_shift(k, expected):
    gt = np.zeros((100, 100), bool)
    gt[:, 40:60] = True  # boundary = two full vertical lines
    pred = np.roll(gt, k, axis=1)
    assert M.boundary_f_measure(pred, gt) == expected
    assert M.iou(pred, gt) == pytest.approx((20 - k) / (20 + k))


def test_shape_mismatch_is_an_input_error():
    with pytest.raises(InputError, match="original image size"):
        M.iou(np.zeros((4, 5), bool), np.zeros((5, 4), bool))


# ----------------------------------------------------------------- against the reference


def test_random_shapes_match_reference_definition():
    rng = np.random.default_rng(0)
    shapes = [(24, 24), (31, 47), (60, 40), (120, 90)]  # tolerances 1, 1, 1, 2 px
    for i in range(24):
        shape = shapes[i % len(shapes)]
        gt = random_blob(rng, shape)
        pred = np.roll(random_blob(rng, shape, 1) | gt, rng.integers(-3, 4), axis=int(rng.integers(0, 2)))
        if i % 6 == 0:
            pred[:] = False
        assert M.iou(pred, gt) == pytest.approx(ref_j(pred, gt), abs=1e-12)
        assert M.boundary_f_measure(pred, gt) == pytest.approx(ref_f(pred, gt), abs=1e-12), i


def test_video_jf_of_a_set_matches_reference():
    rng = np.random.default_rng(1)
    samples, ref_js, ref_fs = [], [], []
    for _ in range(3):  # three expressions of 4 frames each
        gts = [random_blob(rng, (40, 56)) for _ in range(4)]
        preds = [np.roll(g, int(rng.integers(-2, 3)), axis=1) for g in gts]
        preds[1] = np.zeros_like(preds[1])
        samples.append(M.video_sample_scores(preds, gts))
        ref_js.append(np.mean([ref_j(p, g) for p, g in zip(preds, gts, strict=True)]))
        ref_fs.append(np.mean([ref_f(p, g) for p, g in zip(preds, gts, strict=True)]))
    s = M.summarize_video(samples)
    assert s["count"] == 3
    assert s["J"] == pytest.approx(100 * np.mean(ref_js))
    assert s["F"] == pytest.approx(100 * np.mean(ref_fs))
    assert s["J&F"] == pytest.approx(50 * (np.mean(ref_js) + np.mean(ref_fs)))


# ----------------------------------------------------------------- summaries


def test_image_summary_by_hand():
    z = np.zeros((10, 10), bool)
    gt1 = z.copy()
    gt1[0, :] = True  # 10 px
    pred1 = z.copy()
    pred1[0, :5] = True  # I=5 U=10
    gt2 = z.copy()
    gt2[2:5, :] = True  # 30 px, predicted exactly: I=U=30
    samples = [
        M.image_sample_scores(pred1, gt1),
        M.image_sample_scores(gt2, gt2),
        M.image_sample_scores(z, z),
    ]
    s = M.summarize_image(samples)
    assert s == {"cIoU": pytest.approx(100 * 35 / 40), "gIoU": pytest.approx(100 * 2.5 / 3), "count": 3}


def test_image_summary_all_empty_is_zero_ciou_like_official():
    z = np.zeros((3, 3), bool)
    s = M.summarize_image([M.image_sample_scores(z, z)])
    assert s["cIoU"] == 0.0 and s["gIoU"] == 100.0 and s["count"] == 1


def test_video_scores_keyed_by_frame_only_score_annotated_frames():
    gt = {"00005": square((20, 20), 2, 2, 4)}
    preds = {"00000": np.ones((20, 20), bool), "00005": square((20, 20), 2, 2, 4)}
    assert M.video_sample_scores(preds, gt) == {"J": 1.0, "F": 1.0, "frames": 1}
    assert M.video_sample_scores({}, gt)["J"] == 0.0  # missing prediction = empty


def test_revos_overall_is_mean_of_type_means():
    samples = [
        {"J": 1.0, "F": 1.0, "type_id": 0},
        {"J": 0.0, "F": 0.0, "type_id": 0},
        {"J": 0.2, "F": 0.4, "type_id": 1},
        {"J": 0.9, "F": 0.9, "type_id": 2},  # neither referring nor reasoning: left out
    ]
    s = M.summarize_video(samples, by_type=True)
    assert s["by_type"]["referring"]["J&F"] == pytest.approx(50.0)
    assert s["by_type"]["reason"]["J&F"] == pytest.approx(30.0)
    assert s["J&F"] == pytest.approx(40.0)
    assert s["J"] == pytest.approx((50 + 20) / 2)
    assert s["count"] == 3
    plain = M.summarize_video(samples)
    assert plain["count"] == 4 and plain["J"] == pytest.approx(100 * 2.1 / 4)
