"""Model results -> our ROS messages (TrackedObject, ObjectArray, label images, Reply text).

Kept apart from the node so that what a field means is decided in one place: bbox and area
come from the object's own mask (source-image pixels), ``mask`` is that mask itself (PNG, so
objects that overlap lose nothing), mask_value the object's value in the label image published
with the same header (a view: where objects overlap the later one wins, and an object wholly
covered has value 0), state one of TrackedObject.STATE_*.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import Point, Vector3
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest

from sa2va_msgs.msg import ObjectArray
from sa2va_msgs.msg import TrackedObject as TrackedObjectMsg
from sa2va_ros.depth3d import ObjectGeometry
from sa2va_ros.model.images import mask_box
from sa2va_ros.model.prompts import parse_grounded_caption

from .image_codec import array_to_image
from .label_image import encoding_of, label_image
from .mask_codec import mask_message, png_message

_STATES = {"tracking": TrackedObjectMsg.STATE_TRACKING, "lost": TrackedObjectMsg.STATE_LOST}
#: Stop tokens that may survive in decoded text of some templates.
_END_TOKENS = ("<|im_end|>", "<|endoftext|>")


def roi(box: Sequence[int] | None) -> RegionOfInterest:
    """(x0, y0, x1, y1) with exclusive x1/y1 -> RegionOfInterest; all zero for None."""
    out = RegionOfInterest()
    if box is not None:
        x0, y0, x1, y1 = (int(v) for v in box)
        out.x_offset, out.y_offset = max(0, x0), max(0, y0)
        out.width, out.height = max(0, x1 - x0), max(0, y1 - y0)
    return out


def clean_text(raw: str) -> str:
    """The answer for people: [SEG], <p></p> and other markup removed, spaces squeezed."""
    for token in _END_TOKENS:
        raw = raw.replace(token, "")
    return parse_grounded_caption(raw).text


@dataclass
class FoundObject:
    """An object named in an answer (one per [SEG]), tracked or not."""

    id: int
    label: str
    prompt: str
    mask: np.ndarray | None
    score: float
    tracked: bool
    #: sa2va_ros.depth3d.ObjectGeometry from the answered frame's depth (RGB-D cameras), else None.
    geometry: object = None
    frame_id: str = ""  # the optical frame of ``geometry``


def is_drawn(obj) -> bool:
    """Tracker objects that go into the label image: present-or-recent, not lost."""
    return obj.state == "tracking"


def masks_image(objects: Sequence, shape: tuple[int, int], header) -> tuple[Image, list[int]]:
    """The ``masks`` label image of one tracker step and each object's value in it."""
    labels, values = label_image([o.mask if is_drawn(o) else None for o in objects], shape)
    return array_to_image(labels, header, encoding_of(labels)), values


def object_array(
    objects: Sequence,
    values: Sequence[int],
    header,
    camera: str,
    step_time: float = 0.0,
    with_masks: bool = False,
) -> ObjectArray:
    """The per-frame ``objects`` message; ``values`` from :func:`masks_image`.

    ``with_masks`` adds each drawn object's own mask (the ``object_masks`` parameter): 1-bit PNG
    encoding costs about half a millisecond per object at 640x480 (measured on a disc), so it is
    opt-in per frame.
    """
    array = ObjectArray(header=header, camera=camera, step_time=float(step_time))
    for obj, value in zip(objects, values, strict=True):
        mask = obj.mask if is_drawn(obj) else None
        box = mask_box(mask)
        array.objects.append(
            TrackedObjectMsg(
                id=int(obj.id),
                prompt=obj.prompt,
                label=obj.label,
                score=float(obj.score),
                state=_STATES.get(obj.state, TrackedObjectMsg.STATE_TRACKING),
                mask_value=int(value),
                bbox=roi(box),
                area=int(np.count_nonzero(mask)) if box is not None else 0,
                frames_since_seen=int(obj.frames_since_seen),
                mask=mask_message(mask, header) if with_masks and box is not None else CompressedImage(),
            )
        )
    return array


def tracked_objects(
    objects: Sequence, shape: tuple[int, int], header, camera: str, with_masks: bool = False
) -> tuple[ObjectArray, Image]:
    """Both per-frame messages of one tracker step: ``objects`` and the ``masks`` label image."""
    masks, values = masks_image(objects, shape, header)
    return object_array(objects, values, header, camera, with_masks=with_masks), masks


def found_objects(
    found: Sequence[FoundObject], shape: tuple[int, int] | None, header
) -> tuple[list, CompressedImage]:
    """TrackedObject messages, each with its own mask, and a PNG label image for an answer.

    Tracked ones start in STATE_INITIALIZING (the tracker grounds them on its next frame);
    the others are reported as seen on the answered frame. Replies are read by people too
    (``ros2 service call`` prints them), hence PNG: kilobytes, not a megabyte of integers.
    """
    if not found or shape is None:
        return [_found_message(f) for f in found], CompressedImage()
    labels, values = label_image([f.mask for f in found], shape)
    out = []
    for f, value in zip(found, values, strict=True):
        box = mask_box(f.mask)
        out.append(
            _found_message(
                f,
                mask_value=int(value),
                bbox=roi(box),
                area=int(np.count_nonzero(f.mask)) if box is not None else 0,
                mask=mask_message(f.mask, header) if box is not None else CompressedImage(),
            )
        )
    return out, png_message(labels, header)


def _found_message(found: FoundObject, **fields) -> TrackedObjectMsg:
    """A TrackedObject message for an answer's object; ``fields`` add what its mask gives."""
    state = TrackedObjectMsg.STATE_INITIALIZING if found.tracked else TrackedObjectMsg.STATE_TRACKING
    msg = TrackedObjectMsg(
        id=int(found.id),
        prompt=found.prompt,
        label=found.label,
        score=float(found.score),
        state=state,
        **fields,
    )
    if found.geometry is not None:  # only RGB-D cameras give answers a geometry
        fill_object(msg, found.geometry, found.frame_id, "")
    return msg


def fill_object(msg, geometry: ObjectGeometry | None, frame_id: str, reason: str) -> None:
    """The 3D fields of a TrackedObject message."""
    msg.position_frame_id = frame_id
    if geometry is None or not geometry.valid:
        msg.position_valid = False
        msg.position_status = reason if geometry is None else geometry.reason
        msg.depth_points = 0 if geometry is None else int(geometry.point_count)
        return
    c, b, s = geometry.centroid, geometry.center, geometry.size
    msg.position_valid = True
    msg.position_status = ""
    msg.position = Point(x=float(c[0]), y=float(c[1]), z=float(c[2]))
    msg.box_center = Point(x=float(b[0]), y=float(b[1]), z=float(b[2]))
    msg.size = Vector3(x=float(s[0]), y=float(s[1]), z=float(s[2]))
    msg.depth_points = int(geometry.point_count)
