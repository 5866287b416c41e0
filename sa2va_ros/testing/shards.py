"""Write checkpoints in the layouts the hub uses: one ``model.safetensors`` or shards with an index.

Why here: the loader must refuse broken *sharded* checkpoints as clearly as single files,
and the load benchmark needs a multi-GB checkpoint written without holding it in memory.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

INDEX_FILE = "model.safetensors.index.json"

_CODES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}

#: (name, shape, dtype) of one tensor to write.
Spec = tuple[str, tuple[int, ...], torch.dtype]


def _nbytes(spec: Spec) -> int:
    _, shape, dtype = spec
    return int(torch.Size(shape).numel()) * dtype.itemsize


def write_safetensors(path: Path, specs: Sequence[Spec], make: Callable[[Spec], torch.Tensor]) -> None:
    """Write a safetensors file tensor by tensor: ``make(spec)`` is called once per tensor, in order.

    Only the documented format (u64 header length, JSON header, raw little-endian data), so a
    multi-GB file never needs all its tensors in memory at once.
    """
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for spec in specs:
        name, shape, dtype = spec
        size = _nbytes(spec)
        header[name] = {"dtype": _CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with Path(path).open("wb") as out:
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for spec in specs:
            tensor = make(spec).contiguous()
            if tuple(tensor.shape) != tuple(spec[1]) or tensor.dtype != spec[2]:
                raise ValueError(f"{spec[0]}: made {tuple(tensor.shape)} {tensor.dtype}, expected {spec[1:]}")
            if tensor.numel():
                out.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))


def split_specs(specs: Sequence[Spec], n: int) -> list[list[Spec]]:
    """Cut ``specs`` (in order) into ``n`` runs of about equal bytes, as the hub's shards are."""
    total = sum(_nbytes(s) for s in specs)
    shards: list[list[Spec]] = [[] for _ in range(n)]
    done = 0
    for spec in specs:
        shards[min(n - 1, done * n // max(total, 1))].append(spec)
        done += _nbytes(spec)
    return [s for s in shards if s]


def write_checkpoint_weights(
    out: Path, specs: Sequence[Spec], make: Callable[[Spec], torch.Tensor], shards: int = 1
) -> list[Path]:
    """Write the weights of a checkpoint folder: ``model.safetensors``, or ``shards`` files
    ``model-0000k-of-0000n.safetensors`` plus ``model.safetensors.index.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if shards <= 1:
        write_safetensors(out / "model.safetensors", specs, make)
        return [out / "model.safetensors"]
    parts = split_specs(specs, shards)
    files, weight_map = [], {}
    for k, part in enumerate(parts, start=1):
        name = f"model-{k:05d}-of-{len(parts):05d}.safetensors"
        write_safetensors(out / name, part, make)
        weight_map.update({spec[0]: name for spec in part})
        files.append(out / name)
    index = {"metadata": {"total_size": sum(_nbytes(s) for s in specs)}, "weight_map": weight_map}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2))
    return files


def reshard(folder: Path, shards: int) -> list[Path]:
    """Rewrite a (small) checkpoint folder's ``model.safetensors`` as ``shards`` shards + index."""
    from safetensors.torch import load_file

    if shards < 2:
        raise ValueError(f"reshard needs at least 2 shards, got {shards}")
    folder = Path(folder)
    state: Mapping[str, torch.Tensor] = load_file(str(folder / "model.safetensors"))
    specs = [(name, tuple(t.shape), t.dtype) for name, t in state.items()]
    files = write_checkpoint_weights(folder, specs, lambda spec: state[spec[0]], shards)
    (folder / "model.safetensors").unlink()
    return files
