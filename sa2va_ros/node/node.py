"""The sa2va lifecycle node: ROS wiring around the model core, the tracker and two threads.

* configure: read the parameters, load the model (slow: logged), one tracker per camera,
  output publishers. A model that cannot be loaded fails the transition with the reason and
  how to fix it; the node stays up, unconfigured. No random-weight fallback, ever.
* activate: image subscriptions, the frame intake thread, the tracking loop thread, the
  language worker thread.
* deactivate: the reverse; cleanup frees the model and the GPU.

Threads: the frame intake (frame_intake.py) takes camera input from its subscriptions, not
the executor, and stores the newest frame (camera.py); the tracking loop (tracking.py) runs every
new frame; the language worker (language_worker.py) runs every
command, service and chat goal through a bounded queue. Services, the action and commands
exist from start-up in their own callback groups of a multi-threaded executor (executor.py:
rclpy's own busy-loops while the tracker computes), so a request
made while the model loads or the node is inactive gets a clear answer instead of silence.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import threading
import time
import traceback
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.action import ActionServer
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from sa2va_msgs.action import Chat
from sa2va_msgs.msg import Command, ObjectArray, Reply
from sa2va_msgs.srv import AddObject, Ask, DescribeRegion, RemoveObjects, Segment
from sa2va_ros import cpus
from sa2va_ros.model.errors import InputError, Sa2VAError

from . import depth as D
from . import detections, entities
from . import params as P
from .camera import Camera, Frame, FrameScheduler
from .diagnostics import Diagnostics, NodeSnapshot
from .frame_intake import FrameIntake, TakenByFrameIntake
from .image_codec import ImageError, array_to_image, message_to_rgb8
from .language_worker import LanguageWorker, QueueFullError, WorkerStoppedError
from .load_errors import load_hint
from .memory import Trimmer, rss_bytes
from .messages import is_drawn, masks_image, object_array
from .overlay import OverlayItem, render_overlay
from .requests import RequestHandlers, Serving
from .tasks import LanguageTasks
from .throttle import WarnThrottle
from .tracking import TrackingLoop

try:  # Iron and later
    from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks

OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
#: Command topics and replies: deep, so that a burst from a planner reaches the node's own bounded
#: queue, which answers every request it cannot take with a rejection; at rclpy's default depth
#: of 10 a burst of 1,000 commands lost 977 in DDS without a word.
REQUEST_DEPTH = 1000
#: Services and the action's services keep every request (KEEP_ALL: reliable flow control makes
#: a client wait instead of losing its request); 50 concurrent calls at depth 10 lost 39.
SERVICE_DEPTH = 100
REQUEST_QOS = QoSProfile(
    depth=REQUEST_DEPTH,
    reliability=ReliabilityPolicy.RELIABLE,
    history=HistoryPolicy.KEEP_LAST,
    durability=DurabilityPolicy.VOLATILE,
)
SERVICE_QOS = QoSProfile(
    depth=SERVICE_DEPTH,
    reliability=ReliabilityPolicy.RELIABLE,
    history=HistoryPolicy.KEEP_ALL,
    durability=DurabilityPolicy.VOLATILE,
)
#: segment_size of config/fastdds_large_data.xml (a unit test keeps the two equal).
FASTDDS_SEGMENT_BYTES = 16 * 2**20
#: Tracker settings that follow node parameters (TrackerConfig field -> parameter).
TRACKER_FIELDS = {
    "presence_threshold": "presence_threshold",
    "mask_threshold": "mask_threshold",
    "lost_after_frames": "lost_after_frames",
    "hide_absent_masks": "hide_absent_masks",
    "num_keyframes": "num_keyframes",
}


def _seconds(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


class Sa2VANode(LifecycleNode):
    """Language-grounded segmentation, tracking and chat on one or more camera streams."""

    def __init__(self, node_name: str = "sa2va", **kwargs: Any) -> None:
        # LifecycleNode's own __init__ puts the lifecycle services in the default (mutually
        # exclusive) group, where GetState would wait for a model that takes minutes to load.
        Node.__init__(self, node_name, **kwargs)
        try:
            LifecycleNodeMixin.__init__(
                self, enable_communication_interface=True, callback_group=ReentrantCallbackGroup()
            )
        except TypeError:  # an rclpy without the callback_group argument: GetState waits for configure
            LifecycleNodeMixin.__init__(self, enable_communication_interface=True)
        self._guard_change_state()
        self._declare_parameters()
        # After declaring: a bad value given at start-up is reported by configure, not a crash.
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if hasattr(self, "add_pre_set_parameters_callback"):  # Iron and later; Humble refuses ints
            self.add_pre_set_parameters_callback(self._numbers_as_declared)

        self._phase = "unconfigured"  # unconfigured / loading / inactive / active
        self._load_error = ""
        self._params: P.NodeParams | None = None
        self._model: Any = None
        self._tasks: LanguageTasks | None = None
        self._cameras: list[Camera] = []
        self._scheduler: FrameScheduler | None = None
        self._tracking: TrackingLoop | None = None
        self._intake: FrameIntake | None = None
        self._worker: LanguageWorker | None = None
        self._command_subs: list = []
        self._warn_throttled = WarnThrottle(self.get_logger())
        #: Requests the middleware reported lost before they reached a callback (message_lost).
        self._requests_lost = 0
        self._trim = Trimmer()  # when the language worker goes idle, and on cleanup
        self._periodic_trim = Trimmer(min_interval=10.0)  # tracking-only load
        self._transition_lock = threading.Lock()

        self._request_group = ReentrantCallbackGroup()
        # Camera input (colour, depth, camera_info) is taken by a FrameIntake thread, never by
        # the executor.
        self._camera_group = TakenByFrameIntake()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._requests = RequestHandlers(
            self.get_fully_qualified_name(),
            self.get_logger(),
            self._warn_throttled,
            self._output(Reply, "reply", REQUEST_QOS, lifecycle=False),
            params=lambda: self._params,
            state=lambda: (self._phase, self._load_error),
            executor=lambda: self.executor,
        )
        requests = self._requests
        self._command_request_sub(String, "command", lambda msg: requests.on_command("", msg))
        self._command_request_sub(Command, "command_request", requests.on_command_request)
        for srv_type, name, callback in (
            (Segment, "segment", requests.segment),
            (Ask, "ask", requests.ask),
            (DescribeRegion, "describe_region", requests.describe_region),
            (AddObject, "add_object", requests.add_object),
            (RemoveObjects, "remove_objects", requests.remove_objects),
        ):
            self.create_service(
                srv_type, name, callback, qos_profile=SERVICE_QOS, callback_group=self._request_group
            )
        self._chat_server = ActionServer(
            self,
            Chat,
            "chat",
            execute_callback=requests.execute_chat,
            goal_callback=requests.on_chat_goal,
            cancel_callback=requests.on_chat_cancel,
            callback_group=self._request_group,
            goal_service_qos_profile=SERVICE_QOS,
            result_service_qos_profile=SERVICE_QOS,
            cancel_service_qos_profile=SERVICE_QOS,
        )
        self._diagnostics = Diagnostics(self.get_name())
        self._diagnostics_pub = self._output(DiagnosticArray, "/diagnostics", 10, lifecycle=False)
        self._diagnostics_timer = self.create_timer(
            self._startup_value("diagnostics_period"),
            self._publish_diagnostics,
            callback_group=self._timer_group,
        )

    def _guard_change_state(self) -> None:
        """Answer a transition the current state has not got with success=false, never a crash.

        Jazzy's rclpy raises RCLError out of the change_state service callback for such a request
        (e.g. `activate` sent twice, or by a retrying client), and the executor re-raises it:
        the node died (seen in the reliability suite under Jazzy). Kilted answers false itself.
        """
        for service in self.services:
            if not service.srv_name.endswith("/change_state"):
                continue
            inner = service.callback

            def guarded(request: Any, response: Any, inner: Any = inner) -> Any:
                try:
                    return inner(request, response)
                except Exception as exc:  # noqa: BLE001 - a caller's bad transition must not kill the node
                    self._warn_throttled(
                        "lifecycle-transition",
                        f"lifecycle transition {request.transition.id} '{request.transition.label}' refused "
                        f"in state {self._phase}: {exc}",
                    )
                    response.success = False
                    return response

            service.callback = guarded

    def _command_request_sub(self, msg_type: type, topic: str, callback) -> Any:
        """A request subscription whose middleware losses are counted (the only ones DDS reports)."""
        events = SubscriptionEventCallbacks(message_lost=self._on_request_lost)
        return self.create_subscription(
            msg_type, topic, callback, REQUEST_QOS, callback_group=self._request_group, event_callbacks=events
        )

    def _on_request_lost(self, info: Any) -> None:
        self._requests_lost += int(getattr(info, "total_count_change", 1))
        self._warn_throttled(
            "requests-lost",
            f"{self._requests_lost} command(s) were lost in transport before reaching the node",
        )

    # ------------------------------------------------------------------ parameters

    def _declare_parameters(self) -> None:
        """Declare every parameter with its type, range and when it may change.

        A number of the wrong kind given at start-up (``-p overlay_rate:=3``, launch files) is
        converted to the declared type before declaring; any other wrong type keeps the
        parameter dynamically typed so that configure reports it instead of a crash here.
        """
        # rclpy keeps the command-line / params-file values here (Humble to Kilted).
        overrides = getattr(self, "_parameter_overrides", {})
        for spec in P.PARAMETERS:
            override = overrides.get(spec.name)
            fits = True
            if override is not None:
                value = override.value
                if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
                    overrides[spec.name] = Parameter(spec.name, Parameter.Type.DOUBLE, float(value))
                elif spec.type is list:
                    fits = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
                else:
                    fits = isinstance(value, spec.type) and not (spec.type is int and isinstance(value, bool))
            # Out of range: rclpy would raise while declaring. Declared without the range, the
            # value is refused by configure with the reason (and the node keeps running).
            valid = fits and _valid(spec.name, overrides[spec.name].value if override is not None else None)
            self.declare_parameter(
                spec.name, spec.default, _descriptor(spec, dynamic_typing=not fits, ranged=valid)
            )

    def _numbers_as_declared(self, parameters: list[Parameter]) -> list[Parameter]:
        """`ros2 param set /sa2va overlay_rate 3`: an integer for a float parameter becomes 3.0."""
        out = []
        for parameter in parameters:
            spec = P.SPECS.get(parameter.name)
            if spec is not None and spec.type is float and parameter.type_ == Parameter.Type.INTEGER:
                parameter = Parameter(parameter.name, Parameter.Type.DOUBLE, float(parameter.value))
            out.append(parameter)
        return out

    def _startup_value(self, name: str) -> Any:
        """A parameter needed before configure; its default (with a warning) when invalid."""
        try:
            return P.coerce(name, self.get_parameter(name).value)
        except P.ParameterError as exc:
            self.get_logger().warning(f"{exc}; using {P.SPECS[name].default}")
            return P.SPECS[name].default

    @property
    def autostart(self) -> bool:
        return bool(self._startup_value("autostart"))

    @property
    def executor_threads(self) -> int:
        """Pool threads for what may run at once: a lifecycle transition (configure loads the
        model), the timer and short request callbacks. Camera input never reaches the executor
        (frame_intake.py) and requests waiting for the language worker hold none (they are
        coroutines), so neither the cameras nor the queue size play a part.
        """
        return 4

    def _read_params(self) -> P.NodeParams:
        return P.from_values({spec.name: self.get_parameter(spec.name).value for spec in P.PARAMETERS})

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        changes: dict[str, Any] = {}
        for parameter in parameters:
            spec = P.SPECS.get(parameter.name)
            if spec is None:
                continue  # use_sim_time and other rclpy parameters
            if not spec.dynamic and self._phase != "unconfigured":
                return SetParametersResult(successful=False, reason=P.static_change_refusal(spec.name))
            try:
                changes[spec.name] = P.coerce(spec.name, parameter.value)
            except P.ParameterError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        if self._params is not None and changes:
            dynamic = {k: v for k, v in changes.items() if P.SPECS[k].dynamic}
            if dynamic:
                self._params = dataclasses.replace(self._params, **dynamic)
                self._apply_dynamic_params()
        return SetParametersResult(successful=True)

    def _tracker_config(self, params: P.NodeParams, base: Any = None) -> Any:
        from sa2va_ros.model import TrackerConfig

        values = {field: getattr(params, name) for field, name in TRACKER_FIELDS.items()}
        values["reground_period_s"] = params.reground_period or None
        return dataclasses.replace(base, **values) if base is not None else TrackerConfig(**values)

    def _apply_dynamic_params(self) -> None:
        params = self._params
        for camera in self._cameras:
            # TrackerConfig is frozen and read once per step(): swapping it is atomic.
            camera.tracker.config = self._tracker_config(params, camera.tracker.config)
            camera.resize_recent(params.num_keyframes)
            camera.recent_period = params.recent_frames_period
            camera.history_size = params.frame_history

    # ------------------------------------------------------------------ lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        log = self.get_logger()
        self._phase = "loading"
        try:
            params = self._read_params()
        except P.ParameterError as exc:
            return self._configure_failed(f"invalid parameter: {exc}")
        for name in ("tracking_cpus", "language_cpus"):
            problem = cpus.unavailable(cpus.parse_cpu_list(getattr(params, name)))
            if problem:
                return self._configure_failed(f"{name}={getattr(params, name)!r}: {problem}")
        log.info(f"loading model '{params.model}' (device {params.device}, dtype {params.dtype}) ...")
        t0 = time.monotonic()
        try:
            model = self._load_model(params)
        except Exception as exc:  # noqa: BLE001 - any loading failure must leave the node up
            if not isinstance(exc, Sa2VAError):
                log.error(traceback.format_exc())
            what = str(exc) if isinstance(exc, Sa2VAError) else f"{type(exc).__name__}: {exc}"
            hint = load_hint(exc, params.model, params.device, params.dtype)
            return self._configure_failed(
                f"cannot load model '{params.model}': {what} The node stays unconfigured. To fix: {hint} "
                f"Then configure again (ros2 lifecycle set {self.get_fully_qualified_name()} configure)."
            )
        try:
            self._params = params
            self._model = model
            self._tasks = LanguageTasks(model, lambda: self._params.max_new_tokens)
            self._cameras = []
            for name in params.cameras:
                camera = Camera(
                    name,
                    model.new_tracker(self._tracker_config(params)),
                    params.num_keyframes,
                    params.recent_frames_period,
                    params.frame_history,
                )
                camera.masks_pub = self._output(Image, camera.topic("masks"), OUTPUT_QOS)
                camera.objects_pub = self._output(ObjectArray, camera.topic("objects"), OUTPUT_QOS)
                camera.overlay_pub = self._output(Image, camera.topic("overlay"), OUTPUT_QOS)
                if params.depth_enabled:
                    camera.depth = D.CameraDepth(params.depth_slop)
                    camera.depth.markers_pub = self._output(
                        MarkerArray, camera.topic("objects_markers"), OUTPUT_QOS
                    )
                    camera.depth.cloud_pub = self._output(
                        PointCloud2, camera.topic("objects_cloud"), OUTPUT_QOS
                    )
                if detections.AVAILABLE:
                    camera.detections_pub = self._output(
                        detections.Detection2DArray, camera.topic("detections"), OUTPUT_QOS
                    )
                if camera.prefix:  # `command` itself exists from start-up (first camera)
                    self._command_subs.append(
                        self._command_request_sub(
                            String,
                            camera.topic("command"),
                            lambda msg, c=camera.name: self._requests.on_command(c, msg),
                        )
                    )
                self._cameras.append(camera)
        except Exception as exc:  # noqa: BLE001
            log.error(traceback.format_exc())
            self._release()
            return self._configure_failed(f"configure failed after loading the model: {exc}")
        if abs(self._diagnostics_timer.timer_period_ns * 1e-9 - params.diagnostics_period) > 1e-6:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = self.create_timer(
                params.diagnostics_period, self._publish_diagnostics, callback_group=self._timer_group
            )
        self._warn_transport_limit(params)
        self._load_error = ""
        self._phase = "inactive"
        # The model brings millions of long-lived Python objects (modules, tensors' wrappers,
        # tokenizer tables). Every full cyclic-GC pass walked them all: 110-220 ms stalls of
        # the tracking thread, measured in bench/node_latency.py. Frozen, the GC walks only what
        # was made after loading; _release() unfreezes them so cleanup can free the model.
        gc.collect()
        gc.freeze()
        names = ", ".join(repr(c.name) for c in self._cameras)
        where = (
            f"; language process {model.pid}: {model.priority}; {model.allocator}"
            if params.language_process
            else ""
        )
        log.info(f"model loaded in {time.monotonic() - t0:.1f} s; cameras: {names}{where}")
        if params.language_process and params.language_sched_idle and model.priority != "SCHED_IDLE":
            log.warning(
                f"language_sched_idle: the language process runs with {model.priority}; tracking may "
                "slow down while it generates"
            )
        return TransitionCallbackReturn.SUCCESS

    @staticmethod
    def _load_model(params: P.NodeParams) -> Any:
        """Sa2VA in this process, or with its language half in a child process (language_process)."""
        if params.language_process:
            from sa2va_ros.model.language_process import RemoteSa2VA

            return RemoteSa2VA(
                params.model,
                device=params.device,
                dtype=params.dtype,
                threads=params.language_threads or max(1, (os.cpu_count() or 2) // 2),
                nice=params.language_nice,
                idle=params.language_sched_idle,
                cpus=params.language_cpus,
            )
        from sa2va_ros.model import Sa2VA

        return Sa2VA.from_pretrained(params.model, device=params.device, dtype=params.dtype)

    def _configure_failed(self, message: str) -> TransitionCallbackReturn:
        self.get_logger().error(message)
        self._load_error = message
        self._phase = "unconfigured"
        return TransitionCallbackReturn.FAILURE

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        params = self._params
        result = super().on_activate(state)  # activates the lifecycle publishers
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        self._scheduler = FrameScheduler(self._cameras)
        for camera in self._cameras:
            self._subscribe(camera, params)
        self._worker = LanguageWorker(
            params.language_queue_size, thread_setup=self._language_thread_setup, on_idle=self._trim
        )
        self._worker.start()
        self._tracking = TrackingLoop(
            self._scheduler, self._process_frame, self._on_tracking_error, self._tracking_thread_setup
        )
        self._tracking.start()
        self._intake = FrameIntake(self.context, self._intake_sources(), self._on_intake_error)
        self._intake.start()
        self._requests.serve(Serving(self._cameras, self._tasks, self._worker, self._model.sam2))
        self._phase = "active"
        topics = ", ".join(c.subscription.topic_name for c in self._cameras)
        self.get_logger().info(f"active: tracking {topics}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_io("the node was deactivated")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("cleaned up: model released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.shutdown()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.shutdown()
        return TransitionCallbackReturn.SUCCESS

    def shutdown(self) -> None:
        """Stop threads and free the model from any state (also used when the process exits)."""
        self._stop_io("the node is shutting down")
        self._release()

    def bring_up(self) -> bool:
        """configure + activate, for users who do not manage lifecycles (sa2va_node's autostart)."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            self.get_logger().error(
                "autostart: configure failed (see above); the node stays up, unconfigured. Fix the "
                "parameter, then: ros2 lifecycle set " + self.get_fully_qualified_name() + " configure"
            )
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS

    def _stop_io(self, reason: str) -> None:
        self._requests.serve(None)
        if self._phase == "active":
            self._phase = "inactive"
        if self._intake is not None:
            self._intake.stop()  # before its subscriptions go
            self._intake = None
        for camera in self._cameras:
            if camera.subscription is not None:
                entities.destroy(camera.subscription, self.destroy_subscription)
                camera.subscription = None
            if camera.depth is not None:
                for sub in (camera.depth.depth_sub, camera.depth.info_sub):
                    if sub is not None:
                        entities.destroy(sub, self.destroy_subscription)
                camera.depth.depth_sub = camera.depth.info_sub = None
        if self._tracking is not None:
            self._tracking.stop()
            self._tracking = None
        if self._worker is not None:
            self._worker.stop(reason)

    def _release(self) -> None:
        for camera in self._cameras:
            extra = (camera.depth.markers_pub, camera.depth.cloud_pub) if camera.depth is not None else ()
            for pub in (
                camera.masks_pub,
                camera.objects_pub,
                camera.overlay_pub,
                camera.detections_pub,
                *extra,
            ):
                if pub is not None:
                    entities.destroy(pub, self.destroy_lifecycle_publisher)
        for sub in self._command_subs:
            entities.destroy(sub, self.destroy_subscription)
        self._command_subs = []
        self._cameras = []
        self._tasks = None
        device = str(getattr(getattr(self._model, "sam2", None), "device", "cpu"))
        close = getattr(self._model, "close", None)  # RemoteSa2VA: stop the language process
        if close is not None:
            close()
        self._model = None
        self._params = None  # the next configure reads the parameters again
        self._phase = "unconfigured"
        self._tracking = None
        self._intake = None
        self._worker = None
        self._scheduler = None
        gc.unfreeze()  # frozen at configure; the released model must become collectable again
        gc.collect()
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        self._trim(force=True)  # the model's freed weights go back to the system, not to glibc

    # ------------------------------------------------------------------ threads

    def _tracking_thread_setup(self) -> None:
        # Before the first torch call on this thread: the torch threads it starts inherit the CPUs.
        cpus.pin_this_thread(cpus.parse_cpu_list(self._params.tracking_cpus))
        if self._params.tracking_threads > 0:
            import torch

            torch.set_num_threads(self._params.tracking_threads)

    def _language_thread_setup(self) -> None:
        import torch

        params = self._params
        if not params.language_process:  # else the language process is pinned, not this relay thread
            cpus.pin_this_thread(cpus.parse_cpu_list(params.language_cpus))
        # Per thread with torch's OpenMP backend: the tracking thread keeps its own setting.
        torch.set_num_threads(params.language_threads or max(1, (os.cpu_count() or 2) // 2))
        # With language_process the child is niced and computes; this thread only relays (a pipe
        # round trip per streamed piece, the reply's messages). Niced, it would be preempted by any other
        # job while holding the interpreter lock, and the tracking loop would wait for it.
        if params.language_nice > 0 and not params.language_process and hasattr(os, "setpriority"):
            # Linux: niceness is per thread (and inherited by the threads torch starts from it).
            tid = threading.get_native_id()
            current = os.getpriority(os.PRIO_PROCESS, tid)
            os.setpriority(os.PRIO_PROCESS, tid, min(19, current + params.language_nice))

    # ------------------------------------------------------------------ images and tracking

    def _subscribe(self, camera: Camera, params: P.NodeParams) -> None:
        reliability = (
            ReliabilityPolicy.RELIABLE
            if params.image_qos_reliability == "reliable"
            else ReliabilityPolicy.BEST_EFFORT
        )
        qos = QoSProfile(
            depth=params.image_qos_depth,
            reliability=reliability,
            history=HistoryPolicy.KEEP_LAST,
            durability=DurabilityPolicy.VOLATILE,
        )
        compressed = params.image_transport == "compressed"
        topic = camera.topic(params.image_topic) + ("/compressed" if compressed else "")
        events = SubscriptionEventCallbacks(
            incompatible_qos=lambda info, c=camera: self._on_incompatible_qos(c, info),
            message_lost=lambda info, c=camera: self._on_message_lost(c, info),
        )
        scheduler = self._scheduler
        camera.qos_warned = False
        camera.transport_warned = False
        camera.subscribed_at = time.monotonic()
        camera.subscription = self.create_subscription(
            CompressedImage if compressed else Image,
            topic,
            lambda msg, c=camera: scheduler.offer(c, msg),  # called by the FrameIntake thread
            qos,
            callback_group=self._camera_group,
            event_callbacks=events,
        )
        if camera.depth is not None:
            depth_topic, info_topic = self._depth_topics(camera, params)
            camera.depth.depth_sub = self.create_subscription(
                Image, depth_topic, camera.depth.on_depth, qos, callback_group=self._camera_group
            )
            camera.depth.info_sub = self.create_subscription(
                CameraInfo, info_topic, camera.depth.on_info, qos, callback_group=self._camera_group
            )

    def _intake_sources(self) -> list[tuple[Camera, Any]]:
        """Every camera subscription for the FrameIntake, depth and camera_info before colour."""
        sources: list[tuple[Camera, Any]] = []
        for camera in self._cameras:
            if camera.depth is not None:
                sources += [(camera, camera.depth.depth_sub), (camera, camera.depth.info_sub)]
            sources.append((camera, camera.subscription))
        return sources

    def _output(self, msg_type: Any, topic: str, qos: QoSProfile | int, lifecycle: bool = True) -> Any:
        """A publisher without rclpy's default QoS-event handlers (incompatible QoS / type warnings).

        Each handler is one more waitable that the executor walks, in Python, on every wake-up
        before it runs the callback and again before it waits: with the node's dozen publishers
        (two handlers each) that was about 0.1 ms of each frame's hand-over to the tracking thread
        (medians per run; README, "Where the busy windows' time went"), during which the tracking
        thread waits for the interpreter. The warning is not lost where it matters: a subscriber
        with incompatible QoS is warned on its own side by its client library's default handler,
        which is where its user looks for why nothing arrives.
        """
        create = self.create_lifecycle_publisher if lifecycle else self.create_publisher
        return create(
            msg_type, topic, qos, event_callbacks=PublisherEventCallbacks(use_default_callbacks=False)
        )

    def _depth_topics(self, camera: Camera, params: P.NodeParams) -> tuple[str, str]:
        """Fully qualified depth and camera_info topics of a camera (for messages)."""
        ns = self.get_namespace().rstrip("/")
        return (
            f"{ns}/{camera.topic(params.depth_topic)}",
            f"{ns}/{camera.topic(params.camera_info_topic)}",
        )

    def _process_frame(self, camera: Camera, msg: Any, received: float) -> None:
        if not self.context.ok():
            return  # Ctrl-C: ROS is shutting down under us; the loop is about to be stopped
        params = self._params
        try:
            rgb = message_to_rgb8(msg, params.max_image_pixels)
        except ImageError as exc:
            camera.stats.bad_frames += 1
            camera.stats.last_error = str(exc)
            # Throttled per camera and kind of problem, so one bad frame never hides another.
            key = f"bad-frame:{camera.name}:{exc.kind}"
            self._warn_throttled(key, f"camera '{camera.name}': frame skipped: {exc}")
            return
        header = msg.header
        stamp = _seconds(header.stamp)
        t0 = time.perf_counter()
        objects = camera.tracker.step(rgb, stamp if stamp > 0 else None)
        step = time.perf_counter() - t0
        masks, values = masks_image(objects, rgb.shape[:2], header)
        camera.masks_pub.publish(masks)  # first: it is what latency-sensitive consumers wait for
        array = object_array(objects, values, header, camera.name, step, with_masks=params.object_masks)
        view, geometry = None, []
        if camera.depth is not None:
            topics = self._depth_topics(camera, params)
            view, geometry = D.annotate_frame(
                camera.depth, header, rgb.shape[:2], objects, array, params, topics
            )
        camera.objects_pub.publish(array)
        if camera.depth is not None:
            D.publish(camera.depth, header, view, objects, geometry, params)
        if camera.detections_pub is not None:
            camera.detections_pub.publish(detections.detection_array(objects, header))
        camera.remember(Frame(header, rgb, objects, received, view))
        camera.stats.processed += 1
        now_ros = self.get_clock().now().nanoseconds * 1e-9
        camera.stats.timings.append(
            (step, time.monotonic() - received, now_ros - stamp if stamp > 0 else None)
        )
        self._publish_overlay(camera, rgb, objects, header, params)
        self._schedule_regrounding(camera, objects, params)

    def _publish_overlay(self, camera: Camera, rgb, objects, header, params: P.NodeParams) -> None:
        if params.overlay_rate <= 0 or camera.overlay_pub.get_subscription_count() == 0:
            return
        now = time.monotonic()
        if now - camera.last_overlay < 1.0 / params.overlay_rate:
            return
        camera.last_overlay = now
        items = [
            OverlayItem(o.id, o.label, o.mask if is_drawn(o) else None, o.score, o.state == "lost")
            for o in objects
        ]
        camera.overlay_pub.publish(
            array_to_image(render_overlay(rgb, items, params.overlay_alpha), header, "rgb8")
        )

    def _schedule_regrounding(self, camera: Camera, objects, params: P.NodeParams) -> None:
        worker, tasks = self._worker, self._tasks
        now = time.monotonic()
        for obj in objects:
            if not obj.needs_reground or obj.id in camera.regrounding:
                continue
            expression = camera.expressions.get(obj.id)
            if not expression:
                continue  # a box / point / mask object: no words to find it again with
            if obj.state == "lost" and not params.reground_lost and params.reground_period <= 0:
                continue
            if now - camera.last_reground.get(obj.id, -1e9) < params.reground_min_interval:
                continue

            def run(job, object_id=obj.id, expression=expression):
                try:
                    return tasks.reground(camera, object_id, expression, job)
                finally:
                    camera.regrounding.discard(object_id)

            try:
                worker.submit(run, "re-ground", background=True)
            except (QueueFullError, WorkerStoppedError):
                return
            camera.regrounding.add(obj.id)
            camera.last_reground[obj.id] = now

    def _on_tracking_error(self, camera: Camera, exc: BaseException) -> None:
        if not self.context.ok():
            return  # publishing failed because ROS shut down (Ctrl-C): not a tracking problem
        self._count_bad_frame(camera, exc)
        if isinstance(exc, InputError):
            self._warn_throttled(f"track:{camera.name}", f"camera '{camera.name}': frame skipped: {exc}")
        else:
            self._warn_throttled(
                f"track:{camera.name}",
                f"camera '{camera.name}': tracking failed on a frame (continuing):\n"
                + "".join(traceback.format_exception(exc)),
            )

    def _on_intake_error(self, camera: Camera, exc: BaseException) -> None:
        if not self.context.ok():
            return
        self._count_bad_frame(camera, exc)
        self._warn_throttled(
            f"take:{camera.name}", f"camera '{camera.name}': could not take or store a message: {exc}"
        )

    @staticmethod
    def _count_bad_frame(camera: Camera, exc: BaseException) -> None:
        camera.stats.bad_frames += 1
        camera.stats.last_error = f"{type(exc).__name__}: {exc}"

    def _on_incompatible_qos(self, camera: Camera, info: Any) -> None:
        self._warn_qos(camera, f"incompatible policy {getattr(info, 'last_policy_kind', '?')}")

    def _on_message_lost(self, camera: Camera, info: Any) -> None:
        camera.stats.lost_in_transport += int(getattr(info, "total_count_change", 1))
        self._warn_transport(camera, f"{camera.stats.lost_in_transport} image(s) were lost in transport")

    def _warn_transport(self, camera: Camera, what: str) -> None:
        """Explain the usual cause of images that never arrive: big samples sent best-effort."""
        if camera.transport_warned or camera.subscription is None:
            return
        camera.transport_warned = True
        self.get_logger().warning(
            f"camera '{camera.name}': {what} on {camera.subscription.topic_name}. With Fast DDS, "
            "images over 512 KB (640x480 rgb8 is 900 KB) sent best_effort between processes are "
            "dropped by its default shared-memory segment: export FASTDDS_DEFAULT_PROFILES_FILE="
            "<sa2va_ros share>/config/fastdds_large_data.xml for the camera and this node (its "
            f"{FASTDDS_SEGMENT_BYTES >> 20} MiB segment carries raw frames up to {_carried_pixels()} pixels "
            "of rgb8, e.g. 2048x2048), or use image_transport:=compressed, or reliable QoS on both sides "
            "(image_qos_reliability:=reliable)."
        )

    def _warn_transport_limit(self, params: P.NodeParams) -> None:
        """Say so when max_image_pixels admits raw frames the shipped transport profile cannot carry.

        Such frames never reach the node (Fast DDS drops them), so the node's own size check
        would never get to explain anything: the limit that really applies is the segment's.
        """
        if params.image_transport != "raw":
            return
        largest = params.max_image_pixels * 3
        if largest > FASTDDS_SEGMENT_BYTES:
            self.get_logger().warning(
                f"max_image_pixels={params.max_image_pixels} admits raw rgb8 frames of up to "
                f"{largest / 2**20:.0f} MiB, but the {FASTDDS_SEGMENT_BYTES >> 20} MiB shared-memory "
                f"segment of config/fastdds_large_data.xml carries frames up to {_carried_pixels()} pixels "
                "(rgb8); "
                "larger ones are lost in transport. Lower max_image_pixels, use image_transport:=compressed "
                "or give your own Fast DDS profile a larger segment_size."
            )

    def _check_publisher_qos(self, camera: Camera) -> None:
        sub = camera.subscription
        if sub is None:
            return
        if (
            camera.stats.received == 0
            and time.monotonic() - camera.subscribed_at > 10.0
            and self.get_publishers_info_by_topic(sub.topic_name)
            and not camera.qos_warned
        ):
            self._warn_transport(camera, "publishers exist but no image arrived for 10 s")
        if camera.qos_warned or sub.qos_profile.reliability != ReliabilityPolicy.RELIABLE:
            return
        for info in self.get_publishers_info_by_topic(sub.topic_name):
            if info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT:
                self._warn_qos(camera, "the publisher is best_effort")
                return

    def _warn_qos(self, camera: Camera, what: str) -> None:
        if camera.qos_warned or camera.subscription is None:
            return
        camera.qos_warned = True
        sub = camera.subscription
        ours = _describe_qos(sub.qos_profile)
        theirs = "; ".join(
            f"{info.node_namespace.rstrip('/')}/{info.node_name}: {_describe_qos(info.qos_profile)}"
            for info in self.get_publishers_info_by_topic(sub.topic_name)
        )
        self.get_logger().warning(
            f"camera '{camera.name}': QoS mismatch on {sub.topic_name} ({what}): this node subscribes with "
            f"[{ours}], the publisher(s) offer [{theirs or 'unknown'}], so no image arrives. Set "
            "image_qos_reliability to match the camera (best_effort accepts both)."
        )

    # ------------------------------------------------------------------ diagnostics

    def _publish_diagnostics(self) -> None:
        # Frames are decoded and tracked on the tracking thread, whose freed pages glibc keeps in
        # that thread's arena; the worker's idle hook trims too, but a node that only tracks
        # never goes through it.
        if self._phase == "active":
            self._periodic_trim()
        for camera in self._cameras:
            self._check_publisher_qos(camera)
        worker = self._worker
        gpu = None
        model = self._model
        device = "n/a"
        if model is not None:
            device = str(model.sam2.device)
            if device.startswith("cuda"):
                import torch

                gpu = int(torch.cuda.memory_allocated(model.sam2.device))
        params = self._params
        snapshot = NodeSnapshot(
            state=self._phase,
            model=params.model if params else str(self.get_parameter("model").value),
            device=device,
            message=self._load_error or self._phase,
            queue_depth=worker.depth if worker else 0,
            queue_size=worker.max_queue if worker else 0,
            background_depth=worker.background_depth if worker else 0,
            rejected=worker.rejected if worker else 0,
            completed=worker.completed if worker else 0,
            worker_busy_s=worker.busy_seconds() if worker else 0.0,
            gpu_memory_bytes=gpu,
            rss_bytes=rss_bytes(),
            requests_lost=self._requests_lost,
        )
        topic = (params.image_topic if params else "image") + (
            "/compressed" if params and params.image_transport == "compressed" else ""
        )
        self._diagnostics_pub.publish(
            self._diagnostics.build(
                self.get_clock().now().to_msg(),
                snapshot,
                list(self._cameras),
                lambda c: c.subscription.topic_name if c.subscription is not None else c.topic(topic),
                lambda c: (
                    c.depth.diagnostics(self._phase, params, self._depth_topics(c, params))
                    if c.depth is not None and params is not None
                    else None
                ),
            )
        )


_ROS_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
    list: ParameterType.PARAMETER_STRING_ARRAY,
}


def _valid(name: str, value: Any) -> bool:
    """True when ``value`` is None (not given) or acceptable for parameter ``name``."""
    if value is None:
        return True
    try:
        P.coerce(name, value)
    except P.ParameterError:
        return False
    return True


def _descriptor(spec: P.ParamSpec, dynamic_typing: bool = False, ranged: bool = True) -> ParameterDescriptor:
    """What `ros2 param describe` shows: meaning, type, range, and whether it is static."""
    descriptor = ParameterDescriptor(
        description=spec.description,
        type=_ROS_TYPES[spec.type],
        additional_constraints=spec.constraints,
        dynamic_typing=dynamic_typing,
    )
    bounds = spec.bounds if ranged else None
    if bounds is not None and spec.type is float:
        low, high = bounds
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(low), to_value=float(high if high is not None else 1e300))
        ]
    elif bounds is not None and spec.type is int:
        low, high = bounds
        descriptor.integer_range = [
            IntegerRange(from_value=int(low), to_value=int(high if high is not None else 2**63 - 1))
        ]
    return descriptor


def _carried_pixels() -> int:
    """rgb8 pixels of the largest frame the shipped profile's segment carries (headroom: 1/4)."""
    return FASTDDS_SEGMENT_BYTES * 3 // 4 // 3


def _describe_qos(qos) -> str:
    reliability = getattr(qos.reliability, "name", str(qos.reliability)).lower()
    durability = getattr(qos.durability, "name", str(qos.durability)).lower()
    return f"reliability {reliability}, durability {durability}, depth {qos.depth}"
