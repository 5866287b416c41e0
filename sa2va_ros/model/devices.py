"""Device and dtype names as users give them ("auto", "cuda:0", "bfloat16") -> torch objects.

One meaning of "auto" for the whole core, so a model loaded through :class:`~.sa2va.Sa2VA` or
through an adapter directly runs the same way.
"""

from __future__ import annotations

import torch

from .errors import InputError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"``: the GPU when CUDA is available, else the CPU. A CUDA device without CUDA is refused."""
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device '{device}' was asked for but CUDA is not available; use device 'cpu'.")
    return dev


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"auto"``: float32 on the CPU, bfloat16 on any accelerator.

    bfloat16 is what the official ``predict_forward`` runs in and what every official
    checkpoint is stored in; on the CPU it is slower than float32 in PyTorch, and float32 is
    what the parity references were recorded in.
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16
    if dtype not in DTYPES:
        raise InputError(f"dtype '{dtype}' is not one of {sorted(DTYPES)} or 'auto'.")
    return DTYPES[dtype]
