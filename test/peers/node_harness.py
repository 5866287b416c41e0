"""Processes and a planner client for the node's integration tests.

* :func:`write_model` writes a tiny checkpoint through the model core's own writer (real
  loader, real generation; ``force_seg`` makes every answer contain [SEG]) with a 256-pixel
  SAM-2 so a tracked frame costs tens of milliseconds on a CPU.
* :class:`Process` runs a console script (``sa2va_node``, ``sa2va_demo_camera``) in its own
  process with the test's ROS environment (loopback discovery, own domain id) and keeps its
  log for assertions.
* :class:`Planner` is the "planner" side: an rclpy node in the test process that subscribes to
  the node's outputs, calls its services, sends Chat goals and drives its lifecycle.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.action import ActionClient
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from sa2va_msgs.action import Chat
from sa2va_msgs.msg import Command, ObjectArray, Reply
from sa2va_ros.node.executor import HandoffExecutor

BIN = Path(sys.executable).parent
#: The planner's service and action clients keep every response. rclpy's default client QoS keeps
#: the last 10: a burst of 50 calls whose answers arrive faster than the client takes them loses
#: all but 10 in the client's own reader (the node answered every one). A real planner that sends
#: bursts needs the same.
CLIENT_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)


def write_model(out: Path, force_seg: bool = True, sam2_image_size: int = 256) -> Path:
    """A tiny random Sa2VA checkpoint in the official layout (see sa2va_ros/testing/tiny_checkpoint.py)."""
    from sa2va_ros.testing.sam2_writer import tiny_sam2_config
    from sa2va_ros.testing.tiny_checkpoint import write_tiny_checkpoint

    path = write_tiny_checkpoint(out, format="internvl", force_seg=force_seg)
    # The writer's SAM-2 works at 1024 px like the real one; the input size changes no weight
    # shape, and 256 px keeps a tracked frame in the tens of milliseconds on a CPU.
    (path / "sam2_config.json").write_text(json.dumps(tiny_sam2_config(image_size=sam2_image_size)))
    return path


class Process:
    """A console script of ours in its own process, its output captured to a log file."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], log_dir: Path):
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN / name), *args], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.proc.poll() is not None:
                return text in self.log()
            time.sleep(0.1)
        return False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT (a clean ROS shutdown), then SIGKILL if it hangs; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def node_args(params: dict[str, Any], name: str = "sa2va") -> list[str]:
    args = ["--ros-args", "-r", f"__node:={name}"]
    for key, value in params.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = "[" + ", ".join(f"'{v}'" for v in value) + "]"
        args += ["-p", f"{key}:={value}"]
    return args


class Planner(Node):
    """The test's side of the conversation, spun by its own executor thread."""

    def __init__(self, name: str = "planner", node: str = "/sa2va"):
        super().__init__(name)
        self.target = node
        self.messages: dict[str, list] = defaultdict(list)
        #: Wall-clock time (time.time()) each message reached its callback, parallel to messages.
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self._cond = threading.Condition()
        self._pubs: dict[str, Any] = {}
        self._service_clients: dict[str, Any] = {}
        self._chat_client: ActionClient | None = None
        #: Why the spin thread stopped, if it did (every later wait would time out without it).
        self.spin_error: BaseException | None = None
        # The node's executor: rclpy's MultiThreadedExecutor busy-loops while the machine is busy
        # (sa2va_ros/node/executor.py), which delayed this planner's own callbacks by seconds.
        self._executor = HandoffExecutor(4, thread_name_prefix="planner")
        self._executor.add_node(self)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except BaseException as exc:  # noqa: BLE001 - reported by every later timeout
            self.spin_error = exc
            raise

    def _timeout(self, what: str) -> TimeoutError:
        why = f" (the planner's executor stopped: {self.spin_error!r})" if self.spin_error else ""
        return TimeoutError(what + why)

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=2)
        self._thread.join(5)  # a still-running spin thread at exit aborts the interpreter
        if self._chat_client is not None:
            self._chat_client.destroy()
        self.destroy_node()

    # -- topics -------------------------------------------------------------------------------

    def listen(self, topic: str, msg_type: type, reliable: bool = True, depth: int = 50) -> None:
        qos = QoSProfile(
            depth=depth, reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        )
        self.create_subscription(msg_type, topic, lambda m, t=topic: self._store(t, m), qos)

    def _store(self, topic: str, msg: Any) -> None:
        arrived = time.time()
        with self._cond:
            self.messages[topic].append(msg)
            self.arrivals[topic].append(arrived)
            self._cond.notify_all()

    def wait_for(
        self,
        topic: str,
        predicate: Callable[[Any], bool] = lambda m: True,
        timeout: float = 30.0,
        after: int = 0,
    ) -> Any:
        """The first message on ``topic`` (from index ``after``) matching ``predicate``, or None."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.messages[topic][after:]:
                    if predicate(msg):
                        return msg
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def arrival_of(self, topic: str, msg: Any) -> float:
        """When ``msg`` (a message this planner received on ``topic``) reached its callback."""
        with self._cond:
            pairs = zip(self.messages[topic], self.arrivals[topic], strict=True)
            return next(arrived for m, arrived in pairs if m is msg)

    def count(self, topic: str) -> int:
        with self._cond:
            return len(self.messages[topic])

    def publish(self, topic: str, msg: Any, reliable: bool = True, depth: int = 10) -> None:
        key = f"{topic}|{type(msg).__name__}|{reliable}|{depth}"
        if key not in self._pubs:
            qos = QoSProfile(
                depth=depth,
                reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            )
            self._pubs[key] = self.create_publisher(type(msg), topic, qos)
            deadline = time.monotonic() + 10
            while self._pubs[key].get_subscription_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        self._pubs[key].publish(msg)

    def publish_until(
        self,
        topic: str,
        msg: Any,
        wait_topic: str,
        predicate: Callable[[Any], bool],
        timeout: float = 30.0,
        period: float = 1.0,
    ) -> Any:
        """Publish ``msg`` (again every ``period`` s) until ``wait_topic`` has a message matching
        ``predicate``; that message, or None. A best-effort subscriber can miss the first sample
        of a publisher it has only just discovered (seen under Jazzy's rclpy)."""
        after = self.count(wait_topic)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.publish(topic, msg)
            found = self.wait_for(wait_topic, predicate, timeout=period, after=after)
            if found is not None:
                return found
        return None

    def command(self, text: str) -> None:
        self.publish("command", String(data=text))

    def request(self, action: int, request_id: str, text: str = "", ids=(), camera: str = "") -> Reply | None:
        after = self.count("reply")
        self.publish(
            "command_request",
            Command(action=action, request_id=request_id, text=text, object_ids=list(ids), camera=camera),
        )
        return self.wait_for("reply", lambda r: r.request_id == request_id, timeout=60, after=after)

    # -- services and actions ---------------------------------------------------------------

    def call(self, srv_type: type, name: str, request: Any, timeout: float = 60.0) -> Any:
        client = self.client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout):
            raise self._timeout(f"service {name} is not available")
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda f: done.set())
        if not done.wait(timeout):
            raise self._timeout(f"service {name} did not answer in {timeout} s")
        return future.result()

    def client(self, srv_type: type, name: str) -> Any:
        """This planner's one client of service ``name`` (made once, kept until close)."""
        if name not in self._service_clients:
            self._service_clients[name] = self.create_client(srv_type, name, qos_profile=CLIENT_QOS)
        return self._service_clients[name]

    def chat_client(self) -> ActionClient:
        """This planner's one Chat action client.

        Made once and destroyed only in :meth:`close`, after the executor stopped: destroying an
        action client while the executor may still wait on it (late feedback, a cancel answer)
        raised "cannot use Destroyable because destruction was requested" in the spin thread
        under Jazzy, and every later call of the test timed out.
        """
        if self._chat_client is None:
            self._chat_client = ActionClient(
                self,
                Chat,
                "chat",
                goal_service_qos_profile=CLIENT_QOS,
                result_service_qos_profile=CLIENT_QOS,
                cancel_service_qos_profile=CLIENT_QOS,
            )
        return self._chat_client

    def chat(self, goal: Chat.Goal, cancel_after_feedback: int = 0, timeout: float = 120.0):
        """Send a Chat goal; returns (result, status, feedback list)."""
        client = self.chat_client()
        if not client.wait_for_server(timeout_sec=30):
            raise self._timeout("chat action server is not available")
        feedback: list = []
        cancel_sent = threading.Event()
        handle_box: list = []

        def on_feedback(msg):
            feedback.append(msg.feedback)
            if cancel_after_feedback and len(feedback) >= cancel_after_feedback and not cancel_sent.is_set():
                cancel_sent.set()
                handle_box[0].cancel_goal_async()

        accepted = threading.Event()
        send = client.send_goal_async(goal, feedback_callback=on_feedback)
        send.add_done_callback(lambda f: (handle_box.append(f.result()), accepted.set()))
        if not accepted.wait(30):
            raise self._timeout("chat goal was not answered")
        handle = handle_box[0]
        assert handle.accepted
        finished = threading.Event()
        result_future = handle.get_result_async()
        result_future.add_done_callback(lambda f: finished.set())
        if not finished.wait(timeout):
            raise self._timeout("chat goal did not finish")
        response = result_future.result()
        # Feedback and result travel on different channels: feedback published before the result
        # may still arrive after it (the node answers the moment the job ends). Wait for the
        # feedback that carries the result's text, briefly.
        settle = time.monotonic() + 3.0
        while response.result.text and time.monotonic() < settle:
            if feedback and feedback[-1].text == response.result.text:
                break
            time.sleep(0.05)
        return response.result, response.status, list(feedback)

    def set_parameters(self, **values: Any):
        """Set parameters of the node under test; returns the SetParametersResult list."""
        params = []
        for name, value in values.items():
            v = ParameterValue()
            if isinstance(value, bool):
                v.type, v.bool_value = ParameterType.PARAMETER_BOOL, value
            elif isinstance(value, int):
                v.type, v.integer_value = ParameterType.PARAMETER_INTEGER, value
            elif isinstance(value, float):
                v.type, v.double_value = ParameterType.PARAMETER_DOUBLE, value
            else:
                v.type, v.string_value = ParameterType.PARAMETER_STRING, str(value)
            params.append(Parameter(name=name, value=v))
        return self.call(
            SetParameters, f"{self.target}/set_parameters", SetParameters.Request(parameters=params)
        ).results

    # -- lifecycle ----------------------------------------------------------------------------

    def get_state(self, timeout: float = 30.0) -> str:
        return self.call(
            GetState, f"{self.target}/get_state", GetState.Request(), timeout
        ).current_state.label

    def change_state_async(self, transition: int):
        client = self.client(ChangeState, f"{self.target}/change_state")
        if not client.wait_for_service(timeout_sec=30):
            raise self._timeout("change_state is not available")
        return client.call_async(ChangeState.Request(transition=Transition(id=transition)))

    def change_state(self, transition: int, timeout: float = 120.0) -> bool:
        future = self.change_state_async(transition)
        done = threading.Event()
        future.add_done_callback(lambda f: done.set())
        if not done.wait(timeout):
            raise self._timeout(f"transition {transition} did not finish in {timeout} s")
        return future.result().success

    def diagnostics(self, name_part: str, timeout: float = 10.0) -> dict[str, str] | None:
        """Key/values of the newest /diagnostics status whose name contains ``name_part``."""
        after = self.count("/diagnostics")
        msg = self.wait_for(
            "/diagnostics", lambda m: any(name_part in s.name for s in m.status), timeout=timeout, after=after
        )
        if msg is None:
            return None
        status = next(s for s in msg.status if name_part in s.name)
        return {"message": status.message, **{kv.key: kv.value for kv in status.values}}


def ros_environment(log_dir: Path) -> dict[str, str]:
    """The test's own ROS environment for child processes (set by conftest.py at import time)."""
    env = dict(os.environ)
    assert env.get("ROS_AUTOMATIC_DISCOVERY_RANGE") == "LOCALHOST"
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_LOGGING_BUFFERED_STREAM"] = "0"
    env["ROS_LOG_DIR"] = str(log_dir)
    return env


__all__ = [
    "CompressedImage",
    "DiagnosticArray",
    "Image",
    "ObjectArray",
    "Planner",
    "Process",
    "Reply",
    "node_args",
    "ros_environment",
    "rclpy",
    "write_model",
]
