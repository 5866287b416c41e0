"""Streaming multi-object tracking with Sa2VA's SAM-2: one frame at a time, bounded memory.

The official Sa2VA needs the whole video up front (N + 5 backbone passes per ``[SEG]``, every
frame held at 1024x1024). A robot gets frames one by one for hours, tracks several objects at
once and cannot wait for its slow language model. :class:`StreamingTracker` therefore:

* runs ONE SAM-2 backbone pass per frame, shared by every object, and batches the per-object
  work (memory attention, mask decoder, memory encoder) across objects whose memories have
  the same shape;
* grounds a language object exactly like the official keyframe algorithm, but online: its first
  ``num_keyframes`` frames are decoded independently (no memory) with the ``[SEG]`` embedding
  as conditioning frames, and later frames are tracked with SAM-2's memory attention over
  those conditioning frames, the recent memory window and the object-pointer window. Fed a
  video frame by frame this reproduces the official offline masks;
* keeps per object only what SAM-2's memory attention can still read (:class:`MemoryBank`), so
  memory use does not grow with stream length;
* never blocks on the language model: add / reground / remove are queued from any thread and
  applied at the start of the next :meth:`StreamingTracker.step`.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError
from .images import as_rgb_uint8, mask_box
from .sam2_prompt import (
    MEMORY_STORAGE_DTYPE,
    FrameFeatures,
    HeadOutput,
    Sa2VASam2,
    load_original_mask_decoder,
    run_sam_heads,
)

ObjectState = Literal["tracking", "lost"]


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of a :class:`StreamingTracker`.

    The defaults reproduce the official Sa2VA video algorithm for a language object (5
    keyframes from the moment it is grounded, SAM-2's memory settings from the checkpoint).
    """

    #: Frames decoded as conditioning frames with the language embedding after an object is
    #: grounded (the official code uses the first 5 frames of the video).
    num_keyframes: int = 5
    #: Conditioning frames kept per object; re-grounding replaces the oldest beyond this cap.
    #: None = ``num_keyframes``. Below ``num_keyframes`` the official equivalence no longer holds.
    max_conditioning_frames: int | None = None
    #: Consecutive absent frames (presence < presence_threshold) before an object is "lost".
    lost_after_frames: int = 15
    #: Presence = sigmoid(SAM-2 object-score logit); below this the object counts as absent.
    presence_threshold: float = 0.5
    #: A pixel belongs to the mask when its logit exceeds this (0.0 = the official sigmoid > 0.5).
    mask_threshold: float = 0.0
    #: Raise ``needs_reground`` when this many seconds passed since the object was last
    #: grounded (None: only when lost). The tracker never calls the language model itself.
    reground_period_s: float | None = None
    #: Return empty masks for absent objects. Off by default: Sa2VA never masks by the object
    #: score (and its decoder's score is not trained for language prompts).
    hide_absent_masks: bool = False
    #: Sa2VA-i propagation: Meta's original SAM-2 weights (sam2_hiera_large.pt or a
    #: safetensors with Meta's names). Tracked frames and click/box prompts then use the
    #: original mask decoder; language keyframes keep Sa2VA's fine-tuned one.
    original_sam2_weights: str | Path | None = None
    #: Clear an object's recent (non-conditioning) memories when it is re-grounded, so stale
    #: "absent" memories do not fight the fresh conditioning frame (SAM-2's
    #: clear_non_cond_mem_around_input idea). Off = plain SAM-2 behaviour.
    clear_recent_on_reground: bool = False
    #: Run memory attention / decoder / memory encoder of objects with equal memory layouts as
    #: one batch: the frame's query side of memory attention is then computed once for all of
    #: them (see memory_attention.py). Measured on a CPU (bench/tracker.py, 4 objects, 1024
    #: input): 6149 vs 6470 ms per frame looping over objects; on a GPU it also saves launches.
    batch_objects: bool = True

    def __post_init__(self) -> None:
        if self.num_keyframes < 1:
            raise InputError(f"num_keyframes must be >= 1, got {self.num_keyframes}.")
        if self.max_conditioning_frames is not None and self.max_conditioning_frames < 1:
            raise InputError(f"max_conditioning_frames must be >= 1, got {self.max_conditioning_frames}.")
        if self.lost_after_frames < 1:
            raise InputError(f"lost_after_frames must be >= 1, got {self.lost_after_frames}.")
        if not 0.0 < self.presence_threshold < 1.0:
            raise InputError(f"presence_threshold must be in (0, 1), got {self.presence_threshold}.")
        if self.reground_period_s is not None and self.reground_period_s <= 0:
            raise InputError(f"reground_period_s must be positive or None, got {self.reground_period_s}.")

    @property
    def conditioning_cap(self) -> int:
        """Conditioning frames kept per object (``max_conditioning_frames`` or ``num_keyframes``)."""
        return self.num_keyframes if self.max_conditioning_frames is None else self.max_conditioning_frames


@dataclass
class TrackedObject:
    """One object's result on one frame."""

    id: int
    label: str
    prompt: str
    #: (H, W) bool at the size of the frame given to step().
    mask: np.ndarray
    #: Presence probability, sigmoid of SAM-2's object-score logit.
    score: float
    #: Tight box of the mask, (x0, y0, x1, y1) in pixels, x1/y1 exclusive; None if the mask is empty.
    box: tuple[int, int, int, int] | None
    state: ObjectState
    #: Frames since the object was last present (0 when present on this frame).
    frames_since_seen: int
    #: True when the caller should ask the language model for a fresh [SEG] (lost, or the
    #: re-grounding period elapsed); cleared by reground().
    needs_reground: bool
    #: True when this frame was decoded as a conditioning frame (keyframe, prompt, reground).
    is_keyframe: bool = False
    object_score_logit: float = 0.0
    #: (S/4, S/4) float32 mask logits of the model (256x256 for SAM-2 at 1024), on the CPU.
    low_res_logits: torch.Tensor | None = None
    #: Predicted IoU of each candidate mask of this decoder call (3 with multimask output).
    ious: torch.Tensor | None = None


class MemoryBank:
    """Everything SAM-2 may still read for one object -- and nothing else.

    SAM-2's memory attention for frame ``f`` reads (a) every conditioning frame, (b) the memory
    features of the ``num_maskmem - 1`` previous frames (strided by
    ``memory_temporal_stride_for_eval``), and (c) the object pointers of up to
    ``max_obj_ptrs_in_encoder - 1`` previous frames. Conditioning frames are capped at
    ``max_conditioning`` (the oldest goes first), pointers and features older than their window
    are dropped after each frame. Hence :attr:`bound`: the entry count never exceeds it,
    however long the stream.

    Entries are SAM-2's own per-frame output dicts (``maskmem_features``, ``maskmem_pos_enc``,
    ``obj_ptr``), so :meth:`output_dict` can be handed to SAM-2 unchanged.
    """

    def __init__(self, max_conditioning: int, memory_window: int, pointer_window: int):
        self.max_conditioning = max_conditioning
        #: How many frames back memory features are read.
        self.memory_window = memory_window
        #: How many frames back object pointers are read.
        self.pointer_window = pointer_window
        self.conditioning: dict[int, dict] = {}
        self.recent: dict[int, dict] = {}

    @classmethod
    def for_model(cls, model: torch.nn.Module, max_conditioning: int) -> MemoryBank:
        stride = max(1, int(model.memory_temporal_stride_for_eval))
        # Oldest memory frame SAM-2 reads for frame f: f - 1 - stride * (num_maskmem - 2) at most.
        memory_window = 1 + stride * max(0, int(model.num_maskmem) - 2) if model.num_maskmem > 1 else 0
        pointer_window = (
            max(0, int(model.max_obj_ptrs_in_encoder) - 1) if model.use_obj_ptrs_in_encoder else 0
        )
        return cls(max_conditioning, memory_window, pointer_window)

    @property
    def bound(self) -> int:
        """The most entries the bank can ever hold."""
        return self.max_conditioning + max(self.memory_window, self.pointer_window)

    @property
    def feature_bound(self) -> int:
        """The most memory feature maps (the big tensors) the bank can ever hold."""
        return self.max_conditioning + self.memory_window

    def __len__(self) -> int:
        return len(self.conditioning) + len(self.recent)

    @property
    def num_feature_maps(self) -> int:
        return sum(
            e["maskmem_features"] is not None for e in (*self.conditioning.values(), *self.recent.values())
        )

    def add_conditioning(self, frame_idx: int, entry: dict) -> None:
        """Store a conditioning frame; beyond the cap the oldest conditioning frame is replaced."""
        self.recent.pop(frame_idx, None)
        while len(self.conditioning) >= self.max_conditioning:
            self.conditioning.pop(next(iter(self.conditioning)))
        self.conditioning[frame_idx] = entry

    def add_tracked(self, frame_idx: int, entry: dict) -> None:
        self.recent[frame_idx] = entry

    def clear_recent(self) -> None:
        self.recent.clear()

    def prune(self, next_frame_idx: int) -> None:
        """Forget what SAM-2 will never read again when tracking ``next_frame_idx`` and later."""
        keep_from = next_frame_idx - max(self.memory_window, self.pointer_window)
        for idx in [i for i in self.recent if i < keep_from]:
            del self.recent[idx]
        for idx, entry in self.recent.items():
            if idx < next_frame_idx - self.memory_window and entry["maskmem_features"] is not None:
                # Only the object pointer is still read; drop the feature map.
                self.recent[idx] = {**entry, "maskmem_features": None}

    def output_dict(self) -> dict[str, dict[int, dict]]:
        """The view SAM-2's ``_prepare_memory_conditioned_features`` reads."""
        return {"cond_frame_outputs": self.conditioning, "non_cond_frame_outputs": self.recent}

    def layout(self, frame_idx: int, with_cond_offsets: bool) -> tuple:
        """What determines the shape of this object's memory for ``frame_idx``.

        Objects with equal layouts can be batched through memory attention.
        """
        cond: tuple = (
            tuple(frame_idx - i for i in self.conditioning)
            if with_cond_offsets
            else (len(self.conditioning),)
        )
        recent = tuple(
            (frame_idx - i, e["maskmem_features"] is not None) for i, e in sorted(self.recent.items())
        )
        return cond, recent


@dataclass
class _Prompt:
    """A SAM-2 prompt waiting for the next frame."""

    points: list[tuple[float, float]] | None = None
    point_labels: list[int] | None = None
    box: tuple[float, float, float, float] | None = None
    mask: np.ndarray | None = None


@dataclass
class _Track:
    id: int
    label: str
    prompt: str
    bank: MemoryBank
    embedding: torch.Tensor | None = None
    keyframes_left: int = 0
    pending_prompt: _Prompt | None = None
    pending_reground: torch.Tensor | None = None
    absent_run: int = 0
    frames_since_seen: int = 0
    lost: bool = False
    grounded_at: float | None = None


@dataclass
class _Decoded:
    """One object's decoder result on the current frame."""

    track: _Track
    low_res: torch.Tensor  # (1, 1, s, s)
    ious: torch.Tensor  # (M,)
    object_score_logit: float
    is_keyframe: bool


@dataclass
class _Commands:
    """Work queued by add/reground/remove, applied at the start of the next step()."""

    adds: list[_Track] = field(default_factory=list)
    regrounds: dict[int, torch.Tensor] = field(default_factory=dict)
    removes: set[int] = field(default_factory=set)


class StreamingTracker:
    """Track any number of objects over an endless stream of frames with Sa2VA's SAM-2."""

    def __init__(self, sam2: Sa2VASam2, config: TrackerConfig | None = None):
        self.sam2 = sam2
        self.model = sam2.model
        self.config = config or TrackerConfig()
        self._tracks: dict[int, _Track] = {}
        self._lock = threading.Lock()
        self._queue = _Commands()
        self._ids = itertools.count(1)
        #: Index of the next frame; SAM-2 memories are keyed by it.
        self.frame_index = 0
        #: Backbone passes run so far (one per step with at least one object).
        self.frames_encoded = 0
        # Sa2VA-i: a second decoder for propagation (and clicks), Sa2VA's for language keyframes.
        self.tracking_decoder = self.model.sam_mask_decoder
        if self.config.original_sam2_weights is not None:
            self.tracking_decoder = load_original_mask_decoder(
                self.config.original_sam2_weights, self.model.sam_mask_decoder
            ).to(sam2.device)
        self._maskmem_pos_enc: list[torch.Tensor] | None = None

    # ------------------------------------------------------------------ thread-safe commands

    def add_object(
        self,
        embedding: torch.Tensor | np.ndarray | None = None,
        *,
        points: Sequence[Sequence[float]] | None = None,
        point_labels: Sequence[int] | None = None,
        box: Sequence[float] | None = None,
        mask: np.ndarray | None = None,
        label: str = "",
        prompt: str = "",
    ) -> int:
        """Queue a new object; it is grounded on the next frame. Returns its id (stable for life).

        Give exactly one of: a language ``embedding`` (256,) from a [SEG]; SAM-2 ``points``
        (x, y) in pixels of the next frame with ``point_labels`` (1 object, 0 background,
        default all 1) and/or a ``box`` (x0, y0, x1, y1); or a ``mask`` (H, W) bool.
        """
        emb = None
        pending = None
        given = [embedding is not None, points is not None or box is not None, mask is not None]
        if sum(given) != 1:
            raise InputError("add_object needs exactly one of: embedding, points/box, mask.")
        if embedding is not None:
            emb = self._check_embedding(embedding)
        elif mask is not None:
            m = np.asarray(mask)
            if m.ndim == 3 and m.shape[2] == 1:
                m = m[:, :, 0]
            if m.ndim != 2 or m.shape[0] < 2 or m.shape[1] < 2:
                raise InputError(f"mask must be (H, W), got shape {m.shape}.")
            m = m.astype(bool)
            if not m.any():
                raise InputError("mask is empty: there is no object to track.")
            pending = _Prompt(mask=m)
        else:
            # Validate now (shape, labels, box order); pixel scaling happens on the next frame.
            self.sam2.prompt_to_points((2, 2), points, point_labels, box)
            pending = _Prompt(
                points=[(float(x), float(y)) for x, y in points] if points is not None else None,
                point_labels=list(point_labels) if point_labels is not None else None,
                box=tuple(float(v) for v in np.asarray(box).reshape(4)) if box is not None else None,
            )
        with self._lock:
            track = _Track(
                id=next(self._ids),
                label=label,
                prompt=prompt,
                bank=MemoryBank.for_model(self.model, self.config.conditioning_cap),
                embedding=emb,
                keyframes_left=self.config.num_keyframes if emb is not None else 0,
                pending_prompt=pending,
            )
            self._queue.adds.append(track)
            return track.id

    def reground(self, object_id: int, embedding: torch.Tensor | np.ndarray) -> bool:
        """Queue a fresh [SEG] embedding: the next frame becomes a new conditioning frame
        (replacing the oldest one beyond the cap). Returns False for an unknown id."""
        emb = self._check_embedding(embedding)
        with self._lock:
            if object_id not in self._known_ids():
                return False
            self._queue.regrounds[object_id] = emb
            return True

    def remove_object(self, object_id: int) -> bool:
        """Queue removal of an object; False if the id is unknown (or already removed)."""
        with self._lock:
            if object_id not in self._known_ids():
                return False
            self._queue.removes.add(object_id)
            return True

    def clear(self) -> None:
        """Queue removal of every object."""
        with self._lock:
            self._queue.removes.update(self._known_ids())

    @property
    def object_ids(self) -> list[int]:
        """Ids of live objects, counting queued additions and removals."""
        with self._lock:
            return sorted(self._known_ids())

    def _known_ids(self) -> set[int]:
        ids = set(self._tracks) | {t.id for t in self._queue.adds}
        return ids - self._queue.removes

    def _check_embedding(self, embedding: object) -> torch.Tensor:
        emb = torch.as_tensor(np.asarray(embedding) if isinstance(embedding, np.ndarray) else embedding)
        emb = emb.detach().reshape(-1) if emb.ndim == 2 and emb.shape[0] == 1 else emb.detach()
        dim = int(self.model.sam_prompt_embed_dim)
        if emb.ndim != 1 or emb.shape[0] != dim or not emb.is_floating_point():
            raise InputError(
                f"embedding must be a float ({dim},) vector from a [SEG], got shape {tuple(emb.shape)}."
            )
        if not torch.isfinite(emb).all():
            raise InputError("embedding has NaN or infinite values.")
        return emb.float().to(self.sam2.device)

    def _apply_commands(self) -> None:
        # Under the lock: other threads read self._tracks (object_ids, remove_object...) and must
        # never see an id vanish between the queue and the live set.
        with self._lock:
            queue, self._queue = self._queue, _Commands()
            for track in queue.adds:
                self._tracks[track.id] = track
            for object_id, emb in queue.regrounds.items():
                if object_id in self._tracks:
                    self._tracks[object_id].pending_reground = emb
            for object_id in queue.removes:
                self._tracks.pop(object_id, None)

    # ------------------------------------------------------------------ tracking

    @torch.inference_mode()
    def step(self, frame: object, stamp: float | None = None) -> list[TrackedObject]:
        """Track every object on one frame (RGB uint8, any size; grayscale accepted).

        ``stamp`` is the frame time in seconds (e.g. the ROS header stamp) for the re-grounding
        period; default: the monotonic clock. Returns one TrackedObject per object, by id.
        """
        rgb = as_rgb_uint8(frame, "frame")
        stamp = time.monotonic() if stamp is None else float(stamp)
        self._apply_commands()
        frame_idx = self.frame_index
        self.frame_index += 1
        if not self._tracks:
            return []
        features = self.sam2.encode(rgb)
        self.frames_encoded += 1

        language, prompted, tracked = [], [], []
        for track in self._tracks.values():
            if track.pending_prompt is not None:
                prompted.append(track)
            elif track.pending_reground is not None or track.keyframes_left > 0:
                language.append(track)
            else:
                tracked.append(track)

        decoded: list[_Decoded] = []
        if language:
            decoded += self._condition_on_language(language, features, frame_idx, stamp)
        for track in prompted:
            decoded.append(self._condition_on_prompt(track, features, frame_idx, stamp))
        for group in self._group_by_layout(tracked, frame_idx):
            decoded += self._track_group(group, features, frame_idx)
        for track in self._tracks.values():
            track.bank.prune(frame_idx + 1)
        decoded.sort(key=lambda d: d.track.id)
        return self._results(decoded, features.orig_hw, stamp)

    def _memory_entry(self, maskmem_features: torch.Tensor, obj_ptr: torch.Tensor) -> dict:
        # Sa2VA (and Meta's predictor) store memory features as bfloat16, even in float32.
        return {
            "maskmem_features": maskmem_features.to(MEMORY_STORAGE_DTYPE).clone(),
            "maskmem_pos_enc": self._maskmem_pos_enc,
            "obj_ptr": obj_ptr.clone(),
        }

    def _encode_memory(
        self,
        features: FrameFeatures,
        out_high_res: torch.Tensor,
        object_scores: torch.Tensor,
        from_points: bool,
    ) -> torch.Tensor:
        batch = out_high_res.size(0)
        with self.sam2.autocast():
            maskmem_features, maskmem_pos_enc = self.model._encode_new_memory(
                current_vision_feats=features.all_levels(batch),
                feat_sizes=features.feat_sizes,
                pred_masks_high_res=out_high_res,
                object_score_logits=object_scores,
                is_mask_from_pts=from_points,
            )
        if self._maskmem_pos_enc is None:
            # Identical for every frame and object: keep one copy (as SAM-2's predictor does).
            self._maskmem_pos_enc = [p[0:1].float().clone() for p in maskmem_pos_enc]
        return maskmem_features

    def _condition_on_language(
        self, tracks: list[_Track], features: FrameFeatures, frame_idx: int, stamp: float
    ) -> list[_Decoded]:
        """Decode keyframes / re-grounding frames: each independently, no memory (Sa2VA's
        ``add_language_embd``), then encode their memory as the official preflight does."""
        embeddings = []
        for track in tracks:
            if track.pending_reground is not None:
                track.embedding = track.pending_reground
                track.pending_reground = None
                track.grounded_at = stamp
                if self.config.clear_recent_on_reground:
                    track.bank.clear_recent()
            elif track.grounded_at is None:
                track.grounded_at = stamp
            track.keyframes_left = max(0, track.keyframes_left - 1)
            embeddings.append(track.embedding)
        out = self.sam2.decode_language(features, torch.stack(embeddings))
        maskmem = self._encode_memory(features, out.high_res_masks, out.object_score_logits, from_points=True)
        results = []
        for i, track in enumerate(tracks):
            track.bank.add_conditioning(
                frame_idx, self._memory_entry(maskmem[i : i + 1], out.obj_ptr[i : i + 1])
            )
            results.append(self._decoded(track, out, i, is_keyframe=True))
        return results

    def _condition_on_prompt(
        self, track: _Track, features: FrameFeatures, frame_idx: int, stamp: float
    ) -> _Decoded:
        """A click / box / mask prompt: SAM-2's own conditioning-frame path."""
        prompt = track.pending_prompt
        track.pending_prompt = None
        track.grounded_at = stamp
        if prompt.mask is not None:
            size = self.sam2.image_size
            mask = torch.from_numpy(prompt.mask).to(self.sam2.device, torch.float32)[None, None]
            if mask.shape[-2:] != (size, size):
                # As SAM2VideoPredictor.add_new_mask: antialiased resize, then binarise.
                mask = F.interpolate(
                    mask, size=(size, size), mode="bilinear", align_corners=False, antialias=True
                )
            mask = (mask >= 0.5).float()
            # SAM-2's _use_mask_as_output runs the model's own decoder for the object pointer.
            high_res = self.sam2.high_res_features(features, 1)
            feats, _ = features.top(1)
            pix = feats[0].permute(1, 2, 0).reshape(1, -1, *features.feat_sizes[-1])
            with self.sam2.autocast():
                low, high, ious, _, _, obj_ptr, scores = self.model._use_mask_as_output(pix, high_res, mask)
            out = HeadOutput(low, ious, low, high, obj_ptr, scores)
            from_points = False
        else:
            coords, labels = self.sam2.prompt_to_points(
                features.orig_hw, prompt.points, prompt.point_labels, prompt.box
            )
            with self.sam2.autocast():
                out = run_sam_heads(
                    self.model,
                    self.tracking_decoder,
                    self.sam2.conditioning_pix_feat(features, 1),
                    self.sam2.high_res_features(features, 1, self.tracking_decoder),
                    point_coords=coords.to(self.sam2.device),
                    point_labels=labels.to(self.sam2.device),
                    multimask_output=self.model._use_multimask(True, {"point_labels": labels}),
                )
            from_points = True
        maskmem = self._encode_memory(features, out.high_res_masks, out.object_score_logits, from_points)
        track.bank.add_conditioning(frame_idx, self._memory_entry(maskmem, out.obj_ptr))
        return self._decoded(track, out, 0, is_keyframe=True)

    def _group_by_layout(self, tracks: list[_Track], frame_idx: int) -> list[list[_Track]]:
        if not self.config.batch_objects:
            return [[t] for t in tracks]
        with_offsets = bool(self.model.add_tpos_enc_to_obj_ptrs)
        groups: dict[tuple, list[_Track]] = {}
        for track in tracks:
            groups.setdefault(track.bank.layout(frame_idx, with_offsets), []).append(track)
        return list(groups.values())

    def _batched_output_dict(self, tracks: list[_Track], frame_idx: int) -> dict:
        """One SAM-2 output dict for objects with equal memory layouts, entries stacked on the
        batch dimension. Conditioning frames only count (their pointers' temporal positions
        are unused unless add_tpos_enc_to_obj_ptrs, which is part of the layout then), so the
        first object's frame indices serve for all."""
        if len(tracks) == 1:
            return tracks[0].bank.output_dict()
        first = tracks[0].bank

        def stack(entries: list[dict]) -> dict:
            feats = entries[0]["maskmem_features"]
            return {
                "maskmem_features": None
                if feats is None
                else torch.cat([e["maskmem_features"] for e in entries]),
                "maskmem_pos_enc": [
                    p.expand(len(entries), -1, -1, -1) for p in entries[0]["maskmem_pos_enc"]
                ],
                "obj_ptr": torch.cat([e["obj_ptr"] for e in entries]),
            }

        cond_lists = [list(t.bank.conditioning.values()) for t in tracks]
        cond = {idx: stack([c[k] for c in cond_lists]) for k, idx in enumerate(first.conditioning)}
        recent = {idx: stack([t.bank.recent[idx] for t in tracks]) for idx in first.recent}
        return {"cond_frame_outputs": cond, "non_cond_frame_outputs": recent}

    def _track_group(self, tracks: list[_Track], features: FrameFeatures, frame_idx: int) -> list[_Decoded]:
        """SAM-2 tracking of objects with equal memory layouts, batched (memory attention,
        mask decoder, memory encoder), exactly as ``track_step`` does for a non-conditioning frame."""
        batch = len(tracks)
        feats, pos = features.top(batch)
        with self.sam2.autocast():
            pix = self.model._prepare_memory_conditioned_features(
                frame_idx=frame_idx,
                is_init_cond_frame=False,
                current_vision_feats=feats,
                current_vision_pos_embeds=pos,
                feat_sizes=features.feat_sizes[-1:],
                output_dict=self._batched_output_dict(tracks, frame_idx),
                # Frames seen so far: SAM-2 reads pointers back to frame 0 at most, like offline.
                num_frames=frame_idx + 1,
            )
            out = run_sam_heads(
                self.model,
                self.tracking_decoder,
                pix,
                self.sam2.high_res_features(features, batch, self.tracking_decoder),
                multimask_output=self.model._use_multimask(False, None),
            )
        maskmem = self._encode_memory(
            features, out.high_res_masks, out.object_score_logits, from_points=False
        )
        results = []
        for i, track in enumerate(tracks):
            track.bank.add_tracked(frame_idx, self._memory_entry(maskmem[i : i + 1], out.obj_ptr[i : i + 1]))
            results.append(self._decoded(track, out, i, is_keyframe=False))
        return results

    @staticmethod
    def _decoded(track: _Track, out: HeadOutput, i: int, is_keyframe: bool) -> _Decoded:
        return _Decoded(
            track=track,
            low_res=out.low_res_masks[i : i + 1],
            ious=out.ious[i],
            object_score_logit=float(out.object_score_logits[i].reshape(-1)[0]),
            is_keyframe=is_keyframe,
        )

    def _results(
        self, decoded: list[_Decoded], orig_hw: tuple[int, int], stamp: float
    ) -> list[TrackedObject]:
        if not decoded:
            return []
        cfg = self.config
        logits = self.sam2.logits_to_orig(torch.cat([d.low_res for d in decoded]), orig_hw)
        masks = (logits > cfg.mask_threshold).cpu().numpy()
        results = []
        for d, mask in zip(decoded, masks, strict=True):
            track = d.track
            score = float(torch.sigmoid(torch.tensor(d.object_score_logit)))
            if score >= cfg.presence_threshold:
                track.absent_run = track.frames_since_seen = 0
                track.lost = False
            else:
                track.absent_run += 1
                track.frames_since_seen += 1
                track.lost = track.lost or track.absent_run >= cfg.lost_after_frames
            if cfg.hide_absent_masks and score < cfg.presence_threshold:
                mask = np.zeros_like(mask)
            period_due = (
                cfg.reground_period_s is not None
                and track.grounded_at is not None
                and stamp - track.grounded_at >= cfg.reground_period_s
            )
            results.append(
                TrackedObject(
                    id=track.id,
                    label=track.label,
                    prompt=track.prompt,
                    mask=mask,
                    score=score,
                    box=mask_box(mask),
                    state="lost" if track.lost else "tracking",
                    frames_since_seen=track.frames_since_seen,
                    needs_reground=(track.lost or period_due) and track.pending_reground is None,
                    is_keyframe=d.is_keyframe,
                    object_score_logit=d.object_score_logit,
                    low_res_logits=d.low_res[0, 0].float().cpu(),
                    ious=d.ious.float().cpu(),
                )
            )
        return results
