"""One strict, streaming loader for every part of a Sa2VA checkpoint.

Why streaming: the official checkpoints are float32 safetensors (Sa2VA-1B is one 4 GB file,
Sa2VA-4B four 5 GB shards). Reading them whole and then copying into a built model needs
two to three times the model's memory, which a Jetson (GPU and CPU share the memory) does
not have. Here the model is built as a *skeleton* (parameters on the meta device, no
storage), then each tensor is read from a memory-mapped file, converted to the target dtype
on the target device, and assigned in place of its meta parameter. The mapped pages of a
tensor are released as soon as it is copied, so the host never holds more than the loaded
model plus one tensor.

Why strict: a checkpoint that does not match its config (missing, unexpected or wrongly
shaped tensors) would otherwise run with random weights. Every problem is listed by its
official checkpoint name before any tensor is read.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import weight_files
from .errors import CheckpointError

#: safetensors dtype codes -> torch dtypes (the ones torch can hold).
_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


@dataclass(frozen=True)
class _Entry:
    """Where one tensor lies: its file, dtype, shape and byte range (absolute offsets)."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int
    end: int


def _corrupt(file: Path, why: object) -> CheckpointError:
    return CheckpointError(
        f"{file} cannot be read as safetensors ({why}): the file is corrupt or truncated; download it again."
    )


def _read_header(file: Path) -> dict[str, _Entry]:
    """Validate ``file`` with safetensors itself, then read the tensor table of its header.

    safetensors checks the header against the file size (a truncated download fails here);
    it does not expose the byte offsets, so the documented header (u64 length + JSON) is
    read for them.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt"):
            pass
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
    except (SafetensorError, OSError, ValueError, struct.error) as exc:
        raise _corrupt(file, exc) from exc
    base = 8 + length
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _DTYPES:
            raise CheckpointError(
                f"{file}: tensor {name} has dtype {info['dtype']}, which torch cannot hold."
            )
        start, end = info["data_offsets"]
        entries[name] = _Entry(file, _DTYPES[info["dtype"]], tuple(info["shape"]), base + start, base + end)
    return entries


class CheckpointTensors(Mapping[str, torch.Tensor]):
    """The tensors of a checkpoint folder (single file or shards with an index), read lazily.

    Names, dtypes and shapes come from the file headers without reading any data. Indexing
    (``tensors[name]``) reads one tensor into a new CPU tensor; :meth:`read` converts it
    on the way. Use as a context manager (or call :meth:`close`) to unmap the files.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._entries: dict[str, _Entry] = {}
        for file in weight_files(self.path):
            self._entries.update(_read_header(file))
        index = self.path / "model.safetensors.index.json"
        if index.exists():
            weight_map = json.loads(index.read_text()).get("weight_map", {})
            lost = sorted(
                n
                for n, shard in weight_map.items()
                if self._entries.get(n, _NO_ENTRY).file != self.path / shard
            )
            if lost:
                raise CheckpointError(
                    f"{index} lists {len(lost)} tensor(s) that are not in the shard it names, e.g. "
                    f"{lost[:5]}: the shards and the index do not belong together; download the model again."
                )
        self._maps: dict[Path, mmap.mmap] = {}
        self._shared: set[Path] = set()  # files some returned tensor still maps

    # -- Mapping ---------------------------------------------------------------------------

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.read(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    # -- reading ---------------------------------------------------------------------------

    def shape(self, name: str) -> tuple[int, ...]:
        return self._entries[name].shape

    def dtype(self, name: str) -> torch.dtype:
        return self._entries[name].dtype

    def order(self, name: str) -> tuple[str, int]:
        """Sort key: file then offset, so a load reads every file front to back."""
        entry = self._entries[name]
        return (entry.file.name, entry.start)

    def nbytes(self) -> int:
        return sum(e.end - e.start for e in self._entries.values())

    def _map(self, file: Path) -> mmap.mmap:
        if file not in self._maps:
            with file.open("rb") as handle:
                # Copy-on-write so torch gets a writable buffer; nothing is ever written.
                self._maps[file] = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_COPY)
        return self._maps[file]

    def read(
        self,
        name: str,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        part: tuple[int, int] | None = None,
        take: Callable[[torch.Tensor], torch.Tensor] | None = None,
        share: bool = False,
    ) -> torch.Tensor:
        """``name`` (chunk ``part`` = (k, n) of dim 0, then ``take(tensor)`` when given: a
        piece of a fused tensor) as a tensor of ``dtype`` on ``device``.

        With ``share`` and nothing to convert (same dtype, on the CPU) the result *is*
        the mapped file data (copy-on-write): no copy and no new memory, the page cache holds
        it, and its pages are mapped when first used. Otherwise a new tensor is made and the
        mapped pages are dropped from this process afterwards (they stay in the page cache),
        so reading every tensor never holds the files in the process's memory on top of the
        converted weights.
        """
        entry = self._entries[name]
        buffer = self._map(entry.file)
        numel = (entry.end - entry.start) // entry.dtype.itemsize
        try:
            source = torch.frombuffer(buffer, dtype=entry.dtype, count=numel, offset=entry.start).view(
                entry.shape
            )
        except (ValueError, RuntimeError) as exc:
            raise _corrupt(entry.file, exc) from exc
        target = dtype if (dtype is not None and source.is_floating_point()) else source.dtype
        if part is not None:
            source = source.chunk(part[1], dim=0)[part[0]]  # rows of dim 0: still contiguous
        if take is not None:
            source = take(source)
        if share and take is None and target == source.dtype and torch.device(device).type == "cpu":
            self._shared.add(entry.file)
            return source
        _populate(buffer, entry.start, entry.end)
        out = torch.empty(source.shape, dtype=target, device=device)
        out.copy_(source)
        del source
        _release(buffer, entry.start, entry.end)
        return out

    def close(self) -> None:
        """Unmap the files no shared tensor uses.

        A shared tensor keeps a reference to its file's mapping (``torch.frombuffer``) but
        does not lock it: closing that mapping would leave the tensor pointing at unmapped
        memory. Those mappings are only dropped here; they are unmapped when their last
        tensor is freed.
        """
        for file, buffer in self._maps.items():
            if file not in self._shared:
                buffer.close()
        self._maps.clear()

    def __enter__(self) -> CheckpointTensors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_NO_ENTRY = _Entry(Path(), torch.float32, (), 0, 0)


#: Linux 5.14+: map a range's pages in one call instead of one fault per 64 kB.
_MADV_POPULATE_READ = getattr(mmap, "MADV_POPULATE_READ", 22 if hasattr(mmap, "MADV_DONTNEED") else None)


def _populate(buffer: mmap.mmap, start: int, end: int) -> None:
    """Pre-map [start, end) (an optimisation: older kernels refuse it, and faults do the same)."""
    if _MADV_POPULATE_READ is None or end <= start:
        return
    first = start - start % mmap.PAGESIZE
    with contextlib.suppress(OSError, ValueError):
        buffer.madvise(_MADV_POPULATE_READ, first, min(end, len(buffer)) - first)


def _release(buffer: mmap.mmap, start: int, end: int) -> None:
    """Drop the pages lying wholly inside [start, end) from this process (MADV_DONTNEED).

    Pages shared with a neighbouring tensor are kept: that tensor may be in use (shared,
    possibly written copy-on-write), and dropping a written private page would lose it.
    """
    advice = getattr(mmap, "MADV_DONTNEED", None)
    page = mmap.PAGESIZE
    first, last = -(-start // page) * page, min(end, len(buffer)) // page * page
    if advice is not None and last > first:
        buffer.madvise(advice, first, last - first)


# ----------------------------------------------------------------------------- skeletons


@contextlib.contextmanager
def skeleton() -> Iterator[None]:
    """Build modules whose parameters live on the meta device (no storage, no init cost).

    Buffers and plain tensors computed in ``__init__`` (rotary ``inv_freq``, SAM-2's RoPE
    tables, ...) are *not* in the checkpoint, so they must be computed for real: only
    parameters are moved to meta, as they are registered. (``with torch.device("meta")``
    would leave those buffers without values.) Not thread-safe: it patches
    ``nn.Module.register_parameter`` for the duration of the block.
    """
    original = nn.Module.register_parameter

    def register_parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and param.device.type != "meta":
            module._parameters[name] = type(param)(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_parameter
    try:
        yield
    finally:
        nn.Module.register_parameter = original


# ----------------------------------------------------------------------------- strict loading


@dataclass(frozen=True)
class Slot:
    """Where one module tensor comes from: a checkpoint name, optionally chunk (k, n) of dim 0,
    and optionally ``take(tensor)``: any shape-only function picking the module's piece of a
    fused tensor (e.g. InternLM2's per-head packed ``wqkv``). ``take`` must also work on meta
    tensors: it gives the shape checked before anything is read.
    """

    name: str
    part: tuple[int, int] | None = None
    take: Callable[[torch.Tensor], torch.Tensor] | None = None


#: checkpoint name -> [(module key, part), ...] or [(module key, part, take), ...] (see Slot).
Renamer = Callable[[str], "list[tuple]"]


def plan_from_names(names: list[str], to_module: Renamer) -> tuple[dict[str, Slot], list[str]]:
    """Map checkpoint names to module keys: (plan, checkpoint names no rule places)."""
    plan: dict[str, Slot] = {}
    unplaced: list[str] = []
    for name in names:
        targets = to_module(name)
        if not targets:
            unplaced.append(name)
        for key, *where in targets:
            plan[key] = Slot(name, *where)
    return plan, unplaced


def tensor_shape(tensors: Mapping[str, torch.Tensor], name: str) -> tuple[int, ...]:
    """The shape of ``tensors[name]`` without reading it when ``tensors`` is a checkpoint."""
    return tensors.shape(name) if isinstance(tensors, CheckpointTensors) else tuple(tensors[name].shape)


def _shape(tensors: Mapping[str, torch.Tensor], slot: Slot) -> tuple[int, ...] | str:
    """The shape ``slot`` gives, computed on meta; or why the tensor cannot give it."""
    shape = tensor_shape(tensors, slot.name)
    if slot.part is not None:
        k, n = slot.part
        if not shape or shape[0] % n:
            return f"{shape} cannot be split in {n} parts"
        shape = (shape[0] // n, *shape[1:])
    if slot.take is not None:
        try:
            shape = tuple(slot.take(torch.empty(shape, device="meta")).shape)
        except CheckpointError as exc:  # the fused layout's own explanation
            return f"{shape}: {exc}"
        except (RuntimeError, ValueError, IndexError) as exc:
            return f"{shape} cannot be split into the model's parts ({exc})"
    return shape


def _read(
    tensors: Mapping[str, torch.Tensor], slot: Slot, dtype: torch.dtype | None, device: torch.device
) -> torch.Tensor:
    if isinstance(tensors, CheckpointTensors):
        return tensors.read(slot.name, dtype=dtype, device=device, part=slot.part, take=slot.take, share=True)
    value = tensors[slot.name]
    if slot.part is not None:
        value = value.chunk(slot.part[1], dim=0)[slot.part[0]]
    if slot.take is not None:
        value = slot.take(value)
    target = dtype if (dtype is not None and value.is_floating_point()) else value.dtype
    return value.to(device=device, dtype=target, copy=True)


def _owner(module: nn.Module, key: str) -> tuple[nn.Module, str]:
    path, _, leaf = key.rpartition(".")
    return (module.get_submodule(path) if path else module), leaf


def load_strict(
    module: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    plan: Mapping[str, Slot],
    what: str,
    *,
    unplaced: list[str] = (),
    official: Callable[[str], str] = lambda key: key,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | None = None,
    advice: str = "The download may be incomplete or the config edited.",
) -> None:
    """Fill every parameter and persistent buffer of ``module`` from ``tensors`` following ``plan``.

    ``module`` is usually a :func:`skeleton`; a built module works too (its tensors are
    replaced). ``plan`` maps module keys to checkpoint slots; ``unplaced`` are checkpoint
    names the caller could not map (reported as unexpected); ``official`` names a module
    key in the checkpoint's terms for messages. Floating tensors become ``dtype`` (None:
    as stored); buffers not in the checkpoint move to ``device`` with their own dtype.
    Tied parameters (one tensor under several keys) are read once and stay tied.

    Raises CheckpointError listing every missing, unexpected and mis-shaped tensor before
    reading anything.
    """
    device = torch.device(device)
    expected = module.state_dict(keep_vars=True)
    groups: dict[int, list[str]] = {}
    for key, value in expected.items():
        groups.setdefault(id(value), []).append(key)
    # A set: the parts of one fused official tensor (q/k/v) are one missing name.
    missing = {official(keys[0]) for keys in groups.values() if not any(k in plan for k in keys)}
    unexpected = sorted([*unplaced, *(plan[k].name for k in plan if k not in expected)])
    mismatched: dict[str, str] = {}  # one entry per checkpoint tensor, fused ones included
    for key, slot in plan.items():
        if key in expected and slot.name not in mismatched:
            have = _shape(tensors, slot)
            want = tuple(expected[key].shape)
            if have != want:
                piece = "" if slot.part is None and slot.take is None else f" (its part {key})"
                mismatched[slot.name] = f"{slot.name}{piece}: checkpoint {have} vs model {want}"
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"The checkpoint's {what} does not match its config: {len(missing)} missing tensor(s) "
            f"{sorted(missing)[:20]}, {len(unexpected)} unexpected tensor(s) {unexpected[:20]}, "
            f"{len(mismatched)} tensor(s) of the wrong shape {sorted(mismatched.values())[:20]}. {advice}"
        )
    jobs = []
    for keys in groups.values():
        key = next(k for k in keys if k in plan)
        jobs.append((plan[key], keys))
    if isinstance(tensors, CheckpointTensors):
        jobs.sort(key=lambda job: tensors.order(job[0].name))
    for slot, keys in jobs:
        value = _read(tensors, slot, dtype, device)
        for key in keys:
            owner, leaf = _owner(module, key)
            if leaf in owner._parameters:
                old = owner._parameters[leaf]
                value = value if isinstance(value, nn.Parameter) else type(old)(value, requires_grad=False)
                owner._parameters[leaf] = value
            else:
                owner._buffers[leaf] = value
    _finish(module, device, what)


def _finish(module: nn.Module, device: torch.device, what: str) -> None:
    """Move buffers that are not in the checkpoint to ``device``; refuse anything left on meta
    (unless the load is a rehearsal on the meta device)."""
    for sub in module.modules():
        for name, buf in list(sub._buffers.items()):
            if (
                buf is not None
                and buf.device != device
                and (buf.device.type != "meta" or device.type == "meta")
            ):
                sub._buffers[name] = buf.to(device)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.device.type == "meta"]
    if left and device.type != "meta":
        raise CheckpointError(
            f"The {what} has tensors that were neither in the checkpoint nor computed when building: "
            f"{left[:10]}. This is a bug of the loader; please report it."
        )
