"""The launch file's decisions (sa2va_ros.launch_args), checked without launch_ros: which
parameters reach a real node for no arguments, a params file, and a params file plus one
explicit argument; rviz:=true without rviz2 stops everything before it starts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from sa2va_ros.launch_args import ARGUMENTS, LaunchArgumentError, find_rviz, plan, ros_arguments

REPO = Path(__file__).resolve().parents[1]
SHARE = str(REPO)  # the source tree has the share layout: config/sa2va.yaml, config/sa2va.rviz
WATCHED = ("model", "device", "overlay_rate", "image_transport", "autostart")


def no_rviz() -> None:
    return None


def reached(parameters: list, tmp_path: Path) -> dict:
    """The values a real sa2va node declares when started with ``parameters`` (launch_ros' way)."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy comes from the venv made by scripts/setup.sh")
    from sa2va_ros.node.node import Sa2VANode

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = Sa2VANode("sa2va", context=context, cli_args=ros_arguments(parameters, str(tmp_path)))
        try:
            return {name: node.get_parameter(name).value for name in WATCHED}
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


@pytest.fixture()
def my_params(tmp_path: Path) -> Path:
    path = tmp_path / "my.yaml"
    path.write_text(
        yaml.safe_dump(
            {"/**": {"ros__parameters": {"model": "/data/Sa2VA-1B", "device": "cpu", "overlay_rate": 2.5}}}
        )
    )
    return path


@pytest.mark.ros
def test_no_arguments_give_the_packaged_params_file(tmp_path):
    chosen = plan({}, SHARE, rviz_finder=no_rviz)
    assert chosen.parameters == [str(REPO / "config" / "sa2va.yaml")]
    values = reached(chosen.parameters, tmp_path)
    assert values == {
        "model": "ByteDance/Sa2VA-1B",
        "device": "auto",
        "overlay_rate": 0.0,
        "image_transport": "raw",
        "autostart": True,
    }
    assert chosen.demo_camera is None and chosen.rviz_config is None


@pytest.mark.ros
def test_a_params_file_is_not_overridden_by_argument_defaults(tmp_path, my_params):
    chosen = plan({"params_file": str(my_params)}, SHARE, rviz_finder=no_rviz)
    assert chosen.parameters == [str(my_params)]
    values = reached(chosen.parameters, tmp_path)
    assert values["model"] == "/data/Sa2VA-1B" and values["device"] == "cpu"
    assert values["overlay_rate"] == 2.5 and values["image_transport"] == "raw"


@pytest.mark.ros
def test_an_explicit_argument_overrides_the_params_file_and_keeps_its_type(tmp_path, my_params):
    chosen = plan({"params_file": str(my_params), "overlay_rate": "3"}, SHARE, rviz_finder=no_rviz)
    assert chosen.parameters == [str(my_params), {"overlay_rate": 3.0}]
    values = reached(chosen.parameters, tmp_path)
    assert values["overlay_rate"] == 3.0 and isinstance(values["overlay_rate"], float)
    assert values["model"] == "/data/Sa2VA-1B" and values["device"] == "cpu", "the rest stays the file's"


def test_bad_arguments_stop_the_launch_with_the_reason(my_params):
    with pytest.raises(LaunchArgumentError, match="overlay_rate"):
        plan({"overlay_rate": "fast"}, SHARE, rviz_finder=no_rviz)
    with pytest.raises(LaunchArgumentError, match="device='gpu' must be auto, cpu, cuda or cuda:N"):
        plan({"device": "gpu"}, SHARE, rviz_finder=no_rviz)
    with pytest.raises(LaunchArgumentError, match="does not exist"):
        plan({"params_file": "/nonexistent.yaml"}, SHARE, rviz_finder=no_rviz)
    with pytest.raises(LaunchArgumentError, match="unknown launch arguments: modle"):
        plan({"modle": "x"}, SHARE, rviz_finder=no_rviz)


def test_rviz_without_rviz2_fails_before_anything_starts():
    with pytest.raises(LaunchArgumentError, match="rviz2 is not installed.*nothing was started"):
        plan({"rviz": "true", "demo_camera": "true"}, SHARE, rviz_finder=no_rviz)
    chosen = plan({"rviz": "true"}, SHARE, rviz_finder=lambda: "/opt/ros/kilted/bin/rviz2")
    assert chosen.rviz_config == str(REPO / "config" / "sa2va.rviz")


def test_find_rviz_looks_on_path_then_in_the_ament_index(tmp_path):
    assert find_rviz(which=lambda name: "/usr/bin/rviz2") == "/usr/bin/rviz2"

    def missing(package: str) -> str:
        raise LookupError(package)

    assert find_rviz(which=lambda name: None, package_prefix=missing) is None
    exe = tmp_path / "lib" / "rviz2" / "rviz2"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert find_rviz(which=lambda name: None, package_prefix=lambda p: str(tmp_path)) == str(exe)


def test_demo_camera_follows_the_transport_of_the_file_or_the_argument(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"image_transport": "compressed"}}}))
    chosen = plan({"params_file": str(path), "demo_camera": "true"}, SHARE, rviz_finder=no_rviz)
    assert chosen.demo_camera == {"topic": "image", "compressed": True, "depth": False}
    chosen = plan(
        {"params_file": str(path), "demo_camera": "true", "image_transport": "raw"},
        SHARE,
        rviz_finder=no_rviz,
    )
    assert chosen.demo_camera == {"topic": "image", "compressed": False, "depth": False}
    # The demo scene's depth follows the node's depth_enabled, from the argument or the file.
    chosen = plan({"demo_camera": "true", "depth_enabled": "true"}, SHARE, rviz_finder=no_rviz)
    assert chosen.demo_camera["depth"] is True
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"depth_enabled": True}}}))
    chosen = plan({"params_file": str(path), "demo_camera": "true"}, SHARE, rviz_finder=no_rviz)
    assert chosen.demo_camera["depth"] is True


def test_launch_file_uses_the_plan():
    launch = REPO / "launch" / "sa2va.launch.py"
    tree = ast.parse(launch.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"ARGUMENTS", "plan", "OpaqueFunction"} <= imported
    names = {a[0] for a in ARGUMENTS}
    assert {"model", "device", "dtype", "namespace", "image_topic", "params_file", "rviz"} <= names
