"""The node's parts that need no model and no DDS: parameters (and the YAML / launch / RViz files
that document them), label images, the overlay, the bounded language worker, newest-frame slots
and the round-robin camera scheduler."""

from __future__ import annotations

import ast
import dataclasses
import os
import py_compile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("sensor_msgs.msg", reason="sensor_msgs comes from the venv made by scripts/setup.sh")

from sa2va_ros.node import params as P  # noqa: E402
from sa2va_ros.node.camera import Camera, FrameScheduler  # noqa: E402
from sa2va_ros.node.label_image import label_image  # noqa: E402
from sa2va_ros.node.language_worker import (  # noqa: E402
    CancelledError,
    DeadlineError,
    LanguageWorker,
    QueueFullError,
    WorkerStoppedError,
)
from sa2va_ros.node.messages import clean_text, mask_box, roi  # noqa: E402
from sa2va_ros.node.overlay import OverlayItem, color_of, render_overlay  # noqa: E402
from sa2va_ros.node.tasks import expression_prompt  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# --- parameters -----------------------------------------------------------------------------


def test_the_table_and_the_dataclass_agree():
    names = [f.name for f in dataclasses.fields(P.NodeParams)]
    assert names == [s.name for s in P.PARAMETERS]
    defaults = P.NodeParams.defaults()
    assert defaults.model == "ByteDance/Sa2VA-1B" and defaults.cameras == ("",)
    assert defaults.overlay_rate == 0.0, "the overlay is off by default"
    assert defaults.image_qos_reliability == "best_effort", "the sensor-data profile by default"
    for spec in P.PARAMETERS:
        assert len(spec.description) > 10, f"{spec.name} needs a description"


def test_values_are_typed_and_validated():
    p = P.from_values({"overlay_rate": 5, "cameras": ["front", "rear/left"], "device": "cuda:1"})
    assert p.overlay_rate == 5.0 and isinstance(p.overlay_rate, float)  # -p overlay_rate:=5 works
    assert p.cameras == ("front", "rear/left")
    bad = {
        "presence_threshold": 1.5,
        "device": "gpu",
        "dtype": "int8",
        "cameras": ["a", "a"],
        "image_topic": "/abs/topic",
        "image_transport": "theora",
        "language_queue_size": 0,
        "lost_after_frames": True,
        "model": " ",
        "max_new_tokens": "many",
    }
    for name, value in bad.items():
        with pytest.raises(P.ParameterError) as info:
            P.from_values({name: value})
        assert name in str(info.value)
    with pytest.raises(P.ParameterError, match="unknown parameter"):
        P.coerce("no_such_thing", 1)
    with pytest.raises(P.ParameterError, match="not a relative ROS namespace"):
        P.from_values({"cameras": ["/front"]})
    assert "cleanup" in P.static_change_refusal("model")
    assert P.NodeParams.defaults().replace(overlay_rate=2).overlay_rate == 2.0


def test_dynamic_parameters_are_the_safe_ones():
    dynamic = {s.name for s in P.PARAMETERS if s.dynamic}
    assert {"presence_threshold", "overlay_rate", "reground_period", "num_keyframes"} <= dynamic
    assert not {"model", "device", "dtype", "cameras", "image_topic", "image_qos_reliability"} & dynamic


def test_config_yaml_lists_and_documents_every_parameter_with_its_default():
    path = REPO / "config" / "sa2va.yaml"
    data = yaml.safe_load(path.read_text())
    values = data["/**"]["ros__parameters"]
    assert list(values) == [s.name for s in P.PARAMETERS]
    for spec in P.PARAMETERS:
        assert values[spec.name] == spec.default, spec.name
    lines = path.read_text().splitlines()
    for spec in P.PARAMETERS:
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{spec.name}:"))
        assert lines[index - 1].strip().startswith("#"), f"{spec.name} has no comment above it"
        tag = "[dynamic]" if spec.dynamic else "[static]"
        block = "\n".join(lines[max(0, index - 4) : index])
        assert tag in block, f"{spec.name} is not marked {tag}"


def test_launch_file_compiles_and_exposes_the_arguments(tmp_path):
    launch = REPO / "launch" / "sa2va.launch.py"
    py_compile.compile(str(launch), cfile=str(tmp_path / "launch.pyc"), doraise=True)
    tree = ast.parse(launch.read_text())
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert {"sa2va_node", "sa2va_demo_camera", "sa2va_ros"} <= strings
    functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions


def test_rviz_config_shows_overlay_masks_3d_markers_and_cloud():
    config = yaml.safe_load((REPO / "config" / "sa2va.rviz").read_text())
    displays = config["Visualization Manager"]["Displays"]
    topics = {d["Name"]: d["Topic"]["Value"] for d in displays if d["Class"] == "rviz_default_plugins/Image"}
    assert topics["Overlay"] == "/overlay" and topics["Masks"] == "/masks"
    by_class = {d["Class"]: d for d in displays}
    assert by_class["rviz_default_plugins/MarkerArray"]["Topic"]["Value"] == "/objects_markers"
    cloud = by_class["rviz_default_plugins/PointCloud2"]
    assert cloud["Topic"]["Value"] == "/objects_cloud" and cloud["Channel Name"] == "object_id"


# --- label image, messages, overlay -----------------------------------------------------------


def test_label_image_values_and_overlaps():
    a = np.zeros((4, 5), bool)
    a[0:2, 0:2] = True
    b = np.zeros((4, 5), bool)
    b[1:3, 1:3] = True
    empty = np.zeros((4, 5), bool)
    labels, values = label_image([a, None, b, empty], (4, 5))
    assert labels.dtype == np.uint8 and values == [1, 0, 3, 0]
    assert labels[0, 0] == 1 and labels[1, 1] == 3 and labels[3, 4] == 0  # later wins on overlap


def test_label_image_of_one_drawn_mask_equals_the_general_path():
    a = np.zeros((4, 5), bool)
    a[1:3, 2:4] = True
    labels, values = label_image([None, a, None], (4, 5))
    expected = np.zeros((4, 5), np.uint8)
    expected[a] = 2
    assert labels.dtype == np.uint8 and np.array_equal(labels, expected) and values == [0, 2, 0]
    labels, values = label_image([np.zeros((4, 5), bool)], (4, 5))
    assert not labels.any() and values == [0]
    with pytest.raises(ValueError, match="shape"):
        label_image([np.zeros((3, 5), bool)], (4, 5))


def test_label_image_goes_mono16_beyond_255_objects():
    masks = []
    for i in range(300):
        m = np.zeros((20, 20), bool)
        m.flat[i] = True
        masks.append(m)
    labels, values = label_image(masks, (20, 20))
    assert labels.dtype == np.uint16 and values == list(range(1, 301))
    assert labels.flat[299] == 300


def test_message_helpers():
    mask = np.zeros((6, 8), bool)
    mask[2:5, 3:7] = True
    assert mask_box(mask) == (3, 2, 7, 5)
    r = roi(mask_box(mask))
    assert (r.x_offset, r.y_offset, r.width, r.height) == (3, 2, 4, 3)
    assert roi(None).width == 0 and mask_box(np.zeros((2, 2), bool)) is None
    assert clean_text("<p> A red mug </p> [SEG] on the table.<|im_end|>") == "A red mug on the table."
    assert expression_prompt("Please segment the red mug.") == "<image>\nPlease segment the red mug."
    assert expression_prompt("the red mug on the left") == "<image>\nPlease segment the red mug on the left."
    assert expression_prompt("<image>\nFind it.") == "<image>\nFind it."


def test_overlay_colours_masks_only_and_captions():
    rgb = np.full((120, 160, 3), 100, np.uint8)
    mask = np.zeros((120, 160), bool)
    mask[30:50, 40:70] = True
    out = render_overlay(rgb, [OverlayItem(7, "red mug", mask, 0.9)], alpha=0.5)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    inside = out[40, 55].astype(int)
    expected = (np.array([100, 100, 100]) * 0.5 + np.array(color_of(7)) * 0.5).astype(int)
    assert np.abs(inside - expected).max() <= 1
    assert np.array_equal(out[70:, :], rgb[70:, :]), "far from the mask (and its caption) nothing changes"
    assert not np.array_equal(out[10:30, 40:120], rgb[10:30, 40:120]), "the caption sits above the mask"
    assert color_of(7) == color_of(7) and color_of(7) != color_of(8)
    lost = render_overlay(rgb, [OverlayItem(3, "cup", mask, 0.1, lost=True)])
    assert np.array_equal(lost[40, 55], rgb[40, 55]), "a lost object's mask is not drawn"


# --- language worker --------------------------------------------------------------------------


def test_worker_runs_in_order_and_rejects_beyond_its_bound():
    gate = threading.Event()
    setup_ran = threading.Event()
    worker = LanguageWorker(2, thread_setup=setup_ran.set)
    worker.start()
    try:
        order = []
        blocker = worker.submit(lambda job: gate.wait(5), "first")
        deadline = time.monotonic() + 5
        while not worker.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        jobs = [worker.submit(lambda job, i=i: order.append(i) or i, f"job{i}") for i in range(2)]
        with pytest.raises(QueueFullError, match="language_queue_size=2"):
            worker.submit(lambda job: None, "third")
        assert worker.rejected == 1 and worker.depth == 2
        background = worker.submit(lambda job: order.append("bg"), "re-ground", background=True)
        gate.set()
        for job in (blocker, *jobs, background):
            assert job.wait(5)
        assert order == [0, 1, "bg"], "requests go before background work"
        assert [j.result() for j in jobs] == [0, 1]
        assert setup_ran.is_set()
    finally:
        gate.set()
        worker.stop()


def test_worker_survives_errors_and_cancels():
    worker = LanguageWorker(4)
    worker.start()
    try:
        failing = worker.submit(lambda job: 1 / 0, "bad")
        assert failing.wait(5)
        with pytest.raises(ZeroDivisionError):
            failing.result()
        assert worker.submit(lambda job: "still alive", "next").wait(5)
        gate = threading.Event()
        started = threading.Event()

        def long(job):
            started.set()
            while not job.cancel_requested:
                gate.wait(0.01)
            return "stopped early"

        running = worker.submit(long, "long")
        queued = worker.submit(lambda job: "never", "queued")
        assert started.wait(5)
        queued.cancel()
        running.cancel()
        assert running.wait(5) and running.result() == "stopped early"
        assert queued.wait(5)
        with pytest.raises(CancelledError, match="cancelled before it started"):
            queued.result()
    finally:
        worker.stop()


def test_worker_stop_fails_waiting_jobs():
    worker = LanguageWorker(4)
    worker.start()
    gate = threading.Event()
    first = worker.submit(lambda job: gate.wait(5), "first")
    waiting = worker.submit(lambda job: "x", "waiting")
    time.sleep(0.05)
    stopper = threading.Thread(target=worker.stop, args=("the node was deactivated",))
    stopper.start()
    time.sleep(0.05)
    gate.set()
    stopper.join(5)
    assert first.wait(1) and waiting.wait(1)
    with pytest.raises(WorkerStoppedError, match="deactivated"):
        waiting.result()
    with pytest.raises(WorkerStoppedError, match="not active"):
        worker.submit(lambda job: None, "late")


def test_worker_deadlines_end_queued_and_running_jobs_on_time():
    worker = LanguageWorker(4)
    worker.start()
    try:
        stopped = threading.Event()

        def long(job):
            while not job.cancel_requested:
                time.sleep(0.01)
            stopped.set()
            return "late answer"

        ended = []
        running = worker.submit(long, "chat", timeout=0.3)
        queued = worker.submit(lambda job: "never ran", "ask", timeout=0.2)
        queued.add_done_callback(lambda job: ended.append((job.kind, time.monotonic())))
        t0 = time.monotonic()
        assert queued.wait(2) and running.wait(2)
        with pytest.raises(DeadlineError, match=r"ask timed out after 0.2 s .*request_timeout"):
            queued.result()
        with pytest.raises(DeadlineError, match="chat timed out"):
            running.result()  # the caller's answer is the deadline, not the late value
        assert stopped.wait(2), "the running job was asked to stop"
        assert ended and ended[0][0] == "ask" and ended[0][1] - t0 < 1.0
        assert worker.expired == 2 and worker.depth == 0
        assert worker.submit(lambda job: "free again", "next").wait(5)
    finally:
        worker.stop()


def test_worker_cancel_ends_a_queued_job_at_once_and_callbacks_run_once():
    worker = LanguageWorker(4)
    worker.start()
    gate = threading.Event()
    try:
        blocker = worker.submit(lambda job: gate.wait(5), "first")
        queued = worker.submit(lambda job: "never", "chat")
        calls = []
        queued.add_done_callback(calls.append)
        worker.cancel(queued)
        assert queued.done() and calls == [queued], "ended by the cancel, not when the worker gets to it"
        with pytest.raises(CancelledError):
            queued.result()
        gate.set()
        assert blocker.wait(5) and worker.depth == 0
        late = []
        queued.add_done_callback(late.append)  # added after the end: called at once
        assert late == [queued] and calls == [queued]
    finally:
        gate.set()
        worker.stop()


# --- cameras ----------------------------------------------------------------------------------


def test_newest_frame_slot_drops_and_counts_older_frames():
    camera = Camera("front", tracker=None)
    assert camera.prefix == "front/" and camera.topic("masks") == "front/masks"
    assert Camera("", tracker=None).topic("masks") == "masks"
    for i in range(5):
        camera.offer(i)
    assert camera.stats.received == 5 and camera.stats.dropped == 4
    msg, _ = camera.take()
    assert msg == 4 and camera.take() is None


def test_scheduler_is_fair_across_cameras():
    fast, slow = Camera("fast", None), Camera("slow", None)
    scheduler = FrameScheduler([fast, slow])
    served = []
    for _ in range(6):
        scheduler.offer(fast, "f")
        if len(served) == 2:
            scheduler.offer(slow, "s")
        camera = scheduler.next_ready(timeout=0.1)
        camera.take()
        served.append(camera.name)
    assert "slow" in served[2:4], f"the slow camera waited too long: {served}"
    t0 = time.monotonic()
    assert scheduler.next_ready(timeout=0.05) is None and time.monotonic() - t0 >= 0.04


def test_recent_frames_are_spaced_in_time():
    from std_msgs.msg import Header

    from sa2va_ros.node.camera import Frame

    camera = Camera("", None, recent_frames=3, recent_period=0.5)
    for i in range(10):
        header = Header()
        header.stamp.sec = i
        camera.remember(Frame(header=header, rgb=np.zeros((2, 2, 3), np.uint8), objects=[], received=i * 0.2))
    frames = camera.recent(3)
    assert [f.header.stamp.sec for f in frames] == [3, 6, 9], "spaced by >= 0.5 s, newest last"
    assert camera.latest.header.stamp.sec == 9


def test_overlapping_objects_keep_their_own_masks_in_messages():
    """found_objects / object_array: each object its exact mask, area and box; the label image is a
    view where the later object wins (here it covers the first one entirely)."""
    from types import SimpleNamespace

    from std_msgs.msg import Header

    from sa2va_ros.node.mask_codec import decode_mask, decode_png
    from sa2va_ros.node.messages import FoundObject, found_objects, masks_image, object_array

    big = np.zeros((48, 64), bool)
    big[10:30, 10:40] = True
    small = np.zeros((48, 64), bool)
    small[5:35, 5:45] = True  # covers `big` entirely
    header = Header(frame_id="cam")
    objects, labels = found_objects(
        [FoundObject(1, "a", "", big, 1.0, False), FoundObject(2, "b", "", small, 1.0, False)],
        (48, 64),
        header,
    )
    assert objects[0].mask_value == 0, "wholly covered: not in the label image"
    assert objects[0].area == int(big.sum()) and objects[0].bbox.width == 30
    assert np.array_equal(decode_mask(objects[0].mask), big) and np.array_equal(
        decode_mask(objects[1].mask), small
    )
    assert objects[0].mask.header.frame_id == "cam" and objects[0].mask.format.startswith("mono8; png")
    assert set(np.unique(decode_png(labels))) == {0, 2}
    tracked = [
        SimpleNamespace(id=i, prompt="", label="", score=1.0, state="tracking", mask=m, frames_since_seen=0)
        for i, m in ((1, big), (2, small))
    ]
    _, values = masks_image(tracked, (48, 64), header)
    plain = object_array(tracked, values, header, "cam")
    assert plain.objects[0].area == int(big.sum()) and len(plain.objects[0].mask.data) == 0
    full = object_array(tracked, values, header, "cam", with_masks=True)
    assert [
        np.array_equal(decode_mask(o.mask), m) for o, m in zip(full.objects, (big, small), strict=True)
    ] == [
        True,
        True,
    ]


def test_png_masks_are_lossless_for_speckled_and_many_valued_images():
    """The run-length PNG settings keep every pixel: a speckled 1-bit mask (what an uncertain model
    gives), an 8-bit label image with 200 values and a 16-bit one with values above 255."""
    from sa2va_ros.node.mask_codec import decode_mask, decode_png, mask_message, png_message

    rng = np.random.default_rng(7)
    speckle = rng.random((480, 640)) > 0.5
    assert np.array_equal(decode_mask(mask_message(speckle)), speckle)
    labels8 = rng.integers(0, 200, (97, 131), dtype=np.uint8)
    assert np.array_equal(decode_png(png_message(labels8)), labels8)
    labels16 = rng.integers(0, 1000, (50, 70), dtype=np.uint16)
    decoded = decode_png(png_message(labels16))
    assert decoded.dtype == np.uint16 and np.array_equal(decoded, labels16)
    assert png_message(labels16).format == "mono16; png compressed mono16"


def test_camera_holds_recent_frames_by_stamp():
    from std_msgs.msg import Header

    from sa2va_ros.node.camera import Frame, stamp_ns

    camera = Camera("c", tracker=None, history=3)
    for sec in range(1, 6):
        h = Header()
        h.stamp.sec = sec
        camera.remember(Frame(h, np.zeros((2, 2, 3), np.uint8), [], float(sec)))
    assert camera.frame_at(2 * 10**9) is None and camera.frame_at(5 * 10**9).header.stamp.sec == 5
    assert camera.held_stamps() == (3, 3 * 10**9, 5 * 10**9)
    assert stamp_ns(Header()) == 0


def test_default_max_image_pixels_fits_the_shipped_fast_dds_segment():
    """A raw rgb8 frame the node accepts by default must also be one the shipped profile carries."""
    import xml.etree.ElementTree as ET

    from sa2va_ros.node.node import FASTDDS_SEGMENT_BYTES

    root = ET.parse(REPO / "config" / "fastdds_large_data.xml").getroot()
    sizes = [int(e.text) for e in root.iter() if e.tag.endswith("segment_size")]
    assert sizes == [FASTDDS_SEGMENT_BYTES]
    assert P.SPECS["max_image_pixels"].default * 3 <= FASTDDS_SEGMENT_BYTES * 3 // 4


def test_a_refused_frame_stays_in_the_camera_diagnostics_until_a_frame_is_tracked():
    """One PNG bomb and then silence: the report must say why, not "no image in the last 0.5 s",
    and not only in a period that may have ended before the tracking thread refused it."""
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticStatus

    from sa2va_ros.node.diagnostics import Diagnostics, NodeSnapshot

    camera = Camera("", tracker=None)
    diagnostics = Diagnostics("sa2va")

    def report() -> tuple[int, str, dict[str, str]]:
        array = diagnostics.build(
            Time(), NodeSnapshot(state="active", model="m", device="cpu"), [camera], str
        )
        status = array.status[1]
        return status.level, status.message, {kv.key: kv.value for kv in status.values}

    camera.offer("frame")
    camera.stats.processed = 1
    assert report()[1] == "tracking"
    camera.offer("bomb")  # received, not yet refused: the report in between says nothing of it
    report()
    camera.stats.bad_frames += 1
    camera.stats.last_error = "compressed image declares too many pixels, refused before decoding"
    for _ in range(3):  # nothing arrives any more: the refusal stays the message
        level, message, values = report()
        assert (
            level == DiagnosticStatus.WARN
            and message.startswith("last frame refused")
            and "before decoding" in message
        )
        assert values["last bad frame"].endswith("refused before decoding")
    camera.offer("frame")
    camera.stats.processed += 1
    level, message, values = report()
    assert level == DiagnosticStatus.OK and message == "tracking", "a tracked frame clears it"
    assert "before decoding" in values["last bad frame"], "the value keeps the newest refusal"
    camera.stats.bad_frames += 1
    camera.stats.last_error = "unsupported image encoding '32FC1'"
    camera.offer("frame")
    camera.stats.processed += 1  # a bad frame among good ones shows in its own period
    assert "32FC1" in report()[1]
    camera.offer("frame")
    camera.stats.processed += 1
    assert report()[1] == "tracking"


def test_cpu_lists_are_parsed_checked_and_refused_with_a_reason():
    from sa2va_ros import cpus

    assert cpus.parse_cpu_list("") == frozenset()
    assert cpus.parse_cpu_list("0,2-4, 7") == frozenset({0, 2, 3, 4, 7})
    assert cpus.format_cpu_list({0, 2, 3, 4, 7}) == "0,2-4,7"
    for bad, words in [
        ("a", "not a CPU number"),
        ("3-1", "backwards"),
        ("0,,1", "empty item"),
        ("-1", "not a CPU"),
    ]:
        with pytest.raises(P.ParameterError, match=words):
            P.from_values({"tracking_cpus": bad})
    assert P.from_values({"language_cpus": "1"}).language_cpus == "1"
    assert P.from_values({"language_cpus": 1}).language_cpus == "1"  # -p language_cpus:=1 is an int in ROS
    if hasattr(os, "sched_getaffinity"):
        assert cpus.unavailable(frozenset(os.sched_getaffinity(0))) is None
        assert "not allowed to this process" in cpus.unavailable(frozenset({4095}))
