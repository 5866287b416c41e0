"""Every parameter of the node, declared once as a table and read into one typed dataclass.

The table is the single source of truth: the node declares its ROS parameters from it, the
run-time parameter callback checks changes against it, config/sa2va.yaml documents it (a test
keeps the two equal) and the rest of the node only sees :class:`NodeParams`.

Two kinds of parameters:

* *static* ones shape what configure builds (the model, the cameras, their topics and QoS,
  threads). They may change while the node is unconfigured and take effect at the next
  configure; once configured they are refused with the reason.
* *dynamic* ones (thresholds, overlay rate, re-grounding, keyframes, limits) are read on every
  use, so they change at run time (``ros2 param set``), validated first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sa2va_ros.cpus import parse_cpu_list

#: Validation hook: returns an error message, or None when the value is acceptable.
Check = Callable[[Any], "str | None"]


def _choice(*options: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in options else f"must be one of {', '.join(options)}"

    return check


def _at_least(low: float) -> Check:
    def check(value: Any) -> str | None:
        return None if value >= low else f"must be >= {low}"

    check.bounds = (low, None)  # type: ignore[attr-defined]  (read by ParamSpec.bounds)
    return check


def _between(low: float, high: float, open_low: bool = False, open_high: bool = False) -> Check:
    def check(value: Any) -> str | None:
        ok_low = value > low if open_low else value >= low
        ok_high = value < high if open_high else value <= high
        if ok_low and ok_high:
            return None
        return f"must be in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"

    check.bounds = (low, high)  # type: ignore[attr-defined]  (read by ParamSpec.bounds)
    return check


def _device(value: Any) -> str | None:
    if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
        return None
    return "must be auto, cpu, cuda or cuda:N"


def _camera_names(value: Any) -> str | None:
    names = list(value)
    if not names:
        return 'must list at least one camera ("" = the node\'s own namespace)'
    if len(set(names)) != len(names):
        return "must not list a camera twice"
    for name in names:
        parts = [p for p in name.split("/") if p]
        if name.startswith("/") or any(not p.replace("_", "a").isalnum() or p[0].isdigit() for p in parts):
            return (
                f"camera '{name}' is not a relative ROS namespace (letters, digits and _ "
                "separated by /, not starting with a digit)"
            )
    return None


def _cpu_list(value: Any) -> str | None:
    try:
        parse_cpu_list(value)
    except ValueError as exc:
        return f"is not a CPU list: {exc}"
    return None


def _topic(value: Any) -> str | None:
    parts = value.split("/")
    if not value or any(not p or not p.replace("_", "a").isalnum() or p[0].isdigit() for p in parts):
        return "must be a relative topic name such as image or image_raw"
    return None


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: its name, default (which fixes its type), meaning and run-time rule."""

    name: str
    default: Any
    description: str
    #: True: may change at run time. False: read at configure only.
    dynamic: bool
    check: Check | None = None

    @property
    def type(self) -> type:
        return type(self.default)

    @property
    def bounds(self) -> tuple[float, float | None] | None:
        """(low, high or None) of a numeric parameter, for its ROS descriptor's range."""
        return getattr(self.check, "bounds", None)

    @property
    def constraints(self) -> str:
        """When the value may change, in words (ROS descriptors' additional_constraints)."""
        if self.dynamic:
            return "dynamic: may change at any time (ros2 param set), validated first"
        return (
            "static: read at configure; may change only while the node is unconfigured "
            "(refused while it is configured)"
        )


# fmt: off
PARAMETERS: tuple[ParamSpec, ...] = (
    # --- model (static) ---
    ParamSpec("model", "ByteDance/Sa2VA-1B",
              "Sa2VA checkpoint: a Hugging Face hub id or a local folder in the official layout", False,
              lambda v: None if v.strip() else "must name a hub id or a folder"),
    ParamSpec("device", "auto", "auto (a GPU when there is one), cpu, cuda or cuda:N", False, _device),
    ParamSpec("dtype", "auto", "auto (bfloat16 on a GPU, float32 on the CPU), float32, bfloat16 or float16",
              False, _choice("auto", "float32", "bfloat16", "float16")),
    ParamSpec("autostart", True,
              "sa2va_node configures and activates itself at start-up (false: wait for lifecycle commands)",
              False),
    # --- cameras and their input (static) ---
    ParamSpec("cameras", [""],
              "camera names; each camera's topics live under its name ('' = the node namespace), "
              "each has its own tracker and objects, all share one model", False, _camera_names),
    ParamSpec("image_topic", "image", "image topic, relative to each camera's namespace", False, _topic),
    ParamSpec("image_transport", "raw",
              "raw (sensor_msgs/Image on image_topic) or compressed "
              "(CompressedImage on <image_topic>/compressed)",
              False, _choice("raw", "compressed")),
    ParamSpec("image_qos_reliability", "best_effort",
              "best_effort (the sensor-data profile) or reliable; must suit the camera's publisher", False,
              _choice("best_effort", "reliable")),
    ParamSpec("image_qos_depth", 5, "image subscription queue depth (the sensor-data profile uses 5)", False,
              _between(1, 1000)),
    # --- threads (static) ---
    ParamSpec("language_queue_size", 8,
              "requests (commands, services, chat goals) that may wait for the language worker; more are "
              "rejected with a message", False, _between(1, 1000)),
    ParamSpec("tracking_threads", 0, "torch CPU threads of the tracking loop (0 = torch's default)", False,
              _between(0, 256)),
    ParamSpec("language_threads", 0,
              "torch CPU threads of the language worker (0 = half the CPU cores, so tracking keeps the rest)",
              False, _between(0, 256)),
    ParamSpec("language_nice", 19,
              "niceness added to the language worker thread, or with language_process to every thread of the "
              "language process (Linux): tracking gets the CPU first; 0 = same priority (faster answers, "
              "slower tracking)", False,
              _between(0, 19)),
    ParamSpec("language_sched_idle", True,
              "with language_process: run the language process under Linux's SCHED_IDLE policy instead of "
              "language_nice (it gets only CPU time nothing else wants, and its CPU counts as free for "
              "other wake-ups, which then do not preempt tracking); false = language_nice", False),
    ParamSpec("language_process", False,
              "run the language model in its own process (frames shared through shared memory): it then "
              "never holds the tracking loop's Python interpreter; SAM-2's weights are loaded twice", False),
    ParamSpec("tracking_cpus", "",
              "CPUs the tracking thread and its torch threads run on, in Linux list syntax (0, 2-3, 0,4-7); "
              "empty = any", False, _cpu_list),
    ParamSpec("language_cpus", "",
              "CPUs the language model runs on (the language worker thread, or with language_process every "
              "thread of the language process), Linux list syntax; empty = any. Disjoint from tracking_cpus, "
              "the language model never takes the tracking loop's CPU", False, _cpu_list),
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", False,
              _between(0.1, 3600.0)),
    # --- tracking (dynamic) ---
    ParamSpec("presence_threshold", 0.5,
              "an object counts as present when its SAM-2 presence probability reaches this", True,
              _between(0.0, 1.0, open_low=True, open_high=True)),
    ParamSpec("mask_threshold", 0.0, "mask logit threshold (0.0 = the official sigmoid > 0.5)", True,
              _between(-50.0, 50.0)),
    ParamSpec("lost_after_frames", 15, "absent frames in a row before an object is 'lost'", True,
              _between(1, 100000)),
    ParamSpec("hide_absent_masks", False, "draw nothing for an object whose presence is below the threshold",
              True),
    ParamSpec("num_keyframes", 5,
              "frames decoded with the language embedding after an object is grounded (applies to new "
              "objects); also the frames given to the model for SOURCE_RECENT_FRAMES", True,
              _between(1, 32)),
    ParamSpec("recent_frames_period", 0.5,
              "seconds between the recent frames kept for SOURCE_RECENT_FRAMES (spreads the keyframes over "
              "num_keyframes x this many seconds)", True, _between(0.0, 3600.0)),
    ParamSpec("frame_history", 30,
              "processed frames kept per camera for requests that name their frame by header stamp "
              "(add_object, segment, describe_region); memory: one decoded image each", True,
              _between(1, 1000)),
    ParamSpec("reground_lost", True, "ask the language model again for objects the tracker lost", True),
    ParamSpec("reground_period", 0.0,
              "seconds between periodic re-groundings of every language object (0 = off)", True,
              _at_least(0.0)),
    ParamSpec("reground_min_interval", 2.0,
              "minimum seconds between two re-groundings of one object (bounds language-model load)", True,
              _at_least(0.0)),
    # --- outputs (dynamic) ---
    ParamSpec("overlay_rate", 0.0,
              "overlay images per second per camera (0 = off; rendered only while someone subscribes)", True,
              _between(0.0, 1000.0)),
    ParamSpec("overlay_alpha", 0.5, "mask opacity in the overlay", True, _between(0.0, 1.0)),
    ParamSpec("object_masks", False,
              "every object on `objects` also carries its own mask (PNG): lossless where objects overlap, "
              "about 0.5 ms of encoding per object and frame at 640x480", True),
    # --- 3D from a registered depth image (RGB-D cameras) ---
    ParamSpec("depth_enabled", False,
              "subscribe to each camera's depth image and camera_info and publish 3D positions, markers "
              "and an object point cloud (false: colour only)", False),
    ParamSpec("depth_topic", "aligned_depth_to_color/image_raw",
              "depth image registered to the colour camera (16UC1 mm or 32FC1 m), relative to each "
              "camera's namespace", False, _topic),
    ParamSpec("camera_info_topic", "camera_info",
              "the colour camera's CameraInfo (intrinsics, distortion, frame_id of the 3D outputs), relative "
              "to each camera's namespace", False, _topic),
    ParamSpec("depth_slop", 0.02,
              "seconds a depth stamp may differ from the colour stamp and still pair (0 = exact stamps)",
              True, _between(0.0, 10.0)),
    ParamSpec("depth_timeout", 1.0,
              "seconds without a depth image before /diagnostics reports the depth stream stopped", True,
              _between(0.01, 3600.0)),
    ParamSpec("depth_min", 0.1, "nearer depth (metres) is ignored", True, _between(0.0, 1000.0)),
    ParamSpec("depth_max", 10.0, "farther depth (metres) is ignored", True,
              _between(0.0, 1000.0, open_low=True)),
    ParamSpec("depth_erode_px", 2, "colour pixels removed along each mask edge before reading depth", True,
              _between(0, 50)),
    ParamSpec("depth_min_points", 20, "fewer valid depth points on an object: no position (with the reason)",
              True, _between(1, 1000000)),
    ParamSpec("cloud_rate", 5.0,
              "object point clouds per second per camera (0 = off; built only while someone subscribes)",
              True, _between(0.0, 1000.0)),
    ParamSpec("cloud_points", 256, "points per object in the object point cloud", True, _between(1, 100000)),
    # --- requests (dynamic) ---
    ParamSpec("max_new_tokens", 512, "default answer length limit of ask / chat / describe", True,
              _between(1, 32768)),
    ParamSpec("max_command_length", 2000, "longest accepted command or question, in characters", True,
              _between(1, 1000000)),
    ParamSpec("max_history_length", 8000,
              "longest accepted chat history (all turns together, in characters); bounds the time a goal "
              "spends in preprocessing, which cannot be interrupted", True, _between(0, 1000000)),
    ParamSpec("max_prompt_points", 64, "most prompt points accepted in one add_object request", True,
              _between(1, 100000)),
    ParamSpec("max_object_ids", 256, "most object ids accepted in one REMOVE / DESCRIBE / remove_objects",
              True, _between(1, 1000000)),
    ParamSpec("max_image_pixels", 4194304,
              "larger input images are refused (width x height); the default (2048 x 2048, 12 MiB as "
              "rgb8) is what the 16 MiB shared-memory segment of config/fastdds_large_data.xml carries", True,
              _between(4, 1 << 31)),
    ParamSpec("request_timeout", 120.0, "seconds a service waits for the language worker", True,
              _between(0.1, 86400.0)),
)
# fmt: on

SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}
#: CPU-list parameters: text, but a single CPU given as a number is accepted as one.
_CPU_LISTS = ("tracking_cpus", "language_cpus")


@dataclass(frozen=True)
class NodeParams:
    """The node's settings, typed. Field names and defaults equal :data:`PARAMETERS`."""

    model: str
    device: str
    dtype: str
    autostart: bool
    cameras: tuple[str, ...]
    image_topic: str
    image_transport: str
    image_qos_reliability: str
    image_qos_depth: int
    language_queue_size: int
    tracking_threads: int
    language_threads: int
    language_nice: int
    language_sched_idle: bool
    language_process: bool
    tracking_cpus: str
    language_cpus: str
    diagnostics_period: float
    presence_threshold: float
    mask_threshold: float
    lost_after_frames: int
    hide_absent_masks: bool
    num_keyframes: int
    recent_frames_period: float
    frame_history: int
    reground_lost: bool
    reground_period: float
    reground_min_interval: float
    overlay_rate: float
    overlay_alpha: float
    object_masks: bool
    depth_enabled: bool
    depth_topic: str
    camera_info_topic: str
    depth_slop: float
    depth_timeout: float
    depth_min: float
    depth_max: float
    depth_erode_px: int
    depth_min_points: int
    cloud_rate: float
    cloud_points: int
    max_new_tokens: int
    max_command_length: int
    max_history_length: int
    max_prompt_points: int
    max_object_ids: int
    max_image_pixels: int
    request_timeout: float

    @classmethod
    def defaults(cls) -> NodeParams:
        return from_values({})

    def replace(self, **changes: Any) -> NodeParams:
        """A copy with ``changes`` applied, validated like any other values."""
        values = dataclasses.asdict(self)
        values.update(changes)
        return from_values(values)


class ParameterError(ValueError):
    """A parameter value is unacceptable; the message says which and why."""


def coerce(name: str, value: Any) -> Any:
    """``value`` converted to ``name``'s type, or ParameterError.

    ROS gives integers for ``-p rate:=5``: accept them for float parameters instead of making
    users type ``5.0``. Nothing else is converted silently.
    """
    spec = SPECS.get(name)
    if spec is None:
        raise ParameterError(f"unknown parameter '{name}'; known: {', '.join(SPECS)}")
    want = spec.type
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    elif name in _CPU_LISTS and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # ROS reads -p tracking_cpus:=1 (and YAML's 1) as an integer: one CPU
    elif want is list:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise ParameterError(f"{name} must be a list of strings, got {value!r}")
        if not all(isinstance(v, str) for v in value):
            raise ParameterError(f"{name} must be a list of strings, got {value!r}")
        value = tuple(value)
    if not isinstance(value, tuple if want is list else want) or (want is int and isinstance(value, bool)):
        raise ParameterError(f"{name} must be a {want.__name__}, got {type(value).__name__} {value!r}")
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise ParameterError(f"{name}={value!r} {problem}")
    return value


def from_values(values: Mapping[str, Any]) -> NodeParams:
    """Build NodeParams from a name -> value mapping (missing names take their default)."""
    unknown = set(values) - set(SPECS)
    if unknown:
        raise ParameterError(f"unknown parameters: {', '.join(sorted(unknown))}")
    fields: dict[str, Any] = {}
    for spec in PARAMETERS:
        fields[spec.name] = coerce(spec.name, values.get(spec.name, spec.default))
    return NodeParams(**fields)


def static_change_refusal(name: str) -> str:
    """Why a static parameter cannot change now (the node is configured)."""
    return (
        f"{name} is read when the node is configured and cannot change while it is configured: "
        "deactivate and clean up the node (ros2 lifecycle set <node> deactivate / cleanup), set it, "
        "then configure again"
    )
