"""The node under abuse, over loopback DDS: nothing accepted silently, nothing dropped silently,
no traceback, memory back near its baseline.

One node process (tiny model, every answer grounds an object) is fed by sa2va_demo_camera; this
process is the attacker and the bursty planner. The inputs are drawn from a seeded generator, so
a failure names a case that can be replayed. Order matters and is part of the test: the first
test cleans the node up once (its RSS then is the baseline of the cleanup check) and brings it up
again, and the last one cleans it up and reconfigures it for compressed images (the PNG bomb).
"""

from __future__ import annotations

import math
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy comes from the venv made by scripts/setup.sh")

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))
from hostile_images import jpeg_declaring, png_bomb  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from node_harness import Planner, Process, node_args, ros_environment, write_model  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image, RegionOfInterest  # noqa: E402

from sa2va_msgs.action import Chat  # noqa: E402
from sa2va_msgs.msg import Command, ObjectArray, Reply  # noqa: E402
from sa2va_msgs.srv import AddObject, Ask, DescribeRegion, RemoveObjects, Segment  # noqa: E402
from sa2va_ros.node.image_codec import array_to_image, byte_sequence  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(400)]
W, H = 160, 120
QUEUE = 4
MB = 1 << 20
SEED = 14


def status_bytes(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def settled_rss(pid: int, seconds: float = 3.0, key: str = "VmRSS") -> int:
    """The node's RSS (or another /proc status figure) once it stopped moving: the smallest of a
    few samples over ``seconds``."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(status_bytes(pid, key))
        time.sleep(0.25)
    return min(samples)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reliability")
    model = write_model(tmp / "model", force_seg=True)
    env = ros_environment(tmp)
    rclpy.init()
    params = {
        "model": str(model),
        "device": "cpu",
        "language_queue_size": QUEUE,
        "max_command_length": 200,
        "max_new_tokens": 16,
        "max_history_length": 2000,
        "max_prompt_points": 16,
        "max_object_ids": 32,
        "diagnostics_period": 0.5,
    }
    node = Process("sa2va_node", node_args(params), env, tmp)
    camera = Process(
        "sa2va_demo_camera",
        ["--ros-args", "-p", f"width:={W}", "-p", f"height:={H}", "-p", "rate:=10.0"],
        env,
        tmp,
    )
    planner = Planner("attacker")
    planner.listen("reply", Reply, depth=5000)
    planner.listen("masks", Image)
    planner.listen("objects", ObjectArray)
    from diagnostic_msgs.msg import DiagnosticArray

    planner.listen("/diagnostics", DiagnosticArray)
    try:
        assert planner.wait_for("masks", timeout=180) is not None, f"no masks from the node:\n{node.log()}"
        assert retried(lambda: planner.get_state(timeout=5)) == "active", node.log()
        # A refused transition answers at once: once one answer came back, the change_state client's
        # response path is matched and the real transitions cannot be lost to discovery.
        retried(lambda: planner.change_state(Transition.TRANSITION_ACTIVATE, timeout=5))
        state = {}
        yield planner, node, state
    finally:
        planner.close()
        node_rc = node.stop()
        camera.stop()
        rclpy.shutdown()
    log = node.log()
    assert node_rc == 0, f"sa2va_node did not exit cleanly ({node_rc}):\n{log[-3000:]}"


def retried(call, tries: int = 12):
    """``call()`` again while it times out: on a loaded machine, a new client's first request can
    reach the server before the server has discovered where to send the response (rclpy's
    wait_for_service only sees the request side), and that response is lost."""
    for attempt in range(tries):
        try:
            return call()
        except TimeoutError:
            if attempt == tries - 1:
                raise
    return None


def transition(planner, node: Process, transition_id: int, reached: str) -> None:
    """A lifecycle transition, confirmed by the node's state (a lost response is asked again)."""
    for _ in range(3):
        try:
            if planner.change_state(transition_id, timeout=60):
                return
        except TimeoutError:
            pass
        if retried(lambda: planner.get_state(timeout=5)) == reached:
            return
    raise AssertionError(f"transition {transition_id} to {reached} failed:\n{node.log()[-3000:]}")


def check_no_traceback(node: Process) -> None:
    log = node.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:4000]


def first_objects(planner, timeout=60.0):
    return planner.wait_for("objects", timeout=timeout, after=planner.count("objects"))


def test_configure_and_first_request(system):
    planner, node, state = system
    # One cleanup first: what stays after it (torch, transformers and the other libraries loading
    # imports; no process unloads code) is the baseline a cleanup after the load must return to.
    transition(planner, node, Transition.TRANSITION_DEACTIVATE, "inactive")
    transition(planner, node, Transition.TRANSITION_CLEANUP, "unconfigured")
    state["cleaned_rss"] = settled_rss(node.proc.pid)
    state["cleaned_anon"] = settled_rss(node.proc.pid, 1.0, "RssAnon")
    transition(planner, node, Transition.TRANSITION_CONFIGURE, "inactive")
    transition(planner, node, Transition.TRANSITION_ACTIVATE, "active")
    assert first_objects(planner) is not None, "no frame tracked after activation"
    r = retried(
        lambda: planner.call(Ask, "ask", Ask.Request(question="What do you see?", source=0), timeout=10)
    )
    assert r.success, r.message
    state["first_request_rss"] = settled_rss(node.proc.pid)


# ---------------------------------------------------------------------------------- invalid input


def invalid_cases(rng: random.Random):
    """(name, service or None, request) tuples, each invalid for a 160x120 frame."""
    huge = 4294967295
    boxes = [
        (10000, 10000, 50, 50),
        (huge, huge, huge, huge),
        (150, 10, 20, 20),  # reaches x=170 > 160
        (10, 110, 20, 20),  # reaches y=130 > 120
        (0, 0, 0, 10),  # empty
        (rng.randrange(W, 5000), rng.randrange(0, H), rng.randrange(1, 50), rng.randrange(1, 50)),
    ]
    bad_values = [-50.0, 1e6, float("nan"), float("inf"), -float("inf"), float(W), -0.5]
    for i, (x, y, w, h) in enumerate(boxes):
        roi = RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h)
        yield f"add-box-{i}", (AddObject, "add_object"), AddObject.Request(box=roi)
        yield f"describe-box-{i}", (DescribeRegion, "describe_region"), DescribeRegion.Request(box=roi)
    for i, v in enumerate(bad_values):
        other = rng.uniform(0, min(W, H) - 1)
        for j, (px, py) in enumerate([(v, other), (other, v)]):
            yield (
                f"add-point-{i}-{j}",
                (AddObject, "add_object"),
                AddObject.Request(points_x=[10.0, px], points_y=[10.0, py]),
            )
            yield (
                f"describe-point-{i}-{j}",
                (DescribeRegion, "describe_region"),
                DescribeRegion.Request(use_point=True, point_x=px, point_y=py),
            )
    many = 2000
    yield (
        "add-2000-points",
        (AddObject, "add_object"),
        AddObject.Request(points_x=[5.0] * many, points_y=[5.0] * many),
    )
    yield (
        "add-bad-label",
        (AddObject, "add_object"),
        AddObject.Request(points_x=[5.0], points_y=[5.0], point_labels=[7]),
    )
    yield "add-nothing", (AddObject, "add_object"), AddObject.Request(label="x")
    yield "remove-empty", (RemoveObjects, "remove_objects"), RemoveObjects.Request()
    yield (
        "remove-too-many",
        (RemoveObjects, "remove_objects"),
        RemoveObjects.Request(object_ids=list(range(100000))),
    )
    yield "ask-source", (Ask, "ask"), Ask.Request(question="where?", source=rng.randrange(3, 256))
    yield "ask-long", (Ask, "ask"), Ask.Request(question="x" * 100_000)
    yield "segment-empty", (Segment, "segment"), Segment.Request(prompt="   ")
    bad_image = array_to_image(np.zeros((H, W, 3), np.uint8))
    bad_image.step = 7
    yield "segment-step", (Segment, "segment"), Segment.Request(prompt="a cup", image=bad_image)
    odd = array_to_image(np.zeros((H, W, 3), np.uint8))
    odd.encoding = "32FC1"
    yield "segment-encoding", (Segment, "segment"), Segment.Request(prompt="a cup", image=odd)
    big = Image(width=100000, height=100000, encoding="rgb8", step=300000)
    yield "segment-declared-huge", (Segment, "segment"), Segment.Request(prompt="a cup", image=big)
    yield "command-remove-empty", None, Command(action=Command.REMOVE, request_id="rm-empty")
    yield "command-remove-many", None, Command(action=Command.REMOVE, object_ids=list(range(100000)))
    yield "command-describe-unknown", None, Command(action=Command.DESCRIBE, object_ids=[4242])
    yield "command-action", None, Command(action=rng.randrange(5, 256), text="a cup")
    yield "command-long", None, Command(action=Command.ADD, text="y" * 10 * MB, request_id="z" * 100_000)
    yield "command-camera", None, Command(action=Command.ASK, text="hi", camera="c" * 5000)


def test_invalid_requests_are_never_accepted(system):
    planner, node, _ = system
    rng = random.Random(SEED)
    accepted, replies = [], {}
    for index, (name, service, request) in enumerate(invalid_cases(rng)):
        if service is None:
            request.request_id = request.request_id or f"bad-{index}"
            after = planner.count("reply")
            planner.publish("command_request", request, depth=100)
            reply = planner.wait_for(
                "reply", lambda r, rid=request.request_id[:200]: r.request_id.startswith(rid), after=after
            )
            assert reply is not None, f"{name}: no reply"
            assert len(reply.request_text) <= 300 and len(reply.request_id) <= 300, f"{name}: echoed whole"
            assert len(reply.message) < 2000, f"{name}: {len(reply.message)} characters of message"
            response = reply
        else:
            response = retried(lambda s=service, r=request: planner.call(*s, r, timeout=10))
        replies[name] = response.message
        if response.success:
            accepted.append((name, response.message))
        assert response.message, f"{name}: refused without a message"
    assert not accepted, f"invalid requests answered success=true: {accepted}"
    assert "(10000, 10000" not in replies["add-box-0"] or "160x120" in replies["add-box-0"]
    assert "160x120" in replies["add-box-0"] and "10050" in replies["add-box-0"], replies["add-box-0"]
    assert "NaN" in replies["add-point-2-0"] and "inf" in replies["describe-point-3-1"]
    assert "(-50, " in replies["add-point-0-0"] and "160x120" in replies["add-point-0-0"]
    assert "limit is 16 per prompt" in replies["add-2000-points"]
    assert "REMOVE needs object_ids" in replies["command-remove-empty"]
    assert "object_ids or set clear_all" in replies["remove-empty"]
    assert "limit is 32" in replies["command-remove-many"] and "limit is 32" in replies["remove-too-many"]
    assert "max_image_pixels" in replies["segment-declared-huge"]
    check_no_traceback(node)


def test_chat_limits(system):
    planner, node, _ = system
    assert planner.chat_client().wait_for_server(timeout_sec=30)
    long_history = Chat.Goal(prompt="hi", history_user=["u" * 1500], history_assistant=["a" * 1500], source=2)
    result, status, _ = retried(lambda: planner.chat(long_history))
    assert (
        not result.success and "3000 characters" in result.message and "max_history_length" in result.message
    )
    result, status, _ = retried(lambda: planner.chat(Chat.Goal(prompt="hi", source=9)))
    assert not result.success and "source 9" in result.message
    # A caller may not ask for more tokens than the node allows (max_new_tokens=16).
    greedy = Chat.Goal(prompt="Tell a story", source=2, max_new_tokens=4294967295)
    result, status, feedback = retried(lambda: planner.chat(greedy))
    assert result.success, result.message
    assert feedback and max(f.tokens for f in feedback) <= 16
    check_no_traceback(node)


# ----------------------------------------------------------------------------------- no silent loss


def test_a_burst_of_1000_commands_is_answered_in_full(system):
    planner, node, _ = system
    rng = random.Random(SEED + 1)
    n = 1000
    after = planner.count("reply")
    ids = [f"burst-{i}" for i in range(n)]
    # The publisher keeps all n + 1 (warm-up and burst) until acknowledged: with n, a warm-up not
    # yet acknowledged when the last one was written left the writer's history, and the node rightly
    # counted one command "lost in transport" (test_diagnostics_count_rejections_and_memory).
    depth = n + 1
    planner.publish(
        "command_request", Command(action=Command.ASK, text="warm-up", request_id="warm"), depth=depth
    )
    for request_id in ids:
        action = rng.choice([Command.ASK, Command.ADD, Command.DESCRIBE])
        msg = Command(action=action, request_id=request_id, text="the red circle", object_ids=[4242])
        planner.publish("command_request", msg, depth=depth)
    deadline = time.monotonic() + 120
    wanted = set(ids)
    while time.monotonic() < deadline:
        with planner._cond:
            got = {r.request_id for r in planner.messages["reply"][after:]}
        if wanted <= got:
            break
        time.sleep(0.2)
    missing = wanted - got
    assert not missing, f"{len(missing)} of {n} commands were never answered (e.g. {sorted(missing)[:5]})"
    replies = [r for r in planner.messages["reply"][after:] if r.request_id in wanted]
    rejected = [r for r in replies if not r.success]
    assert rejected and all(r.message for r in rejected)
    assert any("language_queue_size=4" in r.message for r in rejected), "the queue's own rejection"
    check_no_traceback(node)


def test_50_concurrent_service_calls_are_all_answered(system):
    planner, node, _ = system
    client = planner.client(Ask, "ask")  # answered before: its response path is matched
    futures = [client.call_async(Ask.Request(question=f"What is {i}?", source=2)) for i in range(50)]
    done = threading.Event()
    remaining = [len(futures)]
    lock = threading.Lock()

    def finished(_):
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                done.set()

    for future in futures:
        future.add_done_callback(finished)
    assert done.wait(120), f"{remaining[0]} of 50 service calls never answered"
    results = [f.result() for f in futures]
    assert sum(r.success for r in results) >= 1
    assert all(r.success or "language_queue_size=4" in r.message for r in results)
    assert any(not r.success for r in results), "50 calls at once cannot all fit a queue of 4"
    check_no_traceback(node)


def test_50_chat_goals_are_each_accepted_or_rejected(system):
    planner, node, _ = system
    client = planner.chat_client()
    assert client.wait_for_server(timeout_sec=30)

    def one_goal():
        future = client.send_goal_async(Chat.Goal(prompt="warm-up", source=2))
        deadline = time.monotonic() + 5
        while not future.done():
            if time.monotonic() > deadline:
                raise TimeoutError("no goal response")
            time.sleep(0.05)
        return future.result()

    retried(one_goal)
    time.sleep(2.0)  # the warm-up goal finishes: the queue is empty again
    sends = [client.send_goal_async(Chat.Goal(prompt=f"hello {i}", source=2)) for i in range(50)]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(f.done() for f in sends):
        time.sleep(0.1)
    unanswered = sum(not f.done() for f in sends)
    assert unanswered == 0, f"{unanswered} of 50 goals got no goal response"
    handles = [f.result() for f in sends]
    accepted = [h for h in handles if h.accepted]
    assert accepted and len(accepted) < 50, f"{len(accepted)} accepted"
    results = [h.get_result_async() for h in accepted]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(f.done() for f in results):
        time.sleep(0.1)
    assert all(f.done() for f in results), "an accepted goal never finished"
    assert all(f.result().result.message for f in results)
    check_no_traceback(node)


def test_diagnostics_count_rejections_and_memory(system):
    planner, _, _ = system
    model = planner.diagnostics("model")
    assert model is not None
    assert int(model["requests rejected"]) > 900, model
    assert model["requests lost in transport"] == "0", model
    assert float(model["resident memory (MiB)"]) > 50


def test_memory_returns_near_its_level_after_the_first_request(system):
    planner, node, state = system
    planner.call(RemoveObjects, "remove_objects", RemoveObjects.Request(clear_all=True))
    first = state["first_request_rss"]
    deadline = time.monotonic() + 30
    while True:
        rss = settled_rss(node.proc.pid, 2.0)
        if rss <= 1.10 * first or time.monotonic() > deadline:
            break
    assert rss <= 1.10 * first, (
        f"RSS {rss / MB:.0f} MB after the bursts vs {first / MB:.0f} MB after the first request"
    )


# ------------------------------------------------------------------------------ cleanup and decoding


def test_cleanup_gives_back_what_configure_took(system):
    """The node's own memory (anonymous: heap, arenas, tensors) after load and cleanup.

    RSS also counts pages that are not the node's to give back: code of libtorch first run by a
    language request (file-backed, ~19 MB on the tiny model) and the pages of a sender's Fast
    DDS shared-memory segment that a 10 MB command touched (~10 MB). Those are checked, with
    the whole RSS, by the open target below.
    """
    planner, node, state = system
    transition(planner, node, Transition.TRANSITION_DEACTIVATE, "inactive")
    transition(planner, node, Transition.TRANSITION_CLEANUP, "unconfigured")
    state["load_cleaned_rss"] = rss = settled_rss(node.proc.pid)
    anon = settled_rss(node.proc.pid, 1.0, "RssAnon")
    base = state["cleaned_anon"]
    assert anon <= base + 50 * MB, (
        f"anonymous memory {anon / MB:.0f} MB after load and cleanup vs {base / MB:.0f} MB after a first "
        f"cleanup (RSS {rss / MB:.0f} vs {state['cleaned_rss'] / MB:.0f} MB)"
    )


@pytest.mark.open_target  # issue 14: not met yet (see README "Under abuse"); run with -m ""
def test_cleanup_returns_rss_near_a_cleaned_node(system):
    _, _, state = system
    rss, base = state["load_cleaned_rss"], state["cleaned_rss"]
    assert rss <= base + 50 * MB, (
        f"RSS {rss / MB:.0f} MB after load and cleanup vs {base / MB:.0f} MB after a first cleanup"
    )


def wait_diagnostics(planner, name_part: str, words: str, timeout: float = 10.0):
    """The first /diagnostics status (from now) whose message contains ``words``, or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = planner.diagnostics(name_part, timeout=2.0)
        if status is not None and words in status["message"]:
            return status
    return None


def peak_during(pid: int, action, seconds: float) -> int:
    """The node's peak RSS growth while ``action`` runs and for ``seconds`` after it."""
    before = status_bytes(pid, "VmRSS")
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset its high-water mark
        hwm = True
    except OSError:
        hwm = False
    peak = before
    action()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, status_bytes(pid, "VmRSS"))
        time.sleep(0.005)
    if hwm:
        peak = max(peak, status_bytes(pid, "VmHWM"))
    return peak - before


def test_compressed_bombs_are_refused_without_decoding(system):
    planner, node, _ = system
    results = planner.set_parameters(image_transport="compressed")
    assert results[0].successful, results[0].reason
    transition(planner, node, Transition.TRANSITION_CONFIGURE, "inactive")
    transition(planner, node, Transition.TRANSITION_ACTIVATE, "active")
    time.sleep(1.0)
    bombs = {
        "png": (png_bomb(14000, 14000), "refused before decoding"),
        "png-under-pil-cap": (png_bomb(12000, 12000), "12000x12000"),
        "jpeg": (jpeg_declaring(65500, 65500), "refused before decoding"),
    }
    for name, (data, words) in bombs.items():
        msg = CompressedImage(format=name.split("-")[0])
        msg.data = byte_sequence(data)

        def send(msg=msg):
            planner.publish("image/compressed", msg, reliable=False)

        # Best effort, as cameras publish: a sample sent just after the publisher was discovered
        # can be lost before the node's reader matched it (then the node logged nothing), so a
        # bomb is sent again while the camera's bad-frame count has not moved. Every sending
        # counts for the growth.
        growth, status, bad_before = 0, None, int(planner.diagnostics("camera")["bad frames"])
        for _ in range(3):
            growth = max(growth, peak_during(node.proc.pid, send, 2.0))
            # One WARN per kind of problem and period: the diagnostics say what each frame was.
            status = wait_diagnostics(planner, "camera", words)
            if status is not None or int(planner.diagnostics("camera")["bad frames"]) > bad_before:
                break
        assert status is not None, f"{name}: not refused:\n{node.log()[-2000:]}"
        assert growth < 20 * MB, f"{name}: node RSS grew {growth / MB:.0f} MB"
    for data, words in [(b"Pf\n8 8\n-1.0\n" + b"\0" * 256, "32-bit float")]:
        planner.publish(
            "image/compressed", CompressedImage(format="pfm", data=byte_sequence(data)), reliable=False
        )
        assert wait_diagnostics(planner, "camera", words) is not None
    assert node.alive()
    check_no_traceback(node)
    assert math.isfinite(float(planner.diagnostics("model")["resident memory (MiB)"]))
