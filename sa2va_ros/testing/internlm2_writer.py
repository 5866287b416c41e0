"""Tiny random InternLM2-format Sa2VA checkpoints (the layout of ByteDance/Sa2VA-8B / -26B).

A written folder is what those repos hold: config.json (``Sa2VAChatModel`` with an
``InternLM2ForCausalLM`` ``llm_config``), model.safetensors with the official names (the
fused, per-key-value-head ``attention.wqkv``), the SentencePiece ``tokenizer.model`` with
``tokenizer_config.json`` / ``added_tokens.json`` / ``special_tokens_map.json``, and
generation_config.json, plus the ``sam2_config.json`` of its small SAM-2. Any size: the
shapes are arguments. Read back by the real loader (``Sa2VA.from_pretrained``).

The weights are drawn for the native modules the loader builds (``LlamaForCausalLM``,
``InternVLVisionModel``) and converted to the official names with the inverse of the
loader's tables, so a round trip is exact.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Literal

import torch

from sa2va_ros.model import internlm2, prompts
from sa2va_ros.model.mllm import SEG_TOKEN
from sa2va_ros.testing.internvl_writer import internvl_state
from sa2va_ros.testing.tiny_checkpoint import save_with_sam2, write_json
from sa2va_ros.testing.tokenizer_writer import TRAINING_TEXT

VisionStyle = Literal["6b", "300m"]
ChatTokenNames = Literal["unused", "named"]

#: InternLM2's chat tokens (the real vocab holds them as ids 92538-92543), in that order.
CHAT_TOKENS = (
    "<|plugin|>",
    "<|interpreter|>",
    "<|action_end|>",
    "<|action_start|>",
    "<|im_end|>",
    "<|im_start|>",
)
#: Their names inside InternLM2's original tokenizer.model.
UNUSED_NAMES = tuple(f"[UNUSED_TOKEN_{i}]" for i in range(141, 147))
IM_END = "<|im_end|>"
#: The tokens added after the SentencePiece vocab, in the order of the real added_tokens.json.
ADDED_TOKENS = (
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
) + (
    SEG_TOKEN,
    prompts.PHRASE_START_TOKEN,
    prompts.PHRASE_END_TOKEN,
    prompts.VP_START_TOKEN,
    prompts.VP_END_TOKEN,
)
#: Special tokens the real tokenizer_config.json lists (the chat tokens and InternVL's).
ADDITIONAL_SPECIAL_TOKENS = (
    ("<|im_start|>", "<|im_end|>", "<|action_start|>", "<|action_end|>")
    + (
        "<|interpreter|>",
        "<|plugin|>",
    )
    + ADDED_TOKENS[:9]
)

TINY_VISION = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 2}
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
_LLM_AUTO_MAP = {
    "AutoConfig": "configuration_internlm2.InternLM2Config",
    "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
    "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
}


# --- weights: Llama names -> official InternLM2 names (the inverse of internlm2.llama_targets) -


def fuse_wqkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, llm_config: dict) -> torch.Tensor:
    """Pack q, k, v (weight or bias) into InternLM2's ``wqkv``: per kv head, its queries, key, value."""
    heads, kv_heads, head_dim = internlm2.head_layout(llm_config)
    rest = q.shape[1:]
    blocks = torch.cat(
        [
            q.reshape(kv_heads, heads // kv_heads, head_dim, *rest),
            k.reshape(kv_heads, 1, head_dim, *rest),
            v.reshape(kv_heads, 1, head_dim, *rest),
        ],
        dim=1,
    )
    return blocks.reshape((heads + 2 * kv_heads) * head_dim, *rest)


def llama_to_official(native: dict[str, torch.Tensor], llm_config: dict) -> dict[str, torch.Tensor]:
    """LlamaForCausalLM tensors -> official InternLM2 names; unknown names raise."""
    top = {llama: official for official, llama in internlm2.TOP_LEVEL_NAMES.items()}
    layer_names = {llama: official for official, llama in internlm2.LAYER_NAMES.items()}
    official: dict[str, torch.Tensor] = {}
    for name, tensor in native.items():
        if name in top:
            official[top[name]] = tensor
            continue
        parts = name.split(".", 3)  # model, layers, i, rest
        if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in layer_names:
            official[f"model.layers.{parts[2]}.{layer_names[parts[3]]}"] = tensor
        elif not any(name.endswith(p) for fused in internlm2.FUSED_QKV.values() for p in fused):
            raise ValueError(f"{name}: no InternLM2 name for this Llama tensor.")
    for layer in range(int(llm_config["num_hidden_layers"])):
        for fused, (q, k, v) in internlm2.FUSED_QKV.items():
            prefix = f"model.layers.{layer}."
            if prefix + q in native:
                official[prefix + fused] = fuse_wqkv(
                    native[prefix + q], native[prefix + k], native[prefix + v], llm_config
                )
    return official


# --- tokenizer --------------------------------------------------------------------------------


def write_internlm2_tokenizer(
    out_dir: str | os.PathLike, *, vocab_size: int = 600, chat_token_names: ChatTokenNames = "unused"
) -> internlm2.InternLM2Tokenizer:
    """Train a SentencePiece BPE as InternLM2's (byte fallback, no dummy prefix, identity
    normalisation) and write the tokenizer files of an InternLM2 repo.

    The chat tokens are pieces of the SentencePiece model, named ``[UNUSED_TOKEN_14x]``
    (``chat_token_names="unused"``, as in InternLM2's original file: their text is only in
    ``added_tokens_decoder``) or by their text (``"named"``). SentencePiece puts them right
    after ``<unk> <s> </s>``; the real file has them at the end: ids differ, layout does not.
    Returns the tokenizer read back through the loader.
    """
    import sentencepiece as spm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pieces = UNUSED_NAMES if chat_token_names == "unused" else CHAT_TOKENS
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TRAINING_TEXT.splitlines()),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        hard_vocab_limit=False,  # a tiny corpus may give fewer merges than asked
        byte_fallback=True,
        add_dummy_prefix=False,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        user_defined_symbols=list(pieces),
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    (out / internlm2.TOKENIZER_MODEL).write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    size = sp.get_piece_size()

    def entry(content: str) -> dict:
        return {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
        }

    decoder = {0: "<unk>", 1: "<s>", 2: "</s>"}
    decoder.update({sp.piece_to_id(piece): text for piece, text in zip(pieces, CHAT_TOKENS, strict=True)})
    added = {text: size + i for i, text in enumerate(ADDED_TOKENS)}
    decoder.update({i: text for text, i in added.items()})
    named = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>", "unk_token": "<unk>"}
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): entry(t) | {"special": True} for i, t in sorted(decoder.items())},
        "additional_special_tokens": list(ADDITIONAL_SPECIAL_TOKENS),
        "auto_map": {
            "AutoTokenizer": [
                "tokenization_internlm2.InternLM2Tokenizer",
                "tokenization_internlm2_fast.InternLM2TokenizerFast",
            ]
        },
        **named,
        "clean_up_tokenization_spaces": False,
        "decode_with_prefix_space": False,
        "model_max_length": 16384,
        "sp_model_kwargs": {},
        "tokenizer_class": "InternLM2Tokenizer",
    }
    special_map = {
        "additional_special_tokens": list(ADDITIONAL_SPECIAL_TOKENS),
        **{key: entry(value) for key, value in named.items()},
    }
    write_json(out / "tokenizer_config.json", config)
    write_json(out / "added_tokens.json", dict(sorted(added.items())))
    write_json(out / "special_tokens_map.json", special_map)
    return internlm2.load_tokenizer(out)


# --- config -----------------------------------------------------------------------------------


def internlm2_llm_config(vocab_size: int, llm: dict | None = None) -> dict:
    """``llm_config`` as the official export writes it for InternLM2 (Sa2VA-8B / -26B)."""
    return {
        "architectures": [internlm2.ARCHITECTURE],
        "attn_implementation": "eager",
        "auto_map": dict(_LLM_AUTO_MAP),
        "bias": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        **(llm or TINY_LLM),
        "initializer_range": 0.02,
        "max_position_embeddings": 32768,
        "model_type": internlm2.MODEL_TYPE,
        "pad_token_id": 2,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {"factor": 2.0, "type": "dynamic"},
        "rope_theta": 1000000,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def internvit_config(style: VisionStyle, vision: dict | None = None) -> dict:
    """``vision_config``: "6b" = InternViT-6B (RMSNorm, QK-norm, no qkv bias; Sa2VA-26B),
    "300m" = InternViT-300M (LayerNorm, qkv bias; Sa2VA-8B)."""
    if style not in ("6b", "300m"):
        raise ValueError(f"vision style must be '6b' or '300m', got {style!r}")
    six_b = style == "6b"
    return {
        "architectures": ["InternVisionModel"],
        "attention_dropout": 0.0,
        "drop_path_rate": 0.0,
        "dropout": 0.0,
        "hidden_act": "gelu",
        **(vision or TINY_VISION),
        "image_size": 448,
        "initializer_factor": 0.1 if six_b else 1.0,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-06,
        "model_type": "intern_vit_6b",
        "norm_type": "rms_norm" if six_b else "layer_norm",
        "num_channels": 3,
        "patch_size": 14,
        "qk_normalization": six_b,
        "qkv_bias": not six_b,
        "torch_dtype": "float32",
        "use_flash_attn": False,
    }


def internlm2_sa2va_config(llm_config: dict, vision: dict) -> dict:
    """config.json of an InternLM2-format Sa2VA (``Sa2VAChatModel``, template internlm2_chat)."""
    import transformers

    return {
        "architectures": ["Sa2VAChatModel"],
        "auto_map": dict(_AUTO_MAP),
        "downsample_ratio": 0.5,
        "dynamic_image_size": True,
        "force_image_size": 448,
        "hidden_size": llm_config["hidden_size"],
        "llm_config": llm_config,
        "max_dynamic_patch": 12,
        "min_dynamic_patch": 1,
        "model_type": "sa2va_chat",
        "pad2square": False,
        "ps_version": "v2",
        "select_layer": -1,
        "template": "internlm2_chat",
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": transformers.__version__,
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        "use_thumbnail": True,
        "vision_config": vision,
    }


# --- writer -----------------------------------------------------------------------------------


def internlm2_sa2va_state(
    config: dict, tokenizer: internlm2.InternLM2Tokenizer, seed: int, force_seg: bool
) -> dict[str, torch.Tensor]:
    """InternViT + mlp1 + InternLM2 + text_hidden_fcs tensors with the official names."""
    from transformers import LlamaForCausalLM

    return internvl_state(
        config,
        internlm2.llama_config(config["llm_config"]),
        LlamaForCausalLM,
        tokenizer,
        seed,
        force_seg,
        lambda llm_state: llm_to_official_checked(llm_state, config["llm_config"]),
    )


def llm_to_official_checked(llm_state: dict[str, torch.Tensor], llm_config: dict) -> dict[str, torch.Tensor]:
    """:func:`llama_to_official`, checked to be undone exactly by the loader's mapping
    (``internlm2.to_llama_state``: the streaming loader's targets applied to a dict)."""
    official = llama_to_official(llm_state, llm_config)
    back = internlm2.to_llama_state(official, llm_config)
    if back.keys() != llm_state.keys() or any(not torch.equal(back[k], llm_state[k]) for k in back):
        raise AssertionError("internlm2 writer and loader disagree on the tensor layout")
    return official


def write_internlm2_checkpoint(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    force_seg: bool = False,
    vision_style: VisionStyle = "6b",
    chat_token_names: ChatTokenNames = "unused",
    llm: dict | None = None,
    vision: dict | None = None,
    vocab_size: int = 600,
    sam2_image_size: int = 1024,
) -> Path:
    """Write a random InternLM2-format Sa2VA checkpoint in the official layout; return its folder.

    ``llm`` / ``vision`` override the shapes (keys of :data:`TINY_LLM` / :data:`TINY_VISION`),
    ``vision_style`` picks Sa2VA-26B's ("6b") or Sa2VA-8B's ("300m") InternViT. The same
    ``seed`` always gives the same files. ``force_seg`` plants weights that answer "[SEG]"
    and stop for any prompt. ``sam2_image_size`` below 1024 makes SAM-2 cheaper on a CPU.
    """

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = write_internlm2_tokenizer(out, vocab_size=vocab_size, chat_token_names=chat_token_names)
    config = internlm2_sa2va_config(
        internlm2_llm_config(len(tokenizer), llm), internvit_config(vision_style, vision)
    )
    state = internlm2_sa2va_state(config, tokenizer, seed, force_seg)
    generation = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
    save_with_sam2(out, config, state, generation, seed=seed, sam2_image_size=sam2_image_size)
    return out
