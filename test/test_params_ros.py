"""Parameters as `ros2 param` sees them (descriptors: type, range, static or dynamic), numbers of
the wrong kind converted instead of re-typing the parameter, and configure's cause-specific hints.

A real Sa2VANode in this process (no model is loaded: configure is never triggered here)."""

from __future__ import annotations

import contextlib
import os

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy comes from the venv made by scripts/setup.sh")
from rclpy.parameter import Parameter  # noqa: E402

from sa2va_ros.model import Sa2VA  # noqa: E402
from sa2va_ros.model.errors import Sa2VAError  # noqa: E402
from sa2va_ros.node import params as P  # noqa: E402
from sa2va_ros.node.load_errors import load_hint  # noqa: E402
from sa2va_ros.node.node import Sa2VANode  # noqa: E402

pytestmark = pytest.mark.ros


@contextlib.contextmanager
def node(*overrides: str):
    context = rclpy.Context()
    rclpy.init(context=context)
    args = ["--ros-args"] + [a for o in overrides for a in ("-p", o)]
    n = Sa2VANode("sa2va", context=context, cli_args=args)
    try:
        yield n
    finally:
        n.destroy_node()
        rclpy.shutdown(context=context)


def test_descriptors_give_types_ranges_and_when_a_parameter_may_change():
    with node() as n:
        rate = n.describe_parameter("overlay_rate")
        assert rate.type == Parameter.Type.DOUBLE.value and not rate.dynamic_typing
        assert (rate.floating_point_range[0].from_value, rate.floating_point_range[0].to_value) == (
            0.0,
            1000.0,
        )
        assert rate.additional_constraints.startswith("dynamic")
        depth = n.describe_parameter("image_qos_depth")
        assert (depth.integer_range[0].from_value, depth.integer_range[0].to_value) == (1, 1000)
        model = n.describe_parameter("model")
        assert "static: read at configure" in model.additional_constraints and not model.read_only
        for spec in P.PARAMETERS:
            d = n.describe_parameter(spec.name)
            assert d.description == spec.description and not d.dynamic_typing, spec.name


def test_an_integer_for_a_float_parameter_is_converted_not_retyped():
    with node() as n:
        result = n.set_parameters([Parameter("overlay_rate", Parameter.Type.INTEGER, 3)])[0]
        assert result.successful, result.reason
        value = n.get_parameter("overlay_rate")
        assert value.type_ == Parameter.Type.DOUBLE and value.value == 3.0
        refused = n.set_parameters([Parameter("overlay_rate", Parameter.Type.STRING, "fast")])[0]
        assert not refused.successful
        out = n.set_parameters([Parameter("overlay_rate", Parameter.Type.DOUBLE, 5000.0)])[0]
        assert not out.successful and "overlay_rate" in out.reason
    with node("overlay_rate:=3") as n:  # the same on the command line / from a launch file
        value = n.get_parameter("overlay_rate")
        assert value.type_ == Parameter.Type.DOUBLE and value.value == 3.0


def test_bad_start_up_values_reach_configure_instead_of_crashing():
    with node("presence_threshold:=1.5", "device:=7") as n:
        with pytest.raises(P.ParameterError, match="device must be a str"):
            n._read_params()
        assert n.get_parameter("presence_threshold").value == 1.5


def load_error(model: str, device: str = "cpu") -> BaseException:
    try:
        Sa2VA.from_pretrained(model, device=device)
    except Sa2VAError as exc:
        return exc
    raise AssertionError("loading was expected to fail")


def test_load_errors_get_the_hint_that_fits_their_cause(tmp_path):
    import torch

    if not torch.cuda.is_available():
        exc = load_error(str(tmp_path), device="cuda")
        assert "set device:=cpu (or auto), or install a CUDA build of torch" in load_hint(
            exc, str(tmp_path), "cuda", "auto"
        )
    missing = "/nonexistent/Sa2VA-1B"
    assert "point model at the folder of a local copy" in load_hint(
        load_error(missing), missing, "cpu", "auto"
    )
    (tmp_path / "empty").mkdir()
    tmp_path = tmp_path / "empty"  # a folder without config.json: an incomplete copy
    assert "is not a complete checkpoint" in load_hint(
        load_error(str(tmp_path)), str(tmp_path), "cpu", "auto"
    )
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # conftest: the tests never reach for the hub
    hub = "ByteDance/Sa2VA-Not-Cached"
    hint = load_hint(load_error(hub), hub, "cpu", "auto")
    assert "HF_HUB_OFFLINE is set" in hint and "-p model:=/path/to/Sa2VA-1B" in hint


def test_publishers_carry_no_default_qos_event_handlers(tmp_path):
    """Every publisher of the node (its start-up ones and a configured camera's) is created without
    rclpy's default incompatible-QoS / type handlers: each would be one more waitable the executor
    walks on every wake-up, between a frame's callback and the tracking thread (see Sa2VANode._output).
    """
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "peers"))
    from node_harness import write_model
    from rclpy.lifecycle import TransitionCallbackReturn

    model = write_model(tmp_path / "model", force_seg=True)
    with node(f"model:={model}", "device:=cpu") as n:
        builtin = {"/rosout", "/parameter_events"}
        assert n.trigger_configure() == TransitionCallbackReturn.SUCCESS
        ours = [p for p in n.publishers if p.topic_name not in builtin]
        topics = {p.topic_name for p in ours}
        assert {"/reply", "/diagnostics", "/masks", "/objects", "/overlay"} <= topics, topics
        assert all(p.event_handlers == [] for p in ours), [
            (p.topic_name, p.event_handlers) for p in ours if p.event_handlers
        ]
        # rclpy's own publishers keep theirs: the check above is not vacuous.
        assert any(p.event_handlers for p in n.publishers if p.topic_name in builtin)
        n.trigger_cleanup()
