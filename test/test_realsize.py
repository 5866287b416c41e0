"""Real-size rehearsal: every official checkpoint's tensor names and shapes load strictly.

The checkpoints are described by meta tensors (shapes, no data) in the official layout
(sa2va_ros.testing.realsize), and loaded by the product's own loader onto the meta device:
every name and shape is checked as for a real download, and nothing is allocated.
"""

from __future__ import annotations

import pytest
import torch

from sa2va_ros.model.errors import CheckpointError, UnsupportedModelError
from sa2va_ros.model.internvl import LLM_CLASSES, build_internvl
from sa2va_ros.model.loading import skeleton
from sa2va_ros.model.qwen_vl import build_model
from sa2va_ros.model.sam2_config import build_sam2
from sa2va_ros.model.sam2_prompt import load_sam2_weights
from sa2va_ros.model.seg_projection import load_seg_projection
from sa2va_ros.testing.realsize import CHECKPOINTS, RealSize, llm_hidden_size, official_tensors
from sa2va_ros.testing.sam2_writer import sam2_official_state_dict

META = torch.device("meta")


def _meta(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {name: torch.empty(shape, device=META) for name, shape in shapes.items()}


def _count(modules) -> int:
    seen: dict[int, int] = {}
    for module in modules:
        for p in module.parameters():
            seen[id(p)] = p.numel()
    return sum(seen.values())


def _load_mllm(entry: RealSize, tensors: dict[str, torch.Tensor]):
    if entry.format == "internvl":
        vision, projector, llm, _ = build_internvl(entry.config, tensors, device=META, dtype=torch.bfloat16)
        return [vision, projector, llm]
    return [build_model(entry.config, tensors, device=META, dtype=torch.bfloat16)]


@pytest.mark.parametrize("repo", list(CHECKPOINTS))
def test_official_names_and_shapes_load_strictly(repo: str) -> None:
    entry = CHECKPOINTS[repo]
    official = official_tensors(entry)
    tensors = _meta(official)
    modules = _load_mllm(entry, tensors)
    projection = load_seg_projection(tensors, llm_hidden_size(entry), device=META)
    loaded = [*modules, projection]
    for module in loaded:
        assert all(p.is_meta for p in module.parameters()), "a rehearsal must allocate nothing"
    # Every official tensor found a place: the loaded parameters hold exactly their elements.
    assert _count(loaded) == sum(torch.Size(s).numel() for s in official.values())
    # The embeddings hold the whole tokenizer (Sa2VA's added tokens included).
    embed = modules[-1].get_input_embeddings().weight
    assert embed.shape[0] >= entry.tokenizer_size


@pytest.mark.parametrize(
    ("repo", "suffix"),
    [
        ("ByteDance/Sa2VA-1B", "layers.3.mlp.down_proj.weight"),
        ("ByteDance/Sa2VA-Qwen2_5-VL-3B", "layers.3.mlp.down_proj.weight"),
        # InternLM2's fused wqkv: its q/k/v pieces are shape-checked before anything is read.
        ("ByteDance/Sa2VA-8B", "layers.3.attention.wqkv.weight"),
    ],
)
def test_rehearsal_catches_a_wrong_shape_and_a_missing_tensor(repo: str, suffix: str) -> None:
    entry = CHECKPOINTS[repo]
    official = official_tensors(entry)
    name = next(k for k in official if k.endswith(suffix))
    wrong = _meta({**official, name: official[name][:-1] + (official[name][-1] - 1,)})
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) of the wrong shape"):
        _load_mllm(entry, wrong)
    missing = _meta({k: s for k, s in official.items() if k != name})
    with pytest.raises(CheckpointError, match=r"1 missing tensor\(s\)"):
        _load_mllm(entry, missing)


def test_sam2_hiera_l_loads_strictly_with_official_names() -> None:
    with skeleton():
        reference = build_sam2(None)
    official = sam2_official_state_dict(reference)
    # Sa2VA saves the memory fuser's layer scale as g_weight (Meta: gamma).
    assert "grounding_encoder.sam2_model.memory_encoder.fuser.layers.0.g_weight" in official
    with skeleton():
        model = build_sam2(None)
    load_sam2_weights(model, _meta({k: tuple(v.shape) for k, v in official.items()}), device=META)
    assert all(p.is_meta for p in model.parameters())
    # SAM-2 v2.0 Hiera-L: 224.4 M parameters (Meta's model card).
    assert 224_000_000 < _count([model]) < 225_000_000


def test_unsupported_llm_is_refused_before_building() -> None:
    entry = CHECKPOINTS["ByteDance/Sa2VA-8B"]
    config = {
        **entry.config,
        "llm_config": {**entry.config["llm_config"], "architectures": ["MistralForCausalLM"]},
    }
    assert "MistralForCausalLM" not in LLM_CLASSES
    with pytest.raises(UnsupportedModelError, match="MistralForCausalLM"):
        build_internvl(config, _meta(official_tensors(entry)), device=META, dtype=torch.bfloat16)
