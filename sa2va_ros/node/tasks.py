"""What the language worker does for each kind of request, on the worker thread.

Every function here runs the MLLM on the camera's NEWEST processed frame at the moment the
job starts (not the frame current when it was queued), hands grounded objects to the camera's
tracker with ``tracker.add_object(embedding=...)`` (applied at the tracker's next frame, so
tracking never waits for language) and returns an :class:`Answer` the node turns into a
response. Nothing here touches ROS entities.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from sa2va_ros.model.errors import InputError
from sa2va_ros.model.mllm import StopWhen, Turn
from sa2va_ros.model.prompts import IMAGE_PLACEHOLDER, parse_grounded_caption, segmentation_prompt

from .camera import Camera, Frame
from .depth import annotate_found
from .language_worker import Job
from .messages import FoundObject, clean_text

#: "Please segment X." and "segment X" are common ways to write a command; the model wants X
#: inside its own segmentation question, not nested in a second one.
_SEGMENT_PREFIX = re.compile(r"^\s*(please\s+)?(segment|track|find)\s+", re.IGNORECASE)

SOURCE_LATEST_FRAME, SOURCE_RECENT_FRAMES, SOURCE_NONE = 0, 1, 2


def expression_prompt(expression: str) -> str:
    """The segmentation question for a referring expression (verbatim if it holds <image>)."""
    if IMAGE_PLACEHOLDER in expression:
        return expression
    target = _SEGMENT_PREFIX.sub("", expression).strip().rstrip(".").strip()
    return segmentation_prompt(target or expression)


@dataclass
class Answer:
    """The outcome of one language request."""

    raw_text: str = ""
    text: str = ""
    found: list[FoundObject] = field(default_factory=list)
    #: The frame the answer is about (its header stamps the reply); None for text-only.
    frame: Frame | None = None
    cancelled: bool = False
    region_mask: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int] | None:
        return None if self.frame is None else self.frame.rgb.shape[:2]


class LanguageTasks:
    """The request implementations, bound to one loaded model."""

    def __init__(self, model, max_new_tokens: Callable[[], int]):
        self.model = model
        self._max_new_tokens = max_new_tokens

    # -- helpers --------------------------------------------------------------------------

    @staticmethod
    def newest(camera: Camera) -> Frame:
        frame = camera.latest
        if frame is None:
            raise InputError(
                f"no frame processed yet for camera '{camera.name}' (topic {camera.topic('image')}): "
                "is the camera publishing, with a compatible QoS?"
            )
        return frame

    @staticmethod
    def _stopper(job: Job, on_text: Callable[[str], None] | None = None) -> Callable[[str], bool]:
        """Stops generation when the job is cancelled; feeds ``on_text`` too, where given."""
        if on_text is None:  # no text wanted: nothing decoded or streamed per token for it
            return StopWhen(lambda: job.cancel_requested)

        def callback(piece: str) -> bool:
            on_text(piece)
            return not job.cancel_requested

        return callback

    def _track(
        self,
        camera: Camera,
        embeddings,
        labels: Sequence[str],
        prompt: str,
        expressions: Sequence[str | None],
    ) -> list[int]:
        ids = []
        for emb, label, expression in zip(embeddings, labels, expressions, strict=True):
            object_id = camera.tracker.add_object(embedding=emb, label=label, prompt=prompt)
            camera.on_added(object_id, expression)
            ids.append(object_id)
        return ids

    @staticmethod
    def _phrases(raw: str, n: int, fallback: str) -> list[str | None]:
        """The grounded phrase of each [SEG] (``<p> a cup </p> [SEG]``), or None."""
        names: list[str | None] = [None] * n
        for phrase in parse_grounded_caption(raw).phrases:
            if phrase.seg_index is not None and phrase.seg_index < n:
                names[phrase.seg_index] = phrase.phrase
        return names

    def _found(
        self, result, camera: Camera | None, track: bool, prompt: str, label: str, expression: str | None
    ) -> list[FoundObject]:
        """FoundObjects of a result with masks (``segment``/``chat``), tracking them when asked."""
        n = int(result.seg_embeddings.shape[0])
        phrases = self._phrases(result.text, n, label)
        labels = [p or label for p in phrases]
        expressions = [p or expression for p in phrases]
        if track and n:
            ids = self._track(camera, result.seg_embeddings, labels, prompt, expressions)
        else:
            ids = list(range(1, n + 1))
        masks = list(result.masks) + [None] * (n - len(result.masks))
        scores = list(getattr(result, "scores", []) or []) + [1.0] * n
        return [
            FoundObject(ids[i], labels[i], prompt, masks[i], float(scores[i]), track and n > 0)
            for i in range(n)
        ]

    def _answered(
        self,
        result,
        frame: Frame,
        camera: Camera,
        track: bool,
        prompt: str,
        label: str,
        expression: str | None,
    ) -> Answer:
        """The Answer to a request whose result carries masks: its objects found (and tracked when
        asked), unless the request was cancelled."""
        answer = _answer(result, frame)
        if not result.cancelled:
            answer.found = self._found(result, camera, track, prompt, label, expression)
            annotate_found(answer.found, frame)
        return answer

    # -- requests -------------------------------------------------------------------------

    def add(self, camera: Camera, expression: str, job: Job) -> Answer:
        """Find ``expression`` in the newest frame and start tracking every object it names."""
        frame = self.newest(camera)
        g = self.model.ground(
            frame.rgb,
            expression_prompt(expression),
            max_new_tokens=self._max_new_tokens(),
            on_text=self._stopper(job),
        )
        answer = _answer(g, frame)
        n = int(g.seg_embeddings.shape[0])
        if n and not g.cancelled:
            phrases = self._phrases(g.text, n, expression)
            labels = [p or expression for p in phrases]
            ids = self._track(camera, g.seg_embeddings, labels, expression, [expression] * n)
            answer.found = [
                FoundObject(i, lab, expression, None, 1.0, True) for i, lab in zip(ids, labels, strict=True)
            ]
        return answer

    def segment(self, camera: Camera, expression: str, frame: Frame | None, track: bool, job: Job) -> Answer:
        """Masks of what ``expression`` names on ``frame`` (default: the newest frame)."""
        frame = frame or self.newest(camera)
        r = self.model.segment(
            frame.rgb,
            expression_prompt(expression),
            max_new_tokens=self._max_new_tokens(),
            on_text=self._stopper(job),
        )
        return self._answered(r, frame, camera, track, expression, expression, expression)

    def ask(
        self,
        camera: Camera,
        question: str,
        source: int,
        frame: Frame | None,
        track: bool,
        job: Job,
        history: Sequence[Turn] = (),
        max_new_tokens: int = 0,
        on_text: Callable[[str], None] | None = None,
        frames: Sequence[Frame] | None = None,
    ) -> Answer:
        """Answer ``question`` about the newest frame, the recent frames, or text only.

        ``frames`` (oldest first) replace the camera's recent frames (a chat goal's own images).
        """
        limit = max_new_tokens or self._max_new_tokens()
        stop = self._stopper(job, on_text)
        label = question if len(question) <= 60 else question[:57] + "..."
        if source == SOURCE_NONE:
            r = self.model.chat(question, None, history=history, max_new_tokens=limit, on_text=stop)
            answer = _answer(r)
            n = int(r.seg_embeddings.shape[0])
            if track and n and not r.cancelled:
                # No image to show masks on, but the camera's tracker can still take the objects.
                answer.found = self._found(r, camera, True, question, label, None)
            return answer
        if source == SOURCE_RECENT_FRAMES:
            frames = list(frames) if frames else camera.recent(self._num_keyframes(camera))
            if not frames:
                self.newest(camera)  # raises the "no frame yet" error
            g = self.model.ground(
                [f.rgb for f in frames],
                question,
                video=True,
                history=history,
                max_new_tokens=limit,
                on_text=stop,
            )
            newest = frames[-1]
            answer = _answer(g, newest)
            if not g.cancelled:
                result = self.model.masks_for(newest.rgb, g)
                answer.found = self._found(result, camera, track, question, label, None)
                annotate_found(answer.found, newest)
            return answer
        if source != SOURCE_LATEST_FRAME:
            raise InputError(
                f"source {source} is not one of SOURCE_LATEST_FRAME=0, SOURCE_RECENT_FRAMES=1, SOURCE_NONE=2."
            )
        frame = frame or self.newest(camera)
        r = self.model.chat(question, frame.rgb, history=history, max_new_tokens=limit, on_text=stop)
        return self._answered(r, frame, camera, track, question, label, None)

    def describe(
        self,
        frame: Frame,
        job: Job,
        *,
        mask: np.ndarray | None = None,
        box: Sequence[float] | None = None,
        point: Sequence[float] | None = None,
        prompt: str | None = None,
    ) -> Answer:
        """Describe a region of ``frame`` given by a mask, a box or a point."""
        r = self.model.describe(
            frame.rgb,
            mask=mask,
            box=box,
            point=point,
            prompt=prompt or None,
            max_new_tokens=self._max_new_tokens(),
            on_text=self._stopper(job),
        )
        return _answer(r, frame, region_mask=r.region_mask)

    def reground(self, camera: Camera, object_id: int, expression: str, job: Job) -> bool:
        """A fresh [SEG] for a tracked object from the newest frame; False when none came."""
        frame = self.newest(camera)
        g = self.model.ground(
            frame.rgb,
            expression_prompt(expression),
            max_new_tokens=self._max_new_tokens(),
            on_text=self._stopper(job),
        )
        if g.cancelled or not g.seg_embeddings.shape[0]:
            return False
        return bool(camera.tracker.reground(object_id, g.seg_embeddings[0]))

    @staticmethod
    def _num_keyframes(camera: Camera) -> int:
        return int(getattr(camera.tracker.config, "num_keyframes", 5))


def _answer(result, frame: Frame | None = None, **extra) -> Answer:
    """An Answer with a model result's text, raw (for [SEG] parsing) and cleaned (for people)."""
    return Answer(
        raw_text=result.text, text=clean_text(result.text), frame=frame, cancelled=result.cancelled, **extra
    )
