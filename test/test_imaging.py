"""The shared ROS-free decoder against hostile and unsupported images (no rclpy needed).

Bombs are built here byte by byte (a PNG whose header declares 14000x14000 pixels, a JPEG whose
header says 65500x65500), so each test knows exactly what the decoder was given. Peak memory
is measured with the kernel's high-water mark, reset before each decode (/proc/self/clear_refs).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from sa2va_ros.eval.bags import compressed_msg_to_rgb, image_msg_to_rgb
from sa2va_ros.imaging import ImageError, compressed_to_rgb8, image_to_rgb8
from sa2va_ros.model.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from hostile_images import jpeg_declaring, png_bomb  # noqa: E402

MB = 1 << 20


def compressed(data: bytes, fmt: str = "png") -> SimpleNamespace:
    return SimpleNamespace(format=fmt, data=data)


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_growth(fn) -> int:
    """Bytes the resident set grew to at its peak while ``fn`` ran (ImageError expected)."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status("VmRSS")
    with pytest.raises(ImageError) as info:
        fn()
    return _status("VmHWM") - before, info.value


def test_png_bomb_is_refused_from_its_header_without_decoding():
    data = png_bomb()
    assert len(data) < 400_000
    growth, error = peak_growth(lambda: compressed_to_rgb8(compressed(data), 16777216))
    assert "refused before decoding" in str(error) and error.kind == "size"
    assert growth < 20 * MB, f"RSS grew {growth / MB:.0f} MB refusing the bomb"
    # Below Pillow's own cap, our check against max_image_pixels refuses it from the header.
    growth, error = peak_growth(lambda: compressed_to_rgb8(compressed(png_bomb(12000, 12000)), 16777216))
    assert "12000x12000" in str(error) and "max_image_pixels=16777216" in str(error)
    assert growth < 20 * MB, f"RSS grew {growth / MB:.0f} MB refusing the bomb"


def test_bombs_above_pils_own_cap_are_refused_not_handed_to_opencv():
    # 65500 x 65500 is above Pillow's decompression-bomb cap: PIL raises while reading the
    # header, which must be a refusal (not a fallback to a full decode by OpenCV).
    growth, error = peak_growth(
        lambda: compressed_to_rgb8(compressed(jpeg_declaring(65500, 65500), "jpeg"), 1 << 31)
    )
    assert "too many pixels" in str(error) and error.kind == "size"
    assert growth < 20 * MB
    growth, error = peak_growth(lambda: compressed_to_rgb8(compressed(jpeg_declaring(10000, 10000), "jpeg")))
    assert "10000x10000" in str(error) and growth < 20 * MB


def float_tiff() -> bytes:
    from PIL import Image as PILImage

    out = io.BytesIO()
    PILImage.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8), mode="F").save(out, "TIFF")
    return out.getvalue()


def pfm() -> bytes:
    return b"Pf\n8 8\n-1.0\n" + np.ones((8, 8), "<f4").tobytes()


def hdr() -> bytes:
    ok, buf = cv2.imencode(".hdr", np.ones((8, 8, 3), np.float32))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize(
    "make, words",
    [
        (float_tiff, "32-bit float samples"),
        (pfm, "32-bit float samples"),
        (hdr, "unsupported format"),
        (lambda: b"not an image at all", "unsupported format"),
        (lambda: png_bomb(64, 64)[:60], "could not be decoded"),
    ],
    ids=["float-tiff", "pfm", "hdr", "garbage", "truncated-png"],
)
def test_unsupported_sample_formats_are_refused_with_a_message(make, words):
    with pytest.raises(ImageError) as info:
        compressed_to_rgb8(compressed(make()))
    assert words in str(info.value)


def test_sixteen_bit_png_decodes_like_a_raw_mono16_frame():
    values = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 60).astype(np.uint16)  # 12-bit data
    ok, buf = cv2.imencode(".png", values)
    assert ok
    from_png = compressed_to_rgb8(compressed(buf.tobytes()))
    raw = SimpleNamespace(
        encoding="mono16", width=8, height=8, step=16, is_bigendian=1, data=values.astype(">u2").tobytes()
    )
    assert np.array_equal(from_png, image_to_rgb8(raw))
    assert from_png.max() > 200, "12-bit data is scaled to the full 8-bit range, not >> 8"


def test_bag_replay_uses_the_same_decoder():
    """Bag frames (rosbags' deserialised messages: numpy data) decode exactly like live frames."""
    values = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 80).astype(np.uint16)
    big = SimpleNamespace(
        encoding="mono16",
        width=8,
        height=6,
        step=16,
        is_bigendian=1,
        data=np.frombuffer(values.astype(">u2").tobytes(), np.uint8),
    )
    little = SimpleNamespace(**{**vars(big), "is_bigendian": 0})
    little.data = np.frombuffer(values.astype("<u2").tobytes(), np.uint8)
    assert np.array_equal(image_msg_to_rgb(big), image_to_rgb8(big))
    assert np.array_equal(image_msg_to_rgb(big), image_msg_to_rgb(little)), "byte order is honoured"
    with pytest.raises(InputError, match="refused before decoding"):
        compressed_msg_to_rgb(compressed(png_bomb()))
    with pytest.raises(InputError, match="32-bit float"):
        compressed_msg_to_rgb(compressed(pfm()))
