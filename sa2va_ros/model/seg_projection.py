"""The [SEG] projection ``text_hidden_fcs``: LLM hidden state -> SAM-2 prompt embedding.

Both checkpoint formats store it under ``text_hidden_fcs.{0,2}.*`` (index 1 is the ReLU,
3 a no-op dropout), so this module is an ``nn.Sequential`` whose own state-dict keys
are exactly the official ones minus the prefix.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .checkpoint import SEG_PROJECTION_PREFIX
from .errors import CheckpointError
from .loading import Slot, load_strict, skeleton, tensor_shape

#: SAM-2's prompt embedding width (``hidden_dim`` of its mask decoder).
SAM2_PROMPT_DIM = 256


class SegProjection(nn.Sequential):
    """Linear(H, H) -> ReLU -> Linear(H, 256), the official ``text_hidden_fcs``."""

    def __init__(self, hidden_size: int, out_dim: int = SAM2_PROMPT_DIM) -> None:
        super().__init__(nn.Linear(hidden_size, hidden_size), nn.ReLU(), nn.Linear(hidden_size, out_dim))
        self.hidden_size = hidden_size
        self.out_dim = out_dim


def load_seg_projection(
    tensors: Mapping[str, torch.Tensor],
    hidden_size: int | None = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> SegProjection:
    """Build the projection from checkpoint tensors (streamed when ``tensors`` is a checkpoint).

    ``tensors`` is either the full checkpoint (keys ``text_hidden_fcs.*``) or those tensors
    with the prefix already removed (``0.weight``...). ``hidden_size`` is the language
    model's; a mismatch means the checkpoint is not a consistent Sa2VA export and is
    refused rather than silently reshaped.
    """
    prefix = SEG_PROJECTION_PREFIX if any(k.startswith(SEG_PROJECTION_PREFIX) for k in tensors) else ""
    names = {k[len(prefix) :]: k for k in tensors if k.startswith(prefix)}
    expected = {"0.weight", "0.bias", "2.weight", "2.bias"}
    if not expected & names.keys():
        raise CheckpointError(
            f"The checkpoint has no {SEG_PROJECTION_PREFIX}* tensors (the [SEG] projection): it is not a "
            "Sa2VA checkpoint, or its weights are incomplete."
        )
    missing = sorted(expected - names.keys())
    unexpected = sorted(names.keys() - expected)
    if missing or unexpected:
        raise CheckpointError(
            f"The [SEG] projection ({SEG_PROJECTION_PREFIX}*) is incomplete: missing "
            f"{[SEG_PROJECTION_PREFIX + k for k in missing]}, unexpected "
            f"{[SEG_PROJECTION_PREFIX + k for k in unexpected]}. The checkpoint is not a Sa2VA export."
        )
    first, last = tensor_shape(tensors, names["0.weight"]), tensor_shape(tensors, names["2.weight"])
    if len(first) != 2 or first[0] != first[1] or len(last) != 2 or last[1] != first[0]:
        raise CheckpointError(
            f"{SEG_PROJECTION_PREFIX}0/2 have shapes {first} and {last}; expected (H, H) and (256, H)."
        )
    if hidden_size is not None and first[0] != hidden_size:
        raise CheckpointError(
            f"{SEG_PROJECTION_PREFIX}0.weight is {first} but the language model hidden size is "
            f"{hidden_size}: the projection does not belong to this language model."
        )
    with skeleton():
        module = SegProjection(first[0], last[0])
    plan = {key: Slot(name) for key, name in names.items()}
    load_strict(
        module,
        tensors,
        plan,
        f"[SEG] projection ({SEG_PROJECTION_PREFIX}*)",
        official=lambda k: SEG_PROJECTION_PREFIX + k,
        device=device,
        dtype=dtype,
        advice="The checkpoint is not a consistent Sa2VA export.",
    )
    return module.eval()
