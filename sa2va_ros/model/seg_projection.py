"""The [SEG] projection ``text_hidden_fcs``: LLM hidden state -> SAM-2 prompt embedding.

Both checkpoint formats store it under ``text_hidden_fcs.{0,2}.*`` (index 1 is the ReLU,
3 a no-op dropout), so this module is an ``nn.Sequential`` whose own state-dict keys
are exactly the official ones minus the prefix.
"""

from __future__ import annotations

import torch
from torch import nn

from .checkpoint import SEG_PROJECTION_PREFIX, take_prefix
from .errors import CheckpointError

#: SAM-2's prompt embedding width (``hidden_dim`` of its mask decoder).
SAM2_PROMPT_DIM = 256


class SegProjection(nn.Sequential):
    """Linear(H, H) -> ReLU -> Linear(H, 256), the official ``text_hidden_fcs``."""

    def __init__(self, hidden_size: int, out_dim: int = SAM2_PROMPT_DIM) -> None:
        super().__init__(nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, out_dim))
        self.hidden_size = hidden_size
        self.out_dim = out_dim


def load_seg_projection(
    state: dict[str, torch.Tensor],
    hidden_size: int | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> SegProjection:
    """Build the projection from checkpoint tensors.

    ``state`` is either the full checkpoint (keys ``text_hidden_fcs.*``) or those tensors
    with the prefix already removed (``0.weight``...). ``hidden_size`` is the language
    model's; a mismatch means the checkpoint is not a consistent Sa2VA export and is
    refused rather than silently reshaped.
    """
    has_prefix = any(k.startswith(SEG_PROJECTION_PREFIX) for k in state)
    tensors = take_prefix(state, SEG_PROJECTION_PREFIX) if has_prefix else dict(state)
    expected = {"0.weight", "0.bias", "2.weight", "2.bias"}
    if not expected & tensors.keys():
        raise CheckpointError(
            f"The checkpoint has no {SEG_PROJECTION_PREFIX}* tensors (the [SEG] projection): it is not a "
            "Sa2VA checkpoint, or its weights are incomplete."
        )
    missing = sorted(expected - tensors.keys())
    unexpected = sorted(tensors.keys() - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"The [SEG] projection ({SEG_PROJECTION_PREFIX}*) is incomplete: missing "
            f"{[SEG_PROJECTION_PREFIX + k for k in missing]}, unexpected "
            f"{[SEG_PROJECTION_PREFIX + k for k in unexpected]}. The checkpoint is not a Sa2VA export."
        )
    first, last = tensors["0.weight"], tensors["2.weight"]
    if (
        first.ndim != 2
        or first.shape[0] != first.shape[1]
        or last.ndim != 2
        or last.shape[1] != first.shape[0]
    ):
        raise CheckpointError(
            f"{SEG_PROJECTION_PREFIX}0/2 have shapes {tuple(first.shape)} and {tuple(last.shape)}; expected "
            "(H, H) and (256, H)."
        )
    if hidden_size is not None and first.shape[0] != hidden_size:
        raise CheckpointError(
            f"{SEG_PROJECTION_PREFIX}0.weight is {tuple(first.shape)} but the language model hidden size is "
            f"{hidden_size}: the projection does not belong to this language model."
        )
    module = SegProjection(first.shape[0], last.shape[0])
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:  # bias shapes that disagree with the weights
        raise CheckpointError(f"{SEG_PROJECTION_PREFIX}* tensors have inconsistent shapes: {exc}") from exc
    return module.to(device=device, dtype=dtype).eval()
