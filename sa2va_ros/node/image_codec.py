"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

cv_bridge is not on PyPI for ROS 2 (the PyPI ``cv-bridge`` is a broken ROS 1 copy), and all
it does for us is reshape a buffer, so this module does it with numpy (and opencv for colour
conversions and JPEG/PNG). Every malformed message raises :class:`ImageError` with a message
naming the field at fault: the node logs it and answers the request; it never crashes on
what a camera sends.
"""

from __future__ import annotations

import array
import io
import sys
from dataclasses import dataclass

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image


class ImageError(ValueError):
    """An image message cannot be decoded; the message says why."""


@dataclass(frozen=True)
class Encoding:
    """How one ROS encoding string lays out its pixels."""

    channels: int
    dtype: np.dtype
    #: cv2.cvtColor code to RGB (None: already RGB or handled separately).
    to_rgb: int | None

    @property
    def bytes_per_pixel(self) -> float:
        return self.channels * np.dtype(self.dtype).itemsize


_U8, _U16 = np.dtype(np.uint8), np.dtype(np.uint16)

#: The encodings we decode. yuv422 is UYVY and yuv422_yuy2 is YUYV (REP 2001 / sensor_msgs
#: image_encodings.hpp): 2 bytes per pixel, stored here as 2 "channels" of uint8.
ENCODINGS: dict[str, Encoding] = {
    "rgb8": Encoding(3, _U8, None),
    "bgr8": Encoding(3, _U8, cv2.COLOR_BGR2RGB),
    "rgba8": Encoding(4, _U8, cv2.COLOR_RGBA2RGB),
    "bgra8": Encoding(4, _U8, cv2.COLOR_BGRA2RGB),
    "mono8": Encoding(1, _U8, cv2.COLOR_GRAY2RGB),
    "8UC1": Encoding(1, _U8, cv2.COLOR_GRAY2RGB),
    "8UC3": Encoding(3, _U8, cv2.COLOR_BGR2RGB),  # cv_bridge treats 8UC3 as bgr8
    "8UC4": Encoding(4, _U8, cv2.COLOR_BGRA2RGB),
    "mono16": Encoding(1, _U16, cv2.COLOR_GRAY2RGB),
    "16UC1": Encoding(1, _U16, cv2.COLOR_GRAY2RGB),
    "rgb16": Encoding(3, _U16, None),
    "bgr16": Encoding(3, _U16, cv2.COLOR_BGR2RGB),
    "rgba16": Encoding(4, _U16, cv2.COLOR_RGBA2RGB),
    "bgra16": Encoding(4, _U16, cv2.COLOR_BGRA2RGB),
    "yuv422": Encoding(2, _U8, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": Encoding(2, _U8, cv2.COLOR_YUV2RGB_UYVY),
    "yuv422_yuy2": Encoding(2, _U8, cv2.COLOR_YUV2RGB_YUYV),
    "yuyv": Encoding(2, _U8, cv2.COLOR_YUV2RGB_YUYV),
    "bayer_rggb8": Encoding(1, _U8, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": Encoding(1, _U8, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": Encoding(1, _U8, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": Encoding(1, _U8, cv2.COLOR_BayerGB2RGB),
}

DEFAULT_MAX_PIXELS = 4096 * 4096


def _check_size(width: int, height: int, max_pixels: int, what: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"{what} is {width}x{height}: an image needs at least one pixel in each direction.")
    if width < 2 or height < 2:
        raise ImageError(f"{what} is {width}x{height}: the model needs at least 2x2 pixels.")
    if width * height > max_pixels:
        raise ImageError(
            f"{what} is {width}x{height} = {width * height} pixels, above max_image_pixels={max_pixels}; "
            "publish a smaller image or raise the parameter."
        )


def image_to_array(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The pixels of ``msg`` as (H, W, C) in its own encoding and dtype (no colour conversion).

    Honours ``step`` (row padding) and ``is_bigendian``; the result is a copy in native byte
    order, so it stays valid after the message is gone.
    """
    encoding = ENCODINGS.get(msg.encoding)
    if encoding is None:
        raise ImageError(
            f"unsupported image encoding '{msg.encoding}'; supported: {', '.join(ENCODINGS)}. "
            "Convert on the camera side (e.g. to rgb8 or bgr8)."
        )
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    _check_size(width, height, max_pixels, f"image ({msg.encoding})")
    if encoding.channels == 2 and width % 2:
        raise ImageError(f"{msg.encoding} packs pixel pairs, so its width must be even, got {width}.")
    row_bytes = int(width * encoding.bytes_per_pixel)
    if step < row_bytes:
        raise ImageError(
            f"step {step} is smaller than one row of {width} {msg.encoding} pixels ({row_bytes} bytes)."
        )
    data = msg.data
    size = len(data)
    if size != step * height:
        raise ImageError(
            f"image data has {size} bytes but step x height = {step} x {height} = {step * height}; "
            "the message is truncated or its step / size fields are wrong."
        )
    buffer = np.frombuffer(data, np.uint8)  # bytes, bytearray or array.array('B'): no copy
    rows = buffer.reshape(height, step)[:, :row_bytes]
    dtype = encoding.dtype
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    pixels = rows.copy().view(dtype).reshape(height, width, encoding.channels)
    return pixels.astype(encoding.dtype, copy=False)


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """16-bit pixels to 8 bits.

    Many 16-bit cameras fill only 10 or 12 bits; dividing by 257 would leave their frames
    nearly black. Scale by the smallest power of two above the frame's maximum instead, which
    stays constant for a given sensor (no flicker from frame to frame).
    """
    if pixels.dtype == np.uint8:
        return pixels
    peak = int(pixels.max()) if pixels.size else 0
    bits = max(8, peak.bit_length())
    return (pixels >> (bits - 8)).astype(np.uint8)


def to_rgb8(pixels: np.ndarray, encoding: str) -> np.ndarray:
    """(H, W, C) pixels of ``encoding`` (from :func:`image_to_array`) to (H, W, 3) uint8 RGB."""
    spec = ENCODINGS[encoding]
    if spec.channels == 2:  # packed YUV: cv2 wants (H, W, 2) uint8
        return cv2.cvtColor(pixels, spec.to_rgb)
    pixels = _to_uint8(pixels)
    if spec.to_rgb is None:
        return np.ascontiguousarray(pixels)
    if spec.channels == 1:
        pixels = pixels[:, :, 0]
    return cv2.cvtColor(np.ascontiguousarray(pixels), spec.to_rgb)


def image_to_rgb8(msg: Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode any supported sensor_msgs/Image to (H, W, 3) uint8 RGB, or raise ImageError."""
    return to_rgb8(image_to_array(msg, max_pixels), msg.encoding)


def _compressed_size(data) -> tuple[int, int] | None:
    """(width, height) from the file header without decoding the pixels (PIL reads headers lazily)."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(io.BytesIO(memoryview(data))) as img:
            return img.size
    except Exception:  # noqa: BLE001 - an unreadable header: let the decoder give the error
        return None


def compressed_to_rgb8(msg: CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a JPEG / PNG CompressedImage to (H, W, 3) uint8 RGB, or raise ImageError.

    ``format`` is free text in practice ("jpeg", "png", "rgb8; jpeg compressed bgr8"); the
    bytes say what they are, so only depth-compressed images (a different layout) are refused
    by name.
    """
    fmt = (msg.format or "").strip()
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        raise ImageError(
            f"CompressedImage format '{fmt}' (compressedDepth) is not supported; send jpeg or png."
        )
    data = msg.data
    if not len(data):
        raise ImageError(f"CompressedImage (format '{fmt}') has no data.")
    size = _compressed_size(data)
    if size is not None:
        _check_size(size[0], size[1], max_pixels, f"compressed image ({fmt or 'no format'})")
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageError(
            f"CompressedImage (format '{fmt}', {len(data)} bytes) could not be decoded: corrupt or not "
            "JPEG/PNG data."
        )
    if size is None:
        _check_size(decoded.shape[1], decoded.shape[0], max_pixels, f"compressed image ({fmt})")
    decoded = _to_uint8(decoded)
    if decoded.ndim == 2:
        return cv2.cvtColor(decoded, cv2.COLOR_GRAY2RGB)
    if decoded.shape[2] == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def message_to_rgb8(msg: Image | CompressedImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Either kind of image message to (H, W, 3) uint8 RGB."""
    if isinstance(msg, CompressedImage):
        return compressed_to_rgb8(msg, max_pixels)
    return image_to_rgb8(msg, max_pixels)


def mask_from_image(msg: Image, shape: tuple[int, int], what: str = "mask") -> np.ndarray:
    """A region given as an image message (non-zero pixels = region) as (H, W) bool.

    Must match ``shape`` (the frame it refers to); any single-channel encoding works, and for
    colour encodings any non-zero channel counts.
    """
    try:
        pixels = image_to_array(msg, max_pixels=1 << 31)
    except ImageError as exc:
        raise ImageError(f"{what}: {exc}") from exc
    if pixels.shape[:2] != tuple(shape):
        raise ImageError(
            f"{what} is {pixels.shape[1]}x{pixels.shape[0]} but the image it refers to is "
            f"{shape[1]}x{shape[0]}; they must be the same size."
        )
    mask = pixels.any(axis=2)
    if not mask.any():
        raise ImageError(f"{what} has no non-zero pixel: it marks no region.")
    return mask


_NATIVE_BIG_ENDIAN = sys.byteorder == "big"
_OUTPUT_ENCODINGS = {(np.dtype(np.uint8), 3): "rgb8", (np.dtype(np.uint8), 1): "mono8", (_U16, 1): "mono16"}


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
