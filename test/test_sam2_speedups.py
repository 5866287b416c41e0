"""The exact SAM-2 rewrites against Meta's own modules, on the same weights and inputs.

Factored memory attention:
The rewrite must change nothing but float rounding: shared and per-object queries, object
pointer tokens (no RoPE), several heads, more than one layer, and a layout where the value
rewrite does not apply (kv_in_dim >= head size) all give the stock module's output.
Shared position encodings: the same values as the stock module's fresh copies, at every size.
"""

from __future__ import annotations

import copy

import pytest
import torch
from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
from sam2.modeling.position_encoding import PositionEmbeddingSine
from sam2.modeling.sam.transformer import RoPEAttention

from sa2va_ros.model import memory_attention
from sa2va_ros.model.memory_attention import FactoredMemoryAttention, use_factored_memory_attention
from sa2va_ros.model.position_encoding import SharedPositionEmbeddingSine, use_shared_position_encodings
from sa2va_ros.model.sam2_config import build_sam2
from sa2va_ros.model.sam2_prompt import Sa2VASam2
from sa2va_ros.testing.sam2_writer import tiny_sam2_config

SIDE = 8  # feature map side: 64 query tokens


def _module(d_model: int, heads: int, kv_in_dim: int, layers: int) -> MemoryAttention:
    def rope(**kw) -> RoPEAttention:
        return RoPEAttention(embedding_dim=d_model, num_heads=heads, feat_sizes=(SIDE, SIDE), **kw)

    layer = MemoryAttentionLayer(
        activation="relu",
        cross_attention=rope(rope_k_repeat=True, kv_in_dim=kv_in_dim),
        d_model=d_model,
        dim_feedforward=4 * d_model,
        dropout=0.1,  # must be ignored in eval mode, as in the stock module
        pos_enc_at_attn=False,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        self_attention=rope(),
    )
    torch.manual_seed(0)
    module = MemoryAttention(d_model=d_model, pos_enc_at_input=True, layer=layer, num_layers=layers)
    with torch.no_grad():  # non-trivial norms and biases, so a misplaced term would show
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module.eval()


def _inputs(d_model: int, kv_in_dim: int, batch: int, shared: bool, frames: int, pointers: int):
    g = torch.Generator().manual_seed(1)
    tokens = SIDE * SIDE
    if shared:  # one frame's features for every object, as the tracker passes them
        curr = torch.randn(tokens, 1, d_model, generator=g).expand(-1, batch, -1)
        curr_pos = torch.randn(tokens, 1, d_model, generator=g).expand(-1, batch, -1)
    else:
        curr = torch.randn(tokens, batch, d_model, generator=g)
        curr_pos = torch.randn(tokens, batch, d_model, generator=g)
    length = frames * tokens + pointers
    memory = torch.randn(length, batch, kv_in_dim, generator=g)
    memory_pos = torch.randn(length, batch, kv_in_dim, generator=g)
    return curr, memory, curr_pos, memory_pos


@pytest.mark.parametrize(
    "d_model,heads,kv_in_dim,layers",
    [(64, 1, 16, 1), (64, 2, 16, 2), (32, 1, 64, 1)],  # SAM-2's shape; multi-head; no value rewrite
)
@pytest.mark.parametrize("batch,shared", [(1, True), (3, True), (3, False)])
@pytest.mark.parametrize("pointers", [0, 8])
@pytest.mark.parametrize("query_block", [memory_attention.QUERY_BLOCK, 24])  # 24: blocks + remainder
def test_factored_equals_stock(
    monkeypatch, d_model, heads, kv_in_dim, layers, batch, shared, pointers, query_block
) -> None:
    monkeypatch.setattr(memory_attention, "QUERY_BLOCK", query_block)
    stock = _module(d_model, heads, kv_in_dim, layers)
    factored = copy.deepcopy(stock)
    assert use_factored_memory_attention(_holder(factored))
    assert type(factored) is FactoredMemoryAttention
    curr, memory, curr_pos, memory_pos = _inputs(d_model, kv_in_dim, batch, shared, 3, pointers)
    with torch.inference_mode():
        expected = stock(curr, memory, curr_pos, memory_pos, num_obj_ptr_tokens=pointers)
        got = factored([curr], memory, [curr_pos], memory_pos, num_obj_ptr_tokens=pointers)
    assert got.shape == expected.shape == (SIDE * SIDE, batch, d_model)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=2e-5)


def _holder(module: MemoryAttention) -> torch.nn.Module:
    holder = torch.nn.Module()
    holder.memory_attention = module
    return holder


def test_sa2va_sam2_uses_it_and_keeps_meta_names() -> None:
    model = build_sam2(tiny_sam2_config(image_size=64), seed=0)
    names = list(model.state_dict())
    sam2 = Sa2VASam2(model)
    assert type(sam2.model.memory_attention) is FactoredMemoryAttention
    # the FPN neck's and the memory encoder's
    assert sum(isinstance(m, SharedPositionEmbeddingSine) for m in sam2.model.modules()) == 2
    assert list(sam2.model.state_dict()) == names


def test_unknown_layouts_are_left_alone() -> None:
    holder = _holder(_module(32, 1, 16, 1))
    holder.memory_attention.layers[0].cross_attn_image = torch.nn.Identity()
    assert not use_factored_memory_attention(holder)
    assert type(holder.memory_attention) is MemoryAttention


@pytest.mark.parametrize("batch", [1, 3])
def test_shared_position_encodings_equal_fresh_ones(batch: int) -> None:
    stock = PositionEmbeddingSine(num_pos_feats=64)
    shared = copy.deepcopy(stock)
    assert use_shared_position_encodings(torch.nn.Sequential(shared)) == 1
    for h, w in [(16, 16), (8, 12), (16, 16)]:  # a second ask of a size comes from the cache
        x = torch.zeros(batch, 3, h, w)
        expected, got = stock(x), shared(x)
        assert got.shape == expected.shape == (batch, 64, h, w)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
