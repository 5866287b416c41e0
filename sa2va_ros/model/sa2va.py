"""`Sa2VA`: the one object users of the model core hold.

It joins the three parts of a Sa2VA checkpoint - an MLLM adapter (``internvl.py`` or
``qwen_vl.py``), the ``[SEG]`` projection (``seg_projection.py``) and SAM-2 with a language
prompt (``sam2_prompt.py``) - and offers the tasks people use it for: segment, chat,
describe a region, grounded caption, video segmentation, and a streaming tracker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import prompts
from .checkpoint import CheckpointInfo, inspect_checkpoint, resolve_checkpoint
from .devices import resolve_device, resolve_dtype
from .errors import InputError
from .images import as_bool_mask, as_rgb_uint8
from .loading import CheckpointTensors
from .mllm import DEFAULT_MAX_NEW_TOKENS, MLLM, TextCallback, Turn
from .sam2_prompt import Sa2VASam2
from .seg_projection import SAM2_PROMPT_DIM, load_seg_projection
from .tracker import StreamingTracker, TrackerConfig

log = logging.getLogger(__name__)

#: Official video algorithm: the first frames go to the MLLM as keyframes (and are SAM-2
#: conditioning frames); the rest are tracked.
NUM_VIDEO_KEYFRAMES = 5


@dataclass
class Grounding:
    """The MLLM half of a request: the answer and one SAM-2 prompt embedding per [SEG]."""

    text: str
    token_ids: list[int]
    seg_embeddings: torch.Tensor  # (n_seg, 256) float32, on the CPU
    cancelled: bool = False
    prompt: str = ""


@dataclass
class SegmentResult:
    """An answer about one image, with one mask per [SEG] of the answer."""

    text: str
    token_ids: list[int]
    masks: list[np.ndarray]  # (H, W) bool each, at the image size
    seg_embeddings: torch.Tensor  # (n_seg, 256)
    scores: list[float] = field(default_factory=list)  # presence probability per mask (SAM-2 object score)
    region_mask: np.ndarray | None = None  # describe(): the region that was described
    cancelled: bool = False


@dataclass
class CaptionPhrase:
    phrase: str
    mask: np.ndarray  # (H, W) bool


@dataclass
class CaptionResult:
    text: str  # readable caption, markup removed
    raw_text: str  # as generated
    token_ids: list[int]
    phrases: list[CaptionPhrase]


@dataclass
class VideoResult:
    text: str
    token_ids: list[int]
    masks: list[list[np.ndarray]]  # [object][frame] (H, W) bool


def _load_mllm(
    info: CheckpointInfo,
    tensors: Mapping[str, torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
    attn: str | None,
) -> MLLM:
    if info.format == "internvl":
        from .internvl import InternVLChat

        return InternVLChat.from_checkpoint(
            info, tensors, device=device, dtype=dtype, attn_implementation=attn
        )
    from .qwen_vl import QwenVLChat

    return QwenVLChat.from_checkpoint(info, tensors, device=device, dtype=dtype, attn_implementation=attn)


class Sa2VA:
    """A loaded Sa2VA checkpoint. Not thread-safe: serialise calls (the ROS node does)."""

    def __init__(
        self, info: CheckpointInfo, mllm: MLLM, seg_projection: torch.nn.Module, sam2: Sa2VASam2
    ) -> None:
        self.info = info
        self.mllm = mllm
        self.seg_projection = seg_projection
        self.sam2 = sam2

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike = "ByteDance/Sa2VA-1B",
        *,
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        attn_implementation: str | None = None,
        revision: str | None = None,
    ) -> Sa2VA:
        """Load a checkpoint in the official layout from a folder or a hub id (natively, no remote code).

        ``device`` "auto" takes the GPU when there is one; ``dtype`` "auto" is bfloat16 on a
        GPU and float32 on the CPU. SAM-2 keeps float32 weights and runs under autocast,
        as the official code does.
        """
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        path = resolve_checkpoint(model, revision)
        info = inspect_checkpoint(Path(path))
        log.info("loading %s (%s format) on %s as %s", path, info.format, dev, dt)
        # Streamed: each tensor is read from the mapped files straight into its module.
        with CheckpointTensors(info.path) as tensors:
            mllm = _load_mllm(info, tensors, dev, dt, attn_implementation)
            projection = load_seg_projection(tensors, mllm.hidden_size, device=dev, dtype=dt)
            sam2 = Sa2VASam2.from_checkpoint(tensors, info.sam2_config, device=dev, dtype=dt)
        return cls(info, mllm, projection, sam2)

    # -- the MLLM half ---------------------------------------------------------------------

    @torch.inference_mode()
    def ground(
        self,
        images: np.ndarray | Sequence[np.ndarray] | None,
        prompt: str,
        *,
        video: bool = False,
        history: Sequence[Turn] = (),
        region_masks: np.ndarray | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        on_text: TextCallback | None = None,
    ) -> Grounding:
        """Run the MLLM and project every [SEG] to a SAM-2 prompt embedding (no SAM-2 yet).

        This is what the streaming tracker needs from the language model, and the slow part:
        the ROS node runs it off the tracking thread.
        """
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("The prompt is empty: say what to find or ask.")
        if images is None:
            frames: list[np.ndarray] = []
        elif isinstance(images, np.ndarray) and images.ndim in (2, 3) and not video:
            frames = [as_rgb_uint8(images)]
        else:
            frames = [as_rgb_uint8(f, name=f"frame {i}") for i, f in enumerate(images)]
        gen = self.mllm.generate(
            prompt,
            frames,
            video=video,
            history=history,
            region_masks=region_masks,
            max_new_tokens=max_new_tokens,
            on_text=on_text,
        )
        hidden = gen.seg_hidden_states
        if hidden.shape[0]:
            emb = self.seg_projection(hidden.to(next(self.seg_projection.parameters()).dtype)).float().cpu()
        else:
            emb = torch.zeros(0, SAM2_PROMPT_DIM)
        return Grounding(gen.text, list(gen.token_ids), emb, cancelled=gen.cancelled, prompt=gen.prompt)

    # -- image tasks -----------------------------------------------------------------------

    def masks_for(
        self, image: np.ndarray, g: Grounding, region_mask: np.ndarray | None = None
    ) -> SegmentResult:
        """SAM-2's masks for a grounding's [SEG] embeddings on ``image`` (one backbone pass).

        Public so callers that ground on other frames (e.g. a camera's recent frames) can
        segment the newest one without repeating this step.
        """
        image = as_rgb_uint8(image)
        masks: list[np.ndarray] = []
        scores: list[float] = []
        if g.seg_embeddings.shape[0]:
            seg = self.sam2.segment_image(image, g.seg_embeddings)
            masks = [m for m in seg.masks]
            scores = torch.sigmoid(seg.object_score_logits.float()).flatten().tolist()
        return SegmentResult(g.text, g.token_ids, masks, g.seg_embeddings, scores, region_mask, g.cancelled)

    def segment(
        self,
        image: np.ndarray,
        prompt: str,
        *,
        history: Sequence[Turn] = (),
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        on_text: TextCallback | None = None,
    ) -> SegmentResult:
        """Referring segmentation: the answer and one (H, W) mask per [SEG].

        ``prompt`` is used as the official code uses its text (``<image>`` marks the image;
        put in front when missing). An answer without [SEG] is not an error: no masks.
        """
        image = as_rgb_uint8(image)
        g = self.ground(image, prompt, history=history, max_new_tokens=max_new_tokens, on_text=on_text)
        return self.masks_for(image, g)

    def chat(
        self,
        prompt: str,
        image: np.ndarray | None = None,
        *,
        history: Sequence[Turn] = (),
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        on_text: TextCallback | None = None,
    ) -> SegmentResult:
        """Chat about an image (or text only); the caller keeps the history. Masks when [SEG]."""
        if image is None:
            g = self.ground(None, prompt, history=history, max_new_tokens=max_new_tokens, on_text=on_text)
            return SegmentResult(g.text, g.token_ids, [], g.seg_embeddings, cancelled=g.cancelled)
        return self.segment(image, prompt, history=history, max_new_tokens=max_new_tokens, on_text=on_text)

    def describe(
        self,
        image: np.ndarray,
        *,
        mask: np.ndarray | None = None,
        box: Sequence[float] | None = None,
        point: Sequence[float] | None = None,
        prompt: str | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        on_text: TextCallback | None = None,
    ) -> SegmentResult:
        """Describe a region given by a mask, a box or a point.

        The official code only takes masks; a box or a point is first turned into a mask by
        SAM-2's own prompt encoder (an extension of ours). Needs an MLLM with region prompts
        (the InternVL format).
        """
        image = as_rgb_uint8(image)
        if sum(x is not None for x in (mask, box, point)) != 1:
            raise InputError("describe() needs exactly one of mask=, box= or point=.")
        if not self.mllm.supports_region_prompts:
            raise InputError(
                f"{self.info.path.name} ({self.info.format} format) has no region prompts; region "
                "description needs an InternVL-format Sa2VA (e.g. ByteDance/Sa2VA-1B)."
            )
        if mask is None:
            if box is not None:
                x0, y0, x1, y1 = (float(v) for v in box)
                if not (x1 > x0 and y1 > y0):
                    raise InputError(f"box {tuple(box)} must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0.")
                mask = self.sam2.mask_from_prompt(image, box=(x0, y0, x1, y1))
            else:
                mask = self.sam2.mask_from_prompt(image, points=[tuple(point)], point_labels=[1])
            if not mask.any():
                raise InputError("SAM-2 found no region at the given box / point; give a mask instead.")
        region = as_bool_mask(mask, image.shape[:2], name="region mask")
        g = self.ground(
            image,
            prompt or prompts.DEFAULT_REGION_PROMPT,
            region_masks=region[None],
            max_new_tokens=max_new_tokens,
            on_text=on_text,
        )
        return self.masks_for(image, g, region_mask=region)

    def caption(self, image: np.ndarray, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> CaptionResult:
        """Grounded caption: ``<p> phrase </p> [SEG]`` pairs become (phrase, mask)."""
        image = as_rgb_uint8(image)
        g = self.ground(image, prompts.GROUNDED_CAPTION_PROMPT, max_new_tokens=max_new_tokens)
        seg = self.masks_for(image, g)
        parsed = prompts.parse_grounded_caption(g.text)
        phrases = [
            CaptionPhrase(p.phrase, seg.masks[p.seg_index])
            for p in parsed.phrases
            if p.seg_index is not None and p.seg_index < len(seg.masks)
        ]
        return CaptionResult(parsed.text, g.text, g.token_ids, phrases)

    # -- video and streaming ---------------------------------------------------------------

    def video(
        self,
        frames: Sequence[np.ndarray],
        prompt: str,
        *,
        num_keyframes: int = NUM_VIDEO_KEYFRAMES,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    ) -> VideoResult:
        """Video referring segmentation with the official keyframe algorithm.

        The first ``num_keyframes`` frames go to the MLLM; each [SEG] then conditions SAM-2
        on those same frames and the rest are tracked with SAM-2's memory. We run it through
        the streaming tracker, frame by frame, which gives the official masks while holding
        only SAM-2's memory window instead of the whole video.
        """
        if len(frames) == 0:
            raise InputError("video() got no frames.")
        rgb = [as_rgb_uint8(f, name=f"frame {i}") for i, f in enumerate(frames)]
        g = self.ground(rgb[:num_keyframes], prompt, video=True, max_new_tokens=max_new_tokens)
        n = g.seg_embeddings.shape[0]
        masks: list[list[np.ndarray]] = [[] for _ in range(n)]
        if n:
            tracker = self.new_tracker(TrackerConfig(num_keyframes=num_keyframes))
            ids = [tracker.add_object(embedding=e, prompt=prompt) for e in g.seg_embeddings]
            for frame in rgb:
                by_id = {o.id: o for o in tracker.step(frame)}
                for k, tid in enumerate(ids):
                    masks[k].append(by_id[tid].mask)
        return VideoResult(g.text, g.token_ids, masks)

    def new_tracker(self, config: TrackerConfig | None = None) -> StreamingTracker:
        """A streaming tracker over this model's SAM-2 (one per camera)."""
        return StreamingTracker(self.sam2, config or TrackerConfig())
