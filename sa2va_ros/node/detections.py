"""vision_msgs/Detection2DArray for the tracked objects: the standard message detectors use.

Every ROS distribution ships vision_msgs, and consumers of detectors (planners, trackers, RViz
plugins) read Detection2DArray; they get our objects without knowing sa2va_msgs. It is optional:
without vision_msgs (it is not on PyPI) the node simply has no `detections` topic.
"""

from __future__ import annotations

from collections.abc import Sequence

try:
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose
except ImportError:  # not installed: no detections topic
    Detection2D = Detection2DArray = ObjectHypothesisWithPose = None

from .messages import is_drawn, mask_box

AVAILABLE = Detection2DArray is not None


def detection_array(objects: Sequence, header) -> Detection2DArray:
    """One Detection2D per object drawn on this frame: its mask's box, label and presence score.

    ``id`` is the tracker's object id (as in sa2va_msgs/TrackedObject); ``class_id`` the label.
    """
    array = Detection2DArray(header=header)
    for obj in objects:
        box = mask_box(obj.mask) if is_drawn(obj) else None
        if box is None:
            continue
        x0, y0, x1, y1 = box
        detection = Detection2D(header=header, id=str(obj.id))
        detection.bbox.center.position.x = (x0 + x1) / 2.0
        detection.bbox.center.position.y = (y0 + y1) / 2.0
        detection.bbox.size_x = float(x1 - x0)
        detection.bbox.size_y = float(y1 - y0)
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = obj.label
        hypothesis.hypothesis.score = float(obj.score)
        detection.results.append(hypothesis)
        array.detections.append(detection)
    return array
