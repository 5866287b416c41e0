"""Reading camera frames out of ROS 2 bags (mcap or sqlite3) without ROS, for offline replay.

``rosbags`` (pure Python) parses the bag and the CDR messages; the images are decoded by
:mod:`sa2va_ros.imaging`, the ROS-free decoder the live node uses too, so a replayed frame has
exactly the pixels (byte order, 16-bit scaling, size limits) the node would have tracked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..imaging import DEFAULT_MAX_PIXELS, ImageError, compressed_to_rgb8, image_to_rgb8
from ..model.errors import InputError

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"


@dataclass(frozen=True)
class BagFrame:
    """One image of the replayed topic."""

    #: Position in the topic, from 0.
    index: int
    #: ``header.stamp`` in nanoseconds, or the bag's receive time when the stamp is zero.
    stamp_ns: int
    #: (H, W, 3) uint8 RGB.
    image: np.ndarray


def image_msg_to_rgb(msg: object, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A deserialised ``sensor_msgs/msg/Image`` as (H, W, 3) uint8 RGB, decoded like the live node does."""
    try:
        return image_to_rgb8(msg, max_pixels)
    except ImageError as exc:
        raise InputError(f"a bag image: {exc}") from None


def compressed_msg_to_rgb(msg: object, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A deserialised ``sensor_msgs/msg/CompressedImage`` as RGB, decoded like the live node does."""
    try:
        return compressed_to_rgb8(msg, max_pixels)
    except ImageError as exc:
        raise InputError(f"a bag image: {exc}") from None


def _reader(bag: Path):
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    bag = Path(bag)
    if not bag.exists():
        raise InputError(f"bag {bag} does not exist.")
    # Bags recorded on Humble carry no message definitions: fall back to Humble's, which
    # are the same as later distributions' for sensor_msgs images.
    return AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_HUMBLE))


def image_topics(bag: Path) -> dict[str, str]:
    """Image topics of a bag: {topic: message type}."""
    with _reader(bag) as reader:
        return {c.topic: c.msgtype for c in reader.connections if c.msgtype in (IMAGE_TYPE, COMPRESSED_TYPE)}


def iter_bag_images(bag: Path, topic: str, max_frames: int | None = None) -> Iterator[BagFrame]:
    """Yield the frames of ``topic`` in recording order as RGB arrays."""
    with _reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        if not conns:
            found = {
                c.topic: c.msgtype for c in reader.connections if c.msgtype in (IMAGE_TYPE, COMPRESSED_TYPE)
            }
            listing = ", ".join(f"{t} ({m.rsplit('/', 1)[-1]})" for t, m in sorted(found.items())) or "none"
            raise InputError(f"topic '{topic}' is not in {bag}; its image topics: {listing}.")
        msgtype = conns[0].msgtype
        if msgtype not in (IMAGE_TYPE, COMPRESSED_TYPE):
            raise InputError(f"topic '{topic}' carries {msgtype}, not {IMAGE_TYPE} or {COMPRESSED_TYPE}.")
        convert = image_msg_to_rgb if msgtype == IMAGE_TYPE else compressed_msg_to_rgb
        for index, (conn, log_ns, raw) in enumerate(reader.messages(connections=conns)):
            if max_frames is not None and index >= max_frames:
                return
            msg = reader.deserialize(raw, conn.msgtype)
            stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
            yield BagFrame(index=index, stamp_ns=stamp or int(log_ns), image=convert(msg))


def match_gt_names(gt_names: list[str], frames: list[tuple[int, int]]) -> dict[str, int]:
    """Map ground-truth PNG stems to frame indices: stems are frame indices or stamps (ns).

    ``frames`` is the list of (index, stamp_ns) replayed. Stamps are tried first (a stamp
    never looks like a small index); names matching neither raise an error naming them.
    """
    try:
        numbers = {name: int(name) for name in gt_names}
    except ValueError as exc:
        raise InputError(
            f"ground-truth PNGs must be named by frame index (000012.png) or stamp in ns; got {exc}."
        ) from None
    by_stamp = {stamp: idx for idx, stamp in frames}
    by_index = {idx for idx, _ in frames}
    if all(v in by_stamp for v in numbers.values()):
        return {n: by_stamp[v] for n, v in numbers.items()}
    if all(v in by_index for v in numbers.values()):
        return dict(numbers)
    bad = [n for n, v in numbers.items() if v not in by_stamp and v not in by_index][:5]
    if not bad:
        raise InputError("ground-truth PNGs mix frame indices and stamps: name them all one way.")
    raise InputError(
        f"ground-truth PNGs {', '.join(bad)} match neither a frame index (0..{len(frames) - 1}) nor a "
        "frame stamp of the replayed topic."
    )
