"""The node's lifecycle driven from another process (lifecycle_msgs ChangeState / GetState), with
clear answers in every state: unconfigured, a model that cannot be loaded, a model still loading,
inactive, active, cleaned up. Also: compressed input with a corrupt JPEG, a QoS mismatch with the
camera, and the Chat action's streamed feedback and cancel (a tiny model that writes long answers).
"""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy comes from the venv made by scripts/setup.sh")

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from node_harness import Planner, Process, node_args, ros_environment, write_model  # noqa: E402
from sensor_msgs.msg import CompressedImage, RegionOfInterest  # noqa: E402

from sa2va_msgs.action import Chat  # noqa: E402
from sa2va_msgs.msg import Command, ObjectArray, Reply  # noqa: E402
from sa2va_msgs.srv import AddObject, Ask, Segment  # noqa: E402

pytestmark = [
    pytest.mark.ros,
    pytest.mark.timeout(600),
    # rclpy's own default handler for the deliberately mismatched publisher calls a deprecated logger method.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:rclpy.event_handler"),
]
STATUS_SUCCEEDED, STATUS_CANCELED = 4, 5


class SlowCheckpoint:
    """A checkpoint folder whose config.json is a FIFO: loading blocks until :meth:`release`.

    This makes "a request while the model is still loading" deterministic without touching the
    node: its loader really is stuck reading the checkpoint, as with a slow disk or download.
    """

    def __init__(self, model: Path, folder: Path):
        folder.mkdir()
        for item in model.iterdir():
            if item.name != "config.json":
                (folder / item.name).symlink_to(item)
        self.fifo = folder / "config.json"
        os.mkfifo(self.fifo)
        self.content = (model / "config.json").read_bytes()
        self.path = folder
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def release(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()

    def _serve(self) -> None:
        while not self._stop.is_set():  # every reader that opens the FIFO gets the whole file
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                    raise
                time.sleep(0.02)
                continue
            try:
                os.set_blocking(fd, True)
                os.write(fd, self.content)
            finally:
                os.close(fd)
            time.sleep(0.05)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node_lifecycle")
    model = write_model(tmp / "model", force_seg=False)  # random weights: long answers, no [SEG]
    slow = SlowCheckpoint(model, tmp / "slow_model")
    env = ros_environment(tmp)
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp / "hf_home"), HF_HUB_CACHE=str(tmp / "hf_home" / "hub"))
    rclpy.init()
    params = {
        "model": "/nonexistent/sa2va",
        "device": "cpu",
        "autostart": False,
        "image_transport": "compressed",
        "image_qos_reliability": "reliable",
        "presence_threshold": 0.3,
    }
    node = Process("sa2va_node", node_args(params), env, tmp)
    camera = Process(
        "sa2va_demo_camera",
        ["--ros-args"]
        + ["-p", "width:=160", "-p", "height:=120", "-p", "rate:=5.0", "-p", "compressed:=true"]
        + ["-p", "reliability:=reliable"],
        env,
        tmp,
    )
    planner = Planner()
    planner.listen("objects", ObjectArray)
    planner.listen("reply", Reply)
    planner.listen("/diagnostics", DiagnosticArray)
    try:
        yield planner, node, slow
    finally:
        slow.close()
        planner.close()
        node_rc = node.stop()
        camera.stop()
        rclpy.shutdown()
    assert node_rc == 0, f"sa2va_node did not exit cleanly ({node_rc}):\n{node.log()[-3000:]}"


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def test_starts_unconfigured_and_says_so(system):
    planner, node, _ = system
    assert planner.get_state() == "unconfigured"
    assert node.wait_for_log("autostart is false", timeout=30)
    r = planner.call(Segment, "segment", Segment.Request(prompt="a cup"))
    assert not r.success and "unconfigured" in r.message and "configure" in r.message
    reply = planner.request(Command.ADD, "early", text="a cup")
    assert reply is not None and not reply.success and "unconfigured" in reply.message


def test_a_missing_model_fails_configure_clearly_and_the_node_stays_up(system):
    planner, node, _ = system
    assert planner.change_state(Transition.TRANSITION_CONFIGURE) is False
    assert planner.get_state() == "unconfigured"
    assert node.wait_for_log("cannot load model '/nonexistent/sa2va'", timeout=30)
    assert "point model at the folder of a local copy" in node.log()
    # The default model, with the hub unreachable and nothing cached: said so, no random weights.
    assert planner.set_parameters(model="ByteDance/Sa2VA-1B")[0].successful
    assert planner.change_state(Transition.TRANSITION_CONFIGURE) is False
    assert node.wait_for_log("is not in the local Hugging Face cache", timeout=30)
    assert node.wait_for_log("HF_HUB_OFFLINE is set, so only the local cache is used", timeout=10)
    # Each cause gets its own hint: CUDA asked for on a machine without it.
    if not torch_cuda_available():
        assert planner.set_parameters(device="cuda")[0].successful
        assert planner.change_state(Transition.TRANSITION_CONFIGURE) is False
        assert node.wait_for_log("set device:=cpu (or auto), or install a CUDA build of torch", timeout=30)
        assert planner.set_parameters(device="cpu")[0].successful
    r = planner.call(Ask, "ask", Ask.Request(question="hello?", source=2))
    assert not r.success and "last error: cannot load model 'ByteDance/Sa2VA-1B'" in r.message
    diag = planner.diagnostics("model")
    assert diag["state"] == "unconfigured" and "ByteDance/Sa2VA-1B" in diag["message"]
    assert node.alive()


def test_requests_while_the_model_loads_are_answered(system):
    planner, _, slow = system
    assert planner.set_parameters(model=str(slow.path))[0].successful
    future = planner.change_state_async(Transition.TRANSITION_CONFIGURE)
    deadline = time.monotonic() + 30
    while planner.get_state() != "configuring" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert planner.get_state() == "configuring", "GetState answers while the model loads"
    r = planner.call(Segment, "segment", Segment.Request(prompt="a cup"))
    assert not r.success and "still loading" in r.message
    assert not future.done()
    slow.release()
    deadline = time.monotonic() + 120
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert future.done() and future.result().success
    assert planner.get_state() == "inactive"


def test_static_parameters_are_refused_once_configured(system):
    planner, _, _ = system
    result = planner.set_parameters(model="ByteDance/Sa2VA-4B")[0]
    assert not result.successful and "cleanup" in result.reason and "model" in result.reason
    assert planner.set_parameters(overlay_rate=2.0)[0].successful
    r = planner.call(Ask, "ask", Ask.Request(question="hello?", source=2))
    assert not r.success and "inactive" in r.message and "activate" in r.message


def test_activate_then_compressed_frames_are_tracked_despite_a_corrupt_jpeg(system):
    planner, node, _ = system
    assert planner.change_state(Transition.TRANSITION_ACTIVATE)
    assert planner.get_state() == "active"
    # A transition the state has not got (activate twice): refused, and the node lives on (Jazzy's
    # rclpy raised it out of the executor and the node died).
    assert not planner.change_state(Transition.TRANSITION_ACTIVATE)
    assert node.alive() and planner.get_state() == "active"
    assert planner.wait_for("objects", timeout=60) is not None, node.log()[-2000:]
    box = RegionOfInterest(x_offset=30, y_offset=20, width=50, height=40)
    added = planner.call(AddObject, "add_object", AddObject.Request(label="thing", box=box))
    assert added.success, added.message
    assert planner.wait_for("objects", lambda m: any(o.id == added.object_id for o in m.objects), timeout=30)
    corrupt = CompressedImage(format="jpeg", data=b"\xff\xd8\xff\xe0\x00\x10JFIF broken beyond repair")
    corrupt.header.stamp.sec = 1
    # The node tracks the newest frame: a camera frame arriving before the tracking loop takes
    # the corrupt one supersedes it (dropped, counted, never decoded). Send it until one is taken.
    deadline = time.monotonic() + 30
    while not node.wait_for_log("could not be decoded", timeout=1.0) and time.monotonic() < deadline:
        planner.publish("image/compressed", corrupt)
    assert node.wait_for_log("could not be decoded", timeout=1.0)
    after = planner.count("objects")
    later = planner.wait_for(
        "objects", lambda m: any(o.id == added.object_id for o in m.objects), after=after
    )
    assert later is not None and later.header.stamp.sec > 1, "tracking went on after the corrupt frame"
    # A model that answers without [SEG] finds nothing: the planner is told, nothing is tracked.
    reply = planner.request(Command.ADD, "nothing", text="the red circle")
    assert reply is not None and not reply.success and "found nothing" in reply.message


def test_a_qos_mismatch_with_the_camera_is_warned_naming_both_profiles(system):
    planner, node, _ = system
    frame = CompressedImage(format="jpeg", data=b"")
    planner.publish("image/compressed", frame, reliable=False)  # the node asked for reliable
    assert node.wait_for_log("QoS mismatch", timeout=30), node.log()[-2000:]
    line = next(line for line in node.log().splitlines() if "QoS mismatch" in line)
    assert "reliability reliable" in line and "reliability best_effort" in line
    assert "image_qos_reliability" in line


def test_chat_streams_feedback_and_can_be_cancelled(system):
    planner, _, _ = system
    goal = Chat.Goal(prompt="Tell me a story.", source=Chat.Goal.SOURCE_NONE, max_new_tokens=12)
    result, status, feedback = planner.chat(goal)
    assert status == STATUS_SUCCEEDED and result.success, result.message
    assert len(feedback) >= 3, "the answer is streamed token by token"
    tokens = [f.tokens for f in feedback]
    assert tokens == sorted(tokens) and tokens[-1] <= 12
    assert "".join(f.delta for f in feedback) == feedback[-1].text
    goal = Chat.Goal(
        prompt="Tell me a long story.", source=Chat.Goal.SOURCE_LATEST_FRAME, max_new_tokens=3000
    )
    t0 = time.monotonic()
    result, status, feedback = planner.chat(goal, cancel_after_feedback=3)
    assert status == STATUS_CANCELED and result.cancelled and not result.success
    assert feedback and max(f.tokens for f in feedback) < 3000
    assert time.monotonic() - t0 < 60, "cancel stops the generation early"
    # The worker is free again after a cancel.
    r = planner.call(Ask, "ask", Ask.Request(question="Still there?", source=2))
    assert r.success, r.message


def test_deactivate_cleanup_and_shutdown(system):
    planner, node, _ = system
    assert planner.change_state(Transition.TRANSITION_DEACTIVATE)
    r = planner.call(Ask, "ask", Ask.Request(question="hello?", source=2))
    assert not r.success and "inactive" in r.message
    assert planner.change_state(Transition.TRANSITION_CLEANUP)
    assert planner.get_state() == "unconfigured"
    assert node.wait_for_log("model released", timeout=30)
    diag = planner.diagnostics("model")
    assert diag["state"] == "unconfigured"
    assert planner.change_state(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert planner.get_state() == "finalized"
    assert node.alive(), "the process stays up until it is stopped"


def test_config_json_fifo_is_really_blocking(tmp_path):
    """The slow checkpoint above holds the loader only while it is not released."""
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"a": 1}))
    slow = SlowCheckpoint(model, tmp_path / "slow")
    box: list = []
    reader = threading.Thread(target=lambda: box.append((slow.path / "config.json").read_text()), daemon=True)
    reader.start()
    reader.join(0.5)
    assert reader.is_alive() and not box
    slow.release()
    reader.join(5)
    slow.close()
    assert box == ['{"a": 1}']
