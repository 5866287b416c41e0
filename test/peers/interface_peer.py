"""A separate process that exercises every generated interface against test_interfaces_ros.py:
publishes each message type, calls each service type and sends a Chat goal.

Prints one JSON line with what it checked; exits 0 only if every reply matched.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import rclpy
from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy

sys.path.insert(0, str(Path(__file__).resolve().parent))
import interface_samples as s  # noqa: E402

from sa2va_msgs.action import Chat  # noqa: E402
from sa2va_msgs.srv import AddObject, Ask, DescribeRegion, RemoveObjects, Segment  # noqa: E402

QOS = QoSProfile(
    depth=10, reliability=QoSReliabilityPolicy.RELIABLE, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL
)


def call(node: Node, srv_type, name: str, request, timeout: float = 20.0):
    client = node.create_client(srv_type, name)
    if not client.wait_for_service(timeout_sec=timeout):
        raise RuntimeError(f"service {name} not available")
    # wait_for_service() can return before the server has matched our response reader, and a
    # request sent in that window is answered into the void (a known DDS discovery race). These
    # sample services are idempotent, so a lost exchange is simply asked again.
    for _ in range(3):
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout / 3)
        if future.done():
            return future.result()
        client.remove_pending_request(future)
    raise RuntimeError(f"service {name} timed out")


def main() -> int:
    rclpy.init()
    node = Node("interface_peer")
    checks: dict[str, bool] = {}
    pubs = {name: node.create_publisher(t, f"sample/{name}", QOS) for name, (t, _) in s.MESSAGES.items()}
    for name, (_, make) in s.MESSAGES.items():
        pubs[name].publish(make(3))

    r = call(
        node,
        Segment,
        "sample/segment",
        Segment.Request(camera="front", prompt="red mug", image=s.image(1), track=True),
    )
    checks["segment"] = (
        r.success and r.text == "red mug|1" and r.objects == [s.tracked_object(1)] and r.masks == s.png(1)
    )
    r = call(
        node,
        Ask,
        "sample/ask",
        Ask.Request(camera="front", question="what?", source=Ask.Request.SOURCE_RECENT_FRAMES),
    )
    checks["ask"] = r.success and r.text == "what?|1" and r.raw_text == "front"
    req = DescribeRegion.Request(
        camera="front", mask=s.image(2), use_point=True, point_x=1.5, point_y=2.5, object_id=9
    )
    req.box.width = 5
    r = call(node, DescribeRegion, "sample/describe_region", req)
    checks["describe_region"] = r.success and r.text == "1.5,2.5,9,5" and r.mask == s.png(2)
    req = AddObject.Request(
        camera="front", label="cup", points_x=[1.0, 2.0], points_y=[3.0, 4.0], point_labels=[1, 0]
    )
    r = call(node, AddObject, "sample/add_object", req)
    checks["add_object"] = r.success and r.object_id == 2
    r = call(
        node,
        RemoveObjects,
        "sample/remove_objects",
        RemoveObjects.Request(camera="front", object_ids=[1, 2, 99]),
    )
    checks["remove_objects"] = (not r.success) and list(r.removed) == [1, 2] and list(r.unknown) == [99]

    client = ActionClient(node, Chat, "sample/chat")
    if not client.wait_for_server(timeout_sec=20.0):
        raise RuntimeError("action sample/chat not available")
    feedback: list[str] = []
    goal = Chat.Goal(
        camera="front", prompt="hello", history_user=["a"], history_assistant=["b"], max_new_tokens=3
    )
    send = client.send_goal_async(goal, feedback_callback=lambda fb: feedback.append(fb.feedback.delta))
    rclpy.spin_until_future_complete(node, send, timeout_sec=20.0)
    handle = send.result()
    result_future = handle.get_result_async()
    rclpy.spin_until_future_complete(node, result_future, timeout_sec=20.0)
    result = result_future.result().result
    checks["chat_action"] = result.success and result.text == "hello a b" and "".join(feedback) == result.text

    time.sleep(0.5)  # let the last published samples drain before the node goes away
    print(json.dumps(checks), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
