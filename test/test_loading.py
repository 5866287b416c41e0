"""The streaming loader itself: values, dtypes, shared mappings, skeletons and rebuilt buffers."""

from __future__ import annotations

import gc
import platform
import resource
import threading
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


def test_converted_reads_cross_the_read_buffer_and_keep_the_pieces(tmp_path: Path) -> None:
    """Conversions are read through a 4 MB buffer: tensors larger than it, row chunks of them
    and a tensor after them must come out exactly as safetensors' own conversion."""
    generator = torch.Generator().manual_seed(0)
    state = {
        "big.weight": torch.randn(3 * 1100, 1000, generator=generator),  # 13.2 MB: 4 chunks
        "small.weight": torch.randn(7, 5, generator=generator),
        "half.weight": torch.randn(1500, 1000, generator=generator).to(torch.float16),
    }
    write_checkpoint_weights(
        tmp_path, [(k, tuple(v.shape), v.dtype) for k, v in state.items()], lambda s: state[s[0]]
    )
    with CheckpointTensors(tmp_path) as tensors:
        for name, value in state.items():
            for dtype in (torch.bfloat16, torch.float32):
                got = tensors.read(name, dtype=dtype, share=True)
                assert got.dtype == dtype and torch.equal(got, value.to(dtype)), (name, dtype)
        for k in range(3):
            piece = tensors.read("big.weight", dtype=torch.bfloat16, part=(k, 3))
            assert torch.equal(piece, state["big.weight"][k * 1100 : (k + 1) * 1100].to(torch.bfloat16))
        out = tensors.destination("big.weight", dtype=torch.bfloat16, share=True)
        assert out is not None and out.shape == (3300, 1000) and out.dtype == torch.bfloat16
        assert tensors.read("big.weight", dtype=torch.bfloat16, out=out) is out
        assert torch.equal(out, state["big.weight"].to(torch.bfloat16))
        # Nothing to convert: shared with the mapped file, so no destination is allocated.
        assert tensors.destination("big.weight", dtype=torch.float32, share=True) is None
        with pytest.raises(ValueError, match="needs torch.bfloat16"):
            tensors.read("small.weight", dtype=torch.bfloat16, out=torch.empty(7, 5))


def test_a_file_truncated_after_opening_is_refused_not_a_crash(tmp_path: Path) -> None:
    """Converted tensors are read with preadv: a file cut short while loading gives the
    loader's message (reading a mapping past the end of a file would kill the process)."""
    state = {"a.weight": torch.randn(256, 256), "b.weight": torch.randn(256, 256)}
    write_checkpoint_weights(
        tmp_path, [(k, tuple(v.shape), v.dtype) for k, v in state.items()], lambda s: state[s[0]]
    )
    file = tmp_path / "model.safetensors"
    with CheckpointTensors(tmp_path) as tensors:
        last = max(tensors, key=lambda n: tensors.order(n)[1])
        with file.open("r+b") as handle:
            handle.truncate(file.stat().st_size - 1000)
        with pytest.raises(CheckpointError, match="corrupt or truncated"):
            tensors.read(last, dtype=torch.bfloat16)


def test_a_converting_load_leaves_no_thread_and_the_thread_count_unchanged(folder: Path) -> None:
    """The prefaulting helper thread is joined and torch's thread count restored, also when
    the load fails half way."""
    threads = torch.get_num_threads()
    reference = load_file(str(folder / "model.safetensors"))
    with skeleton():
        module = torch.nn.Linear(32, 64)
    with CheckpointTensors(folder) as tensors:
        plan = {"weight": Slot("a.weight"), "bias": Slot("a.bias")}
        load_strict(module, tensors, plan, "test layer", dtype=torch.bfloat16)
    assert torch.equal(module.weight, reference["a.weight"].to(torch.bfloat16))
    assert torch.get_num_threads() == threads
    assert not [t for t in threading.enumerate() if t.name == "sa2va-prefault"]

    def broken(t: torch.Tensor) -> torch.Tensor:
        """Fine for the shape check and the destination (both on meta), fails on the data."""
        if not t.is_meta:
            raise RuntimeError("a read that fails")
        return t.reshape(-1)[:64]

    with skeleton():
        other = torch.nn.Linear(32, 64)
    with CheckpointTensors(folder) as tensors, pytest.raises(RuntimeError, match="a read that fails"):
        plan = {"weight": Slot("a.weight"), "bias": Slot("b.weight", take=broken)}
        load_strict(other, tensors, plan, "test layer", dtype=torch.bfloat16)
    assert torch.get_num_threads() == threads
    assert not [t for t in threading.enumerate() if t.name == "sa2va-prefault"]


@pytest.mark.skipif(
    tuple(int(x) for x in platform.release().split(".")[:2] if x.isdigit()) < (5, 14),
    reason="MADV_POPULATE_WRITE needs Linux 5.14",
)
def test_prefaulting_maps_a_new_tensor_so_writing_it_takes_no_page_faults() -> None:
    from sa2va_ros.model.loading import _populate_write

    fresh = torch.empty(64 << 20, dtype=torch.uint8)  # 16384 pages, none mapped yet
    assert _populate_write(fresh)
    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    fresh.fill_(1)  # on this thread only: torch's pool would fault on its own threads
    assert resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before < 100
