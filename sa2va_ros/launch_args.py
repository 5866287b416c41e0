"""What launch/sa2va.launch.py starts, decided by plain functions (no launch / launch_ros import).

The launch file only turns launch arguments into strings and :class:`LaunchPlan` into actions;
everything that can go wrong is decided here, where a unit test reaches it without launch_ros:

* a node parameter reaches the node from a launch argument only when that argument was given
  (its default is "", meaning "whatever the params file says"), so a params file is never
  overridden by an argument's default;
* a given value is converted to the parameter's own type (``overlay_rate:=3`` becomes 3.0, not
  an integer parameter that the node would then refuse);
* ``rviz:=true`` without rviz2 installed fails before any process starts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from sa2va_ros.node import params as P

#: Launch arguments that set a node parameter of the same name. Default "" = not given.
PARAMETER_ARGUMENTS: tuple[str, ...] = (
    "model",
    "device",
    "dtype",
    "image_transport",
    "image_qos_reliability",
    "overlay_rate",
    "depth_enabled",
    "autostart",
)

#: (name, default, description) of every launch argument, in the order `ros2 launch -s` shows.
ARGUMENTS: tuple[tuple[str, str, str], ...] = (
    *(
        (name, "", f"{P.SPECS[name].description} (unset: the params file's value)")
        for name in PARAMETER_ARGUMENTS
    ),
    ("params_file", "", "YAML file of node parameters (unset: share/sa2va_ros/config/sa2va.yaml)"),
    ("namespace", "", "namespace of the node and its topics"),
    ("node_name", "sa2va", "name of the node"),
    ("image_topic", "image", "camera image topic (remapped to the node's `image`)"),
    ("demo_camera", "false", "also start sa2va_demo_camera, a synthetic moving scene"),
    ("rviz", "false", "also start RViz with config/sa2va.rviz"),
    ("log_level", "info", "ROS log level of the node"),
)


class LaunchArgumentError(ValueError):
    """A launch argument cannot be used; raised before any process starts."""


@dataclass
class LaunchPlan:
    """Everything the launch file starts, with the node's parameters in launch_ros' form."""

    node_name: str
    namespace: str
    #: launch_ros ``parameters=``: the params file, then a dict of the given arguments (later wins).
    parameters: list[Any]
    remappings: list[tuple[str, str]]
    log_level: str
    demo_camera: dict[str, Any] | None
    rviz_config: str | None
    environment: dict[str, str] = field(default_factory=dict)


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off", ""):
        return False
    raise LaunchArgumentError(f"{name}:={value!r} must be true or false")


def parameter_value(name: str, text: str) -> Any:
    """A launch argument's string as the node parameter's type, validated like the node does."""
    spec = P.SPECS[name]
    value: Any = text
    if spec.type is not str:
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise LaunchArgumentError(f"{name}:={text!r} is not a {spec.type.__name__}: {exc}") from exc
    try:
        return P.coerce(name, value)
    except P.ParameterError as exc:
        raise LaunchArgumentError(str(exc)) from exc


def node_parameters(args: Mapping[str, str], default_params_file: str) -> list[Any]:
    """launch_ros ``parameters=`` for the node: the params file, then only the given arguments."""
    params_file = args.get("params_file", "") or default_params_file
    if not os.path.isfile(params_file):
        raise LaunchArgumentError(f"params_file:={params_file} does not exist")
    given = {name: parameter_value(name, args[name]) for name in PARAMETER_ARGUMENTS if args.get(name, "")}
    return [params_file, given] if given else [params_file]


def find_rviz(
    which: Callable[[str], str | None] = shutil.which,
    package_prefix: Callable[[str], str] | None = None,
) -> str | None:
    """The rviz2 executable (on PATH or in the ament index), or None when it is not installed."""
    found = which("rviz2")
    if found:
        return found
    if package_prefix is None:
        try:
            from ament_index_python.packages import get_package_prefix
        except ImportError:
            return None
        package_prefix = get_package_prefix
    try:
        candidate = os.path.join(package_prefix("rviz2"), "lib", "rviz2", "rviz2")
    except Exception:  # noqa: BLE001 - PackageNotFoundError and friends: not installed
        return None
    return candidate if os.access(candidate, os.X_OK) else None


def plan(
    args: Mapping[str, str], share: str, rviz_finder: Callable[[], str | None] = find_rviz
) -> LaunchPlan:
    """Check the arguments and decide what to start; LaunchArgumentError before anything starts."""
    unknown = set(args) - {a[0] for a in ARGUMENTS}
    if unknown:
        raise LaunchArgumentError(f"unknown launch arguments: {', '.join(sorted(unknown))}")
    value = {name: default for name, default, _ in ARGUMENTS} | dict(args)
    parameters = node_parameters(value, os.path.join(share, "config", "sa2va.yaml"))
    rviz_config = None
    if _flag("rviz", value["rviz"]):
        if rviz_finder() is None:
            raise LaunchArgumentError(
                "rviz:=true but rviz2 is not installed (not on PATH, not in the ament index; the pip "
                "venv has no RViz). Install it with your ROS distribution (apt install "
                "ros-$ROS_DISTRO-rviz2) or launch without rviz:=true; nothing was started."
            )
        rviz_config = os.path.join(share, "config", "sa2va.rviz")
    image_topic = value["image_topic"]
    given = parameters[1] if len(parameters) > 1 else {}
    compressed = given.get("image_transport", _file_value(parameters[0], "image_transport")) == "compressed"
    demo = None
    if _flag("demo_camera", value["demo_camera"]):
        depth = bool(given.get("depth_enabled", _file_value(parameters[0], "depth_enabled")))
        # The demo scene's registered depth + camera_info only when the node reads them.
        demo = {"topic": image_topic, "compressed": compressed, "depth": depth}
    environment = {}
    if not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        # Images over 512 KB sent best_effort need a larger Fast DDS shared-memory segment
        # (config/fastdds_large_data.xml explains); a profile the user exported wins.
        environment["FASTDDS_DEFAULT_PROFILES_FILE"] = os.path.join(share, "config", "fastdds_large_data.xml")
    return LaunchPlan(
        node_name=value["node_name"],
        namespace=value["namespace"],
        parameters=parameters,
        remappings=[("image", image_topic), ("image/compressed", f"{image_topic}/compressed")],
        log_level=value["log_level"],
        demo_camera=demo,
        rviz_config=rviz_config,
        environment=environment,
    )


def _file_value(path: str, name: str) -> Any:
    """A parameter's value in a params file (any node section), or None."""
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    for section in data.values():
        if isinstance(section, dict) and name in section.get("ros__parameters", {}):
            return section["ros__parameters"][name]
    return None


def ros_arguments(parameters: list[Any], tmp_dir: str) -> list[str]:
    """``--ros-args`` for ``parameters`` as launch_ros passes them (files in order, later wins).

    launch_ros writes a dict to a temporary params file for every node (``/**``); so does this,
    which lets a test hand the result to a real node and read what reached it.
    """
    out = ["--ros-args"]
    for i, entry in enumerate(parameters):
        if isinstance(entry, str):
            out += ["--params-file", entry]
            continue
        path = os.path.join(tmp_dir, f"launch_params_{i}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump({"/**": {"ros__parameters": dict(entry)}}, f)
        out += ["--params-file", path]
    return out
