"""``sa2va_demo_camera``: a camera without a camera, for demos, tests and benchmarks.

Publishes a moving synthetic scene - a red disc, a green square and a blue triangle gliding
over a soft textured background - at the rate and size given by parameters, stamped with the
current time, so the node can be tried end to end on any machine:

    sa2va_demo_camera --ros-args -p width:=640 -p height:=480 -p rate:=15.0

Parameters: width, height, rate (Hz), encoding (rgb8, bgr8, rgba8, bgra8, mono8, mono16,
yuv422, yuv422_yuy2), frame_id, topic (default image), compressed (also publish JPEG on
<topic>/compressed), reliability (best_effort = the sensor-data profile, or reliable),
frames (stop after this many; 0 = run forever).
"""

from __future__ import annotations

import math
import sys

import cv2
import numpy as np

from .node.image_codec import ENCODINGS, array_to_image, byte_sequence

ENCODABLE = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16", "yuv422", "yuv422_yuy2")


def background(width: int, height: int) -> np.ndarray:
    """A soft, deterministic texture (smooth gradients and ripples: it compresses well)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    u, v = x / max(width, 1), y / max(height, 1)
    r = 90 + 50 * np.sin(6.0 * u + 2.0 * v)
    g = 110 + 40 * np.sin(5.0 * v - 3.0 * u + 1.0)
    b = 130 + 45 * np.cos(4.0 * u * v * 6.0)
    return np.clip(np.stack([r, g, b], axis=2), 0, 255).astype(np.uint8)


def render(frame_index: int, width: int, height: int, base: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the scene at ``frame_index`` (the same index gives the same image)."""
    img = (base if base is not None else background(width, height)).copy()
    t = frame_index / 15.0
    s = min(width, height)
    # A red disc on a horizontal Lissajous path.
    cx = int(width * (0.5 + 0.3 * math.sin(0.7 * t)))
    cy = int(height * (0.35 + 0.1 * math.sin(1.3 * t)))
    cv2.circle(img, (cx, cy), max(3, int(0.12 * s)), (220, 30, 30), cv2.FILLED, cv2.LINE_AA)
    # A green square sliding along the bottom.
    sx = int(width * (0.5 + 0.35 * math.cos(0.5 * t)))
    sy = int(height * 0.72)
    half = max(3, int(0.09 * s))
    cv2.rectangle(img, (sx - half, sy - half), (sx + half, sy + half), (30, 190, 60), cv2.FILLED)
    # A blue triangle turning in the top-left quarter.
    tx, ty = int(width * 0.22), int(height * 0.3)
    r = max(4, int(0.1 * s))
    pts = np.array(
        [(tx + r * math.cos(0.9 * t + k * 2.094), ty + r * math.sin(0.9 * t + k * 2.094)) for k in range(3)],
        dtype=np.int32,
    )
    cv2.fillConvexPoly(img, pts, (40, 70, 220), cv2.LINE_AA)
    return img


def encode(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """RGB pixels in ``encoding``'s layout (the inverse of the node's decoder)."""
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if encoding == "rgba8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    if encoding == "bgra8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if encoding == "mono8":
        return gray
    if encoding == "mono16":
        return gray.astype(np.uint16) * 257
    if encoding in ("yuv422", "yuv422_yuy2"):
        return rgb_to_yuv422(rgb, uyvy=encoding == "yuv422")
    raise ValueError(f"cannot encode {encoding}; choose one of {', '.join(ENCODABLE)}")


def rgb_to_yuv422(rgb: np.ndarray, uyvy: bool) -> np.ndarray:
    """Packed 4:2:2 YUV (BT.601 limited range, as opencv decodes it): (H, W, 2) uint8."""
    r, g, b = (rgb[:, :, c].astype(np.float32) / 255 for c in range(3))
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    u2 = (u[:, 0::2] + u[:, 1::2]) / 2
    v2 = (v[:, 0::2] + v[:, 1::2]) / 2
    h, w = y.shape
    out = np.empty((h, w, 2), np.float32)
    out[:, :, 0 if not uyvy else 1] = y
    chroma = out[:, :, 1 if not uyvy else 0]
    chroma[:, 0::2] = u2
    chroma[:, 1::2] = v2
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image

    rclpy.init(args=argv if argv is not None else sys.argv)
    node = Node("sa2va_demo_camera")
    width = int(node.declare_parameter("width", 640).value)
    height = int(node.declare_parameter("height", 480).value)
    rate = float(node.declare_parameter("rate", 15.0).value)
    encoding = str(node.declare_parameter("encoding", "rgb8").value)
    frame_id = str(node.declare_parameter("frame_id", "camera").value)
    topic = str(node.declare_parameter("topic", "image").value)
    compressed = bool(node.declare_parameter("compressed", False).value)
    reliability = str(node.declare_parameter("reliability", "best_effort").value)
    frames = int(node.declare_parameter("frames", 0).value)
    if encoding not in ENCODABLE or encoding not in ENCODINGS or width < 2 or height < 2 or rate <= 0:
        node.get_logger().error(
            f"bad parameters: encoding must be one of {ENCODABLE}, width/height >= 2, rate > 0"
        )
        node.destroy_node()
        rclpy.try_shutdown()
        return 2
    if encoding.startswith("yuv422") and width % 2:
        width += 1
    qos = QoSProfile(
        depth=qos_profile_sensor_data.depth,
        reliability=ReliabilityPolicy.RELIABLE
        if reliability == "reliable"
        else ReliabilityPolicy.BEST_EFFORT,
    )
    pub = node.create_publisher(Image, topic, qos)
    pub_c = node.create_publisher(CompressedImage, topic + "/compressed", qos) if compressed else None
    base = background(width, height)
    count = [0]

    def tick() -> None:
        rgb = render(count[0], width, height, base)
        msg = array_to_image(encode(rgb, encoding), encoding=encoding)
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = frame_id
        pub.publish(msg)
        if pub_c is not None:
            ok, jpeg = cv2.imencode(
                ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
            )
            if ok:
                pub_c.publish(CompressedImage(header=msg.header, format="jpeg", data=byte_sequence(jpeg)))
        count[0] += 1
        if frames and count[0] >= frames:
            raise SystemExit(0)

    node.create_timer(1.0 / rate, tick)
    node.get_logger().info(f"publishing {width}x{height} {encoding} at {rate:g} Hz on {pub.topic_name}")
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException, SystemExit):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
