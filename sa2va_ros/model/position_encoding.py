"""SAM-2's sine position encodings, handed out as views of one cached copy per feature size.

Meta's ``PositionEmbeddingSine`` caches the encoding of each feature size but returns
``cache.repeat(B, ...)``: a fresh copy on every call. SAM-2's image encoder asks for one per
FPN level on every frame, and the stride-4 level alone is 256 channels x 256 x 256 at 1024
input: 64 MB written per frame (about 100 ms of one CPU core in bench/tracker.py's profile), of
which SAM-2 then reads only the stride-16 level. Nothing downstream writes into these tensors,
so an ``expand``-ed view of the cached copy gives the same values for free.
"""

from __future__ import annotations

import torch
from sam2.modeling.position_encoding import PositionEmbeddingSine


class SharedPositionEmbeddingSine(PositionEmbeddingSine):
    """``PositionEmbeddingSine`` returning read-only-by-convention views of its cache.

    Never constructed: :func:`use_shared_position_encodings` re-classes existing modules, so
    their settings (and any cache already filled) stay.
    """

    @torch.no_grad()
    def _pe(self, B: int, device: torch.device, *cache_key: int) -> torch.Tensor:
        if cache_key not in self.cache:
            super()._pe(1, device, *cache_key)  # computes and caches (a permuted view)
            self.cache[cache_key] = self.cache[cache_key].contiguous()  # the layout repeat() gave
        cached = self.cache[cache_key]
        if cached.device != device:
            cached = self.cache[cache_key] = cached.to(device)
        return cached[None].expand(B, -1, -1, -1)


def use_shared_position_encodings(model: torch.nn.Module) -> int:
    """Re-class every stock ``PositionEmbeddingSine`` of ``model``; returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is PositionEmbeddingSine:
            module.__class__ = SharedPositionEmbeddingSine
            count += 1
    return count
