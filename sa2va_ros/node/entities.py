"""Destroying subscriptions and publishers while a MultiThreadedExecutor spins, without killing it.

Deactivate and cleanup destroy the camera subscriptions and the lifecycle publishers from a
lifecycle callback on one executor thread while the executor's main loop may be building its
next wait set on another. Every subscription and publisher carries event handlers (rclpy adds
default QoS ones), and rclpy (seen with 9.1, ros2/rclpy#1284) skips a handler whose destruction
was requested between its snapshot of the node's waitables and marking them in use, but then
still adds it to the wait set: ``InvalidHandle: cannot use Destroyable because destruction was
requested`` escaped ``executor.spin()`` and the node died during a deactivate after a request
burst (seen in the memory experiments of issue 14). The executor did not count the skipped
handler in the wait set's size, so leaving it out is exactly what it meant to do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rclpy.exceptions import InvalidHandle


def _tolerate_destruction(handler: Any) -> None:
    add = handler.add_to_wait_set

    def add_to_wait_set(wait_set: Any) -> None:
        try:
            add(wait_set)
        except InvalidHandle:
            handler._event_index = None  # never ready: the executor drops it next round

    handler.add_to_wait_set = add_to_wait_set


def destroy(entity: Any, destroy_fn: Callable[[Any], Any]) -> None:
    """``destroy_fn(entity)`` (e.g. ``node.destroy_subscription``), safe against a spinning executor."""
    for handler in getattr(entity, "event_handlers", ()):
        _tolerate_destruction(handler)
    destroy_fn(entity)
