"""Tiny SAM-2 parts of test checkpoints: a ``sam2_config.json`` and the weights in the official names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from sa2va_ros.model.checkpoint import SAM2_PREFIX
from sa2va_ros.model.errors import InputError
from sa2va_ros.model.sam2_config import sa2va_hiera_l_config, set_field, with_derived_fields

# The loader's own renaming rule, applied with its inverse table.
from sa2va_ros.model.sam2_prompt import IMAGENET_MEAN, IMAGENET_STD, META_TO_OFFICIAL_RENAMES
from sa2va_ros.model.sam2_prompt import _rename as rename_keys


def tiny_sam2_config(
    *,
    embed_dim: int = 8,
    num_heads: int = 1,
    stages: Sequence[int] = (1, 1, 2, 1),
    global_att_blocks: Sequence[int] | None = None,
    window_spec: Sequence[int] = (8, 4, 16, 8),
    memory_attention_layers: int = 1,
    dim_feedforward: int = 256,
    image_size: int = 1024,
) -> dict:
    """A small SAM-2 config in the schema of the fixtures' ``sam2_config.json``.

    Only the trunk, the memory-attention depth and (optionally) the input size shrink;
    prompt/decoder widths and every flag stay Hiera-L's, so code paths are the real ones.
    ``image_size`` must be a multiple of 32 (four Hiera stages over a stride-4 patch embed).
    ``global_att_blocks`` defaults to the last block of stage 3 (Hiera-L's global blocks all sit
    in stage 3; a stage's first block pools and cannot be global).
    """
    if global_att_blocks is None:
        global_att_blocks = [sum(stages[:3]) - 1]
    if image_size % 32:
        raise InputError(f"image_size {image_size} must be a multiple of 32.")
    changes: dict[str, Any] = {
        "image_encoder.trunk.embed_dim": embed_dim,
        "image_encoder.trunk.num_heads": num_heads,
        "image_encoder.trunk.stages": list(stages),
        "image_encoder.trunk.global_att_blocks": list(global_att_blocks),
        "image_encoder.trunk.window_spec": list(window_spec),
        "image_encoder.neck.backbone_channel_list": [embed_dim * 8, embed_dim * 4, embed_dim * 2, embed_dim],
        "memory_attention.num_layers": memory_attention_layers,
        "memory_attention.layer.dim_feedforward": dim_feedforward,
    }
    if image_size != 1024:
        changes["image_size"] = image_size
    model = sa2va_hiera_l_config()
    for path, value in changes.items():
        set_field(model, path, value)
    model = with_derived_fields(model)
    return {
        "_comment": (
            "Tiny SAM-2 written by sa2va_ros.testing.sam2_writer.tiny_sam2_config. Field names follow "
            "Meta's sam2_hiera_l.yaml; values not listed as changed are Sa2VA's Hiera-L values."
        ),
        "changed_from_sa2va_hiera_l": list(changes),
        "model": model,
        "sa2va_wrapper": {
            "img_mean": list(IMAGENET_MEAN),
            "img_std": list(IMAGENET_STD),
            "preprocess_image_note": "mean/std are used rounded to bfloat16",
            "NO_OBJ_SCORE_masking": "disabled",
            "maskmem_features_storage_dtype": "bfloat16",
        },
    }


def sam2_official_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The exact inverse of :func:`load_sam2_weights`: official key names, prefix included."""
    return {
        SAM2_PREFIX + rename_keys(k, META_TO_OFFICIAL_RENAMES): v.detach().clone()
        for k, v in model.state_dict().items()
    }
