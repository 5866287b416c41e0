"""Real-size random-weight Sa2VA checkpoints, written on the spot for bench/gpu_bench.py.

The shapes are those of the public checkpoints (numbers below, copied from their config.json);
the weights are random (seeded), the tokenizer is the repo's tiny test tokenizer. Timing depends
on shapes, not on values, with one exception handled here: a random model must not stop early,
so the end tokens' (and the padding rows') ``lm_head`` rows are zero, which keeps their logit at
0 while the best of hundreds of random logits is positive: every request generates exactly
``max_new_tokens`` tokens, and "per generated token" is measured over a known count.

The tiny writers live in ``sa2va_ros.model.tiny_checkpoint`` (being moved to
``sa2va_ros.testing``); both locations are tried.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch

try:  # the writers' new home
    from sa2va_ros.testing import tiny_checkpoint as tc  # type: ignore[import-not-found]
except ImportError:
    from sa2va_ros.model import tiny_checkpoint as tc

#: InternViT-300M-448px, the vision tower of Sa2VA-1B and Sa2VA-4B
#: (``vision_config`` of ByteDance/Sa2VA-1B/config.json and ByteDance/Sa2VA-4B/config.json).
INTERNVIT_300M = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_attention_heads": 16,
    "num_hidden_layers": 24,
}

#: ``llm_config`` of ByteDance/Sa2VA-1B/config.json (Qwen2.5-0.5B-Instruct) and
#: ByteDance/Sa2VA-4B/config.json (Qwen2.5-3B-Instruct).
REAL_SIZES: dict[str, dict] = {
    "1b": {
        "vision": INTERNVIT_300M,
        "llm": {
            "hidden_size": 896,
            "intermediate_size": 4864,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "num_hidden_layers": 24,
        },
        "vocab_size": 151674,
    },
    "4b": {
        "vision": INTERNVIT_300M,
        "llm": {
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "num_hidden_layers": 36,
        },
        "vocab_size": 151674,
    },
}

#: The CPU smoke run's stand-in: the tiny test shapes, with padding rows past the tokenizer
#: so the suppression of rows the tokenizer cannot decode is exercised too.
SMOKE_SIZES: dict[str, dict] = {
    "tiny": {
        "vision": dict(tc.TINY_VISION),
        "llm": dict(tc.TINY_LLM),
        "vocab_size": tc.TOKENIZER_VOCAB_SIZE + 64,
    }
}


def _internvl_config(tokenizer, spec: dict) -> dict:
    vocab = tokenizer.get_vocab()
    config = tc.tiny_internvl_config("qwen2", len(tokenizer), vocab[tc.END_OF_TEXT], vocab[tc.IM_END])
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
    from sa2va_ros.model.sam2_prompt import build_sam2, sam2_official_state_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = tc.write_tiny_tokenizer(out, "internvl")
    config = _internvl_config(tokenizer, spec)
    state = tc.tiny_internvl_state(config, tokenizer, seed, force_seg=False)
    vocab = tokenizer.get_vocab()
    head = state[LLM_PREFIX + "lm_head.weight"]
    head[max(vocab.values()) + 1 :] = 0.0  # rows the tokenizer cannot decode
    head[[vocab[tc.IM_END], vocab[tc.END_OF_TEXT]]] = 0.0  # never stop early (see the module doc)
    state.update(sam2_official_state_dict(build_sam2(sam2_config, seed=seed)))
    save_file(
        {k: v.detach().to(dtype).contiguous() for k, v in state.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    del state
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(tc._generation_config(tokenizer), indent=2) + "\n")
    if sam2_config is not None:
        (out / SAM2_CONFIG_FILE).write_text(json.dumps(sam2_config, indent=2) + "\n")
    return out
