"""``sa2va_demo_camera``: a camera without a camera, for demos, tests and benchmarks.

Publishes a moving synthetic scene - a red disc, a green square and a blue triangle gliding
over a soft textured background - at the rate and size given by parameters, stamped with the
current time, so the node can be tried end to end on any machine:

    sa2va_demo_camera --ros-args -p width:=640 -p height:=480 -p rate:=15.0

Parameters: width, height, rate (Hz), encoding (rgb8, bgr8, rgba8, bgra8, mono8, mono16,
yuv422, yuv422_yuy2), frame_id, topic (default image), compressed (also publish JPEG on
<topic>/compressed), reliability (best_effort = the sensor-data profile, or reliable),
frames (stop after this many; 0 = run forever), still (true: the scene does not move),
depth (also publish a registered depth image on depth_topic, default
aligned_depth_to_color/image_raw, and the camera's CameraInfo on camera_info; see DISTANCES),
depth_encoding (16UC1 millimetres or 32FC1 metres).
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


#: Distance (metres, along the optical axis) of each shape, a flat cut-out facing the camera, and of
#: the wall behind them. Later shapes are drawn over earlier ones, so they are nearer.
DISTANCES = {"disc": 1.6, "square": 1.2, "triangle": 0.9}
WALL = 3.0


def intrinsics(width: int, height: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of the demo camera: a 525 px focal length at 640 px wide, no distortion."""
    f = 525.0 * width / 640.0
    return f, f, (width - 1) / 2.0, (height - 1) / 2.0


def render(frame_index: int, width: int, height: int, base: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the scene at ``frame_index`` (the same index gives the same image)."""
    img = (base if base is not None else background(width, height)).copy()
    _draw(img, frame_index, width, height, ((220, 30, 30), (30, 190, 60), (40, 70, 220)), cv2.LINE_AA)
    return img


def render_labels(frame_index: int, width: int, height: int) -> np.ndarray:
    """(H, W) uint8: 1 disc, 2 square, 3 triangle, 0 wall (hard edges: what the depth camera sees)."""
    labels = np.zeros((height, width), np.uint8)
    _draw(labels, frame_index, width, height, (1, 2, 3), cv2.LINE_8)
    return labels


def render_depth(labels: np.ndarray) -> np.ndarray:
    """(H, W) float32 metres registered to the colour image: each shape at its distance."""
    table = np.array([WALL, DISTANCES["disc"], DISTANCES["square"], DISTANCES["triangle"]], np.float32)
    return table[labels]


def _draw(img: np.ndarray, frame_index: int, width: int, height: int, values, line: int) -> None:
    """The three shapes at ``frame_index``, drawn with ``values`` (disc, square, triangle)."""
    t = frame_index / 15.0
    s = min(width, height)
    # A red disc on a horizontal Lissajous path.
    cx = int(width * (0.5 + 0.3 * math.sin(0.7 * t)))
    cy = int(height * (0.35 + 0.1 * math.sin(1.3 * t)))
    cv2.circle(img, (cx, cy), max(3, int(0.12 * s)), values[0], cv2.FILLED, line)
    # A green square sliding along the bottom.
    sx = int(width * (0.5 + 0.35 * math.cos(0.5 * t)))
    sy = int(height * 0.72)
    half = max(3, int(0.09 * s))
    cv2.rectangle(img, (sx - half, sy - half), (sx + half, sy + half), values[1], cv2.FILLED)
    # A blue triangle turning in the top-left quarter.
    tx, ty = int(width * 0.22), int(height * 0.3)
    r = max(4, int(0.1 * s))
    pts = np.array(
        [(tx + r * math.cos(0.9 * t + k * 2.094), ty + r * math.sin(0.9 * t + k * 2.094)) for k in range(3)],
        dtype=np.int32,
    )
    cv2.fillConvexPoly(img, pts, values[2], line)


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
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

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
    still = bool(node.declare_parameter("still", False).value)
    depth = bool(node.declare_parameter("depth", True).value)
    depth_topic = str(node.declare_parameter("depth_topic", "aligned_depth_to_color/image_raw").value)
    depth_encoding = str(node.declare_parameter("depth_encoding", "16UC1").value)
    if (
        encoding not in ENCODABLE
        or encoding not in ENCODINGS
        or width < 2
        or height < 2
        or rate <= 0
        or depth_encoding not in ("16UC1", "32FC1")
    ):
        node.get_logger().error(
            f"bad parameters: encoding must be one of {ENCODABLE}, depth_encoding 16UC1 or 32FC1, "
            "width/height >= 2, rate > 0"
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
    pub_d = node.create_publisher(Image, depth_topic, qos) if depth else None
    pub_i = node.create_publisher(CameraInfo, "camera_info", qos) if depth else None
    fx, fy, cx, cy = intrinsics(width, height)
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob", d=[0.0] * 5)
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    base = background(width, height)
    count = [0]

    def tick() -> None:
        index = 0 if still else count[0]
        rgb = render(index, width, height, base)
        msg = array_to_image(encode(rgb, encoding), encoding=encoding)
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = frame_id
        if pub_d is not None:  # depth first: a node pairing by stamp finds it when the colour frame comes
            metres = render_depth(render_labels(index, width, height))
            pixels = np.rint(metres * 1000).astype(np.uint16) if depth_encoding == "16UC1" else metres
            pub_d.publish(array_to_image(pixels, msg.header, depth_encoding))
            info.header = msg.header
            pub_i.publish(info)
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
