"""Validation of images and masks handed to the model core.

The core takes RGB ``uint8`` arrays of shape (H, W, 3). Everything else is either
converted here (grayscale, RGBA) or refused with an :class:`InputError` that says why.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

#: Refuse absurd sizes early: a 1024x1024 SAM-2 input is made from any image, but a
#: 100-megapixel frame would still cost seconds and GBs just to resize.
MAX_IMAGE_PIXELS = 8192 * 8192


def as_rgb_uint8(image: object, name: str = "image") -> np.ndarray:
    """Return ``image`` as a C-contiguous (H, W, 3) uint8 RGB array or raise InputError."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise InputError(f"{name} must be a numpy array (H, W, 3) uint8 RGB, got {type(image).__name__}.")
    if image.dtype != np.uint8:
        raise InputError(
            f"{name} has dtype {image.dtype}; expected uint8 (0..255). Convert it first, e.g. "
            "(img * 255).clip(0, 255).astype(np.uint8) for float images in 0..1."
        )
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(
            f"{name} has shape {image.shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)."
        )
    h, w = image.shape[:2]
    if h < 2 or w < 2:
        raise InputError(f"{name} is {w}x{h} pixels; it must be at least 2x2.")
    if h * w > MAX_IMAGE_PIXELS:
        raise InputError(f"{name} is {w}x{h} pixels, above the limit of {MAX_IMAGE_PIXELS} pixels.")
    return np.ascontiguousarray(image)


def as_bool_mask(mask: object, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    """Return ``mask`` as an (H, W) bool array matching ``shape`` or raise InputError."""
    if not isinstance(mask, np.ndarray):
        raise InputError(f"{name} must be a numpy array, got {type(mask).__name__}.")
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[:, :, 0]
    if mask.shape != tuple(shape):
        raise InputError(f"{name} has shape {mask.shape}; it must match the image, {tuple(shape)}.")
    mask = mask.astype(bool) if mask.dtype != bool else mask
    if not mask.any():
        raise InputError(f"{name} is empty (no pixel set): nothing to describe.")
    return mask


def mask_box(mask: np.ndarray | None) -> tuple[int, int, int, int] | None:
    """Tight (x0, y0, x1, y1) of the set pixels of a bool mask, x1/y1 exclusive; None when the
    mask is empty or absent (the tracker's object boxes and the node's ROI fields both use it)."""
    if mask is None:
        return None
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
