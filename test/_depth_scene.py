"""Rendered depth scenes with known ground truth, for the 3D geometry tests and bench/depth3d.py.

A ray caster, written independently of sa2va_ros.depth3d: every pixel's ray comes from
inverting the camera's forward distortion model by Newton iterations here, checked against
opencv's forward projection; spheres and axis-aligned boxes in front of a wall are intersected
exactly. The ground truth of an object is the mean and the min / max of its visible surface
points, one per colour pixel it covers: what a perfect sensor would give.

Sensor defects are added on request: relative depth noise, flying pixels (depths between the
object and the background) along silhouettes, holes, and masks that bleed onto the background.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float


@dataclass(frozen=True)
class Box:
    center: tuple[float, float, float]
    half: tuple[float, float, float]  # half sizes along the box's own axes
    yaw: float = 0.0  # rotation about the camera's y axis (radians): shows two faces


@dataclass(frozen=True)
class Intrinsics:
    fx: float = 615.0
    fy: float = 615.0
    cx: float = 319.5
    cy: float = 239.5
    d: tuple[float, ...] = ()  # plumb_bob k1 k2 p1 p2 k3, or rational_polynomial (8)

    @property
    def k(self) -> list[float]:
        return [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]

    def scaled(self, f: float) -> Intrinsics:
        """The same camera at ``f`` times the resolution (pixel centres at integers)."""
        return Intrinsics(
            self.fx * f, self.fy * f, (self.cx + 0.5) * f - 0.5, (self.cy + 0.5) * f - 0.5, self.d
        )


def _distort(x: np.ndarray, y: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = np.zeros(8)
    k[: d.size] = d
    k1, k2, p1, p2, k3, k4, k5, k6 = k
    r2 = x * x + y * y
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return xd, yd


def rays(cam: Intrinsics, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised undistorted (x, y) of every pixel: Newton on the forward model, verified."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    xd, yd = (u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy
    x, y = xd.copy(), yd.copy()
    d = np.asarray(cam.d, np.float64)
    if d.any():
        eps = 1e-7
        for _ in range(30):
            fx, fy = _distort(x, y, d)
            ex, ey = fx - xd, fy - yd
            ax, ay = _distort(x + eps, y, d)
            bx, by = _distort(x, y + eps, d)
            j11, j21 = (ax - fx) / eps, (ay - fy) / eps
            j12, j22 = (bx - fx) / eps, (by - fy) / eps
            det = j11 * j22 - j12 * j21
            x -= (j22 * ex - j12 * ey) / det
            y -= (-j21 * ex + j11 * ey) / det
        pts = np.stack([x.ravel(), y.ravel(), np.ones(x.size)], 1)
        k = np.array(cam.k).reshape(3, 3)
        px, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), k, d)
        err = np.abs(px.reshape(-1, 2) - np.stack([u.ravel(), v.ravel()], 1)).max()
        assert err < 1e-3, f"ray inversion off by {err} px"
    return x, y


def cast(shapes, wall: float, cam: Intrinsics, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(depth z in metres (H, W), label (H, W) int: 0 = wall, i + 1 = shapes[i])."""
    x, y = rays(cam, h, w)
    dirs = np.stack([x, y, np.ones_like(x)], -1)
    depth = np.full((h, w), float(wall))
    label = np.zeros((h, w), np.int32)
    for i, s in enumerate(shapes):
        if isinstance(s, Sphere):
            c = np.asarray(s.center)
            dd = (dirs * dirs).sum(-1)
            dc = dirs @ c
            disc = dc * dc - dd * (c @ c - s.radius**2)
            with np.errstate(invalid="ignore"):
                t = (dc - np.sqrt(disc)) / dd
            hit = disc > 0
        else:
            c, sn = np.cos(s.yaw), np.sin(s.yaw)
            rot = np.array([[c, 0, sn], [0, 1, 0], [-sn, 0, c]])  # box axes in the camera frame
            origin = -(rot.T @ np.asarray(s.center))  # the camera in box coordinates
            local = dirs @ rot  # = (rot.T @ d) for every ray
            half = np.asarray(s.half)
            with np.errstate(divide="ignore", invalid="ignore"):
                t1 = (-half - origin) / local
                t2 = (half - origin) / local
            tn = np.nanmax(np.minimum(t1, t2), -1)
            tf = np.nanmin(np.maximum(t1, t2), -1)
            hit = (tn <= tf) & (tn > 0)
            t = tn
        closer = hit & (t < depth)
        depth[closer] = t[closer]
        label[closer] = i + 1
    return depth, label


def truth(depth: np.ndarray, label: np.ndarray, cam: Intrinsics, obj: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroid (3,), extent (3,)) of the visible surface of object ``obj`` (1-based)."""
    x, y = rays(cam, *depth.shape)
    m = label == obj
    pts = np.stack([x[m] * depth[m], y[m] * depth[m], depth[m]], 1)
    return pts.mean(0), pts.max(0) - pts.min(0)


def add_defects(
    depth: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    noise: float = 0.01,
    flying: float = 0.05,
    holes: float = 0.03,
) -> np.ndarray:
    """A sensor's view of ``depth``: ``noise`` relative Gaussian noise, ``flying`` of the pixels in a
    3-pixel band around each silhouette set between the front and back depth there, ``holes`` of
    the pixels (as small blobs and single pixels) set to 0."""
    out = depth * (1.0 + noise * rng.standard_normal(depth.shape))
    edges = cv2.morphologyEx(label.astype(np.float32), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    band = cv2.dilate(edges.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    near = cv2.erode(depth.astype(np.float32), np.ones((7, 7), np.uint8))
    far = cv2.dilate(depth.astype(np.float32), np.ones((7, 7), np.uint8))
    fly = band & (rng.random(depth.shape) < flying)
    out[fly] = (near + rng.random(depth.shape) * (far - near))[fly]
    h, w = depth.shape
    n_blobs = int(holes * h * w / 2 / 30)
    for _ in range(n_blobs):
        cv2.circle(out, (int(rng.integers(w)), int(rng.integers(h))), 3, 0.0, -1)
    out[rng.random(depth.shape) < holes / 2] = 0.0
    return out


def bleed(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` grown by ``px`` pixels: a segmentation that spills onto the background."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)


def to_16uc1(depth: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(depth * 1000.0), 0, 65535).astype(np.uint16)
