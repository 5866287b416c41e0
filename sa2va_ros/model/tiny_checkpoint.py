"""Tiny random Sa2VA checkpoints in the official layout, for tests, demos and benchmarks.

A written folder looks like a ByteDance/Sa2VA-* download (config.json, model.safetensors
with the official tensor names, tokenizer files, generation_config.json) plus the
``sam2_config.json`` that describes its small SAM-2, so the real loader is what reads it:
no test needs a mock of the model stack. ``force_seg=True`` plants weights that make
greedy decoding answer ``[SEG]`` for any prompt, so a node or tracker test gets masks from
random weights through the real loading and generation code.

The writer is the inverse of the loaders: the weights are drawn for the *native* modules
the loaders build and converted with the loaders' own renaming tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import torch

from . import prompts
from .checkpoint import SAM2_CONFIG_FILE, SEG_PROJECTION_PREFIX
from .mllm import SEG_TOKEN

TinyFormat = Literal["internvl", "qwen_vl"]
TinyLLM = Literal["qwen2", "qwen3"]

END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

#: Added tokens in the order of the real tokenizers: Qwen2's specials, then the tokens of
#: the MLLM family (InternVL2.5/3 or Qwen-VL), then Sa2VA's own.
ADDED_TOKENS: dict[str, tuple[str, ...]] = {
    "internvl": (END_OF_TEXT, IM_START, IM_END)
    + ("<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>")
    + prompts.SA2VA_ADDED_TOKENS,
    "qwen_vl": (END_OF_TEXT, IM_START, IM_END)
    + ("<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>")
    + ("<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>")
    + ("<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
    + prompts.SA2VA_ADDED_TOKENS,
}

#: Qwen2's pre-tokenizer split pattern (contractions, letters, single digits, punctuation, spaces).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: Text the tiny BPE is trained on: the words of Sa2VA's prompts and answers, so prompts
#: tokenize into a realistic number of pieces.
TRAINING_TEXT = """\
Please segment the red mug in this image.
Can you segment the person on the left? Sure, it is [SEG].
Sure, [SEG]. It is [SEG]. Sure, the segmentation result is [SEG].
Please describe the image in one sentence. A red square on a blue background.
Could you please give me a brief description of the image? Please respond with interleaved
segmentation masks for the corresponding parts of the answer.
<p> A man </p> [SEG] is riding <p> a bicycle </p> [SEG] down <p> the street </p> [SEG].
There are 2 part regions in the picture: region1, region2.
Can you provide me with a detailed description of the region in the picture marked by region1?
What is in the video? Please segment the moving square. Track the green circle and the yellow
rectangle. Where is the cup on the table next to the laptop? The robot arm picks up the box.
Hello! How are you? I am fine, thanks. What can you see? I see a dog, a cat and a chair.
The quick brown fox jumps over the lazy dog near the window at the top right corner, 1 2 3 4 5.
"""
TOKENIZER_VOCAB_SIZE = 600

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


# --- tokenizer --------------------------------------------------------------------------------


def write_tiny_tokenizer(out_dir: Path, format: TinyFormat = "internvl"):
    """Train a byte-level BPE in milliseconds and save it as a Qwen2 tokenizer.

    Writes tokenizer.json (fast) and vocab.json + merges.txt (slow), tokenizer_config.json,
    special_tokens_map.json and added_tokens.json, as the real checkpoints have them.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import Qwen2TokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    bpe.train_from_iterator(TRAINING_TEXT.splitlines(), trainer)
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ADDED_TOKENS[format]])
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=bpe,
        bos_token=None,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        unk_token=None,
        additional_special_tokens=[IM_START, IM_END],
        errors="replace",
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=32768,
    )
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


# --- configs ----------------------------------------------------------------------------------


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


# --- weights ----------------------------------------------------------------------------------


def _random_state(module: torch.nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Seeded weights that do not depend on transformers' initialisers (stable across versions).

    Norm scales near 1, layer scales near 0.1, everything else N(0, 0.02).
    """
    norm_scales = {
        f"{name}.weight" if name else "weight"
        for name, sub in module.named_modules()
        if "Norm" in type(sub).__name__
    }
    state = {}
    for name, value in sorted(module.state_dict().items()):
        noise = torch.randn(value.shape, generator=generator, dtype=torch.float32)
        if name in norm_scales:
            state[name] = 1.0 + 0.1 * noise
        elif name.rsplit(".", 1)[-1].startswith("lambda_"):
            state[name] = 0.1 + 0.02 * noise
        else:
            state[name] = 0.02 * noise
    return state


def plant_seg_answer(embed: torch.Tensor, lm_head: torch.Tensor, seg_id: int, end_id: int) -> None:
    """Make greedy decoding answer ``[SEG]`` and then the end token, whatever the prompt.

    Every token embedding but [SEG]'s carries a marker of 1.0 on dimension 0, [SEG]'s on
    dimension 1. Against N(0, 0.02) weights the markers dominate the residual stream up
    to the final norm, where they become about sqrt(H). ``lm_head`` reads them: the [SEG]
    row looks at dimension 0, the end token's row at dimension 1 (all other rows ignore
    both), so a position fed an ordinary token predicts [SEG] and the position fed [SEG]
    predicts the end, each with a margin of several logits.
    """
    embed[:, :2] = 0.0
    embed[:, 0] = 1.0
    embed[seg_id, 0] = 0.0
    embed[seg_id, 1] = 1.0
    lm_head[:, :2] = 0.0
    lm_head[seg_id, 0] = 4.0
    lm_head[end_id, 1] = 4.0


def seg_projection_state(
    hidden: int, generator: torch.Generator, out_dim: int = 256
) -> dict[str, torch.Tensor]:
    """Random ``text_hidden_fcs.{0,2}.*`` with unit-variance outputs."""
    state = {}
    for index, (n_in, n_out) in ((0, (hidden, hidden)), (2, (hidden, out_dim))):
        state[f"{SEG_PROJECTION_PREFIX}{index}.weight"] = (
            torch.randn(n_out, n_in, generator=generator) / n_in**0.5
        )
        state[f"{SEG_PROJECTION_PREFIX}{index}.bias"] = 0.02 * torch.randn(n_out, generator=generator)
    return state


def tiny_internvl_state(config: dict, tokenizer, seed: int, force_seg: bool) -> dict[str, torch.Tensor]:
    """InternViT + mlp1 + LLM + text_hidden_fcs tensors with the official names."""
    from transformers.models.internvl import InternVLVisionModel

    from .internvl import (
        LLM_PREFIX,
        PROJECTOR_PREFIX,
        VISION_PREFIX,
        Projector,
        llm_classes,
        vision_config,
        vision_to_official,
    )

    generator = torch.Generator().manual_seed(seed)
    vcfg = vision_config(config["vision_config"])
    config_cls, model_cls = llm_classes(config["llm_config"])
    llm_cfg = config_cls(**config["llm_config"])
    with torch.device("meta"):
        vision = InternVLVisionModel(vcfg)
        llm = model_cls(llm_cfg)
        projector = Projector(vcfg.hidden_size, llm_cfg.hidden_size, config["downsample_ratio"])
    vision_state = _random_state(vision, generator)
    projector_state = _random_state(projector, generator)
    llm_state = _random_state(llm, generator)
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
    state.update({LLM_PREFIX + k: v for k, v in llm_state.items()})
    state.update(seg_projection_state(llm_cfg.hidden_size, generator))
    return state


# --- writers ----------------------------------------------------------------------------------


def _generation_config(tokenizer) -> dict:
    import transformers

    vocab = tokenizer.get_vocab()
    return {
        "bos_token_id": vocab[END_OF_TEXT],
        "eos_token_id": [vocab[IM_END], vocab[END_OF_TEXT]],
        "pad_token_id": vocab[END_OF_TEXT],
        "transformers_version": transformers.__version__,
    }


def _sam2_part(seed: int, image_size: int) -> tuple[dict, dict[str, torch.Tensor]]:
    """A tiny SAM-2: its sam2_config.json and its ``grounding_encoder.sam2_model.*`` tensors."""
    from .sam2_prompt import build_sam2, sam2_official_state_dict, tiny_sam2_config

    config = tiny_sam2_config(image_size=image_size)
    return config, sam2_official_state_dict(build_sam2(config, seed=seed))


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_tiny_checkpoint(
    out_dir: str | os.PathLike,
    format: TinyFormat = "internvl",
    *,
    seed: int = 0,
    force_seg: bool = False,
    llm: TinyLLM = "qwen2",
    sam2_image_size: int = 1024,
) -> Path:
    """Write a tiny random Sa2VA checkpoint in the official layout; return its folder.

    ``format`` "internvl" gives a ``Sa2VAChatModel`` (InternViT + mlp1 + Qwen2/Qwen3 LLM, as
    Sa2VA-1B/4B/InternVL3-*); "qwen_vl" a ``Sa2VAChatModelQwen`` (``llm`` "qwen2" -> Qwen2.5-VL,
    "qwen3" -> Qwen3-VL). The same ``seed`` always gives the same files. ``force_seg`` plants
    weights that answer "[SEG]" and stop for any prompt. ``sam2_image_size`` below SAM-2's
    1024 (e.g. 256) makes every SAM-2 pass ~10x cheaper for tests and demos on a CPU; it
    changes no weight shape.
    """
    if format not in ("internvl", "qwen_vl"):
        raise ValueError(f"format must be 'internvl' or 'qwen_vl', got {format!r}")
    if llm not in ("qwen2", "qwen3"):
        raise ValueError(f"llm must be 'qwen2' or 'qwen3', got {llm!r}")
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tiny_tokenizer(out, format)
    vocab = tokenizer.get_vocab()
    if format == "internvl":
        config = tiny_internvl_config(llm, len(tokenizer), vocab[END_OF_TEXT], vocab[IM_END])
        state = tiny_internvl_state(config, tokenizer, seed, force_seg)
    else:
        from .qwen_vl import tiny_qwen_vl_parts

        variant = "qwen2_5_vl" if llm == "qwen2" else "qwen3_vl"
        config, state = tiny_qwen_vl_parts(out, seed, force_seg, variant=variant)
    sam2_config, sam2_state = _sam2_part(seed, sam2_image_size)
    state.update(sam2_state)
    save_file(
        {k: v.detach().contiguous().clone() for k, v in state.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    _write_json(out / "config.json", config)
    _write_json(out / "generation_config.json", _generation_config(tokenizer))
    _write_json(out / SAM2_CONFIG_FILE, sam2_config)
    return out


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_hub_cache(cache_dir: str | os.PathLike, repo_id: str, *, revision: str = "main", **kwargs) -> Path:
    """Put a tiny checkpoint into a Hugging Face hub cache as if it had been downloaded.

    Layout: ``models--owner--name/{blobs, snapshots/<commit>, refs/<revision>}`` with the
    snapshot files linked to their blobs (copied where symlinks are not allowed). With
    ``HF_HUB_CACHE=cache_dir`` and ``HF_HUB_OFFLINE=1``, ``resolve_checkpoint(repo_id)``
    and ``Sa2VA.from_pretrained(repo_id)`` find it. ``kwargs`` go to
    :func:`write_tiny_checkpoint`. Returns the snapshot folder.
    """
    if repo_id.count("/") != 1:
        raise ValueError(f"repo_id must be 'owner/name', got {repo_id!r}")
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    with tempfile.TemporaryDirectory() as tmp:
        src = write_tiny_checkpoint(Path(tmp) / "ckpt", **kwargs)
        files = sorted(p for p in src.rglob("*") if p.is_file())
        blobs = {}
        for path in files:
            data = path.read_bytes()
            # The hub names LFS blobs by sha256 and small files by their git blob sha1.
            blobs[path] = (
                hashlib.sha256(data).hexdigest() if path.suffix == ".safetensors" else _git_blob_sha1(data)
            )
        listing = "".join(f"{p.relative_to(src).as_posix()} {h}\n" for p, h in blobs.items())
        commit = hashlib.sha1(listing.encode()).hexdigest()
        snapshot = repo / "snapshots" / commit
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        for path, digest in blobs.items():
            blob = repo / "blobs" / digest
            if not blob.exists():
                shutil.copyfile(path, blob)
            link = snapshot / path.relative_to(src)
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.exists() or link.is_symlink():
                link.unlink()
            try:
                link.symlink_to(os.path.relpath(blob, link.parent))
            except OSError:
                shutil.copyfile(blob, link)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot
