"""Which SAM-2 to build for a checkpoint: Meta's Hiera-L yaml, Sa2VA's flags, a checkpoint's changes.

Official Sa2VA checkpoints store no SAM-2 config; theirs is always SAM-2 v2.0 Hiera-L with a
few flags Sa2VA sets (:data:`SA2VA_FLAG_OVERRIDES`). Small test checkpoints bring a
``sam2_config.json`` that lists the fields it changed; :func:`sam2_model_config` merges it
and refuses any other difference, so a config is never half-applied.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from importlib import resources
from typing import Any

import torch

from .errors import CheckpointError

#: Meta's packaged config of SAM-2 v2.0 Hiera-L, the SAM-2 of every official Sa2VA checkpoint.
SAM2_BASE_CONFIG = "configs/sam2/sam2_hiera_l.yaml"

#: Flags Sa2VA's own SAM-2 (projects/sa2va/hf/models/sam2.py, ``SAM2.__init__``) sets that
#: Meta's yaml leaves at the ``SAM2Base`` default. Every other SAM2Base flag Sa2VA passes has
#: the yaml's value. (Predictor-only flags -- fill_hole_area=0, non_overlap_masks=False,
#: binarize_mask_from_pts_for_mem_enc=False -- are the package defaults; the tracker honours
#: them.) Sa2VA's RoPE ``feat_sizes`` [32, 32] differ from the yaml's [64, 64], but RoPE
#: recomputes its table for the real map size, so we always set image_size / 16 instead.
SA2VA_FLAG_OVERRIDES: dict[str, Any] = {
    "sam_mask_decoder_extra_args": {
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": 0.05,
        "dynamic_multimask_stability_thresh": 0.98,
    },
}

#: Paths (under ``model``) that are derived from others and never compared or overridden.
_DERIVED_PATHS = (
    "memory_attention.layer.self_attention.feat_sizes",
    "memory_attention.layer.cross_attention.feat_sizes",
)


# ----------------------------------------------------------------------------- config


_MISSING = object()


def sa2va_hiera_l_config() -> dict:
    """Meta's Hiera-L v2.0 yaml plus Sa2VA's flags, as a plain dict (no hydra global state).

    Public because test checkpoints (``sa2va_ros.testing``) describe their SAM-2 as changes to it.
    """
    from omegaconf import OmegaConf

    text = resources.files("sam2").joinpath(SAM2_BASE_CONFIG).read_text()
    model = OmegaConf.to_container(OmegaConf.create(text).model, resolve=True)
    model.update(copy.deepcopy(SA2VA_FLAG_OVERRIDES))
    return model


def _get(tree: dict, path: str) -> Any:
    node: Any = tree
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def set_field(tree: dict, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        tree = tree[key]
    tree[last] = copy.deepcopy(value)


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))
    return a == b


def with_derived_fields(model: dict) -> dict:
    feat = int(model["image_size"]) // int(model.get("backbone_stride", 16))
    for path in _DERIVED_PATHS:
        set_field(model, path, [feat, feat])
    return model


def sam2_model_config(sam2_config: dict | None = None) -> Any:
    """The OmegaConf ``model`` node to instantiate for a checkpoint.

    ``None`` means SAM-2 v2.0 Hiera-L with Sa2VA's flags (official checkpoints store no SAM-2
    config). A ``sam2_config.json`` dict (tiny test checkpoints) names the fields it changed in
    ``changed_from_sa2va_hiera_l``; those are taken from its ``model`` section. Any other field
    it states with a different value is refused, so a config can never be half-applied.
    """
    from omegaconf import OmegaConf

    model = sa2va_hiera_l_config()
    if sam2_config is not None:
        theirs = sam2_config.get("model") if isinstance(sam2_config, dict) else None
        if not isinstance(theirs, dict):
            raise CheckpointError("sam2_config.json has no 'model' section: the file is not a SAM-2 config.")
        changed = list(sam2_config.get("changed_from_sa2va_hiera_l", []))
        for path in changed:
            value = _get(theirs, path)
            if value is _MISSING:
                raise CheckpointError(f"sam2_config.json lists '{path}' as changed but has no model.{path}.")
            if _get(model, path) is _MISSING:
                raise CheckpointError(
                    f"sam2_config.json changes '{path}', which SAM-2 v2.0 Hiera-L does not have; "
                    "field names must follow Meta's sam2_hiera_l.yaml."
                )
            set_field(model, path, value)
        conflicts = []
        for path, value in _leaves(theirs):
            if path in changed or path in _DERIVED_PATHS or path.split(".")[-1].startswith("_"):
                continue
            ours = _get(model, path)
            if ours is not _MISSING and not _same(ours, value):  # _MISSING: descriptive field
                conflicts.append(f"{path}: {value!r} (Hiera-L: {ours!r})")
        if conflicts:
            raise CheckpointError(
                "sam2_config.json sets fields that differ from Sa2VA's SAM-2 without listing them in "
                f"'changed_from_sa2va_hiera_l': {conflicts}. List them there or fix the values."
            )
    return OmegaConf.create(with_derived_fields(model))


def build_sam2(sam2_config: dict | None = None, *, seed: int | None = 0) -> torch.nn.Module:
    """Instantiate a ``sam2.modeling.sam2_base.SAM2Base`` in eval mode, weights freshly initialised.

    ``seed`` makes the initial weights reproducible (tiny test checkpoints); ``None`` uses the
    global RNG. Load real weights with :func:`load_sam2_weights`.
    """
    from hydra.utils import instantiate

    cfg = sam2_model_config(sam2_config)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = instantiate(cfg, _recursive_=True)
    return model.eval()
