"""Destroying a subscription or publisher while an executor builds its wait set on another thread
(deactivate / cleanup under load) must not raise out of ``executor.spin()`` (sa2va_ros.node.entities)."""

from __future__ import annotations

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy comes from the venv made by scripts/setup.sh")

from rclpy.exceptions import InvalidHandle  # noqa: E402
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy  # noqa: E402
from rclpy.node import Node  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from sa2va_ros.node import entities  # noqa: E402

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

pytestmark = [pytest.mark.ros]


@pytest.fixture
def node():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("entities_test", context=context)
    yield node
    node.destroy_node()
    rclpy.shutdown(context=context)


def test_a_handler_destroyed_after_the_executors_snapshot_is_left_out_of_the_wait_set(node):
    events = SubscriptionEventCallbacks(message_lost=lambda info: None)
    sub = node.create_subscription(String, "entities_test", lambda msg: None, 10, event_callbacks=events)
    pub = node.create_publisher(String, "entities_test_out", 10)
    handlers = [*sub.event_handlers, *pub.event_handlers]
    assert sub.event_handlers and pub.event_handlers, "rclpy gives both QoS event handlers"
    # The executor's order: snapshot of the node's waitables (handlers), then our thread destroys
    # the entities, then the executor fails to mark them in use and still adds them to its set.
    entities.destroy(sub, node.destroy_subscription)
    entities.destroy(pub, node.destroy_publisher)
    wait_set = _rclpy.WaitSet(0, 0, 0, 0, 0, len(handlers), node.context.handle)
    for handler in handlers:
        with pytest.raises(InvalidHandle):
            handler.__enter__()
        handler.add_to_wait_set(wait_set)  # rclpy 9.1's own method raised InvalidHandle here
        assert not handler.is_ready(wait_set)
    assert sub not in node.subscriptions and pub not in node.publishers
