"""Camera input taken from its subscriptions by a thread of its own, not by the executor.

Why: rclpy's executors take a message in Python after walking every entity of the node on each
wake-up: building the wait set from every subscription, timer, service, client and waitable, and
yielding the ready ones. sa2va_node has about forty of them (its services, the lifecycle and
parameter services, the Chat action, the command topics, the timer), so each camera frame paid
that walk before its callback ran, while the tracking thread waited for the interpreter
(README, "Frames taken without the executor"). rclpy has no public call that waits on chosen
subscriptions only, so this module does what ``rclpy.wait_for_message`` does (Humble to Kilted):
a wait set of its own holding just the camera subscriptions (colour, and with depth enabled the
depth image and camera_info) and a guard condition to stop it.

The subscriptions stay the node's own (same names, remappings, QoS and graph entries); their
callback group, :class:`TakenByFrameIntake`, keeps executors away from them and from their QoS
event handlers (message lost, incompatible QoS), which this thread serves too. A message is
taken once, here, and handed to the subscription's own callback: a colour frame to the
:class:`~.camera.FrameScheduler` (counted; an older unprocessed frame dropped and counted), a
depth image or camera_info to the camera's depth stage. Depth is taken before colour when both
wait: a colour frame's depth (published first by RGB-D drivers) is then there when the tracking
thread pairs them after its step; with depth left on the executor it sometimes was not yet (the
RGB-D node test failed once in four runs).

The event handlers are served here rather than by the executor because, with a subscription's
event handlers in its wait set, the executor woke while that subscription's messages arrived
(rmw_fastrtps, Kilted: 7-10 wake-ups a second for 30 frames a second against 2 without the
handlers). In the node that cost the main thread 126 switches and 48 ms of CPU a second while
tracking without language requests, against 7 and 23 with the handlers here, and the tracking
thread was switched out 627 times a second instead of 206 while the language model ran.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence

from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.context import Context
from rclpy.exceptions import InvalidHandle
from rclpy.guard_condition import GuardCondition
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.subscription import Subscription
from rclpy.waitable import Waitable

from .camera import Camera

log = logging.getLogger(__name__)

#: How long one wait may block before the thread looks at its stop flag again (the guard condition
#: wakes it at once on stop; this bounds a stop that raced with building the wait set, and Ctrl-C,
#: which shuts ROS down without triggering it).
WAIT_S = 0.5


class TakenByFrameIntake(ReentrantCallbackGroup):
    """The camera subscriptions' group: executors never wait on them or their event handlers.

    rclpy's executors (Humble to Kilted) leave out of their wait set every entity whose group's
    ``can_execute`` says no; the subscriptions' QoS event handlers are entities of the same group.
    """

    def can_execute(self, entity: object) -> bool:
        return False


class FrameIntake:
    """Waits on the cameras' subscriptions and runs each one's callback on every message as it arrives."""

    def __init__(
        self,
        context: Context,
        sources: Sequence[tuple[Camera, Subscription]],
        on_error: Callable[[Camera, BaseException], None],
    ) -> None:
        """``sources``: each subscription with its camera, in the order their messages are taken
        when several wait (depth before colour)."""
        self._context = context
        self._sources = list(sources)
        self._on_error = on_error
        self._stop = threading.Event()
        # Not node.create_guard_condition: that one would be the node's, in the executor's wait set.
        self._wake = GuardCondition(None, None, context=context)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sa2va-frames", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking frames; call before the subscriptions are destroyed."""
        self._stop.set()
        with contextlib.suppress(InvalidHandle):
            self._wake.trigger()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("frame intake still waiting %.0f s after stop was asked", timeout)
        self._thread = None
        self._wake.destroy()  # rclpy ignores a second destroy

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:  # noqa: BLE001 - logged; nothing else takes the frames then
            if self._context.ok():  # (a shut-down context ends waiting too: not worth a word)
                log.exception("camera frames are no longer taken: waiting for them failed")

    def _serve(self) -> None:
        sources = self._sources
        handlers = [h for _camera, sub in sources for h in getattr(sub, "event_handlers", ())]
        events = sum(handler.get_num_entities().num_events for handler in handlers)
        with contextlib.ExitStack() as in_use:
            # Held for the thread's life: a subscription destroyed meanwhile is freed after it ends.
            for _camera, sub in sources:
                in_use.enter_context(sub.handle)
            for handler in handlers:
                in_use.enter_context(handler)
            in_use.enter_context(self._wake.handle)
            wait_set = _rclpy.WaitSet(len(sources), 1, 0, 0, 0, events, self._context.handle)
            while not self._stop.is_set() and self._context.ok():
                wait_set.clear_entities()
                for _camera, sub in sources:
                    wait_set.add_subscription(sub.handle)
                for handler in handlers:
                    handler.add_to_wait_set(wait_set)
                wait_set.add_guard_condition(self._wake.handle)
                wait_set.wait(int(WAIT_S * 1e9))  # releases the interpreter lock while it waits
                for handler in handlers:
                    if handler.is_ready(wait_set):
                        self._handle_event(handler)
                ready = wait_set.get_ready_entities("subscription")
                for camera, sub in sources:
                    if sub.handle.pointer in ready:
                        self._take_all(camera, sub)

    @staticmethod
    def _handle_event(handler: Waitable) -> None:
        """Run a QoS event handler's callback (the node's: a warning and a counter; they never await)."""
        try:
            data = handler.take_data()
            if data is None:
                return
            step = handler.execute(data)
            try:
                step.send(None)
            except StopIteration:
                return
            step.close()
            log.warning("a camera subscription's event callback awaited something; it was not resumed")
        except Exception:  # noqa: BLE001 - a failing warning must not stop the frames
            log.exception("a camera subscription's event callback failed")

    def _take_all(self, camera: Camera, sub: Subscription) -> None:
        """Run ``sub``'s callback on every message waiting (for colour, the newest one wins the slot)."""
        while not self._stop.is_set():
            try:
                taken = sub.handle.take_message(sub.msg_type, sub.raw)
                if taken is None:
                    return
                sub.callback(taken[0])
            except Exception as exc:  # noqa: BLE001 - one bad message must not stop the others
                self._on_error(camera, exc)
                return
