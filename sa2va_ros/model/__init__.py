"""The ROS-free Sa2VA model core (importing it never imports rclpy).

    from sa2va_ros.model import Sa2VA
    model = Sa2VA.from_pretrained("ByteDance/Sa2VA-1B")
    result = model.segment(image, "Please segment the red mug.")

Names are imported lazily, so ``import sa2va_ros.model.errors`` (e.g. in the ROS node
before a model is configured) does not pay for torch, transformers and SAM-2.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Sa2VA": "sa2va",
    "SegmentResult": "sa2va",
    "CaptionResult": "sa2va",
    "VideoResult": "sa2va",
    "Grounding": "sa2va",
    "StreamingTracker": "tracker",
    "TrackerConfig": "tracker",
    "TrackedObject": "tracker",
    "Turn": "mllm",
    "StopWhen": "mllm",
    "Sa2VAError": "errors",
    "CheckpointError": "errors",
    "UnsupportedModelError": "errors",
    "InputError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
