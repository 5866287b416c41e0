"""A depth image as the geometry uses it: raw pixels, their unit, and their scale to colour.

Drivers publish depth registered to the colour camera (RealSense / ZED / Orbbec
``aligned_depth_to_color``) as ``16UC1`` millimetres (0 = no depth) or ``32FC1`` metres
(0 or NaN = no depth). The pixels are kept as they came and converted to metres one crop at
a time, so a frame with a few small objects never converts the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: encoding -> (numpy dtype of one pixel, metres per unit)
ENCODINGS: dict[str, tuple[np.dtype, float]] = {
    "16UC1": (np.dtype(np.uint16), 0.001),
    "mono16": (np.dtype(np.uint16), 0.001),  # some drivers label millimetre depth mono16
    "32FC1": (np.dtype(np.float32), 1.0),
}


class DepthImageError(ValueError):
    """The depth image cannot be used; the message says why and what would work."""


@dataclass(frozen=True)
class DepthImage:
    """Depth pixels (H, W) in their native type; ``scale`` metres per unit."""

    pixels: np.ndarray
    scale: float

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape[:2]

    @classmethod
    def from_buffer(
        cls,
        data: bytes | memoryview | np.ndarray,
        encoding: str,
        width: int,
        height: int,
        step: int,
        bigendian: bool,
    ) -> DepthImage:
        """Wrap a sensor_msgs/Image's fields (no copy when the layout allows)."""
        if encoding not in ENCODINGS:
            raise DepthImageError(
                f"depth encoding '{encoding}' is not supported: publish 16UC1 (millimetres) or 32FC1 "
                "(metres), as aligned_depth_to_color of RealSense / ZED / Orbbec drivers does"
            )
        dtype, scale = ENCODINGS[encoding]
        if width <= 0 or height <= 0:
            raise DepthImageError(f"depth image is {width}x{height}: empty")
        row = width * dtype.itemsize
        buf = (
            np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8).ravel()
        )
        if step < row or buf.size < step * (height - 1) + row:
            raise DepthImageError(
                f"depth image {width}x{height} {encoding}: {buf.size} bytes with step {step} is too small "
                f"(needs step >= {row} and {step * (height - 1) + row} bytes)"
            )
        if buf.size < step * height:  # the last row may be unpadded
            buf = np.concatenate([buf, np.zeros(step * height - buf.size, np.uint8)])
        rows = buf[: step * height].reshape(height, step)[:, :row]
        pixels = rows.copy().view(dtype.newbyteorder(">" if bigendian else "<")).reshape(height, width)
        if bigendian:
            pixels = pixels.astype(dtype)
        return cls(pixels, scale)

    @classmethod
    def from_metres(cls, metres: np.ndarray) -> DepthImage:
        return cls(np.asarray(metres, np.float32), 1.0)

    def metres(self, rows: slice = slice(None), cols: slice = slice(None)) -> np.ndarray:
        """float32 metres of a crop; NaN where the sensor gave no depth (0, NaN or inf)."""
        crop = self.pixels[rows, cols]
        out = crop.astype(np.float32) * np.float32(self.scale)
        out[~np.isfinite(out) | (out <= 0)] = np.nan
        return out


def scale_factor(big: tuple[int, int], small: tuple[int, int]) -> int | None:
    """The integer k with big == small * k in both axes, else None."""
    (bh, bw), (sh, sw) = big, small
    if sh <= 0 or sw <= 0 or bh % sh or bw % sw or bh // sh != bw // sw:
        return None
    return bh // sh


def relative_scale(colour: tuple[int, int], depth: tuple[int, int]) -> tuple[int, int]:
    """(up, down): depth pixel size = colour pixel size * up / down, one of them 1.

    Depth at the colour resolution gives (1, 1), at half of it (2, 1), at twice it (1, 2).
    Other ratios (non-integer, or different in x and y) mean the depth is not registered to
    this colour image, and no position would be right: DepthImageError.
    """
    k = scale_factor(colour, depth)
    if k is not None:
        return k, 1
    k = scale_factor(depth, colour)
    if k is not None:
        return 1, k
    raise DepthImageError(
        f"depth image {depth[1]}x{depth[0]} does not fit colour image {colour[1]}x{colour[0]} by an integer "
        "scale factor in both axes: subscribe to the depth registered to this colour camera "
        "(aligned_depth_to_color), at the colour resolution or an integer fraction / multiple of it"
    )
