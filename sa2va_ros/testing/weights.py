"""Seeded weights for test checkpoints, shared by every writer in this package.

One initialiser for every format: the values do not depend on transformers' own initialisers,
so the same seed writes the same checkpoint on every transformers release.
"""

from __future__ import annotations

import torch

from sa2va_ros.model.checkpoint import SEG_PROJECTION_PREFIX


def random_state(module: torch.nn.Module, generator: torch.Generator) -> dict[str, torch.Tensor]:
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
