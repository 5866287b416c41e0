"""Deterministic sample values for every generated interface, shared by both sides of
test_interfaces_ros.py (the test process and the separate peer process)."""

from __future__ import annotations

from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header

from sa2va_msgs.msg import Command, ObjectArray, Reply, TrackedObject


def header(i: int) -> Header:
    h = Header(frame_id=f"camera_{i}_optical_frame")
    h.stamp.sec, h.stamp.nanosec = 1700000000 + i, 123456 + i
    return h


def image(i: int, encoding: str = "mono8") -> Image:
    img = Image(header=header(i), height=2, width=3, encoding=encoding, step=3, is_bigendian=0)
    img.data = bytes([0, 1, 2, 2, 1, i % 256])
    return img


def png(i: int) -> CompressedImage:
    """A CompressedImage sample (the bytes need not be a real PNG to test the transport)."""
    return CompressedImage(
        header=header(i), format="mono8; png compressed mono8", data=bytes([137, 80, i % 256])
    )


def tracked_object(i: int) -> TrackedObject:
    return TrackedObject(
        id=7 + i,
        prompt=f"the red mug number {i}",
        label="red mug",
        score=0.25 + i / 64,  # exactly representable in float32
        state=TrackedObject.STATE_LOST,
        mask_value=i + 1,
        bbox=RegionOfInterest(x_offset=10 + i, y_offset=20, width=30, height=40, do_rectify=False),
        area=1200 + i,
        frames_since_seen=i,
        mask=png(i),
    )


def object_array(i: int) -> ObjectArray:
    return ObjectArray(
        header=header(i),
        camera="front",
        step_time=0.25 * i,
        objects=[tracked_object(i), tracked_object(i + 1)],
    )


def command(i: int) -> Command:
    return Command(
        action=Command.DESCRIBE, request_id=f"req-{i}", camera="front", text="a mug", object_ids=[1, i]
    )


def reply(i: int) -> Reply:
    return Reply(
        header=header(i),
        request_id=f"req-{i}",
        camera="front",
        action=Command.ASK,
        success=True,
        message="ok",
        request_text="what is on the table?",
        text="A mug.",
        raw_text="A [SEG] mug.",
        objects=[tracked_object(i)],
    )


MESSAGES = {
    "tracked_object": (TrackedObject, tracked_object),
    "object_array": (ObjectArray, object_array),
    "command": (Command, command),
    "reply": (Reply, reply),
}
