"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

cv_bridge is not on PyPI for ROS 2 (the PyPI ``cv-bridge`` is a broken ROS 1 copy), and all
it does for us is reshape a buffer. Decoding lives in :mod:`sa2va_ros.imaging` (no ROS import,
shared with bag replay); this module adds what needs the message types: telling the two kinds
of image message apart and building outgoing ones. Every malformed message raises
:class:`ImageError` with a message naming the field at fault: the node logs it and answers the
request; it never crashes on what a camera sends.
"""

from __future__ import annotations

import array
import sys

import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from sa2va_ros.imaging import (  # noqa: F401 - re-exported: the node's decoding API
    COMPRESSED_FORMATS,
    DEFAULT_MAX_PIXELS,
    ENCODINGS,
    Encoding,
    ImageError,
    compressed_size,
    compressed_to_rgb8,
    image_to_array,
    image_to_rgb8,
    mask_from_image,
    to_rgb8,
)


def message_to_rgb8(msg: Image | CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Either kind of image message to (H, W, 3) uint8 RGB."""
    if isinstance(msg, CompressedImage):
        return compressed_to_rgb8(msg, max_pixels)
    return image_to_rgb8(msg, max_pixels)


_NATIVE_BIG_ENDIAN = sys.byteorder == "big"
_OUTPUT_ENCODINGS = {
    (np.dtype(np.uint8), 3): "rgb8",
    (np.dtype(np.uint8), 1): "mono8",
    (np.dtype(np.uint16), 1): "mono16",
}


def array_to_image(pixels: np.ndarray, header=None, encoding: str | None = None) -> Image:
    """(H, W) / (H, W, C) uint8 or uint16 pixels to a sensor_msgs/Image (rgb8, mono8, mono16).

    Written in native byte order with ``is_bigendian`` set to match, no row padding.
    """
    contiguous = np.ascontiguousarray(pixels)
    channels = 1 if contiguous.ndim == 2 else contiguous.shape[2]
    if encoding is None:
        encoding = _OUTPUT_ENCODINGS.get((contiguous.dtype, channels))
        if encoding is None:
            raise ImageError(f"no image encoding for {contiguous.dtype} with {channels} channels")
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(contiguous.shape[0]), int(contiguous.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(_NATIVE_BIG_ENDIAN and contiguous.dtype.itemsize > 1)
    msg.step = int(contiguous.shape[1] * channels * contiguous.dtype.itemsize)
    msg.data = byte_sequence(contiguous)
    return msg


def byte_sequence(buffer: np.ndarray | bytes) -> array.array:
    """A ``uint8[]`` message field value made from any contiguous buffer, in one copy.

    Humble's generated setters (``if __debug__``) check every element of a bytes or list value in
    Python: two passes over the 900 KB of a 640x480 frame cost tens of milliseconds. An
    ``array.array('B')`` is taken as it is by every distro's setter.
    """
    out = array.array("B")
    out.frombytes(memoryview(buffer).cast("B"))
    return out


def is_empty(msg: Image) -> bool:
    """An optional image field left at its default (width or height 0, no data)."""
    return (msg.width == 0 or msg.height == 0) and len(msg.data) == 0
