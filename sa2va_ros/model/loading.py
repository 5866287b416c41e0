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
import ctypes
import json
import mmap
import os
import struct
import threading
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
        self._fds: dict[Path, int] = {}  # files read with preadv
        self._stage: torch.Tensor | None = None  # the reused read buffer (_STAGE_BYTES)
        self._stage_view: memoryview | None = None

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

    def _file(self, file: Path) -> int:
        if file not in self._fds:
            self._fds[file] = os.open(file, os.O_RDONLY)
        return self._fds[file]

    def _source(
        self, name: str, part: tuple[int, int] | None, take
    ) -> tuple[_Entry, mmap.mmap, torch.Tensor]:
        """The mapped tensor ``name`` (its piece ``part`` / ``take``): a view, nothing is read yet."""
        entry = self._entries[name]
        buffer = self._map(entry.file)
        numel = (entry.end - entry.start) // entry.dtype.itemsize
        try:
            source = torch.frombuffer(buffer, dtype=entry.dtype, count=numel, offset=entry.start).view(
                entry.shape
            )
        except (ValueError, RuntimeError) as exc:
            raise _corrupt(entry.file, exc) from exc
        if part is not None:
            source = source.chunk(part[1], dim=0)[part[0]]  # rows of dim 0: still contiguous
        if take is not None:
            source = take(source)
        return entry, buffer, source

    def _target(self, entry: _Entry, dtype: torch.dtype | None) -> torch.dtype:
        floating = entry.dtype.is_floating_point
        return dtype if (dtype is not None and floating) else entry.dtype

    def _shares(self, entry: _Entry, target: torch.dtype, take, device: torch.device | str) -> bool:
        return take is None and target == entry.dtype and torch.device(device).type == "cpu"

    def destination(
        self,
        name: str,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        part: tuple[int, int] | None = None,
        take: Callable[[torch.Tensor], torch.Tensor] | None = None,
        share: bool = False,
    ) -> torch.Tensor | None:
        """The new (uninitialised) tensor :meth:`read` with these arguments would fill, or None
        when it would share the mapped file instead. Allocating every destination first lets
        :func:`load_strict` map their pages in a helper thread while the data is copied.
        The shape is worked out on the meta device: ``take`` may copy (InternLM2's q/k/v are
        made contiguous), which must not read the data twice."""
        entry = self._entries[name]
        target = self._target(entry, dtype)
        if share and self._shares(entry, target, take, device):
            return None
        shape = torch.empty(entry.shape, dtype=entry.dtype, device="meta")
        if part is not None:
            shape = shape.chunk(part[1], dim=0)[part[0]]
        if take is not None:
            shape = take(shape)
        return torch.empty(shape.shape, dtype=target, device=device)

    def read(
        self,
        name: str,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        part: tuple[int, int] | None = None,
        take: Callable[[torch.Tensor], torch.Tensor] | None = None,
        share: bool = False,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``name`` (chunk ``part`` = (k, n) of dim 0, then ``take(tensor)`` when given: a
        piece of a fused tensor) as a tensor of ``dtype`` on ``device``; ``out`` is the
        tensor to fill (from :meth:`destination`), a new one when not given.

        With ``share`` and nothing to convert (same dtype, on the CPU) the result *is*
        the mapped file data (copy-on-write): no copy and no new memory, the page cache holds
        it, and its pages are mapped when first used. Otherwise the data is copied into a
        new tensor: for a CPU destination, read with ``preadv`` into a small reused buffer and
        converted from there (mapping each page of the file in and out again costs more kernel
        time than reading it, measured in bench/load.py's notes in README); for other devices
        or a ``take`` piece, from the mapping, whose pages are dropped from this process
        afterwards (they stay in the page cache), so the host never holds the files in the
        process's memory on top of the converted weights.
        """
        entry, buffer, source = self._source(name, part, take)
        target = self._target(entry, dtype)
        if share and self._shares(entry, target, take, device):
            self._shared.add(entry.file)
            return source
        if out is None:
            out = torch.empty(source.shape, dtype=target, device=device)
        if tuple(out.shape) != tuple(source.shape) or out.dtype != target:
            raise ValueError(
                f"out is {out.dtype} {tuple(out.shape)}, {name} needs {target} {tuple(source.shape)}"
            )
        if (
            _PREADV
            and take is None
            and out.device.type == "cpu"
            and source.is_contiguous()
            and out.is_contiguous()
        ):
            start = entry.start + (source.data_ptr() - source.untyped_storage().data_ptr())
            self._pread_into(entry, start, start + source.numel() * entry.dtype.itemsize, out)
            return out
        _populate(buffer, entry.start, entry.end)
        out.copy_(source)
        del source
        _release(buffer, entry.start, entry.end)
        return out

    def _pread_into(self, entry: _Entry, start: int, end: int, out: torch.Tensor) -> None:
        """Copy bytes [start, end) of ``entry.file`` (one tensor) into ``out``, converting, in
        chunks of the staging buffer."""
        if self._stage is None:
            self._stage = torch.empty(_STAGE_BYTES, dtype=torch.uint8)
            self._stage_view = memoryview(self._stage.numpy())
        fd, flat, done, size = self._file(entry.file), out.view(-1), 0, entry.dtype.itemsize
        while start < end:
            count = min(_STAGE_BYTES, end - start)
            try:
                got = os.preadv(fd, [self._stage_view[:count]], start)
            except OSError as exc:
                raise _corrupt(entry.file, exc) from exc
            if got != count:
                raise _corrupt(entry.file, f"{got} of {count} bytes at offset {start}")
            flat[done : done + count // size].copy_(self._stage[:count].view(entry.dtype))
            done, start = done + count // size, start + count

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
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._stage = self._stage_view = None

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


#: The reused read buffer of :meth:`CheckpointTensors.read` (a multiple of every itemsize).
_STAGE_BYTES = 4 << 20
#: ``os.preadv`` exists on Linux and the BSDs; elsewhere every copy goes through the mapping.
_PREADV = hasattr(os, "preadv")
#: Linux 5.14+ (asm-generic value, also arm64): map a range's pages writable in one call,
#: without the one-fault-per-4-kB trap into the kernel and without touching the data.
_MADV_POPULATE_WRITE = 23
_LIBC = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None
if _LIBC is not None:
    _LIBC.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    _LIBC.madvise.restype = ctypes.c_int


def _populate_write(tensor: torch.Tensor) -> bool:
    """Map every page of a new CPU tensor now (False where the kernel refuses: then the copy
    faults them in one by one, the same result, slower). ctypes releases the GIL for the call,
    so a helper thread can do this while the loader copies."""
    global _LIBC
    if _LIBC is None or tensor.numel() == 0:
        return False
    address, page = tensor.data_ptr(), mmap.PAGESIZE
    first = address - address % page
    if _LIBC.madvise(first, address + tensor.nbytes - first, _MADV_POPULATE_WRITE) != 0:
        if ctypes.get_errno() == 22:  # EINVAL: a kernel older than 5.14; do not ask again
            _LIBC = None
        return False
    return True


class _Prefaulter(threading.Thread):
    """Maps the pages of the loader's destination tensors ahead of it, on another core.

    Why: writing converted weights into fresh memory costs one page fault per 4 kB, and on
    the machines measured (README, bench/load.py) those faults, not the copy, take most of
    a bfloat16 load: 0.52-0.55 s of kernel time for 1.88 GB, twice the time of reading the
    whole checkpoint from the page cache. Here they overlap with the reading and converting.
    Nothing waits for this thread: the loader marks each tensor it reaches (:meth:`reach`),
    this thread skips those, the loader maps a tensor this thread has not done yet itself, and
    a page both touch is simply mapped once.
    """

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        super().__init__(name="sa2va-prefault", daemon=True)
        self._tensors = tensors
        self.reached = -1  # index of the tensor the loader is filling
        self.done = -1  # index of the last tensor this thread mapped
        self._halt = threading.Event()

    def run(self) -> None:
        for index, tensor in enumerate(self._tensors):
            if self._halt.is_set():
                return
            if index > self.reached and not _populate_write(tensor):
                return
            self.done = index

    def reach(self, index: int) -> None:
        """The loader is about to fill tensor ``index``: map it now unless already done."""
        self.reached = index
        if self.done < index:
            _populate_write(self._tensors[index])

    def __enter__(self) -> _Prefaulter:
        if len(self._tensors) > 1:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._halt.set()
        if self.is_alive():
            self.join()


@contextlib.contextmanager
def _one_intra_op_thread(active: bool) -> Iterator[None]:
    """Convert on one torch thread while the prefaulter uses another core.

    Why: a conversion is memory-bound (1 GB of float32 to bfloat16 in 0.05 s on one core
    here), while torch's thread pool splits every copy across all cores and waits for the
    slowest: on a shared 2-core machine the other core was often busy, and the same bfloat16
    load of Sa2VA-1B took 8.0-15.7 s instead of 2.2-3.6 s (README). torch.set_num_threads also
    sets the count threads started meanwhile get: the previous count is restored at once.
    """
    before = torch.get_num_threads()
    if not active or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    tensors: Mapping[str, torch.Tensor],
    slot: Slot,
    dtype: torch.dtype | None,
    device: torch.device,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    if isinstance(tensors, CheckpointTensors):
        return tensors.read(
            slot.name, dtype=dtype, device=device, part=slot.part, take=slot.take, share=True, out=out
        )
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
    outs: list[torch.Tensor | None] = [None] * len(jobs)
    if isinstance(tensors, CheckpointTensors):
        jobs.sort(key=lambda job: tensors.order(job[0].name))
        # Every new tensor is allocated first (no pages yet): the prefaulter maps them ahead.
        outs = [
            tensors.destination(s.name, dtype=dtype, device=device, part=s.part, take=s.take, share=True)
            for s, _ in jobs
        ]
    fresh = [out for out in outs if out is not None and out.device.type == "cpu"]
    with _one_intra_op_thread(bool(fresh)), _Prefaulter(fresh) as prefaulter:
        reached = 0
        for (slot, keys), out in zip(jobs, outs, strict=True):
            if out is not None and out.device.type == "cpu":
                prefaulter.reach(reached)
                reached += 1
            value = _read(tensors, slot, dtype, device, out)
            _assign(module, keys, value)
    _finish(module, device, what)


def _assign(module: nn.Module, keys: list[str], value: torch.Tensor) -> None:
    """Put ``value`` in place of the (meta) tensor of every key (tied keys share it)."""
    for key in keys:
        owner, leaf = _owner(module, key)
        if leaf in owner._parameters:
            old = owner._parameters[leaf]
            value = value if isinstance(value, nn.Parameter) else type(old)(value, requires_grad=False)
            owner._parameters[leaf] = value
        else:
            owner._buffers[leaf] = value


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


def load_state_dict(path: Path, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint as a dict on the CPU (optionally cast floating tensors).

    For small checkpoints and tests: models are loaded by streaming (:func:`load_strict`),
    which never holds a second copy of the weights.
    """
    with CheckpointTensors(path) as tensors:
        return {name: tensors.read(name, dtype=dtype) for name in tensors}
