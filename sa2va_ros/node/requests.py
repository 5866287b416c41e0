"""Commands, services and the Chat action of the sa2va node: validate, queue, answer.

Every request is checked in its callback (node active, camera known, text not empty nor too
long, image decodable), then queued on the language worker. Services and the action are
coroutines that ``await`` the job, so a waiting request holds no executor thread (the
executor's size does not grow with the queue) and nothing polls; commands get their answer
published on `reply` by the worker. Whatever goes wrong becomes ``success=false`` and a
message saying why, never an exception escaping into the executor.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rclpy.action import CancelResponse, GoalResponse
from rclpy.task import Future
from sensor_msgs.msg import Image
from std_msgs.msg import String

from sa2va_msgs.action import Chat
from sa2va_msgs.msg import Command, Reply
from sa2va_msgs.srv import AddObject, Ask, DescribeRegion, RemoveObjects, Segment
from sa2va_ros.model.errors import InputError
from sa2va_ros.model.mllm import Turn

from .camera import Camera, Frame, stamp_ns
from .executor import Parked
from .image_codec import ImageError, image_to_rgb8, is_empty, mask_from_image
from .language_worker import (
    CancelledError,
    DeadlineError,
    Job,
    LanguageWorker,
    QueueFullError,
    WorkerStoppedError,
)
from .mask_codec import mask_message
from .messages import FoundObject, clean_text, found_objects
from .params import NodeParams
from .tasks import SOURCE_LATEST_FRAME, SOURCE_NONE, Answer, LanguageTasks
from .throttle import WarnThrottle
from .validation import ValidationError, id_list, prefix
from .validation import box as checked_box
from .validation import object_ids as checked_ids
from .validation import point as checked_point
from .validation import points as checked_points


class RequestError(Exception):
    """A request cannot be served; the message goes back to the caller as is.

    ``kind`` names the kind of problem (not the message), so log throttling groups a flood of
    one kind of bad request without hiding another kind.
    """

    def __init__(self, message: str, kind: str = "request") -> None:
        super().__init__(message)
        self.kind = kind


#: Everything a request handler turns into ``success=false`` and its message.
REFUSED = (RequestError, ValidationError, InputError, ImageError)


def _kind(exc: BaseException) -> str:
    return getattr(exc, "kind", type(exc).__name__)


@dataclass
class Serving:
    """What the handlers work with while the node is active (made by the node's activate)."""

    cameras: list[Camera]
    tasks: LanguageTasks
    worker: LanguageWorker
    #: The model's SAM-2: a prompt on a stamped frame becomes a mask there.
    sam2: Any


class RequestHandlers:
    """The request side of the node: given what it uses, it owns no ROS entity.

    The node creates the services, topics and action from start-up with these methods as
    callbacks, hands over a :class:`Serving` on activate and takes it back on deactivate; in
    between (or before) every request is answered with what state the node is in and how to
    change it.
    """

    def __init__(
        self,
        node_name: str,
        logger: Any,
        warn: WarnThrottle,
        reply_pub: Any,
        params: Callable[[], NodeParams | None],
        state: Callable[[], tuple[str, str]],
        executor: Callable[[], Any],
    ) -> None:
        self._node_name = node_name
        self._logger = logger
        self._warn = warn
        self._reply_pub = reply_pub
        self._params_of = params
        #: (phase, last load error) of the node, for the answer to a request it cannot serve.
        self._state = state
        #: The executor spinning the node: a finished job wakes it to resume the waiting callback.
        self._executor = executor
        self._serving: Serving | None = None
        self._chat_lock = threading.Lock()
        self._chat_pending = 0  # chat goals accepted but not yet queued on the worker
        self._chat_jobs: dict[bytes, tuple[LanguageWorker, Job]] = {}
        self._chat_cancelled: set[bytes] = set()

    def serve(self, serving: Serving | None) -> None:
        """Start (activate) or stop (None: deactivate) serving requests."""
        self._serving = serving

    @property
    def _params(self) -> NodeParams:
        params = self._params_of()
        if params is None:  # only between deactivate and cleanup's end, which also stop serving
            raise RequestError("the node is not configured", "state")
        return params

    @property
    def _tasks(self) -> LanguageTasks:
        return self._active().tasks

    # ------------------------------------------------------------------ request helpers

    def _active(self) -> Serving:
        serving = self._serving
        if serving is not None:
            return serving
        phase, load_error = self._state()
        name = self._node_name
        if phase == "loading":
            raise RequestError(
                "the model is still loading (configure in progress); try again when the node is active",
                "state",
            )
        if phase in ("inactive", "active"):
            raise RequestError(
                f"the node is inactive; activate it: ros2 lifecycle set {name} activate", "state"
            )
        reason = f" (last error: {load_error})" if load_error else ""
        raise RequestError(
            f"the node is unconfigured, no model is loaded{reason}; configure and activate it: "
            f"ros2 lifecycle set {name} configure, then activate",
            "state",
        )

    def _camera(self, name: str) -> Camera:
        cameras = self._active().cameras
        if not name:
            return cameras[0]
        wanted = name.strip("/")
        for camera in cameras:
            if camera.name.strip("/") == wanted:
                return camera
        known = ", ".join(repr(c.name) for c in cameras)
        raise RequestError(f"unknown camera '{prefix(name, 80)}'; this node serves: {known}", "camera")

    def _check_text(self, text: str, what: str) -> str:
        text = (text or "").strip()
        if not text:
            raise RequestError(
                f"empty {what}: say what to find or ask, e.g. 'the red mug on the left'", "text"
            )
        limit = self._params.max_command_length
        if len(text) > limit:
            raise RequestError(
                f"{what} is {len(text)} characters long; the limit is {limit} (max_command_length)", "text"
            )
        return text

    def _given_frame(self, image: Image) -> Frame | None:
        """The request's own image as a Frame, or None when the field is empty."""
        if is_empty(image):
            return None
        try:
            rgb = image_to_rgb8(image, self._params.max_image_pixels)
        except ImageError as exc:
            raise RequestError(f"image: {exc}", "image") from exc
        return Frame(image.header, rgb, [], time.monotonic())

    def _newest(self, camera: Camera) -> Frame:
        try:
            return LanguageTasks.newest(camera)
        except InputError as exc:
            raise RequestError(str(exc), "frame") from exc

    def _stamped(self, camera: Camera, stamp) -> Frame | None:
        """The camera frame a request names by header stamp; None for a zero stamp (the newest)."""
        key = stamp_ns(stamp)
        if not key:
            return None
        frame = camera.frame_at(key)
        if frame is not None:
            return frame
        held = camera.held_stamps()
        what = (
            f"it holds the last {held[0]} frames, stamps {held[1] / 1e9:.3f} to {held[2] / 1e9:.3f} s"
            if held
            else "it holds none yet"
        )
        raise RequestError(
            f"camera '{camera.name}' no longer holds (or never had) the frame stamped {key / 1e9:.9f} s; "
            f"{what} (frame_history). Leave stamp zero for the newest frame."
        )

    def _submit(self, kind: str, fn: Callable, timeout: float | None = None) -> Job:
        worker = self._active().worker
        try:
            return worker.submit(fn, kind, timeout=timeout)
        except (QueueFullError, WorkerStoppedError) as exc:
            raise RequestError(str(exc), "queue") from exc

    async def _finished(self, job: Job) -> None:
        """Wait for ``job`` without holding a thread: the callback resumes when the job ends.

        The job's done callback completes an rclpy Future from the worker thread; the Future's
        own done callback, scheduled on the executor, wakes the executor, which resumes this
        coroutine (Humble to Kilted resume waiting coroutines whenever the executor wakes).
        Awaited through :class:`Parked`, the node's executor leaves the coroutine alone until then.
        """
        future: Future = Future(executor=self._executor())
        future.add_done_callback(_wakes_the_executor)
        job.add_done_callback(lambda _job: future.set_result(None))
        await Parked(future)

    def _outcome(self, kind: str, job: Job) -> Any:
        """A finished job's value, every failure mapped to a RequestError."""
        try:
            return job.result()
        except (
            InputError,
            ImageError,
            CancelledError,
            DeadlineError,
            WorkerStoppedError,
            RequestError,
        ) as exc:
            raise RequestError(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - reported to the caller, logged with the trace
            trace = "".join(traceback.format_exception(exc))
            self._logger.error(f"{kind} failed:\n{trace}")
            raise RequestError(f"{kind} failed: {type(exc).__name__}: {exc}") from exc

    async def _run(self, kind: str, fn: Callable) -> Any:
        job = self._submit(kind, fn, self._params.request_timeout)
        await self._finished(job)
        return self._outcome(kind, job)

    # ------------------------------------------------------------------ commands (topics)

    def on_command(self, camera: str, msg: String) -> None:
        """A plain-text command: find and track what it names (camera "" = the first one)."""
        self.on_command_request(Command(action=Command.ADD, camera=camera, text=msg.data))

    def on_command_request(self, msg: Command) -> None:
        # Echo a prefix only: a 10 MB command must not come back as a 10 MB reply.
        reply = Reply(
            request_id=prefix(msg.request_id),
            camera=prefix(msg.camera, 80),
            action=msg.action,
            request_text=prefix(msg.text),
        )
        try:
            camera = self._camera(msg.camera)
            reply.camera = camera.name
            if msg.action == Command.ADD:
                expression = self._check_text(msg.text, "command")
                self._submit_with_reply(reply, "add", lambda job: self._tasks.add(camera, expression, job))
            elif msg.action == Command.ASK:
                question = self._check_text(msg.text, "question")
                self._submit_with_reply(
                    reply,
                    "ask",
                    lambda job: self._tasks.ask(camera, question, SOURCE_LATEST_FRAME, None, False, job),
                )
            elif msg.action == Command.DESCRIBE:
                ids = checked_ids(msg.object_ids, self._params.max_object_ids, "DESCRIBE")
                if not ids:
                    raise RequestError("DESCRIBE needs object_ids", "ids")
                self._submit_with_reply(
                    reply, "describe", lambda job: self._describe_objects(camera, ids, job)
                )
            elif msg.action in (Command.REMOVE, Command.CLEAR):
                ids = checked_ids(msg.object_ids, self._params.max_object_ids, "REMOVE")
                if msg.action == Command.REMOVE and not ids:
                    # The remove_objects service refuses the same request: one rule for both paths.
                    raise RequestError("REMOVE needs object_ids (CLEAR removes every object)", "ids")
                removed, unknown = self._remove(camera, ids, msg.action == Command.CLEAR)
                reply.success = not unknown
                reply.message = _removal_message(removed, unknown, camera)
                self._reply_pub.publish(reply)
            else:
                raise RequestError(
                    f"unknown action {msg.action}; use Command.ADD=0, REMOVE=1, CLEAR=2, ASK=3 or DESCRIBE=4",
                    "action",
                )
        except REFUSED as exc:
            reply.success = False
            reply.message = str(exc)
            self._warn(
                f"refused:{_kind(exc)}", f"request '{reply.request_id}' refused: {prefix(str(exc), 500)}"
            )
            self._reply_pub.publish(reply)

    def _submit_with_reply(self, reply: Reply, kind: str, fn: Callable) -> None:
        """Queue ``fn`` on the worker; its Answer (or error) is published on `reply` when done."""

        def run(job):
            try:
                answer: Answer = fn(job)
                reply.raw_text, reply.text = answer.raw_text, answer.text
                if answer.frame is not None:
                    reply.header = answer.frame.header
                reply.objects, _ = found_objects(answer.found, answer.shape, reply.header)
                reply.success = reply.action == Command.ASK or bool(answer.found) or kind == "describe"
                reply.message = _answer_message(kind, answer)
            except (InputError, ImageError, RequestError, CancelledError) as exc:
                reply.success, reply.message = False, str(exc)
            except Exception as exc:  # noqa: BLE001
                self._logger.error(f"{kind} failed:\n{traceback.format_exc()}")
                reply.success, reply.message = False, f"{kind} failed: {type(exc).__name__}: {exc}"
            self._reply_pub.publish(reply)

        self._submit(kind, run)

    def _describe_objects(self, camera: Camera, ids: list[int], job) -> Answer:
        frame = LanguageTasks.newest(camera)
        texts, raws, found = [], [], []
        for object_id in ids:
            mask = self._object_mask(camera, frame, object_id)
            answer = self._tasks.describe(frame, job, mask=mask)
            texts.append(f"{object_id}: {answer.text}")
            raws.append(answer.raw_text)
            found.append(_described(object_id, answer.text, mask))
        return Answer(raw_text="\n".join(raws), text="\n".join(texts), found=found, frame=frame)

    def _object_mask(self, camera: Camera, frame: Frame, object_id: int):
        for obj in frame.objects:
            if obj.id == object_id:
                if obj.mask is None or not obj.mask.any():
                    raise RequestError(f"object {object_id} is not visible in the newest frame")
                return obj.mask
        known = camera.tracker.object_ids
        if object_id in known:
            raise RequestError(f"object {object_id} has no mask yet (it is grounded on the next frame)")
        raise RequestError(
            f"unknown object id {object_id} on camera '{camera.name}'; tracked ids: {id_list(known)}", "ids"
        )

    def _remove(self, camera: Camera, ids: list[int], clear: bool) -> tuple[list[int], list[int]]:
        if clear:
            removed = camera.tracker.object_ids
            camera.tracker.clear()
            unknown: list[int] = []
        else:
            removed = [i for i in ids if camera.tracker.remove_object(int(i))]
            unknown = [i for i in ids if i not in removed]
        camera.forget_objects(removed)
        return removed, unknown

    # ------------------------------------------------------------------ services

    async def segment(self, req: Segment.Request, res: Segment.Response) -> Segment.Response:
        try:
            camera = self._camera(req.camera)
            expression = self._check_text(req.prompt, "prompt")
            frame = self._given_frame(req.image) or self._stamped(camera, req.stamp)
            answer = await self._run(
                "segment", lambda job: self._tasks.segment(camera, expression, frame, req.track, job)
            )
            res.text, res.raw_text = answer.text, answer.raw_text
            res.objects, res.masks = found_objects(answer.found, answer.shape, answer.frame.header)
            res.success = bool(answer.found)
            res.message = _answer_message("segment", answer)
        except REFUSED as exc:
            res.success, res.message = False, str(exc)
        return res

    async def ask(self, req: Ask.Request, res: Ask.Response) -> Ask.Response:
        try:
            camera = self._camera(req.camera)
            question = self._check_text(req.question, "question")
            _check_source(req.source)
            frame = self._given_frame(req.image)
            if frame is not None and req.source != Ask.Request.SOURCE_LATEST_FRAME:
                raise RequestError(
                    "image is only used with SOURCE_LATEST_FRAME; leave it empty for other sources"
                )
            answer = await self._run(
                "ask", lambda job: self._tasks.ask(camera, question, req.source, frame, req.track, job)
            )
            res.text, res.raw_text = answer.text, answer.raw_text
            header = answer.frame.header if answer.frame is not None else None
            res.objects, res.masks = found_objects(answer.found, answer.shape, header)
            res.success = True
            res.message = _answer_message("ask", answer)
        except REFUSED as exc:
            res.success, res.message = False, str(exc)
        return res

    async def describe_region(
        self, req: DescribeRegion.Request, res: DescribeRegion.Response
    ) -> DescribeRegion.Response:
        try:
            camera = self._camera(req.camera)
            given = self._given_frame(req.image)
            frame = given or self._stamped(camera, req.stamp) or self._newest(camera)
            prompt = self._check_text(req.prompt, "prompt") if req.prompt.strip() else None
            region: dict[str, Any] = {}
            if not is_empty(req.mask):
                try:
                    region["mask"] = mask_from_image(req.mask, frame.rgb.shape[:2])
                except ImageError as exc:
                    raise RequestError(str(exc)) from exc
            elif req.box.width > 0 or req.box.height > 0 or req.box.x_offset or req.box.y_offset:
                b, (h, w) = req.box, frame.rgb.shape[:2]
                region["box"] = checked_box(b.x_offset, b.y_offset, b.width, b.height, w, h)
            elif req.use_point:
                h, w = frame.rgb.shape[:2]
                region["point"] = checked_point(req.point_x, req.point_y, w, h)
            elif req.object_id:
                if given is not None:
                    raise RequestError("object_id refers to the camera's frames: leave image empty")
                region["mask"] = self._object_mask(camera, frame, req.object_id)
            else:
                raise RequestError("say which region to describe: a mask, a box, a point or an object_id")
            answer = await self._run(
                "describe", lambda job: self._tasks.describe(frame, job, prompt=prompt, **region)
            )
            res.text = answer.text
            if answer.region_mask is not None:
                res.mask = mask_message(answer.region_mask, frame.header)
            res.success = True
            res.message = _answer_message("describe", answer)
        except REFUSED as exc:
            res.success, res.message = False, str(exc)
        return res

    def add_object(self, req: AddObject.Request, res: AddObject.Response) -> AddObject.Response:
        try:
            camera = self._camera(req.camera)
            stamped = self._stamped(camera, req.stamp)
            frame = stamped or self._newest(camera)
            h, w = frame.rgb.shape[:2]
            label = req.label.strip() or "object"
            kwargs: dict[str, Any] = {}
            if not is_empty(req.mask):
                kwargs["mask"] = mask_from_image(req.mask, (h, w), "mask")
            else:
                b = req.box
                if b.width > 0 or b.height > 0 or b.x_offset or b.y_offset:
                    kwargs["box"] = checked_box(b.x_offset, b.y_offset, b.width, b.height, w, h)
                if len(req.points_x) or len(req.points_y) or len(req.point_labels):
                    kwargs["points"], kwargs["point_labels"] = checked_points(
                        req.points_x, req.points_y, req.point_labels, w, h, self._params.max_prompt_points
                    )
                if not kwargs:
                    raise RequestError("give a box, points or a mask", "region")
            res.header = frame.header
            if stamped is not None:
                # The prompt belongs to that frame: SAM-2 turns it into the object's mask there,
                # and the tracker takes the object from that mask.
                mask = kwargs.get("mask")
                if mask is None:
                    mask = self._active().sam2.mask_from_prompt(stamped.rgb, **kwargs)
                    if not mask.any():
                        raise RequestError(
                            "SAM-2 found no object at the prompt on the frame it names", "region"
                        )
                kwargs = {"mask": mask}
                res.mask = mask_message(mask, frame.header)
            object_id = camera.tracker.add_object(label=label, **kwargs)
            camera.on_added(object_id, None)
            res.success, res.object_id = True, int(object_id)
            on = "prompted on the frame it names, " if stamped is not None else ""
            res.message = f"tracking object {object_id} ('{label}'), {on}from the next frame"
        except REFUSED as exc:
            res.success, res.message = False, str(exc)
        return res

    def remove_objects(
        self, req: RemoveObjects.Request, res: RemoveObjects.Response
    ) -> RemoveObjects.Response:
        try:
            camera = self._camera(req.camera)
            if not req.clear_all and not len(req.object_ids):
                raise RequestError("give object_ids or set clear_all", "ids")
            ids = checked_ids(req.object_ids, self._params.max_object_ids, "remove_objects")
            removed, unknown = self._remove(camera, ids, req.clear_all)
            res.removed, res.unknown = removed, unknown
            res.success = not unknown
            res.message = _removal_message(removed, unknown, camera)
        except REFUSED as exc:
            res.success, res.message = False, str(exc)
        return res

    # ------------------------------------------------------------------ chat action

    def on_chat_goal(self, goal: Chat.Goal) -> GoalResponse:
        """Accept a goal only when the worker can still queue it; reject it at once otherwise.

        Accepted goals that have not reached the worker yet hold a slot, so a burst of 50 goals
        gets as many acceptances as the queue has room for and 50 - that many rejections.
        (A goal for an inactive node is accepted and then aborted with the reason.)
        """
        serving = self._serving
        with self._chat_lock:
            if serving is not None and serving.worker.depth + self._chat_pending >= serving.worker.max_queue:
                serving.worker.rejected += 1
                self._warn(
                    "refused:queue",
                    f"chat goal rejected: language_queue_size={serving.worker.max_queue} is full",
                )
                return GoalResponse.REJECT
            self._chat_pending += 1
        return GoalResponse.ACCEPT

    def on_chat_cancel(self, goal_handle: Any) -> CancelResponse:
        """Stop the goal's generation (or drop it from the queue); the goal ends as cancelled."""
        key = bytes(goal_handle.goal_id.uuid)
        with self._chat_lock:
            entry = self._chat_jobs.get(key)
            # Accepted but not queued yet: execute_chat sees this when it queues the goal. Only
            # then: a cancel racing a goal's end must not leave a key behind for good.
            if entry is None and self._chat_pending:
                self._chat_cancelled.add(key)
        if entry is not None:
            worker, job = entry
            worker.cancel(job)
        return CancelResponse.ACCEPT

    def _release_chat_slot(self) -> None:
        with self._chat_lock:
            self._chat_pending = max(0, self._chat_pending - 1)

    def _checked_history(self, users, assistants) -> list[Turn]:
        if len(users) != len(assistants):
            raise RequestError(
                f"history_user has {len(users)} turns but history_assistant {len(assistants)}; "
                "they must pair up",
                "history",
            )
        size = sum(len(t) for t in users) + sum(len(t) for t in assistants)
        limit = self._params.max_history_length
        if size > limit:
            raise RequestError(
                f"chat history is {size} characters in {len(users)} turns; the limit is {limit} "
                "(max_history_length): send fewer or shorter turns",
                "history",
            )
        return [Turn(u, a) for u, a in zip(users, assistants, strict=True)]

    def _queue_chat(self, goal: Chat.Goal, on_text: Callable[[str], None]) -> tuple[LanguageWorker, Job]:
        """Validate a goal and queue it; the worker and the job, or a RequestError."""
        try:
            camera = self._camera(goal.camera)
            prompt = self._check_text(goal.prompt, "prompt")
            _check_source(goal.source)
            history = self._checked_history(goal.history_user, goal.history_assistant)
            # 0 = the node's default; a caller may ask for less, never for more.
            cap = self._params.max_new_tokens
            limit = min(int(goal.max_new_tokens), cap) if goal.max_new_tokens else cap
            frames = [self._given_frame(image) for image in goal.images]
            if any(f is None for f in frames):
                raise RequestError("images: an image in the list is empty", "image")
            frame, source = None, goal.source
            if len(frames) == 1:
                frame, source = frames[0], Chat.Goal.SOURCE_LATEST_FRAME
            elif frames:
                source = Chat.Goal.SOURCE_RECENT_FRAMES
            tasks, worker = self._tasks, self._active().worker
            job = self._submit(
                "chat",
                lambda job: tasks.ask(
                    camera, prompt, source, frame, goal.track, job, history, limit, on_text, frames or None
                ),
                self._params.request_timeout,
            )
            return worker, job
        finally:
            self._release_chat_slot()

    async def execute_chat(self, goal_handle: Any) -> Chat.Result:
        goal = goal_handle.request
        key = bytes(goal_handle.goal_id.uuid)
        result = Chat.Result()
        raw: list[str] = []
        state = {"text": "", "tokens": 0}

        def on_text(piece: str) -> None:
            raw.append(piece)
            state["tokens"] += 1
            text = clean_text("".join(raw))
            previous = state["text"]
            delta = text[len(previous) :] if text.startswith(previous) else text
            state["text"] = text
            goal_handle.publish_feedback(Chat.Feedback(text=text, delta=delta, tokens=state["tokens"]))

        try:
            try:
                worker, job = self._queue_chat(goal, on_text)
                with self._chat_lock:
                    self._chat_jobs[key] = (worker, job)
                    cancelled_early = key in self._chat_cancelled
                    self._chat_cancelled.discard(key)
                if cancelled_early or goal_handle.is_cancel_requested:
                    worker.cancel(job)
                await self._finished(job)
            finally:
                with self._chat_lock:
                    self._chat_jobs.pop(key, None)
                    self._chat_cancelled.discard(key)
            answer = self._outcome("chat", job)
        except REFUSED as exc:
            result.success, result.message = False, str(exc)
            if goal_handle.is_cancel_requested:
                result.cancelled = True
                result.text = state["text"]
                goal_handle.canceled()
            else:
                goal_handle.abort()
            return result
        result.text, result.raw_text = answer.text, answer.raw_text
        header = answer.frame.header if answer.frame is not None else None
        result.objects, result.masks = found_objects(answer.found, answer.shape, header)
        if answer.cancelled or goal_handle.is_cancel_requested:
            result.cancelled, result.success = True, False
            result.message = "cancelled"
            goal_handle.canceled()
        else:
            result.success = True
            result.message = _answer_message("chat", answer)
            goal_handle.succeed()
        return result


def _wakes_the_executor(_future: Future) -> None:
    """Does nothing itself: scheduling it on the executor is what wakes the executor."""


def _described(object_id: int, text: str, mask) -> FoundObject:
    return FoundObject(object_id, text, "", mask, 1.0, True)


def _answer_message(kind: str, answer: Answer) -> str:
    if answer.cancelled:
        return f"{kind} cancelled"
    n = len(answer.found)
    if kind in ("add", "segment") and not n:
        return f"the model found nothing to segment (its answer: '{answer.text or answer.raw_text}')"
    if kind == "add":
        ids = ", ".join(str(f.id) for f in answer.found)
        return f"tracking {n} object(s): {ids}"
    return f"{kind} done" + (f"; {n} object(s) grounded" if n else "")


def _removal_message(removed: list[int], unknown: list[int], camera: Camera) -> str:
    message = f"removed {id_list(removed)}" if removed else "removed nothing"
    if unknown:
        message += f"; unknown object ids {id_list(unknown)} (tracked: {id_list(camera.tracker.object_ids)})"
    return message


def _check_source(source: int) -> None:
    if not 0 <= source <= SOURCE_NONE:
        raise RequestError(
            f"source {source} is not one of SOURCE_LATEST_FRAME=0, SOURCE_RECENT_FRAMES=1, SOURCE_NONE=2.",
            "source",
        )
