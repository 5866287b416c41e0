"""Checks of caller-supplied request fields against the frame they refer to, without ROS.

A box, a point or a list of ids comes from another process and may be anything a message
field can hold: 4294967295, NaN, a box wholly outside the frame, 100,000 ids. The model would
clip or wrap most of these into *something* (a box at (10000, 10000) once tracked ~70% of a
256x256 frame), so every value is checked here first and refused with the value, the limit
and the frame size in the message. The texts echoed back are cut to a prefix so a hostile
request cannot make the node publish or log megabytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: Characters of a caller's text (command, request_id, camera name) echoed in replies and logs.
ECHO_CHARS = 200
#: Object ids listed in a message before the rest is only counted.
LISTED_IDS = 20


class ValidationError(ValueError):
    """A request field is unacceptable; the message names the field, its value and the limit."""


def prefix(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` itself when short, else its first ``limit`` characters and the full length."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def id_list(ids: Sequence[int], limit: int = LISTED_IDS) -> str:
    """``[1, 2, 3]``, or the first ``limit`` ids and how many more there are."""
    ids = list(ids)
    if len(ids) <= limit:
        return str(ids)
    shown = ", ".join(str(i) for i in ids[:limit])
    return f"[{shown}, ... and {len(ids) - limit} more ({len(ids)} in all)]"


def finite(value: float, what: str) -> float:
    """``value`` as a float; NaN and infinities are refused by name."""
    value = float(value)
    if math.isnan(value):
        raise ValidationError(f"{what} is NaN; give a pixel coordinate")
    if math.isinf(value):
        raise ValidationError(f"{what} is {'+' if value > 0 else '-'}inf; give a pixel coordinate")
    return value


def point(x: float, y: float, width: int, height: int, what: str = "point") -> tuple[float, float]:
    """A pixel (column ``x``, row ``y``) inside a ``width`` x ``height`` frame."""
    x, y = finite(x, f"{what} x"), finite(y, f"{what} y")
    if not (0.0 <= x < width and 0.0 <= y < height):
        raise ValidationError(
            f"{what} ({x:g}, {y:g}) is outside the frame ({width}x{height}): x must be in [0, {width}) "
            f"and y in [0, {height})"
        )
    return x, y


def box(
    x_offset: int, y_offset: int, box_width: int, box_height: int, width: int, height: int
) -> tuple[int, int, int, int]:
    """A RegionOfInterest (pixels) as (x0, y0, x1, y1), wholly inside a ``width`` x ``height`` frame."""
    x0, y0, bw, bh = int(x_offset), int(y_offset), int(box_width), int(box_height)
    given = f"box (x_offset {x0}, y_offset {y0}, width {bw}, height {bh})"
    if bw <= 0 or bh <= 0:
        raise ValidationError(f"{given} is empty: width and height must both be > 0")
    if x0 + bw > width or y0 + bh > height:
        raise ValidationError(
            f"{given} reaches to ({x0 + bw}, {y0 + bh}), outside the frame ({width}x{height}); "
            "a box must lie inside the frame it refers to"
        )
    return x0, y0, x0 + bw, y0 + bh


def points(
    xs: Sequence[float],
    ys: Sequence[float],
    labels: Sequence[int],
    width: int,
    height: int,
    max_points: int,
) -> tuple[list[tuple[float, float]], list[int]]:
    """Prompt points and their labels (1 = object, 0 = background), checked one by one."""
    n = len(xs)
    if n != len(ys):
        raise ValidationError(f"points_x has {n} values but points_y {len(ys)}")
    if n > max_points:
        raise ValidationError(f"{n} points given; the limit is {max_points} per prompt (max_prompt_points)")
    labels = [int(v) for v in labels] or [1] * n
    if len(labels) != n:
        raise ValidationError(f"point_labels has {len(labels)} values for {n} points")
    bad = [v for v in labels if v not in (0, 1)]
    if bad:
        raise ValidationError(f"point label {bad[0]} is neither 1 (object) nor 0 (background)")
    checked = [point(x, y, width, height, f"point {i}") for i, (x, y) in enumerate(zip(xs, ys, strict=True))]
    return checked, labels


def object_ids(ids: Sequence[int], limit: int, what: str) -> list[int]:
    """Object ids of a request, at most ``limit`` of them."""
    if len(ids) > limit:
        raise ValidationError(f"{what} lists {len(ids)} object ids; the limit is {limit} (max_object_ids)")
    return [int(i) for i in ids]
