"""Real-size random-weight Sa2VA checkpoints, written on the spot for bench/gpu_bench.py.

The shapes are those of the public checkpoints (numbers below, copied from their config.json);
the weights are random (seeded), the tokenizer is the repo's tiny test tokenizer. Timing depends
on shapes, not on values, with one exception handled here: a random model must not stop early,
so the end tokens' (and the padding rows') ``lm_head`` rows are zero, which keeps their logit at
0 while the best of hundreds of random logits is positive: every request generates exactly
``max_new_tokens`` tokens, and "per generated token" is measured over a known count.

The numbers come from ``sa2va_ros.testing.realsize`` (the rehearsal's configs of every
official checkpoint, with their sources), so the benchmark and the rehearsal test share them.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

from sa2va_ros.testing import realsize as official
from sa2va_ros.testing.internvl_writer import TINY_LLM, TINY_VISION, tiny_internvl_config, tiny_internvl_state
from sa2va_ros.testing.tiny_checkpoint import _generation_config
from sa2va_ros.testing.tokenizer_writer import END_OF_TEXT, IM_END, TOKENIZER_VOCAB_SIZE, write_tiny_tokenizer

_VISION_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers")
_LLM_KEYS = (*_VISION_KEYS, "num_key_value_heads")


def _real_size(repo: str) -> dict:
    """The shapes the benchmark varies, from the rehearsal's config of ``repo``."""
    config = official.CHECKPOINTS[repo].config
    return {
        "vision": {k: config["vision_config"][k] for k in _VISION_KEYS},
        "llm": {k: config["llm_config"][k] for k in _LLM_KEYS},
        "vocab_size": config["llm_config"]["vocab_size"],
    }


REAL_SIZES: dict[str, dict] = {"1b": _real_size("ByteDance/Sa2VA-1B"), "4b": _real_size("ByteDance/Sa2VA-4B")}

#: The CPU smoke run's stand-in: the tiny test shapes, with padding rows past the tokenizer
#: so the suppression of rows the tokenizer cannot decode is exercised too.
SMOKE_SIZES: dict[str, dict] = {
    "tiny": {
        "vision": dict(TINY_VISION),
        "llm": dict(TINY_LLM),
        "vocab_size": TOKENIZER_VOCAB_SIZE + 64,
    }
}


def _internvl_config(tokenizer, spec: dict) -> dict:
    vocab = tokenizer.get_vocab()
    config = tiny_internvl_config("qwen2", len(tokenizer), vocab[END_OF_TEXT], vocab[IM_END])
    config = copy.deepcopy(config)
    config["vision_config"].update(spec["vision"])
    config["llm_config"].update(spec["llm"])
    config["llm_config"]["max_window_layers"] = spec["llm"]["num_hidden_layers"]
    config["llm_config"]["vocab_size"] = max(spec["vocab_size"], len(tokenizer))
    config["hidden_size"] = spec["llm"]["hidden_size"]
    return config


def write_checkpoint(
    out_dir: str | Path,
    spec: dict,
    *,
    sam2_config: dict | None = None,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
) -> Path:
    """Write an InternVL-format Sa2VA of the shapes in ``spec``; ``sam2_config`` None = Hiera-L.

    ``dtype`` is the stored dtype (the public checkpoints are bfloat16).
    """
    from safetensors.torch import save_file

    from sa2va_ros.model.checkpoint import SAM2_CONFIG_FILE
    from sa2va_ros.model.internvl import LLM_PREFIX
    from sa2va_ros.model.sam2_config import build_sam2
    from sa2va_ros.testing.sam2_writer import sam2_official_state_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tiny_tokenizer(out, "internvl")
    config = _internvl_config(tokenizer, spec)
    state = tiny_internvl_state(config, tokenizer, seed, force_seg=False)
    vocab = tokenizer.get_vocab()
    head = state[LLM_PREFIX + "lm_head.weight"]
    head[max(vocab.values()) + 1 :] = 0.0  # rows the tokenizer cannot decode
    head[[vocab[IM_END], vocab[END_OF_TEXT]]] = 0.0  # never stop early (see the module doc)
    state.update(sam2_official_state_dict(build_sam2(sam2_config, seed=seed)))
    save_file(
        {k: v.detach().to(dtype).contiguous() for k, v in state.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    del state
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(_generation_config(tokenizer), indent=2) + "\n")
    if sam2_config is not None:
        (out / SAM2_CONFIG_FILE).write_text(json.dumps(sam2_config, indent=2) + "\n")
    return out
