"""Qwen-VL-format test checkpoints (``Sa2VAChatModelQwen``: Qwen2.5-VL or Qwen3-VL), any size.

The inverse of :mod:`sa2va_ros.model.qwen_vl`: weights are drawn for the native transformers
model the loader builds and stored under the official names with the loader's own table.
The default shapes are tiny but keep every structural feature of the real models; ``text`` /
``vision`` overrides make bigger ones (e.g. for benchmarks) or ones shaped like a real
checkpoint (Qwen3-VL's ``head_dim`` that is not hidden_size / heads, DeepStack layers, ...).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from sa2va_ros.model.hf_compat import qwen2_vl_pil_image_processor
from sa2va_ros.model.mllm import SEG_TOKEN
from sa2va_ros.model.qwen_vl import (
    EMBED_KEY,
    END_OF_TEXT,
    IM_END,
    IMAGE_PAD,
    KEY_PREFIXES,
    LM_HEAD_KEY,
    QwenVariant,
    check_special_tokens,
)

from .weights import plant_seg_answer, random_state, seg_projection_state


def to_official_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`to_native_names` for the current layout (what the test writers store)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for official, native in KEY_PREFIXES:
            if key.startswith(native):
                out[official + key[len(native) :]] = value
                break
        else:
            raise KeyError(f"no official name for native weight {key}")
    return out


#: Tiny shapes per variant: small enough for a CPU test, with every structural feature of the
#: real models (windowed + full attention blocks in Qwen2.5-VL's ViT; deepstack features and
#: learned position embeddings in Qwen3-VL's; M-RoPE in both LLMs).
_TINY_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
}
_TINY_VISION = {
    "qwen2_5_vl": {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [1],
        "tokens_per_second": 2,
        "hidden_act": "silu",
    },
    "qwen3_vl": {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "num_position_embeddings": 256,
        "deepstack_visual_indexes": [0, 1],
        "hidden_act": "gelu_pytorch_tanh",
    },
}
#: Image processor settings of the real checkpoints (CLIP statistics for Qwen2.5-VL, 0.5 for
#: Qwen3-VL, whose patches are 16 pixels).
_TINY_IMAGE_PROCESSOR = {
    "qwen2_5_vl": {
        "patch_size": 14,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "min_pixels": 56 * 56,
        "max_pixels": 28 * 28 * 1280,
    },
    "qwen3_vl": {
        "patch_size": 16,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "min_pixels": 65536,
        "max_pixels": 16777216,
    },
}

#: Chat templates in the layout of the real ones (written here, not copied): Qwen2.5-VL adds
#: a default system turn, Qwen3-VL does not.
_NL = "{{- '\\n' -}}"
_TEMPLATE_BODY = (
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}SYSTEM{%- endif -%}"
    "<|im_start|>{{- message['role'] -}}" + _NL + "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part['type'] == 'video' -%}<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "<|im_end|>" + _NL + "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant" + _NL + "{%- endif -%}"
)
_TINY_CHAT_TEMPLATE = {
    "qwen2_5_vl": _TEMPLATE_BODY.replace(
        "SYSTEM", "<|im_start|>system" + _NL + "You are a helpful assistant.<|im_end|>" + _NL
    ),
    "qwen3_vl": _TEMPLATE_BODY.replace("SYSTEM", ""),
}


def _native_config(
    variant: QwenVariant, tokenizer, text: Mapping | None = None, vision: Mapping | None = None
):
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    ids = check_special_tokens(tokenizer, "the tiny tokenizer")
    text_config = dict(
        _TINY_TEXT, vocab_size=len(tokenizer), bos_token_id=ids[END_OF_TEXT], eos_token_id=ids[IM_END]
    )
    if variant == "qwen3_vl":
        text_config.update(
            head_dim=16,
            rope_theta=5000000.0,
            rope_scaling={"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True},
        )
        cls = Qwen3VLConfig
    else:
        text_config.update(rope_theta=1000000.0, rope_scaling={"type": "default", "mrope_section": [2, 3, 3]})
        cls = Qwen2_5_VLConfig
    text_config.update(text or {})
    vocab = tokenizer.get_vocab()
    return cls(
        text_config=text_config,
        vision_config={**_TINY_VISION[variant], **(vision or {})},
        image_token_id=ids[IMAGE_PAD],
        video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=ids[END_OF_TEXT],
        eos_token_id=ids[IM_END],
        tie_word_embeddings=False,
    )


def tiny_qwen_vl_parts(
    tokenizer_dir: Path,
    seed: int,
    force_seg: bool,
    variant: QwenVariant = "qwen2_5_vl",
    *,
    text: Mapping | None = None,
    vision: Mapping | None = None,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """A random Sa2VA Qwen-VL model: (config.json dict, MLLM + text_hidden_fcs weights).

    ``text`` / ``vision`` override fields of the tiny ``text_config`` / ``vision_config``
    (e.g. ``{"hidden_size": 2560, "num_hidden_layers": 36, "head_dim": 128, ...}`` for a model
    of Sa2VA-Qwen3-VL-4B's shapes); the rest keeps the tiny values. The M-RoPE sections must
    add up to head_dim / 2 (tiny: [2, 3, 3] for head_dim 16).

    Both use the official layout and names (``Sa2VAChatModelQwen``; ``model.model.*``,
    ``model.lm_head``, ``text_hidden_fcs.*``), so the real loader reads them. The tokenizer in
    ``tokenizer_dir`` (with Sa2VA's tokens) sets the vocabulary; the image processor settings
    and the chat template are written there. ``force_seg`` plants weights that answer
    ``[SEG]`` and stop, for any prompt.
    """
    from transformers import (
        AutoTokenizer,
        Qwen2_5_VLForConditionalGeneration,
        Qwen3VLForConditionalGeneration,
    )

    if variant not in _TINY_VISION:
        raise ValueError(f"variant must be one of {sorted(_TINY_VISION)}, got {variant!r}")
    tokenizer_dir = Path(tokenizer_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    native = _native_config(variant, tokenizer, text, vision)
    cls = Qwen3VLForConditionalGeneration if variant == "qwen3_vl" else Qwen2_5_VLForConditionalGeneration
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):  # shapes only: the values are drawn below
        skeleton = cls(native)
    weights = random_state(skeleton, generator)
    if force_seg:
        ids = check_special_tokens(tokenizer, tokenizer_dir)
        plant_seg_answer(weights[EMBED_KEY], weights[LM_HEAD_KEY], ids[SEG_TOKEN], ids[IM_END])
    state = to_official_names(weights)
    state.update(seg_projection_state(native.get_text_config(decoder=True).hidden_size, generator))

    config = native.to_diff_dict()
    config.update(
        architectures=["Sa2VAChatModelQwen"],
        auto_map={
            "AutoConfig": "configuration_sa2va_chat.Sa2VAChatConfigQwen",
            "AutoModel": "modeling_sa2va_qwen.Sa2VAChatModelQwen",
            "AutoModelForCausalLM": "modeling_sa2va_qwen.Sa2VAChatModelQwen",
        },
        model_type="sa2va_chat",
        template="qwen_chat",
    )
    processor = _TINY_IMAGE_PROCESSOR[variant]
    qwen2_vl_pil_image_processor()(**processor, merge_size=2, temporal_patch_size=2).save_pretrained(
        str(tokenizer_dir)
    )
    # Named as the real checkpoints name it (transformers 5 would write the PIL class's name).
    processor_file = tokenizer_dir / "preprocessor_config.json"
    saved = json.loads(processor_file.read_text())
    saved["image_processor_type"] = "Qwen2VLImageProcessor"
    processor_file.write_text(json.dumps(saved, indent=2) + "\n")
    (tokenizer_dir / "chat_template.jinja").write_text(_TINY_CHAT_TEMPLATE[variant])
    return config, state
