"""Masks as PNG in sensor_msgs/CompressedImage: lossless and small enough to print.

A raw 640x480 mono8 Image is 307,200 bytes, which ``ros2 service call`` prints as a million
characters of integers. The same binary mask as a PNG is a few kilobytes and decodes to the
exact pixels, so per-object masks (one image each: overlapping objects lose nothing) and the
label images of service and action replies travel this way. The format string follows
compressed_image_transport ("mono8; png compressed mono8"), so its decoders and cv_bridge
read them as they are.
"""

from __future__ import annotations

import array

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage


def _png_params() -> list[int]:
    """zlib's run-length strategy, and no row filter where this OpenCV lets us choose (>= 4.11).

    Why not zlib's level 9: its time depends on the mask. A smooth 640x480 object costs 0.65 ms
    (1-bit) and 2.9 ms (8-bit label image), but the speckled mask of an uncertain model (the demo
    model's answer) 12.7 and 25 ms, and the node spent those ms on every answer beside the tracking
    loop (bench/node_latency.py's busy windows). Run-length coding takes 0.2-0.5 ms whatever the
    mask (bench/mask_png.py), for about level 9's bytes on smooth masks and up to 5 times on
    speckled ones (a few KB either way). A mask's rows are runs already: OpenCV's default row
    filtering (it tries every filter on every row) would cost 1.1 ms of an 8-bit image's 1.5 ms
    for little; OpenCV before 4.11 always does it.
    """
    rle = int(cv2.IMWRITE_PNG_STRATEGY_RLE)
    params = [int(cv2.IMWRITE_PNG_COMPRESSION), 1, int(cv2.IMWRITE_PNG_STRATEGY), rle]
    if hasattr(cv2, "IMWRITE_PNG_FILTER"):
        params += [int(cv2.IMWRITE_PNG_FILTER), int(cv2.IMWRITE_PNG_FILTER_NONE)]
    return params


#: cv2.imencode parameters of every mask PNG the node sends (8/16-bit label images, 1-bit masks).
PNG_PARAMS = _png_params()
BILEVEL_PNG_PARAMS = PNG_PARAMS + [int(cv2.IMWRITE_PNG_BILEVEL), 1]


def png_message(pixels: np.ndarray, header=None) -> CompressedImage:
    """(H, W) uint8 or uint16 pixels -> a PNG CompressedImage (mono8 / mono16)."""
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"a mask image must be (H, W) uint8 or uint16, got {pixels.shape} {pixels.dtype}")
    encoding = "mono8" if pixels.dtype == np.uint8 else "mono16"
    return _message(np.ascontiguousarray(pixels), PNG_PARAMS, encoding, header)


def mask_message(mask: np.ndarray | None, header=None) -> CompressedImage:
    """One object's (H, W) bool mask as a 1-bit PNG; an empty message for None.

    1 bit per pixel before zlib: a half to an eighth of an 8-bit PNG. Decoders (cv2.imdecode,
    compressed_image_transport) expand it to mono8 0 / 255.
    """
    if mask is None:
        return CompressedImage()
    pixels = np.where(mask, np.uint8(255), np.uint8(0))
    return _message(pixels, BILEVEL_PNG_PARAMS, "mono8", header)


def _message(pixels: np.ndarray, params: list[int], encoding: str, header) -> CompressedImage:
    """``pixels`` encoded as PNG with ``params`` in a CompressedImage of ``encoding``."""
    ok, encoded = cv2.imencode(".png", pixels, params)
    if not ok:
        raise ValueError("PNG encoding failed")
    msg = CompressedImage(format=f"{encoding}; png compressed {encoding}")
    if header is not None:
        msg.header = header
    data = array.array("B")
    data.frombytes(encoded)  # the encoded buffer, copied once
    msg.data = data  # array.array: every distro's setter takes it without a per-element check
    return msg


def decode_png(msg: CompressedImage) -> np.ndarray:
    """The (H, W) pixels of a message made by :func:`png_message` (or any single-channel PNG)."""
    pixels = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError(f"not a PNG image (format '{msg.format}', {len(msg.data)} bytes)")
    return pixels


def decode_mask(msg: CompressedImage) -> np.ndarray | None:
    """An object's mask message as (H, W) bool; None for an empty message (no mask sent)."""
    if not len(msg.data):
        return None
    pixels = decode_png(msg)
    return (pixels.any(axis=2) if pixels.ndim == 3 else pixels) > 0
