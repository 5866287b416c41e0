"""InternVL-format test checkpoints (``Sa2VAChatModel``: InternViT + mlp1 + Qwen2/Qwen3 LLM).

The inverse of :mod:`sa2va_ros.model.internvl`: weights are drawn for the native modules the
loader builds and stored under the official names with the loader's own tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from sa2va_ros.model.internvl import (
    LLM_PREFIX,
    PROJECTOR_PREFIX,
    VISION_FUSED,
    VISION_PREFIX,
    VISION_RENAMES,
    Projector,
    _fill,
    _template_regex,
    llm_classes,
    vision_config,
)
from sa2va_ros.model.mllm import SEG_TOKEN

from .tokenizer_writer import IM_END
from .weights import plant_seg_answer, random_state, seg_projection_state

TinyLLM = Literal["qwen2", "qwen3"]

#: Tiny shapes: every structural feature of the real models, small enough for a CPU test.
TINY_VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 2,
    "num_hidden_layers": 2,
}
TINY_LLM = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 2,
}

_AUTO_MAP = {
    "AutoConfig": "configuration_sa2va_chat.Sa2VAChatConfig",
    "AutoModel": "modeling_sa2va_chat.Sa2VAChatModel",
    "AutoModelForCausalLM": "modeling_sa2va_chat.Sa2VAChatModel",
}


def vision_to_official(native: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The exact inverse of :func:`vision_to_native` (what the test writers store)."""
    official: dict[str, torch.Tensor] = {}
    pending: dict[tuple[str, str], dict[int, torch.Tensor]] = {}
    for name, tensor in native.items():
        for fused, parts in VISION_FUSED:
            hit = next(((k, m) for k, p in enumerate(parts) if (m := _template_regex(p).match(name))), None)
            if hit:
                k, match = hit
                pending.setdefault((fused, _fill(fused, match)), {})[k] = tensor
                break
        else:
            for src, dst in VISION_RENAMES:
                match = _template_regex(dst).match(name)
                if match:
                    official[_fill(src, match)] = tensor
                    break
            else:
                official[name] = tensor
    for (fused, name), chunks in pending.items():
        parts = dict(VISION_FUSED)[fused]
        if len(chunks) != len(parts):
            raise ValueError(f"{name}: only {len(chunks)} of the {len(parts)} fused parts are present.")
        official[name] = torch.cat([chunks[k] for k in range(len(parts))], dim=0)
    return official


def tiny_llm_config(llm: TinyLLM, vocab_size: int, bos_id: int, eos_id: int) -> dict:
    """``llm_config`` of config.json, as the official export writes it for Qwen2/Qwen3."""
    if llm not in ("qwen2", "qwen3"):
        raise ValueError(f"llm must be 'qwen2' or 'qwen3', got {llm!r}")
    config = {
        "architectures": ["Qwen2ForCausalLM" if llm == "qwen2" else "Qwen3ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "hidden_act": "silu",
        **TINY_LLM,
        "initializer_range": 0.02,
        "max_position_embeddings": 32768,
        "max_window_layers": TINY_LLM["num_hidden_layers"],
        "model_type": llm,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
    }
    if llm == "qwen3":
        config.update(
            head_dim=TINY_LLM["hidden_size"] // TINY_LLM["num_attention_heads"], attention_bias=False
        )
    return config


def tiny_internvl_config(llm: TinyLLM, vocab_size: int, bos_id: int, eos_id: int) -> dict:
    """config.json of an InternVL-format Sa2VA (``Sa2VAChatModel``), tiny shapes."""
    import transformers

    vision = {
        "architectures": ["InternVisionModel"],
        "attention_dropout": 0.0,
        "drop_path_rate": 0.0,
        "dropout": 0.0,
        "hidden_act": "gelu",
        **TINY_VISION,
        "image_size": 448,
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-06,
        "model_type": "intern_vit_6b",
        "norm_type": "layer_norm",
        "num_channels": 3,
        "patch_size": 14,
        "qk_normalization": False,
        "qkv_bias": True,
        "use_flash_attn": False,
    }
    return {
        "architectures": ["Sa2VAChatModel"],
        "auto_map": dict(_AUTO_MAP),
        "downsample_ratio": 0.5,
        "dynamic_image_size": True,
        "force_image_size": 448,
        "hidden_size": TINY_LLM["hidden_size"],
        "llm_config": tiny_llm_config(llm, vocab_size, bos_id, eos_id),
        "max_dynamic_patch": 12,
        "min_dynamic_patch": 1,
        "model_type": "sa2va_chat",
        "output_attentions": False,
        "pad2square": False,
        "ps_version": "v2",
        "select_layer": -1,
        "template": "qwen_chat",
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": transformers.__version__,
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        "use_thumbnail": True,
        "vision_config": vision,
    }


def tiny_internvl_state(config: dict, tokenizer, seed: int, force_seg: bool) -> dict[str, torch.Tensor]:
    """InternViT + mlp1 + LLM + text_hidden_fcs tensors with the official names."""
    config_cls, model_cls = llm_classes(config["llm_config"])
    return internvl_state(config, config_cls(**config["llm_config"]), model_cls, tokenizer, seed, force_seg)


def internvl_state(
    config: dict,
    llm_cfg,
    llm_cls: type,
    tokenizer,
    seed: int,
    force_seg: bool,
    llm_to_official: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = dict,
) -> dict[str, torch.Tensor]:
    """Seeded InternVL-format tensors for any language model: ``llm_cls(llm_cfg)`` in native
    names, ``llm_to_official`` giving the checkpoint's names (identity for Qwen2; InternLM2's
    writer packs wqkv). One place for every InternVL-format writer."""
    from transformers.models.internvl import InternVLVisionModel

    generator = torch.Generator().manual_seed(seed)
    vcfg = vision_config(config["vision_config"])
    with torch.device("meta"):
        vision = InternVLVisionModel(vcfg)
        llm = llm_cls(llm_cfg)
        projector = Projector(vcfg.hidden_size, llm_cfg.hidden_size, config["downsample_ratio"])
    vision_state = random_state(vision, generator)
    projector_state = random_state(projector, generator)
    llm_state = random_state(llm, generator)
    if force_seg:
        vocab = tokenizer.get_vocab()
        plant_seg_answer(
            llm_state["model.embed_tokens.weight"],
            llm_state["lm_head.weight"],
            vocab[SEG_TOKEN],
            vocab[IM_END],
        )
    state = {VISION_PREFIX + k: v for k, v in vision_to_official(vision_state).items()}
    state.update({PROJECTOR_PREFIX + k: v for k, v in projector_state.items()})
    state.update({LLM_PREFIX + k: v for k, v in llm_to_official(llm_state).items()})
    state.update(seg_projection_state(llm_cfg.hidden_size, generator))
    return state
