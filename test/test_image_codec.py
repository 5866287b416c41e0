"""sensor_msgs/Image and CompressedImage decoding: every encoding, padding, byte order, and a clear
error (never a crash) for every malformed message."""

from __future__ import annotations

import array
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs comes from the venv made by scripts/setup.sh")
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from sa2va_ros.demo_camera import encode, render  # noqa: E402
from sa2va_ros.node.image_codec import (  # noqa: E402
    ImageError,
    array_to_image,
    compressed_to_rgb8,
    image_to_array,
    image_to_rgb8,
    mask_from_image,
    message_to_rgb8,
)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)


def raw(pixels: np.ndarray, encoding: str, step: int | None = None, pad: int = 0, big_endian: bool = False):
    """A hand-made Image: rows padded with ``pad`` garbage bytes, 16-bit values in the given order."""
    h, w = pixels.shape[:2]
    if pixels.dtype == np.uint16:
        pixels = pixels.astype(">u2" if big_endian else "<u2")
    rows = pixels.reshape(h, -1).view(np.uint8)
    if pad:
        rows = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=h, width=w, encoding=encoding, is_bigendian=int(big_endian))
    msg.step = step if step is not None else rows.shape[1]
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "8UC3"])
def test_colour_encodings_decode_exactly(encoding):
    pixels = encode(RGB, "bgr8" if encoding == "8UC3" else encoding)
    assert np.array_equal(image_to_rgb8(raw(pixels, encoding)), RGB)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8_becomes_grey_rgb(encoding):
    grey = RGB[:, :, 0]
    out = image_to_rgb8(raw(grey, encoding))
    assert out.shape == (6, 8, 3) and all(np.array_equal(out[:, :, c], grey) for c in range(3))


def test_row_padding_is_skipped():
    msg = raw(RGB, "rgb8", pad=5)
    assert msg.step == 8 * 3 + 5
    assert np.array_equal(image_to_rgb8(msg), RGB)


def test_a_frame_is_decoded_in_place_where_nothing_converts():
    """rgb8 without row padding is a view of the message's array.array (no 900 KB copy per frame)."""
    msg = array_to_image(RGB, encoding="rgb8")
    out = image_to_rgb8(msg)
    assert np.array_equal(out, RGB) and np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    padded = raw(RGB, "rgb8", pad=5)
    assert not np.shares_memory(image_to_rgb8(padded), np.frombuffer(padded.data, np.uint8))
    # A read-only buffer (bytes, e.g. from a bag reader) is copied: the result is always writable.
    frozen = SimpleNamespace(height=6, width=8, encoding="rgb8", step=24, is_bigendian=0, data=RGB.tobytes())
    out = image_to_rgb8(frozen)
    assert np.array_equal(out, RGB) and out.flags.writeable


@pytest.mark.parametrize("big_endian", [False, True])
def test_mono16_byte_order_and_padding(big_endian):
    values = RNG.integers(0, 65536, (5, 7), dtype=np.uint16)
    msg = raw(values, "mono16", pad=2, big_endian=big_endian)
    assert np.array_equal(image_to_array(msg)[:, :, 0], values)
    # Full 16-bit range: the top 8 bits.
    assert np.array_equal(image_to_rgb8(msg)[:, :, 0], (values >> 8).astype(np.uint8))


def test_mono16_with_12_bit_values_is_not_black():
    values = np.array([[0, 1024], [2048, 4095]], dtype=np.uint16)
    out = image_to_rgb8(raw(values, "16UC1"))[:, :, 0]
    assert out.tolist() == [[0, 64], [128, 255]]


def test_yuv422_uyvy_and_yuyv_pure_colours():
    # BT.601 limited range: red = Y 81, U 90, V 240; white = Y 235, U = V = 128.
    uyvy = np.array([[[90, 81], [240, 81], [128, 235], [128, 235]]], dtype=np.uint8).repeat(2, axis=0)
    yuyv = np.array([[[81, 90], [81, 240], [235, 128], [235, 128]]], dtype=np.uint8).repeat(2, axis=0)
    for msg in (raw(uyvy, "yuv422"), raw(yuyv, "yuv422_yuy2")):
        out = image_to_rgb8(msg).astype(int)
        assert np.abs(out[:, :2] - [255, 0, 0]).max() <= 3
        assert np.abs(out[:, 2:] - [255, 255, 255]).max() <= 3


def test_yuv422_round_trip_of_the_demo_scene():
    scene = render(3, 64, 48)
    for encoding in ("yuv422", "yuv422_yuy2"):
        out = image_to_rgb8(array_to_image(encode(scene, encoding), encoding=encoding))
        assert np.abs(out.astype(int) - scene).mean() < 3  # chroma is shared by pixel pairs


@pytest.mark.parametrize(
    "mutate, words",
    [
        (lambda m: setattr(m, "encoding", "32FC1"), ["unsupported image encoding '32FC1'", "rgb8"]),
        (lambda m: setattr(m, "step", 10), ["step 10 is smaller than one row", "24 bytes"]),
        (lambda m: setattr(m, "data", bytes(m.data)[:-1]), ["143 bytes", "step x height"]),
        (lambda m: setattr(m, "height", 7), ["144 bytes", "7 = 168"]),
        (lambda m: (setattr(m, "width", 0), setattr(m, "data", b"")), ["0x6"]),
        (lambda m: setattr(m, "encoding", ""), ["unsupported image encoding ''"]),
    ],
)
def test_malformed_images_raise_clear_errors(mutate, words):
    msg = raw(RGB, "rgb8")
    mutate(msg)
    with pytest.raises(ImageError) as info:
        image_to_rgb8(msg)
    for word in words:
        assert word in str(info.value)


def test_huge_and_tiny_images_are_refused():
    with pytest.raises(ImageError, match="above max_image_pixels=40"):
        image_to_rgb8(raw(RGB, "rgb8"), max_pixels=40)
    with pytest.raises(ImageError, match="at least 2x2"):
        image_to_rgb8(raw(RGB[:1], "rgb8"))
    with pytest.raises(ImageError, match="width must be even"):
        image_to_rgb8(raw(np.zeros((2, 3, 2), np.uint8), "yuv422"))


def test_compressed_jpeg_and_png():
    scene = render(1, 64, 48)
    ok, png = cv2.imencode(".png", cv2.cvtColor(scene, cv2.COLOR_RGB2BGR))
    assert ok
    assert np.array_equal(compressed_to_rgb8(CompressedImage(format="png", data=png.tobytes())), scene)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(scene, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    msg = CompressedImage(format="rgb8; jpeg compressed bgr8", data=jpeg.tobytes())
    out = message_to_rgb8(msg)
    assert out.shape == scene.shape and np.abs(out.astype(int) - scene).mean() < 4
    grey16 = scene[:, :, 1].astype(np.uint16) * 257
    ok, png16 = cv2.imencode(".png", grey16)
    out16 = compressed_to_rgb8(CompressedImage(format="png", data=png16.tobytes()))
    assert np.array_equal(out16[:, :, 0], scene[:, :, 1])


@pytest.mark.parametrize(
    "data, fmt, words",
    [
        (b"\xff\xd8\xff\xe0 this is not a jpeg", "jpeg", ["could not be decoded", "corrupt"]),
        (b"", "jpeg", ["no data"]),
        (b"\x89PNG\r\n\x1a\n", "16UC1; compressedDepth", ["compressedDepth", "not supported"]),
    ],
)
def test_corrupt_compressed_images_raise_clear_errors(data, fmt, words):
    with pytest.raises(ImageError) as info:
        compressed_to_rgb8(CompressedImage(format=fmt, data=data))
    for word in words:
        assert word in str(info.value)


def test_truncated_jpeg_and_huge_compressed_image():
    scene = render(2, 64, 48)
    ok, jpeg = cv2.imencode(".jpg", scene)
    truncated = jpeg.tobytes()[: len(jpeg) // 3]
    try:
        out = compressed_to_rgb8(CompressedImage(format="jpeg", data=truncated))
    except ImageError as exc:
        assert "could not be decoded" in str(exc)
    else:  # libjpeg may fill the missing part with grey; then it is still a valid image
        assert out.shape == scene.shape
    with pytest.raises(ImageError, match="64x48 = 3072 pixels, above max_image_pixels=1000"):
        compressed_to_rgb8(CompressedImage(format="jpeg", data=jpeg.tobytes()), max_pixels=1000)


def test_mask_from_image():
    mask = np.zeros((6, 8), np.uint8)
    mask[2:4, 3:6] = 255
    out = mask_from_image(raw(mask, "mono8"), (6, 8))
    assert out.dtype == bool and out.sum() == 6 and out[2, 3]
    with pytest.raises(ImageError, match="is 8x6 but the image it refers to is 10x6"):
        mask_from_image(raw(mask, "mono8"), (6, 10))
    with pytest.raises(ImageError, match="no non-zero pixel"):
        mask_from_image(raw(np.zeros((6, 8), np.uint8), "mono8"), (6, 8))


def test_array_to_image_round_trips():
    labels = RNG.integers(0, 300, (5, 9)).astype(np.uint16)
    msg = array_to_image(labels)
    assert msg.encoding == "mono16" and msg.step == 18
    assert np.array_equal(image_to_array(msg)[:, :, 0], labels)
    rgb = array_to_image(RGB)
    assert rgb.encoding == "rgb8" and np.array_equal(image_to_rgb8(rgb), RGB)
    with pytest.raises(ImageError):
        array_to_image(np.zeros((2, 2), np.float32))


def test_pixels_are_handed_over_as_a_byte_array():
    """Humble's setters check a bytes value element by element in Python (tens of ms per frame);
    an array.array('B') passes every distro's setter untouched, even with field checks on."""
    msg = array_to_image(np.zeros((480, 640, 3), np.uint8))
    assert isinstance(msg.data, array.array) and msg.data.typecode == "B" and len(msg.data) == 921600
    # Newer rosidl checks only when asked; Humble's always does (under __debug__).
    checked = Image(check_fields=True) if "_check_fields" in Image.__slots__ else Image()
    checked.data = msg.data
    assert checked.data is msg.data
