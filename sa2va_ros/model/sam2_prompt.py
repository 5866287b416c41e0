"""SAM-2 as Sa2VA uses it: built from Meta's ``sam2`` package, prompted with a language embedding.

Sa2VA's grounding half is SAM-2 v2.0 (Hiera-L) whose mask decoder receives one extra sparse
prompt token: the 256-d projection of a ``[SEG]`` hidden state. Meta's package has no public
way to pass such a token (``SAM2Base._forward_sam_heads`` builds the sparse prompt itself and
always applies the "no object" score masking, which Sa2VA disabled). So this module builds a
stock ``SAM2Base`` and drives its parts directly -- ``image_encoder``, ``sam_prompt_encoder``,
``sam_mask_decoder``, ``_prepare_memory_conditioned_features``, ``_encode_new_memory`` -- with
one small hand-written replacement of ``_forward_sam_heads`` (:func:`run_sam_heads`). Weights
stay Meta's; two SAM-2 modules get exact rewrites that do less work for the same numbers: the
memory attention (:mod:`.memory_attention`) and the sine position encodings
(:mod:`.position_encoding`).

Also here, for now: reading Sa2VA's SAM-2 weights (:func:`load_sam2_weights`, Meta's original
mask decoder for Sa2VA-i). Which SAM-2 to build is :mod:`.sam2_config`'s job; writing small
SAM-2 checkpoints for tests is :mod:`sa2va_ros.testing.sam2_writer`'s.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .checkpoint import SAM2_PREFIX, take_prefix
from .errors import CheckpointError, InputError
from .images import as_rgb_uint8
from .loading import load_strict, plan_from_names, skeleton
from .memory_attention import use_factored_memory_attention
from .position_encoding import use_shared_position_encodings
from .sam2_config import build_sam2

#: Official checkpoint name -> Meta ``sam2`` name, applied after removing SAM2_PREFIX.
#: Sa2VA's copy of CXBlock calls its layer-scale parameter ``g_weight``; Meta's calls it ``gamma``.
OFFICIAL_TO_META_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^(memory_encoder\.fuser\.layers\.\d+)\.g_weight$", r"\1.gamma"),
)
#: The inverse (Meta's ``gamma`` -> Sa2VA's ``g_weight``): official names in error messages.
META_TO_OFFICIAL_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^(memory_encoder\.fuser\.layers\.\d+)\.gamma$", r"\1.g_weight"),
)

#: Sa2VA normalises the SAM-2 input with ImageNet mean/std materialised as bfloat16 tensors
#: (``SAM2.preprocess_image(dtype=torch.bfloat16)``), i.e. these rounded values, even in float32.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SA2VA_MEAN = tuple(torch.tensor(IMAGENET_MEAN, dtype=torch.bfloat16).float().tolist())
SA2VA_STD = tuple(torch.tensor(IMAGENET_STD, dtype=torch.bfloat16).float().tolist())

#: Sa2VA stores every memory feature it writes to SAM-2's memory bank as bfloat16 (hard-coded
#: ``.to(torch.bfloat16)`` in its video predictor), even on CPU in float32.
MEMORY_STORAGE_DTYPE = torch.bfloat16


# ----------------------------------------------------------------------------- weights


def _rename(key: str, table: tuple[tuple[str, str], ...]) -> str:
    for pattern, repl in table:
        key = re.sub(pattern, repl, key)
    return key


def load_sam2_weights(
    model: torch.nn.Module,
    tensors: Mapping[str, torch.Tensor],
    *,
    device: torch.device | str | None = None,
) -> None:
    """Load Sa2VA's SAM-2 weights strictly, official names (``g_weight``) mapped to Meta's.

    ``tensors`` is a whole Sa2VA checkpoint (its ``grounding_encoder.sam2_model.*`` tensors
    are used; a :class:`loading.CheckpointTensors` is streamed) or that part already stripped
    of the prefix. ``model`` may be a :func:`loading.skeleton`. Weights stay float32 (the
    official SAM-2 runs under autocast). Raises CheckpointError listing every missing,
    unexpected or wrongly shaped tensor.
    """
    names = list(tensors)
    prefix = SAM2_PREFIX if any(k.startswith(SAM2_PREFIX) for k in names) else ""
    names = [k for k in names if k.startswith(prefix)]
    if not names:
        raise CheckpointError(
            f"The checkpoint has no '{SAM2_PREFIX}*' tensors: it is not a Sa2VA checkpoint (no SAM-2)."
        )
    plan, _ = plan_from_names(names, lambda k: [(_rename(k[len(prefix) :], OFFICIAL_TO_META_RENAMES), None)])
    if device is None:
        device = next(model.parameters()).device
        device = "cpu" if device.type == "meta" else device
    load_strict(
        model,
        tensors,
        plan,
        "SAM-2 (grounding_encoder.sam2_model)",
        official=lambda k: prefix + _rename(k, META_TO_OFFICIAL_RENAMES),
        device=device,
        dtype=torch.float32,
        advice=(
            "The checkpoint's sam2_config.json (or its absence, meaning Hiera-L) does not describe "
            "these weights."
        ),
    )


def load_original_mask_decoder(path: str | Path, template: torch.nn.Module) -> torch.nn.Module:
    """Meta's original SAM-2 mask decoder (Sa2VA-i propagation), loaded into a copy of ``template``.

    ``path`` is Meta's ``sam2_hiera_large.pt`` (``{"model": state}``, read with
    ``weights_only=True``) or a safetensors file with Meta's key names (a
    ``grounding_encoder.sam2_model.`` prefix is accepted). Only ``sam_mask_decoder.*`` is used,
    as Sa2VA-i does: it replaces exactly the weights Sa2VA fine-tuned.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(
            f"Original SAM-2 weights '{path}' do not exist; pass Meta's sam2_hiera_large.pt."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
            if isinstance(state, dict) and isinstance(state.get("model"), dict):
                state = state["model"]
    except Exception as exc:  # corrupt file, pickle with non-tensor objects, ...
        raise CheckpointError(f"Cannot read original SAM-2 weights '{path}': {exc}") from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"'{path}' does not hold a state dict.")
    if any(k.startswith(SAM2_PREFIX) for k in state):
        state = take_prefix(state, SAM2_PREFIX)
    decoder_state = take_prefix(state, "sam_mask_decoder.")
    if not decoder_state:
        raise CheckpointError(f"'{path}' has no 'sam_mask_decoder.*' tensors: not a SAM-2 checkpoint.")
    decoder = copy.deepcopy(template)
    plan, _ = plan_from_names(list(decoder_state), lambda k: [(k, None)])
    load_strict(
        decoder,
        decoder_state,
        plan,
        f"original SAM-2 mask decoder ({path.name})",
        device=next(template.parameters()).device,
        dtype=torch.float32,
        advice="The file is not Meta's SAM-2 v2.0 Hiera-L.",
    )
    return decoder.eval()


# ----------------------------------------------------------------------------- features & heads


@dataclass
class FrameFeatures:
    """One backbone pass over one frame (batch 1), shared by every object decoded on it."""

    #: SAM-2's flattened levels, (HW, 1, C); the two high-res levels are NOT yet projected by a
    #: decoder's conv_s0/conv_s1 (each decoder projects them with its own convs).
    vision_feats: list[torch.Tensor]
    vision_pos_embeds: list[torch.Tensor]
    feat_sizes: list[tuple[int, int]]
    #: (height, width) of the original frame.
    orig_hw: tuple[int, int]
    #: High-res maps projected by a decoder's conv_s0/conv_s1, by id(decoder) (computed once).
    projected: dict[int, list[torch.Tensor]] = field(default_factory=dict)

    def top(self, batch: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Top-level feature and position, expanded to ``batch`` objects (views, no copies)."""
        return (
            [self.vision_feats[-1].expand(-1, batch, -1)],
            [self.vision_pos_embeds[-1].expand(-1, batch, -1)],
        )

    def all_levels(self, batch: int) -> list[torch.Tensor]:
        return [x.expand(-1, batch, -1) for x in self.vision_feats]


@dataclass
class HeadOutput:
    """What one (batched) mask-decoder call produced, best candidate already selected."""

    low_res_multimasks: torch.Tensor  # (B, M, S/4, S/4) float32
    ious: torch.Tensor  # (B, M)
    low_res_masks: torch.Tensor  # (B, 1, S/4, S/4) float32, best predicted IoU
    high_res_masks: torch.Tensor  # (B, 1, S, S) float32
    obj_ptr: torch.Tensor  # (B, C)
    object_score_logits: torch.Tensor  # (B, 1)


def run_sam_heads(
    model: torch.nn.Module,
    decoder: torch.nn.Module,
    pix_feat: torch.Tensor,
    high_res_features: list[torch.Tensor] | None,
    *,
    language: torch.Tensor | None = None,
    point_coords: torch.Tensor | None = None,
    point_labels: torch.Tensor | None = None,
    multimask_output: bool,
) -> HeadOutput:
    """Sa2VA's ``SAM2Base._forward_sam_heads``, driven through Meta's modules.

    Hand-written because the package cannot (a) append the language token -- Sa2VA's sparse
    prompt is [padding "not-a-point" tokens from the prompt encoder, then the (B, 256)
    ``language`` embedding] -- nor (b) skip the NO_OBJ_SCORE masking of low-res masks, which
    Sa2VA commented out. ``decoder`` is ``model.sam_mask_decoder`` or an alternative decoder
    (Sa2VA-i: Meta's original weights for propagation).
    """
    batch = pix_feat.size(0)
    device = pix_feat.device
    if point_coords is None:
        # As SAM-2: no points -> one padding point (label -1); the prompt encoder adds a second
        # one because there is no box. These are the "two padding tokens" before [SEG].
        point_coords = torch.zeros(batch, 1, 2, device=device)
        point_labels = -torch.ones(batch, 1, dtype=torch.int32, device=device)
    # No mask prompt: the prompt encoder adds its learned no_mask_embed as the dense prompt.
    sparse, dense = model.sam_prompt_encoder(points=(point_coords, point_labels), boxes=None, masks=None)
    if language is not None:
        sparse = torch.cat([sparse, language.to(sparse.dtype).reshape(batch, 1, -1)], dim=1)
    low_res_multimasks, ious, tokens, object_score_logits = decoder(
        image_embeddings=pix_feat,
        image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask_output,
        repeat_image=False,
        high_res_features=high_res_features,
    )
    # Sa2VA: no "no object" masking of the masks (commented out in its _forward_sam_heads).
    low_res_multimasks = low_res_multimasks.float()
    token = tokens[:, 0]
    if multimask_output:
        best = torch.argmax(ious, dim=-1)
        rows = torch.arange(batch, device=device)
        low_res_masks = low_res_multimasks[rows, best].unsqueeze(1)
        if tokens.size(1) > 1:
            token = tokens[rows, best]
    else:
        low_res_masks = low_res_multimasks
    # SAM-2 upsamples all candidates and then picks one; bilinear upsampling is per channel, so
    # upsampling only the chosen mask gives the same tensor for a third of the work.
    high_res_masks = F.interpolate(
        low_res_masks, size=(model.image_size, model.image_size), mode="bilinear", align_corners=False
    )
    obj_ptr = model.obj_ptr_proj(token)
    if model.pred_obj_scores:
        # The object pointer keeps SAM-2's occlusion handling (Sa2VA did not change it).
        appearing = (
            object_score_logits.sigmoid() if model.soft_no_obj_ptr else (object_score_logits > 0)
        ).to(obj_ptr.dtype)
        if model.fixed_no_obj_ptr:
            obj_ptr = appearing * obj_ptr
        obj_ptr = obj_ptr + (1 - appearing) * model.no_obj_ptr
    return HeadOutput(
        low_res_multimasks=low_res_multimasks,
        ious=ious.float(),
        low_res_masks=low_res_masks,
        high_res_masks=high_res_masks,
        obj_ptr=obj_ptr,
        object_score_logits=object_score_logits.float(),
    )


@dataclass
class ImageSegmentation:
    """Masks for n language embeddings on one image."""

    masks: np.ndarray  # (n, H, W) bool at the image size
    low_res_logits: torch.Tensor  # (n, S/4, S/4) float32 (256x256 for the real SAM-2)
    ious: torch.Tensor  # (n, 3) predicted IoU of the candidate masks
    object_score_logits: torch.Tensor  # (n, 1); Sa2VA does not mask by them


class Sa2VASam2:
    """SAM-2 with Sa2VA's language prompt: preprocessing, one backbone pass, batched decoding.

    Weights stay float32; with ``dtype`` bfloat16/float16 the forward passes run under
    autocast, as the official code runs its SAM-2 (``torch.autocast('cuda', bfloat16)``).
    """

    def __init__(
        self, model: torch.nn.Module, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ):
        self.device = torch.device(device)
        self.dtype = dtype
        # Inference only: no parameter ever needs a gradient.
        self.model = model.to(self.device).eval().requires_grad_(False)
        use_factored_memory_attention(self.model)
        use_shared_position_encodings(self.model)
        self.image_size = int(self.model.image_size)

    @classmethod
    def from_checkpoint(
        cls,
        state_dict: dict[str, torch.Tensor],
        sam2_config: dict | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Sa2VASam2:
        """Build SAM-2 for a Sa2VA checkpoint (``sam2_config`` None = Hiera-L) and load its weights.

        ``state_dict``: the checkpoint's tensors, whole or with ``grounding_encoder.sam2_model.``
        already removed (see :func:`load_sam2_weights`).
        """
        with skeleton():  # parameters without storage: the checkpoint fills every one
            model = build_sam2(sam2_config, seed=None)
        load_sam2_weights(model, state_dict, device=device)
        return cls(model, device=device, dtype=dtype)

    # -- preprocessing ---------------------------------------------------------------

    def preprocess(self, image: object) -> torch.Tensor:
        """(3, S, S) float32 SAM-2 input exactly as the official ``predict_forward`` makes it.

        PIL bicubic resize straight to S x S (aspect ratio NOT kept), /255, then ImageNet
        mean/std rounded to bfloat16 (an official quirk).
        """
        rgb = as_rgb_uint8(image)
        resized = np.asarray(Image.fromarray(rgb).resize((self.image_size, self.image_size), Image.BICUBIC))
        x = torch.from_numpy(resized.copy()).permute(2, 0, 1).contiguous() / 255.0
        mean = torch.tensor(SA2VA_MEAN, dtype=torch.float32)[:, None, None]
        std = torch.tensor(SA2VA_STD, dtype=torch.float32)[:, None, None]
        x -= mean
        x /= std
        return x

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    # -- backbone --------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, image: object) -> FrameFeatures:
        """One SAM-2 backbone pass over an RGB image (any size)."""
        rgb = as_rgb_uint8(image)
        pixels = self.preprocess(rgb)[None].to(self.device)
        return self.encode_pixels(pixels, orig_hw=rgb.shape[:2])

    @torch.inference_mode()
    def encode_pixels(self, pixels: torch.Tensor, orig_hw: tuple[int, int]) -> FrameFeatures:
        with self.autocast():
            backbone_out = self.model.image_encoder(pixels)
        _, feats, pos, sizes = self.model._prepare_backbone_features(backbone_out)
        return FrameFeatures(
            vision_feats=[f.float() for f in feats],
            vision_pos_embeds=[p.float() for p in pos],
            feat_sizes=sizes,
            orig_hw=(int(orig_hw[0]), int(orig_hw[1])),
        )

    @torch.inference_mode()
    def high_res_features(
        self, features: FrameFeatures, batch: int, decoder: torch.nn.Module | None = None
    ) -> list[torch.Tensor] | None:
        """The stride-4/8 maps projected by ``decoder``'s conv_s0/conv_s1, (B, C, H, W).

        SAM-2 applies these convs in ``forward_image``; they belong to the mask decoder, so a
        second decoder (Sa2VA-i) needs its own projection.
        """
        if not self.model.use_high_res_features_in_sam:
            return None
        decoder = decoder or self.model.sam_mask_decoder
        projected = features.projected.get(id(decoder))
        if projected is None:
            maps = [
                x.permute(1, 2, 0).reshape(1, x.size(2), *s)
                for x, s in zip(features.vision_feats[:-1], features.feat_sizes[:-1], strict=True)
            ]
            with self.autocast():
                projected = [decoder.conv_s0(maps[0]).float(), decoder.conv_s1(maps[1]).float()]
            features.projected[id(decoder)] = projected
        return [p.expand(batch, -1, -1, -1) for p in projected]

    @torch.inference_mode()
    def conditioning_pix_feat(self, features: FrameFeatures, batch: int) -> torch.Tensor:
        """Top-level features of an initial conditioning frame: no memory, ``no_mem_embed`` added."""
        feats, pos = features.top(batch)
        return self.model._prepare_memory_conditioned_features(
            frame_idx=0,
            is_init_cond_frame=True,
            current_vision_feats=feats,
            current_vision_pos_embeds=pos,
            feat_sizes=features.feat_sizes[-1:],
            output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
            num_frames=1,
        )

    # -- decoding ----------------------------------------------------------------------

    @torch.inference_mode()
    def decode_language(self, features: FrameFeatures, embeddings: torch.Tensor) -> HeadOutput:
        """Decode n language embeddings (n, 256) on a frame as initial conditioning frames.

        This is Sa2VA's ``add_language_embd``: no memory, multimask output, best IoU kept.
        """
        emb = _as_embeddings(embeddings).to(self.device, torch.float32)
        if emb.size(1) != self.model.sam_prompt_embed_dim:
            raise InputError(
                f"embeddings have {emb.size(1)} channels; this SAM-2 takes {self.model.sam_prompt_embed_dim}."
            )
        n = emb.size(0)
        with self.autocast():
            return run_sam_heads(
                self.model,
                self.model.sam_mask_decoder,
                self.conditioning_pix_feat(features, n),
                self.high_res_features(features, n),
                language=emb,
                multimask_output=self.model._use_multimask(True, None),
            )

    @torch.inference_mode()
    def decode_points(
        self, features: FrameFeatures, coords: torch.Tensor, labels: torch.Tensor
    ) -> HeadOutput:
        """Decode SAM-2 point prompts (1, P, 2) in S x S input pixels, labels (1, P) int32."""
        with self.autocast():
            return run_sam_heads(
                self.model,
                self.model.sam_mask_decoder,
                self.conditioning_pix_feat(features, 1),
                self.high_res_features(features, 1),
                point_coords=coords.to(self.device),
                point_labels=labels.to(self.device),
                multimask_output=self.model._use_multimask(True, {"point_labels": labels}),
            )

    def prompt_to_points(
        self,
        orig_hw: tuple[int, int],
        points: Sequence[Sequence[float]] | None = None,
        point_labels: Sequence[int] | None = None,
        box: Sequence[float] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM-2's point encoding of a box and/or points given in original image pixels.

        As SAM-2's predictors: a box becomes two points labelled 2 and 3 placed before the
        clicks; coordinates are scaled to the S x S model input.
        """
        h, w = orig_hw
        coords: list[list[float]] = []
        labels: list[int] = []
        if box is not None:
            b = [float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)]
            if len(b) != 4 or not (b[2] > b[0] and b[3] > b[1]):
                raise InputError(f"box must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {box!r}.")
            coords += [[b[0], b[1]], [b[2], b[3]]]
            labels += [2, 3]
        if points is not None and len(points) > 0:
            pts = np.asarray(points, dtype=np.float64)
            if pts.ndim != 2 or pts.shape[1] != 2:
                raise InputError(f"points must be a sequence of (x, y), got shape {pts.shape}.")
            lab = [1] * len(pts) if point_labels is None else [int(v) for v in point_labels]
            if len(lab) != len(pts) or any(v not in (0, 1) for v in lab):
                raise InputError("point_labels must give 1 (object) or 0 (background) for every point.")
            coords += pts.tolist()
            labels += lab
        if not coords:
            raise InputError("A SAM-2 prompt needs points and/or a box.")
        xy = torch.tensor(coords, dtype=torch.float32)
        xy[:, 0] = xy[:, 0] / w * self.image_size
        xy[:, 1] = xy[:, 1] / h * self.image_size
        return xy[None], torch.tensor(labels, dtype=torch.int32)[None]

    # -- outputs -----------------------------------------------------------------------

    def logits_to_orig(self, low_res: torch.Tensor, orig_hw: tuple[int, int]) -> torch.Tensor:
        """(B, 1, s, s) low-res logits -> (B, H, W) logits, as the official code: bilinear to
        S x S (video predictor), then bilinear to the original size (``predict_forward``)."""
        x = low_res.float()
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(
                x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        if x.shape[-2:] != tuple(orig_hw):
            x = F.interpolate(x, size=tuple(orig_hw), mode="bilinear", align_corners=False)
        return x[:, 0]

    def logits_to_masks(self, low_res: torch.Tensor, orig_hw: tuple[int, int]) -> np.ndarray:
        """(B, H, W) bool masks: logit > 0, i.e. the official sigmoid > 0.5."""
        return (self.logits_to_orig(low_res, orig_hw) > 0).cpu().numpy()

    # -- one-shot APIs -------------------------------------------------------------------

    @torch.inference_mode()
    def segment_image(self, image: object, embeddings: torch.Tensor) -> ImageSegmentation:
        """Masks for n ``[SEG]`` embeddings (n, 256) on one image; one backbone pass for all."""
        features = self.encode(image)
        out = self.decode_language(features, embeddings)
        return ImageSegmentation(
            masks=self.logits_to_masks(out.low_res_masks, features.orig_hw),
            low_res_logits=out.low_res_masks[:, 0].cpu(),
            ious=out.ious.cpu(),
            object_score_logits=out.object_score_logits.cpu(),
        )

    @torch.inference_mode()
    def mask_from_prompt(
        self,
        image: object,
        points: Sequence[Sequence[float]] | None = None,
        point_labels: Sequence[int] | None = None,
        box: Sequence[float] | None = None,
    ) -> np.ndarray:
        """(H, W) bool mask from SAM-2's own point/box prompt (no language model involved).

        Used to turn a region given as a box or a click into a mask for region description;
        this goes beyond the official code, which only takes masks. SAM-2's rule picks
        multimask output (best predicted IoU) for a single click, one mask otherwise.
        """
        rgb = as_rgb_uint8(image)
        features = self.encode(rgb)
        coords, labels = self.prompt_to_points(rgb.shape[:2], points, point_labels, box)
        out = self.decode_points(features, coords, labels)
        return self.logits_to_masks(out.low_res_masks, features.orig_hw)[0]


def _as_embeddings(embeddings: object) -> torch.Tensor:
    emb = torch.as_tensor(embeddings)
    if emb.ndim == 1:
        emb = emb[None]
    if emb.ndim != 2 or emb.size(0) == 0:
        raise InputError(f"embeddings must be (n, 256) with n >= 1, got shape {tuple(emb.shape)}.")
    if not emb.is_floating_point():
        raise InputError(f"embeddings must be floating point, got {emb.dtype}.")
    return emb.float()
