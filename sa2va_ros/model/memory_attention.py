"""SAM-2's memory attention, same result, less arithmetic.

Memory attention is where a tracked frame spends its time: every object's current-frame
features (64 x 64 = 4096 tokens at 1024 input) attend to up to 7 frames of that object's memory
(28,672 tokens) plus its object pointers. Two exact rewrites cut the work:

1. **Values stay narrow.** SAM-2 memories are 64-d (``kv_in_dim``) while a head is 256-d, and
   the value projection is linear with no RoPE. Since every attention row sums to one,
   ``softmax(QK^T) (X W_v^T + b_v) = (softmax(QK^T) X) W_v^T + b_v``: attend over the 64-d
   memory first and project afterwards. The attention-times-values product shrinks 4x
   (256 -> 64 columns) and the 28,672-token value projection disappears. Keys cannot be
   rewritten the same way, because RoPE rotates each key by its position after projection.
   Used on CPUs, where it was measured (cross-attention about 25% faster at 1024 input); GPUs
   keep SAM-2's order for their fused attention kernels until it is measured there.
2. **Objects share the query side.** Every object tracked on a frame starts from the same
   frame features, so until the first cross-attention mixes in an object's memory (the input
   position term, the first layer's self-attention and its query projection) the work is done
   once per frame, not once per object.

Meta's ``sam2`` package has no switch for either, so :func:`use_factored_memory_attention`
re-classes the model's ``MemoryAttention`` to :class:`FactoredMemoryAttention`: the same
parameters and state-dict names, only ``forward`` differs. The results equal the stock module's
up to float rounding (test_memory_attention.py compares the two; the fixtures' official masks
still match with IoU 1.0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2.modeling.position_encoding import apply_rotary_enc
from sam2.modeling.sam.transformer import RoPEAttention


def _batch_shared(x: torch.Tensor) -> bool:
    """True when every batch entry of a (L, B, C) tensor is the same memory (batch 1 or an
    ``expand``-ed view, as the tracker passes one frame's features for several objects)."""
    return x.size(1) == 1 or x.stride(1) == 0


def _rope_freqs(attn: RoPEAttention, q: torch.Tensor) -> torch.Tensor:
    """The rotary table for ``q``'s token count, cached on the module as RoPEAttention does."""
    n = q.shape[-2]
    attn.freqs_cis = attn.freqs_cis.to(q.device)
    if attn.freqs_cis.shape[0] != n:
        side = math.sqrt(n)
        attn.freqs_cis = attn.compute_cis(end_x=side, end_y=side).to(q.device)
    return attn.freqs_cis


def _cross_attention(
    attn: RoPEAttention, q_in: torch.Tensor, k_in: torch.Tensor, v_in: torch.Tensor, num_k_exclude_rope: int
) -> torch.Tensor:
    """RoPEAttention.forward with the value projection moved after the attention (rewrite 1).

    ``q_in`` may have batch 1 while the memory has batch B (rewrite 2): the query is projected
    and rotated once and broadcast over the objects.
    """
    heads = attn.num_heads
    q = attn._separate_heads(attn.q_proj(q_in), heads)
    k = attn._separate_heads(attn.k_proj(k_in), heads)
    if q.shape[-2] != k.shape[-2]:
        assert attn.rope_k_repeat, "cross-attention to memories needs rope_k_repeat"
    num_k_rope = k.size(-2) - num_k_exclude_rope
    q, k[:, :, :num_k_rope] = apply_rotary_enc(
        q, k[:, :, :num_k_rope], freqs_cis=_rope_freqs(attn, q), repeat_freqs_k=attn.rope_k_repeat
    )
    head_dim = attn.internal_dim // heads
    if attn.kv_in_dim >= head_dim or q.device.type != "cpu":
        # SAM-2's own order: nothing to gain, or a device where the rewrite was never measured
        # (PyTorch's fused GPU kernels want equal q/k/v widths).
        v = attn._separate_heads(attn.v_proj(v_in), heads)
        out = F.scaled_dot_product_attention(q.expand(k.size(0), -1, -1, -1), k, v)
        return attn.out_proj(attn._recombine_heads(out))
    v = v_in.unsqueeze(1).expand(-1, heads, -1, -1).to(q.dtype)  # (B, heads, S, kv_in_dim)
    mixed = _softmax_attention(q, k, v)  # (B, heads, L, kv_in_dim)
    weight = attn.v_proj.weight.view(heads, head_dim, attn.kv_in_dim).transpose(1, 2)
    out = torch.matmul(mixed, weight.to(mixed.dtype)) + attn.v_proj.bias.view(1, heads, 1, head_dim)
    return attn.out_proj(attn._recombine_heads(out.to(mixed.dtype)))


#: Queries per block of :func:`_softmax_attention`: 256 x 28,736 scores = 29 MB per object.
QUERY_BLOCK = 256


def _softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v, block by block of queries.

    Written out because PyTorch's CPU ``scaled_dot_product_attention`` drops to its unfused
    path when v is narrower than q and k (measured 15% slower than v at full width, and it
    holds the whole 4096 x 28,736 score matrix). Blocks keep the scores at a few MB and the
    value product at 64 columns: this is where rewrite 1 saves its time. One score buffer
    serves every block (a fresh 29 MB+ tensor per block costs page faults: measured up to
    half the attention time with 4 objects), and softmax runs in place.
    """
    batch = max(q.size(0), k.size(0))
    out = q.new_empty(batch, q.size(1), q.size(2), v.size(-1))
    q = q * q.size(-1) ** -0.5
    keys_t = k.transpose(-1, -2)
    scores = q.new_empty(batch, q.size(1), min(QUERY_BLOCK, q.size(2)), k.size(-2))
    for start in range(0, q.size(2), QUERY_BLOCK):
        block = slice(start, start + QUERY_BLOCK)
        queries = q[:, :, block]
        view = scores[:, :, : queries.size(2)]
        torch.matmul(queries, keys_t, out=view)
        torch.softmax(view, dim=-1, out=view)
        torch.matmul(view, v, out=out[:, :, block])
    return out


def _layer_forward(
    layer: MemoryAttentionLayer,
    tgt: torch.Tensor,
    memory: torch.Tensor,
    pos: torch.Tensor,
    query_pos: torch.Tensor,
    num_k_exclude_rope: int,
) -> torch.Tensor:
    """MemoryAttentionLayer.forward in eval mode (dropout is the identity), batch first.

    ``tgt`` / ``query_pos`` may have batch 1 while ``memory`` has batch B; the result has B.
    """
    tgt2 = layer.norm1(tgt)
    q = tgt2 + query_pos if layer.pos_enc_at_attn else tgt2
    tgt = tgt + layer.self_attn(q, q, v=tgt2)
    tgt2 = layer.norm2(tgt)
    tgt = tgt + _cross_attention(
        layer.cross_attn_image,
        q_in=tgt2 + query_pos if layer.pos_enc_at_cross_attn_queries else tgt2,
        k_in=memory + pos if layer.pos_enc_at_cross_attn_keys else memory,
        v_in=memory,
        num_k_exclude_rope=num_k_exclude_rope,
    )
    tgt2 = layer.norm3(tgt)
    return tgt + layer.linear2(layer.activation(layer.linear1(tgt2)))


class FactoredMemoryAttention(MemoryAttention):
    """``sam2``'s MemoryAttention with the two exact rewrites of this module's docstring.

    Never constructed: :func:`use_factored_memory_attention` re-classes an existing module.
    Training (dropout) and layouts it was not written for use the stock forward.
    """

    def forward(
        self,
        curr: torch.Tensor | list[torch.Tensor],
        memory: torch.Tensor,
        curr_pos: torch.Tensor | list[torch.Tensor] | None = None,
        memory_pos: torch.Tensor | None = None,
        num_obj_ptr_tokens: int = 0,
    ) -> torch.Tensor:
        if isinstance(curr, list):
            (curr,), (curr_pos,) = curr, curr_pos
        if self.training or not self.batch_first or curr_pos is None or memory_pos is None:
            return super().forward(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens)
        if curr.size(1) != memory.size(1):
            raise ValueError("Batch size must be the same for curr and memory")
        batch = memory.size(1)
        if _batch_shared(curr) and _batch_shared(curr_pos):
            curr, curr_pos = curr[:, :1], curr_pos[:, :1]
        output = curr + 0.1 * curr_pos if self.pos_enc_at_input else curr
        # Batch first, as the layers expect.
        output, query_pos = output.transpose(0, 1), curr_pos.transpose(0, 1)
        memory, memory_pos = memory.transpose(0, 1), memory_pos.transpose(0, 1)
        for layer in self.layers:
            output = _layer_forward(layer, output, memory, memory_pos, query_pos, num_obj_ptr_tokens)
        # A batch that never met a memory (no layers) still needs B entries.
        return self.norm(output).expand(batch, -1, -1).transpose(0, 1)


def _supported(module: torch.nn.Module) -> bool:
    return type(module) is MemoryAttention and all(
        type(layer) is MemoryAttentionLayer
        and isinstance(layer.cross_attn_image, RoPEAttention)
        and isinstance(layer.self_attn, RoPEAttention)
        for layer in module.layers
    )


def use_factored_memory_attention(model: torch.nn.Module) -> bool:
    """Switch a SAM-2 model's memory attention to :class:`FactoredMemoryAttention` in place.

    Returns False (and changes nothing) for a layout the rewrite does not cover, e.g. a
    future sam2 release with different layer classes; the stock module then runs.
    """
    module = getattr(model, "memory_attention", None)
    if isinstance(module, FactoredMemoryAttention):
        return True
    if module is None or not _supported(module):
        return False
    module.__class__ = FactoredMemoryAttention
    return True
