"""Label images: every object's mask in one image, pixel value = the object's index.

A label image is what segmentation consumers in ROS expect (one message, any number of
objects, cheap to republish and to overlay in RViz). Index 0 is the background; object i of
the list gets value i + 1, which the node writes into TrackedObject.mask_value. mono8 holds
255 objects; beyond that the image becomes mono16 so no object is ever silently dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

MAX_MONO8_LABELS = 255
MAX_MONO16_LABELS = 65535


def label_image(masks: Sequence[np.ndarray | None], shape: tuple[int, int]) -> tuple[np.ndarray, list[int]]:
    """Paint ``masks`` into one (H, W) label image.

    Returns the image (uint8, or uint16 beyond 255 masks) and each mask's value in it (0 for a
    mask that is None or has no visible pixel left). Where masks overlap the later one wins,
    so callers order masks by priority (the node: by object id, newest on top).
    """
    n = len(masks)
    if n > MAX_MONO16_LABELS:
        raise ValueError(f"{n} masks do not fit a mono16 label image (at most {MAX_MONO16_LABELS}).")
    dtype = np.uint8 if n <= MAX_MONO8_LABELS else np.uint16
    drawn = [index for index, mask in enumerate(masks) if mask is not None]
    for index in drawn:
        if masks[index].shape != tuple(shape):
            raise ValueError(f"mask {index} has shape {masks[index].shape}, expected {tuple(shape)}")
    if not drawn:
        return np.zeros(shape, dtype=dtype), [0] * n
    if len(drawn) == 1:
        # The common case (one tracked object): one multiply, and nothing can hide the mask, so
        # no counting pass. In the node, right after a tracker step has filled the caches with
        # SAM-2's tensors, the general path took 0.5-0.7 ms at 640x480.
        index = drawn[0]
        labels = np.multiply(masks[index], index + 1, dtype=dtype)
        values = [0] * n
        values[index] = index + 1 if labels.any() else 0
        return labels, values
    labels = np.zeros(shape, dtype=dtype)
    for index in drawn:
        np.copyto(labels, index + 1, where=masks[index])
    present = _present(labels, n)
    values = [i + 1 if masks[i] is not None and present[i + 1] else 0 for i in range(n)]
    return labels, values


def _present(labels: np.ndarray, n: int) -> np.ndarray:
    """Which of the values 0..n occur in ``labels``, in one counting pass (no sort, unlike np.unique).

    For uint8 images OpenCV's histogram counts in place: 0.08 ms at 640x480 against 0.45 ms for
    np.bincount, which first widens every pixel to int64 (this runs on every tracked frame).
    """
    if labels.dtype == np.uint8 and labels.size:
        counts = cv2.calcHist([labels], [0], None, [256], [0, 256]).ravel()[: n + 1]
    else:
        counts = np.bincount(labels.ravel(), minlength=n + 1)
    return counts > 0


def encoding_of(labels: np.ndarray) -> str:
    """ROS encoding of a label image made by :func:`label_image`."""
    return "mono8" if labels.dtype == np.uint8 else "mono16"
