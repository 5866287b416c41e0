"""The streaming loader itself: values, dtypes, shared mappings, skeletons and rebuilt buffers."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sa2va_ros.model.errors import CheckpointError
from sa2va_ros.model.loading import CheckpointTensors, Slot, load_strict, skeleton
from sa2va_ros.testing.shards import reshard, write_checkpoint_weights


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    state = {
        "a.weight": torch.randn(64, 32),
        "a.bias": torch.randn(64),
        "b.weight": torch.randn(3 * 8, 64),  # a "fused" tensor read as three parts
        "steps": torch.arange(5, dtype=torch.int64),
    }
    specs = [(k, tuple(v.shape), v.dtype) for k, v in state.items()]
    write_checkpoint_weights(tmp_path, specs, lambda spec: state[spec[0]])
    return tmp_path


def test_values_and_dtypes_match_safetensors(folder: Path) -> None:
    reference = load_file(str(folder / "model.safetensors"))
    with CheckpointTensors(folder) as tensors:
        assert set(tensors) == set(reference) and tensors.shape("b.weight") == (24, 64)
        assert torch.equal(tensors.read("a.weight"), reference["a.weight"])
        half = tensors.read("a.weight", dtype=torch.bfloat16)
        assert half.dtype == torch.bfloat16 and torch.equal(half, reference["a.weight"].to(torch.bfloat16))
        # Integer tensors keep their dtype whatever the target.
        assert tensors.read("steps", dtype=torch.bfloat16).dtype == torch.int64
        part = tensors.read("b.weight", part=(1, 3))
        assert torch.equal(part, reference["b.weight"][8:16])


def test_shared_tensors_outlive_the_reader(folder: Path) -> None:
    """Shared (zero-copy) tensors map the file; closing the reader must not unmap them."""
    reference = load_file(str(folder / "model.safetensors"))
    with CheckpointTensors(folder) as tensors:
        shared = tensors.read("a.weight", share=True)
        part = tensors.read("b.weight", part=(2, 3), share=True)
    gc.collect()
    assert torch.equal(shared, reference["a.weight"]) and torch.equal(part, reference["b.weight"][16:])
    shared += 1  # copy-on-write: the file is not changed
    assert torch.equal(load_file(str(folder / "model.safetensors"))["a.weight"], reference["a.weight"])


def test_sharded_reader_sees_every_tensor(folder: Path) -> None:
    reference = load_file(str(folder / "model.safetensors"))
    reshard(folder, 2)
    with CheckpointTensors(folder) as tensors:
        assert {name: tensors[name] for name in tensors}.keys() == reference.keys()
        for name, value in reference.items():
            assert torch.equal(tensors[name], value)


def test_skeleton_then_strict_load_fills_every_parameter(folder: Path) -> None:
    with skeleton():
        module = torch.nn.Linear(32, 64)
    assert module.weight.is_meta
    with CheckpointTensors(folder) as tensors:
        plan = {"weight": Slot("a.weight"), "bias": Slot("a.bias")}
        load_strict(module, tensors, plan, "test layer", dtype=torch.bfloat16)
    assert module.weight.dtype == torch.bfloat16 and not module.weight.is_meta
    assert not module.weight.requires_grad
    with skeleton():
        other = torch.nn.Linear(32, 64)
    with (
        CheckpointTensors(folder) as tensors,
        pytest.raises(CheckpointError, match=r"1 missing tensor\(s\) \['bias'\]"),
    ):
        load_strict(other, tensors, {"weight": Slot("a.weight")}, "test layer")


def test_skeleton_computes_buffers_that_are_not_in_checkpoints() -> None:
    """Rotary tables are non-persistent buffers: built for real, never left on the meta device."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    with skeleton():
        model = Qwen2ForCausalLM(config)
    reference = Qwen2ForCausalLM(config)
    assert all(p.is_meta for p in model.parameters())
    assert torch.equal(model.model.rotary_emb.inv_freq, reference.model.rotary_emb.inv_freq)


def test_a_slot_may_take_any_piece_of_a_fused_tensor(folder: Path) -> None:
    """Fused tensors packed per head (InternLM2's wqkv) need more than equal row chunks."""
    reference = load_file(str(folder / "model.safetensors"))["b.weight"]

    def every_other_row(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(12, 2, 64)[:, 1]

    with skeleton():
        module = torch.nn.Linear(64, 12, bias=False)
    with CheckpointTensors(folder) as tensors:
        load_strict(module, tensors, {"weight": Slot("b.weight", take=every_other_row)}, "test layer")
    assert torch.equal(module.weight, reference[1::2])
    with skeleton():
        wrong = torch.nn.Linear(64, 13, bias=False)
    with CheckpointTensors(folder) as tensors, pytest.raises(CheckpointError, match="wrong shape"):
        load_strict(wrong, tensors, {"weight": Slot("b.weight", take=every_other_row)}, "test layer")
