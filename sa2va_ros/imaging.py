"""Camera images as plain fields -> numpy RGB, without ROS: the one decoder of the project.

The node (live topics and request images), its services and offline bag replay
(``sa2va_ros.eval.bags``, which must work without rclpy) all decode through this module, so a
frame gives the same pixels whichever way it arrives: same byte order, same 16-bit scaling,
same limits. A message is anything with the fields of ``sensor_msgs/Image`` (``encoding``,
``width``, ``height``, ``step``, ``is_bigendian``, ``data``) or ``sensor_msgs/CompressedImage``
(``format``, ``data``): rclpy messages and rosbags' deserialised ones alike.

Every malformed or hostile image raises :class:`ImageError` with a message naming the field at
fault and a ``kind`` (for log throttling); nothing here ever raises anything else on what a
camera or a caller sends. Sizes are checked from the header BEFORE any pixel is decoded: a
190 KB PNG declaring 14000x14000 pixels is refused without allocating its 588 MB.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


class ImageError(ValueError):
    """An image message cannot be decoded; the message says why, ``kind`` what kind of problem."""

    def __init__(self, message: str, kind: str = "image") -> None:
        super().__init__(message)
        self.kind = kind


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
        raise ImageError(
            f"{what} is {width}x{height}: an image needs at least one pixel in each direction.", "empty"
        )
    if width < 2 or height < 2:
        raise ImageError(f"{what} is {width}x{height}: the model needs at least 2x2 pixels.", "tiny")
    if width * height > max_pixels:
        raise ImageError(
            f"{what} is {width}x{height} = {width * height} pixels, above max_image_pixels={max_pixels}; "
            "publish a smaller image or raise the parameter.",
            "size",
        )


def image_to_array(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The pixels of ``msg`` as (H, W, C) in its own encoding and dtype (no colour conversion).

    Honours ``step`` (row padding) and ``is_bigendian``; the result is in native byte order. It
    shares the message's buffer where nothing needs converting (rclpy's ``uint8[]`` is a writable
    ``array.array``, which the result keeps alive): a copy of a 640x480 rgb8 frame was 0.1 ms of
    every tracked frame. Row padding, a swapped byte order or a read-only buffer (``bytes``)
    still get one copy.
    """
    encoding = ENCODINGS.get(msg.encoding)
    if encoding is None:
        raise ImageError(
            f"unsupported image encoding '{msg.encoding}'; supported: {', '.join(ENCODINGS)}. "
            "Convert on the camera side (e.g. to rgb8 or bgr8).",
            "encoding",
        )
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    _check_size(width, height, max_pixels, f"image ({msg.encoding})")
    if encoding.channels == 2 and width % 2:
        raise ImageError(
            f"{msg.encoding} packs pixel pairs, so its width must be even, got {width}.", "layout"
        )
    row_bytes = int(width * encoding.bytes_per_pixel)
    if step < row_bytes:
        raise ImageError(
            f"step {step} is smaller than one row of {width} {msg.encoding} pixels ({row_bytes} bytes).",
            "layout",
        )
    data = msg.data
    size = len(data)
    if size != step * height:
        raise ImageError(
            f"image data has {size} bytes but step x height = {step} x {height} = {step * height}; "
            "the message is truncated or its step / size fields are wrong.",
            "layout",
        )
    buffer = np.frombuffer(data, np.uint8)  # bytes, bytearray or array.array('B'): no copy
    rows = buffer.reshape(height, step)[:, :row_bytes]
    dtype = encoding.dtype
    if dtype.itemsize > 1:
        dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    if step != row_bytes or not buffer.flags.writeable:
        rows = rows.copy()
    pixels = rows.view(dtype).reshape(height, width, encoding.channels)
    return pixels.astype(encoding.dtype, copy=False)  # a copy only where the byte order differs


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """16-bit pixels to 8 bits.

    Many 16-bit cameras fill only 10 or 12 bits; dividing by 257 would leave their frames
    nearly black. Scale by the smallest power of two above the frame's maximum instead, which
    stays constant for a given sensor (no flicker from frame to frame).
    """
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype != np.uint16:
        raise ImageError(
            f"{pixels.dtype} samples are not supported; send 8- or 16-bit images.", "sample format"
        )
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


def image_to_rgb8(msg: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode any supported sensor_msgs/Image to (H, W, 3) uint8 RGB, or raise ImageError."""
    return to_rgb8(image_to_array(msg, max_pixels), msg.encoding)


#: Compressed formats we decode (PIL's names); each one's header gives the size before decoding.
COMPRESSED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "PPM")
#: PIL modes whose samples are not 8 or 16-bit integers (float TIFF / PFM, 32-bit integers).
_UNSUPPORTED_MODES = {"F": "32-bit float", "I": "32-bit integer"}


def compressed_size(data, fmt: str = "") -> tuple[int, int]:
    """(width, height) declared by the header of compressed image bytes; no pixel is decoded.

    PIL reads headers lazily. Its own pixel cap (about 179 million) raises before we could
    read the size: that is a refusal too, never a reason to let OpenCV decode the pixels.
    """
    from PIL import Image as PILImage

    what = f"compressed image ({fmt or 'no format'}, {len(data)} bytes)"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(memoryview(data))) as img:
                size, kind, mode = img.size, img.format, img.mode
    except PILImage.DecompressionBombError as exc:
        raise ImageError(f"{what} declares too many pixels, refused before decoding: {exc}", "size") from None
    except Exception:  # noqa: BLE001 - PIL raises many types for an unreadable header
        raise ImageError(
            f"{what} could not be decoded: no {', '.join(COMPRESSED_FORMATS)} header found; the data is "
            "corrupt or in an unsupported format (send jpeg or png).",
            "format",
        ) from None
    if kind not in COMPRESSED_FORMATS:
        raise ImageError(
            f"{what} is {kind}; supported: {', '.join(COMPRESSED_FORMATS)} (send jpeg or png).", "format"
        )
    if mode in _UNSUPPORTED_MODES:
        raise ImageError(
            f"{what} is a {kind} of {_UNSUPPORTED_MODES[mode]} samples; only 8- and 16-bit integer "
            "images are supported (send jpeg or png).",
            "sample format",
        )
    return size


def compressed_to_rgb8(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a CompressedImage (JPEG, PNG, ...) to (H, W, 3) uint8 RGB, or raise ImageError.

    ``format`` is free text in practice ("jpeg", "png", "rgb8; jpeg compressed bgr8"); the
    bytes say what they are, so only depth-compressed images (a different layout) are refused
    by name. The size in the header is checked against ``max_pixels`` before decoding.
    """
    fmt = str(msg.format or "").strip()
    if "compresseddepth" in fmt.lower().replace(" ", ""):
        raise ImageError(
            f"CompressedImage format '{fmt[:80]}' (compressedDepth) is not supported; send jpeg or png.",
            "format",
        )
    data = msg.data
    if not len(data):
        raise ImageError(f"CompressedImage (format '{fmt[:80]}') has no data.", "format")
    width, height = compressed_size(data, fmt[:80])
    _check_size(width, height, max_pixels, f"compressed image ({fmt[:80] or 'no format'})")
    try:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageError(
            f"CompressedImage (format '{fmt[:80]}') could not be decoded: {exc}", "corrupt"
        ) from None
    if decoded is None:
        raise ImageError(
            f"CompressedImage (format '{fmt[:80]}', {len(data)} bytes) could not be decoded: corrupt or not "
            "JPEG/PNG data.",
            "corrupt",
        )
    if decoded.shape[1] * decoded.shape[0] > max_pixels:  # a decoder that disagrees with the header
        _check_size(decoded.shape[1], decoded.shape[0], max_pixels, f"compressed image ({fmt[:80]})")
    decoded = _to_uint8(decoded)
    if decoded.ndim == 2:
        return cv2.cvtColor(decoded, cv2.COLOR_GRAY2RGB)
    if decoded.shape[2] == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def mask_from_image(msg, shape: tuple[int, int], what: str = "mask") -> np.ndarray:
    """A region given as an image message (non-zero pixels = region) as (H, W) bool.

    Must match ``shape`` (the frame it refers to); any single-channel encoding works, and for
    colour encodings any non-zero channel counts.
    """
    try:
        pixels = image_to_array(msg, max_pixels=1 << 31)
    except ImageError as exc:
        raise ImageError(f"{what}: {exc}", exc.kind) from exc
    if pixels.shape[:2] != tuple(shape):
        raise ImageError(
            f"{what} is {pixels.shape[1]}x{pixels.shape[0]} but the image it refers to is "
            f"{shape[1]}x{shape[0]}; they must be the same size.",
            "size",
        )
    mask = pixels.any(axis=2)
    if not mask.any():
        raise ImageError(f"{what} has no non-zero pixel: it marks no region.", "region")
    return mask
