"""The colour camera's calibration (a CameraInfo's K, D and distortion model) as rays per pixel.

Registered depth is a depth value per *colour* pixel, and colour pixels are distorted: a point
at depth z seen at pixel (u, v) lies at z * (x, y, 1), where (x, y) is the pixel's undistorted
normalised coordinate. Undistortion is iterative, so the rays of every pixel of a grid are
computed once per calibration and grid size and cached (one 640x480 grid takes ~0.1 s;
afterwards a position costs a table look-up).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import cv2
import numpy as np

from .depth_image import DepthImageError, relative_scale

#: CameraInfo.distortion_model values understood (sensor_msgs/distortion_models.hpp).
PLUMB_BOB, RATIONAL_POLYNOMIAL, EQUIDISTANT = "plumb_bob", "rational_polynomial", "equidistant"
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 40, 1e-10)


class CameraModelError(ValueError):
    """The calibration cannot be used; the message says why."""


class CameraModel:
    """Pinhole intrinsics + distortion at a calibration size (width, height)."""

    def __init__(
        self,
        k: Sequence[float],
        d: Sequence[float] = (),
        distortion_model: str = PLUMB_BOB,
        width: int = 0,
        height: int = 0,
    ):
        kk = np.asarray(k, np.float64).reshape(-1)
        if kk.size != 9 or not np.all(np.isfinite(kk)):
            raise CameraModelError(f"camera matrix K must be 9 finite numbers, got {list(kk)}")
        if not kk.any():
            raise CameraModelError(
                "camera_info K is all zero: the camera is not calibrated (or the driver publishes an empty "
                "CameraInfo); no 3D position can be computed until it publishes its intrinsics"
            )
        self.k = kk.reshape(3, 3)
        if self.k[0, 0] <= 0 or self.k[1, 1] <= 0 or self.k[2, 2] != 1.0:
            raise CameraModelError(
                f"camera matrix K {list(kk)} is not a pinhole matrix (fx, fy > 0, K[2][2] = 1)"
            )
        self.d = np.asarray(list(d), np.float64)
        if not np.all(np.isfinite(self.d)):
            raise CameraModelError(f"distortion coefficients D must be finite, got {list(self.d)}")
        model = distortion_model or PLUMB_BOB
        if not self.d.any():
            model = PLUMB_BOB  # no distortion: the model name does not matter
        elif model == PLUMB_BOB and self.d.size not in (4, 5):
            raise CameraModelError(f"plumb_bob needs 5 coefficients, got {self.d.size}")
        elif model == RATIONAL_POLYNOMIAL and self.d.size not in (8, 12, 14):
            raise CameraModelError(f"rational_polynomial needs 8 coefficients, got {self.d.size}")
        elif model == EQUIDISTANT and self.d.size != 4:
            raise CameraModelError(f"equidistant needs 4 coefficients, got {self.d.size}")
        elif model not in (PLUMB_BOB, RATIONAL_POLYNOMIAL, EQUIDISTANT):
            raise CameraModelError(
                f"distortion model '{distortion_model}' is not supported (plumb_bob, rational_polynomial, "
                "equidistant)"
            )
        self.model = model
        self.width, self.height = int(width), int(height)
        self._rays: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def key(self) -> tuple:
        """Equal for equal calibrations (the node rebuilds the model only when this changes)."""
        return (tuple(self.k.ravel()), tuple(self.d), self.model, self.width, self.height)

    def calibration_size(self, colour: tuple[int, int]) -> tuple[int, int]:
        """(H, W) the intrinsics refer to; the colour size when CameraInfo leaves it 0."""
        return (self.height, self.width) if self.width > 0 and self.height > 0 else colour

    def rays(self, grid: tuple[int, int], colour: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) float32 (H, W) arrays: the undistorted normalised coordinate of every pixel of a
        ``grid`` (H, W) image registered to the colour image of size ``colour``.

        The grid may be an integer fraction or multiple of the calibration size; other sizes
        raise DepthImageError (the depth cannot be registered to this camera).
        """
        calib = self.calibration_size(colour)
        with self._lock:
            cached = self._rays.get((grid, calib))
        if cached is not None:
            return cached
        try:
            up, down = relative_scale(calib, grid)
        except DepthImageError as exc:
            raise DepthImageError(f"{exc} (camera_info is {calib[1]}x{calib[0]})") from None
        h, w = grid
        # Centre of grid pixel u in calibration pixels: pixel centres sit at integers.
        us = (np.arange(w, dtype=np.float64) + 0.5) * up / down - 0.5
        vs = (np.arange(h, dtype=np.float64) + 0.5) * up / down - 0.5
        if not self.d.any():
            x = ((us - self.k[0, 2]) / self.k[0, 0])[None, :].repeat(h, 0)
            # K's skew term, K[0][1], is 0 for every ROS driver; honour it anyway.
            y = ((vs - self.k[1, 2]) / self.k[1, 1])[:, None].repeat(w, 1)
            x = x - self.k[0, 1] * y / self.k[0, 0]
        else:
            uu, vv = np.meshgrid(us, vs)
            pts = np.stack([uu.ravel(), vv.ravel()], axis=1).reshape(-1, 1, 2)
            if self.model == EQUIDISTANT:
                out = cv2.fisheye.undistortPoints(pts, self.k, self.d)
            else:
                out = cv2.undistortPoints(pts, self.k, self.d, R=None, P=None, criteria=_UNDISTORT_CRITERIA)
            x = out[:, 0, 0].reshape(h, w)
            y = out[:, 0, 1].reshape(h, w)
        result = (np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.float32))
        with self._lock:
            self._rays[(grid, calib)] = result
        return result

    def project(self, points: np.ndarray, colour: tuple[int, int]) -> np.ndarray:
        """(N, 2) colour pixel coordinates of (N, 3) optical-frame points (distortion applied)."""
        calib = self.calibration_size(colour)
        up, down = relative_scale(calib, colour)
        pts = np.asarray(points, np.float64).reshape(-1, 1, 3)
        if self.model == EQUIDISTANT:
            norm = pts[:, :, :2] / pts[:, :, 2:]
            px = cv2.fisheye.distortPoints(norm, self.k, self.d)
        else:
            px, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), self.k, self.d)
        return ((px.reshape(-1, 2) + 0.5) * down / up) - 0.5
