"""Commands, services and the Chat action of the sa2va node: validate, queue, answer.

Every request is checked in its callback (node active, camera known, text not empty nor too
long, image decodable), then queued on the language worker; the callback waits for the answer
(services, action) or the worker publishes it on `reply` (commands). Whatever goes wrong becomes
``success=false`` and a message saying why, never an exception escaping into the executor.
Mixed into :class:`~sa2va_ros.node.node.Sa2VANode`; the attributes it reads are the node's.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from typing import Any

from sensor_msgs.msg import Image
from std_msgs.msg import String

from sa2va_msgs.action import Chat
from sa2va_msgs.msg import Command, Reply
from sa2va_msgs.srv import AddObject, Ask, DescribeRegion, RemoveObjects, Segment
from sa2va_ros.model.errors import InputError
from sa2va_ros.model.mllm import Turn

from .camera import Camera, Frame, stamp_ns
from .image_codec import ImageError, image_to_rgb8, is_empty, mask_from_image
from .language_worker import CancelledError, QueueFullError, WorkerStoppedError
from .mask_codec import mask_message
from .messages import FoundObject, clean_text, found_objects
from .tasks import SOURCE_LATEST_FRAME, Answer, LanguageTasks


class RequestError(Exception):
    """A request cannot be served; the message goes back to the caller as is."""


class RequestHandlers:
    """The request side of the node (a mixin of Sa2VANode)."""

    # ------------------------------------------------------------------ request helpers

    def _require_active(self) -> None:
        name = self.get_fully_qualified_name()
        if self._phase == "active":
            return
        if self._phase == "loading":
            raise RequestError(
                "the model is still loading (configure in progress); try again when the node is active"
            )
        if self._phase == "inactive":
            raise RequestError(f"the node is inactive; activate it: ros2 lifecycle set {name} activate")
        reason = f" (last error: {self._load_error})" if self._load_error else ""
        raise RequestError(
            f"the node is unconfigured, no model is loaded{reason}; configure and activate it: "
            f"ros2 lifecycle set {name} configure, then activate"
        )

    def _camera(self, name: str) -> Camera:
        self._require_active()
        if not name:
            return self._cameras[0]
        wanted = name.strip("/")
        for camera in self._cameras:
            if camera.name.strip("/") == wanted:
                return camera
        known = ", ".join(repr(c.name) for c in self._cameras)
        raise RequestError(f"unknown camera '{name}'; this node serves: {known}")

    def _check_text(self, text: str, what: str) -> str:
        text = (text or "").strip()
        if not text:
            raise RequestError(f"empty {what}: say what to find or ask, e.g. 'the red mug on the left'")
        limit = self._params.max_command_length
        if len(text) > limit:
            raise RequestError(
                f"{what} is {len(text)} characters long; the limit is {limit} (max_command_length)"
            )
        return text

    def _given_frame(self, image: Image) -> Frame | None:
        """The request's own image as a Frame, or None when the field is empty."""
        if is_empty(image):
            return None
        try:
            rgb = image_to_rgb8(image, self._params.max_image_pixels)
        except ImageError as exc:
            raise RequestError(f"image: {exc}") from exc
        return Frame(image.header, rgb, [], time.monotonic())

    def _newest(self, camera: Camera) -> Frame:
        try:
            return LanguageTasks.newest(camera)
        except InputError as exc:
            raise RequestError(str(exc)) from exc

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

    def _submit(self, kind: str, fn: Callable) -> Any:
        worker = self._worker
        if worker is None:
            raise RequestError(f"{kind} refused: the node is not active")
        try:
            return worker.submit(fn, kind)
        except (QueueFullError, WorkerStoppedError) as exc:
            raise RequestError(str(exc)) from exc

    def _result(self, kind: str, job: Any, cancel: Callable[[], bool] | None = None) -> Any:
        """Wait for a job (request_timeout), mapping every failure to a RequestError."""
        deadline = time.monotonic() + self._params.request_timeout
        while not job.wait(0.05):
            if cancel is not None and cancel():
                job.cancel()
            if time.monotonic() > deadline:
                job.cancel()
                raise RequestError(
                    f"{kind} timed out after {self._params.request_timeout:.0f} s waiting for the language "
                    "model (request_timeout)"
                )
        try:
            return job.result()
        except (InputError, ImageError, CancelledError, WorkerStoppedError, RequestError) as exc:
            raise RequestError(str(exc)) from exc
        except Exception as exc:  # noqa: BLE001 - reported to the caller, logged with the trace
            self.get_logger().error(f"{kind} failed:\n{traceback.format_exc()}")
            raise RequestError(f"{kind} failed: {type(exc).__name__}: {exc}") from exc

    def _run(self, kind: str, fn: Callable) -> Any:
        return self._result(kind, self._submit(kind, fn))

    # ------------------------------------------------------------------ commands (topics)

    def _on_command(self, camera: str, msg: String) -> None:
        """A plain-text command: find and track what it names (camera "" = the first one)."""
        self._on_command_request(Command(action=Command.ADD, camera=camera, text=msg.data))

    def _on_command_request(self, msg: Command) -> None:
        reply = Reply(request_id=msg.request_id, camera=msg.camera, action=msg.action, request_text=msg.text)
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
                ids = list(msg.object_ids)
                if not ids:
                    raise RequestError("DESCRIBE needs object_ids")
                self._submit_with_reply(
                    reply, "describe", lambda job: self._describe_objects(camera, ids, job)
                )
            elif msg.action in (Command.REMOVE, Command.CLEAR):
                removed, unknown = self._remove(camera, list(msg.object_ids), msg.action == Command.CLEAR)
                reply.success = not unknown
                reply.message = _removal_message(removed, unknown, camera)
                self._reply_pub.publish(reply)
            else:
                raise RequestError(
                    f"unknown action {msg.action}; use Command.ADD=0, REMOVE=1, CLEAR=2, ASK=3 or DESCRIBE=4"
                )
        except RequestError as exc:
            reply.success = False
            reply.message = str(exc)
            self.get_logger().warning(f"request '{msg.request_id}' refused: {exc}")
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
                self.get_logger().error(f"{kind} failed:\n{traceback.format_exc()}")
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
        raise RequestError(f"unknown object id {object_id} on camera '{camera.name}'; tracked ids: {known}")

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

    def _srv_segment(self, req: Segment.Request, res: Segment.Response) -> Segment.Response:
        try:
            camera = self._camera(req.camera)
            expression = self._check_text(req.prompt, "prompt")
            frame = self._given_frame(req.image) or self._stamped(camera, req.stamp)
            answer = self._run(
                "segment", lambda job: self._tasks.segment(camera, expression, frame, req.track, job)
            )
            res.text, res.raw_text = answer.text, answer.raw_text
            res.objects, res.masks = found_objects(answer.found, answer.shape, answer.frame.header)
            res.success = bool(answer.found)
            res.message = _answer_message("segment", answer)
        except RequestError as exc:
            res.success, res.message = False, str(exc)
        return res

    def _srv_ask(self, req: Ask.Request, res: Ask.Response) -> Ask.Response:
        try:
            camera = self._camera(req.camera)
            question = self._check_text(req.question, "question")
            frame = self._given_frame(req.image)
            if frame is not None and req.source != Ask.Request.SOURCE_LATEST_FRAME:
                raise RequestError(
                    "image is only used with SOURCE_LATEST_FRAME; leave it empty for other sources"
                )
            answer = self._run(
                "ask", lambda job: self._tasks.ask(camera, question, req.source, frame, req.track, job)
            )
            res.text, res.raw_text = answer.text, answer.raw_text
            header = answer.frame.header if answer.frame is not None else None
            res.objects, res.masks = found_objects(answer.found, answer.shape, header)
            res.success = True
            res.message = _answer_message("ask", answer)
        except RequestError as exc:
            res.success, res.message = False, str(exc)
        return res

    def _srv_describe(
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
            elif req.box.width > 0 or req.box.height > 0:
                b = req.box
                region["box"] = (b.x_offset, b.y_offset, b.x_offset + b.width, b.y_offset + b.height)
            elif req.use_point:
                region["point"] = (req.point_x, req.point_y)
            elif req.object_id:
                if given is not None:
                    raise RequestError("object_id refers to the camera's frames: leave image empty")
                region["mask"] = self._object_mask(camera, frame, req.object_id)
            else:
                raise RequestError("say which region to describe: a mask, a box, a point or an object_id")
            answer = self._run(
                "describe", lambda job: self._tasks.describe(frame, job, prompt=prompt, **region)
            )
            res.text = answer.text
            if answer.region_mask is not None:
                res.mask = mask_message(answer.region_mask, frame.header)
            res.success = True
            res.message = _answer_message("describe", answer)
        except RequestError as exc:
            res.success, res.message = False, str(exc)
        return res

    def _srv_add_object(self, req: AddObject.Request, res: AddObject.Response) -> AddObject.Response:
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
                if req.box.width > 0 or req.box.height > 0:
                    b = req.box
                    kwargs["box"] = (b.x_offset, b.y_offset, b.x_offset + b.width, b.y_offset + b.height)
                if len(req.points_x) or len(req.points_y):
                    if len(req.points_x) != len(req.points_y):
                        raise RequestError(
                            f"points_x has {len(req.points_x)} values but points_y {len(req.points_y)}"
                        )
                    labels = list(req.point_labels) or [1] * len(req.points_x)
                    if len(labels) != len(req.points_x):
                        raise RequestError(
                            f"point_labels has {len(labels)} values for {len(req.points_x)} points"
                        )
                    kwargs["points"] = list(zip(req.points_x, req.points_y, strict=True))
                    kwargs["point_labels"] = labels
                if not kwargs:
                    raise RequestError("give a box, points or a mask")
                for x, y in kwargs.get("points", []):
                    if not (0 <= x < w and 0 <= y < h):
                        which = "the frame it names" if stamped is not None else "the newest frame"
                        raise RequestError(f"point ({x}, {y}) is outside {which} ({w}x{h})")
            res.header = frame.header
            if stamped is not None:
                # The prompt belongs to that frame: SAM-2 turns it into the object's mask there,
                # and the tracker takes the object from that mask.
                mask = kwargs.get("mask")
                if mask is None:
                    mask = self._model.sam2.mask_from_prompt(stamped.rgb, **kwargs)
                    if not mask.any():
                        raise RequestError("SAM-2 found no object at the prompt on the frame it names")
                kwargs = {"mask": mask}
                res.mask = mask_message(mask, frame.header)
            object_id = camera.tracker.add_object(label=label, **kwargs)
            camera.on_added(object_id, None)
            res.success, res.object_id = True, int(object_id)
            on = "prompted on the frame it names, " if stamped is not None else ""
            res.message = f"tracking object {object_id} ('{label}'), {on}from the next frame"
        except (InputError, ImageError) as exc:
            res.success, res.message = False, str(exc)
        except RequestError as exc:
            res.success, res.message = False, str(exc)
        return res

    def _srv_remove_objects(
        self, req: RemoveObjects.Request, res: RemoveObjects.Response
    ) -> RemoveObjects.Response:
        try:
            camera = self._camera(req.camera)
            if not req.clear_all and not len(req.object_ids):
                raise RequestError("give object_ids or set clear_all")
            removed, unknown = self._remove(camera, [int(i) for i in req.object_ids], req.clear_all)
            res.removed, res.unknown = removed, unknown
            res.success = not unknown
            res.message = _removal_message(removed, unknown, camera)
        except RequestError as exc:
            res.success, res.message = False, str(exc)
        return res

    # ------------------------------------------------------------------ chat action

    def _execute_chat(self, goal_handle) -> Chat.Result:
        goal = goal_handle.request
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
            camera = self._camera(goal.camera)
            prompt = self._check_text(goal.prompt, "prompt")
            if len(goal.history_user) != len(goal.history_assistant):
                raise RequestError(
                    f"history_user has {len(goal.history_user)} turns but history_assistant "
                    f"{len(goal.history_assistant)}; they must pair up"
                )
            history = [Turn(u, a) for u, a in zip(goal.history_user, goal.history_assistant, strict=True)]
            limit = int(goal.max_new_tokens)
            frames = [self._given_frame(image) for image in goal.images]
            if any(f is None for f in frames):
                raise RequestError("images: an image in the list is empty")
            frame, source = None, goal.source
            if len(frames) == 1:
                frame, source = frames[0], Chat.Goal.SOURCE_LATEST_FRAME
            elif frames:
                source = Chat.Goal.SOURCE_RECENT_FRAMES
            job = self._submit(
                "chat",
                lambda job: self._tasks.ask(
                    camera, prompt, source, frame, goal.track, job, history, limit, on_text, frames or None
                ),
            )
            answer = self._result("chat", job, cancel=lambda: goal_handle.is_cancel_requested)
        except RequestError as exc:
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
    message = f"removed {removed}" if removed else "removed nothing"
    if unknown:
        message += f"; unknown object ids {unknown} (tracked: {camera.tracker.object_ids})"
    return message
