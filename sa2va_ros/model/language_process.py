"""Sa2VA's language model in its own process, so it never holds the tracking loop's interpreter.

In one process the tracking loop and the language model share one Python interpreter: every
Python-level step of generation (transformers' loop, logits processing, the text callback,
kernel launches on a GPU) takes the interpreter lock the tracking loop needs between its torch
calls. bench/node_latency.py measured tracking at 0.65-0.90 of its idle rate while the language
model generated back to back, with ``language_nice`` 19 and separate torch thread pools.

:class:`RemoteSa2VA` keeps SAM-2 (the tracker's half) in this process and runs the language
half - a complete :class:`~sa2va_ros.model.sa2va.Sa2VA`, whose own SAM-2 makes the masks of a
request - in a child started with multiprocessing's "spawn" (fork is unsafe once torch, CUDA or
DDS threads exist). It offers the calls the ROS node's language tasks make (``ground``,
``masks_for``, ``segment``, ``chat``, ``describe``) with the same signatures and results.

* Frames travel through one shared-memory block: a request's images are written into it once
  and the child reads them in place as numpy views (no pickling, no pipe transfer of pixels).
  One request runs at a time (a lock), so one block suffices; it grows when an image needs more.
* Text streams back piece by piece over the pipe and the child waits for the caller's verdict on
  each piece (one pipe round trip), so ``on_text`` returning False stops generation at the same
  token as in-process. A :class:`~sa2va_ros.model.mllm.StopWhen` (a caller that only needs to
  cancel) streams nothing: the parent polls its condition while it waits for the result and
  raises a shared flag that the child checks once per token. Each round trip takes the
  parent's interpreter lock, which the tracking loop needs, and each token was decoded for it.
* The child's errors come back as the same exceptions (InputError and friends); a child that
  dies is reported as a :class:`~sa2va_ros.model.errors.Sa2VAError` saying so.
* ``cpus`` (Linux list syntax, e.g. ``"1"``) pins every thread of the child to those CPUs
  (:mod:`sa2va_ros.cpus`), so that it never computes on the tracking loop's CPU.
* The child is niced and has its own torch thread count (``nice``, ``threads``): as a process,
  every thread torch starts inherits them. With ``idle`` it runs under Linux's SCHED_IDLE policy
  instead: niceness 19 still leaves it a share of a CPU that other work wants, and the scheduler
  does not count that CPU as free, so a camera driver's or DDS thread's wake-up lands on the
  tracking loop's CPU and preempts it; a CPU running only SCHED_IDLE work counts as free.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sa2va_ros.cpus import parse_cpu_list, pin_this_process

from .checkpoint import SAM2_PREFIX, inspect_checkpoint, resolve_checkpoint, weight_files
from .errors import CheckpointError, Sa2VAError
from .mllm import DEFAULT_MAX_NEW_TOKENS, StopWhen, TextCallback, Turn
from .sa2va import Grounding, SegmentResult, resolve_device, resolve_dtype
from .sam2_prompt import Sa2VASam2
from .tracker import StreamingTracker, TrackerConfig

log = logging.getLogger(__name__)

#: Seconds the parent waits for the child to load the model before giving up.
LOAD_TIMEOUT_S = 1800.0
#: How often the parent checks a StopWhen condition while the child generates (seconds): the
#: most a cancel waits before the child sees it. Each check wakes a thread of the tracking
#: process and takes its interpreter lock, so not more often than a cancel needs.
STOP_POLL_S = 0.1
#: The child's glibc malloc settings (:mod:`sa2va_ros.glibc_malloc`). Each request's image is
#: preprocessed into tensors of tens of MiB (up to 13 tiles of 448x448 for InternVL: 31 MiB in
#: float32, and the copies made on the way); under glibc's dynamic thresholds they were mmapped
#: and given back every time: about 89,000 page faults a second while the demo model answered
#: back to back (141 ms a second in the kernel against 695 in user space). Kept in its arenas
#: below these sizes, they are reused; what stays resident is bounded by them.
CHILD_MMAP_THRESHOLD_BYTES = 64 << 20
CHILD_TRIM_THRESHOLD_BYTES = 128 << 20
CHILD_MALLOC_ARENAS = 2


@dataclass(frozen=True)
class _ArraySlot:
    """Where one array lies in the shared block."""

    offset: int
    shape: tuple[int, ...]
    dtype: str


def load_sam2(model: str | os.PathLike, device: str = "auto", dtype: str | torch.dtype = "auto") -> Sa2VASam2:
    """Only the SAM-2 half of a checkpoint (reads only its tensors), for the tracking process."""
    from safetensors import safe_open

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    info = inspect_checkpoint(Path(resolve_checkpoint(model)))
    state: dict[str, torch.Tensor] = {}
    for file in weight_files(info.path):
        try:
            with safe_open(str(file), framework="pt", device="cpu") as f:
                for key in f.keys():
                    if key.startswith(SAM2_PREFIX):
                        state[key[len(SAM2_PREFIX) :]] = f.get_tensor(key)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{file} cannot be read as safetensors ({exc}).") from exc
    return Sa2VASam2.from_checkpoint(state, info.sam2_config, device=dev, dtype=dt)


class _SharedFrames:
    """A growing shared-memory block holding the images of the request in flight."""

    def __init__(self) -> None:
        self.shm: shared_memory.SharedMemory | None = None

    def put(self, arrays: Sequence[np.ndarray]) -> tuple[str, list[_ArraySlot]]:
        sizes = [a.nbytes for a in arrays]
        total = max(1, sum(sizes))
        if self.shm is None or self.shm.size < total:
            self.close()
            self.shm = shared_memory.SharedMemory(create=True, size=max(total, 4 << 20))
        slots, offset = [], 0
        for a in arrays:
            view = np.ndarray(a.shape, a.dtype, buffer=self.shm.buf, offset=offset)
            view[...] = a  # the one copy: from the caller's array into the shared block
            slots.append(_ArraySlot(offset, tuple(a.shape), a.dtype.str))
            offset += a.nbytes
        return self.shm.name, slots

    def close(self) -> None:
        if self.shm is not None:
            self.shm.close()
            self.shm.unlink()
            self.shm = None


class RemoteSa2VA:
    """Sa2VA with its language half in a child process (see the module doc)."""

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        threads: int = 0,
        nice: int = 0,
        idle: bool = False,
        cpus: str = "",
    ) -> None:
        self.sam2 = load_sam2(model, device, dtype)
        dt = dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")
        ctx = mp.get_context("spawn")
        self._cancel = ctx.Event()
        self._conn, child_conn = ctx.Pipe()
        self._frames = _SharedFrames()
        self._lock = threading.Lock()
        self._process = ctx.Process(
            target=_child_main,
            args=(child_conn, self._cancel, str(model), device, dt, threads, nice, idle, cpus),
            name="sa2va-language",
            daemon=True,
        )
        self._process.start()
        child_conn.close()
        if not self._conn.poll(LOAD_TIMEOUT_S):
            self.close()
            raise Sa2VAError(f"the language process did not load '{model}' within {LOAD_TIMEOUT_S:.0f} s")
        kind, payload = self._receive()
        if kind != "ready":
            self.close()
            raise payload if isinstance(payload, BaseException) else Sa2VAError(f"language process: {kind}")
        self.info, self.pid = payload["info"], self._process.pid
        #: How the child's CPU priority was lowered, or why it could not be (for the node's log).
        self.priority: str = payload["priority"]
        #: The child's glibc malloc settings, in words (for the node's log).
        self.allocator: str = payload["allocator"]

    # -- the calls the node's language tasks make -----------------------------------------------

    def ground(
        self,
        images: np.ndarray | Sequence[np.ndarray] | None,
        prompt: str,
        *,
        video: bool = False,
        history: Sequence[Turn] = (),
        region_masks: np.ndarray | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        on_text: TextCallback | None = None,
    ) -> Grounding:
        single = isinstance(images, np.ndarray) and images.ndim in (2, 3) and not video
        arrays = [] if images is None else ([images] if single else list(images))
        return self._call(
            "ground",
            arrays,
            dict(
                single=single,
                none=images is None,
                prompt=prompt,
                video=video,
                history=list(history),
                region_masks=region_masks,
                max_new_tokens=max_new_tokens,
            ),
            on_text,
        )

    def masks_for(
        self, image: np.ndarray, g: Grounding, region_mask: np.ndarray | None = None
    ) -> SegmentResult:
        return self._call("masks_for", [image], dict(g=_portable(g), region_mask=region_mask), None)

    def segment(
        self,
        image: np.ndarray,
        prompt: str,
        *,
        history: Sequence[Turn] = (),
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        on_text: TextCallback | None = None,
    ) -> SegmentResult:
        kwargs = dict(prompt=prompt, history=list(history), max_new_tokens=max_new_tokens)
        return self._call("segment", [image], kwargs, on_text)

    def chat(
        self,
        prompt: str,
        image: np.ndarray | None = None,
        *,
        history: Sequence[Turn] = (),
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        on_text: TextCallback | None = None,
    ) -> SegmentResult:
        arrays = [] if image is None else [image]
        kwargs = dict(prompt=prompt, history=list(history), max_new_tokens=max_new_tokens)
        return self._call("chat", arrays, kwargs, on_text)

    def describe(
        self,
        image: np.ndarray,
        *,
        mask: np.ndarray | None = None,
        box: Sequence[float] | None = None,
        point: Sequence[float] | None = None,
        prompt: str | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        on_text: TextCallback | None = None,
    ) -> SegmentResult:
        kwargs = dict(mask=mask, box=box, point=point, prompt=prompt, max_new_tokens=max_new_tokens)
        return self._call("describe", [image], kwargs, on_text)

    def new_tracker(self, config: TrackerConfig | None = None) -> StreamingTracker:
        """A streaming tracker over this process's SAM-2 (one per camera)."""
        return StreamingTracker(self.sam2, config or TrackerConfig())

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    def _call(self, method: str, arrays: list, kwargs: dict, on_text: TextCallback | None) -> Any:
        with self._lock:
            if not self._process.is_alive():
                raise Sa2VAError(
                    f"the language process exited (code {self._process.exitcode}); reconfigure the node"
                )
            arrays = [np.ascontiguousarray(a) for a in arrays]
            name, slots = self._frames.put(arrays)
            self._cancel.clear()
            stop_when = on_text if isinstance(on_text, StopWhen) else None
            self._conn.send((method, name, slots, kwargs, on_text is not None and stop_when is None))
            while True:
                if stop_when is not None:
                    while not self._conn.poll(STOP_POLL_S):  # a dead child reads as EOF: no hang
                        if stop_when.condition():
                            self._cancel.set()
                kind, payload = self._receive()
                if kind == "text":
                    go_on = on_text is None or on_text(payload) is not False
                    if not go_on:
                        self._cancel.set()
                    self._conn.send(go_on)  # the child waits for it: cancellation is exact
                    continue
                if kind == "error":
                    raise payload
                return _local(payload)

    def _receive(self) -> tuple[str, Any]:
        try:
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            raise Sa2VAError(
                f"the language process died (exit code {self._process.exitcode}); see its log above"
            ) from exc

    def close(self) -> None:
        """Stop the child and free the shared block (idempotent)."""
        try:
            if self._process.is_alive():
                try:
                    self._conn.send(None)
                except OSError:
                    pass
                self._process.join(10)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(5)
        finally:
            self._conn.close()
            self._frames.close()

    def __del__(self) -> None:  # the node calls close(); this covers scripts that forget
        try:
            if hasattr(self, "_process"):
                self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


# -- results across the pipe: tensors as numpy (no file-descriptor passing) -------------------


def _portable(result: Any) -> Any:
    if isinstance(result, (Grounding, SegmentResult)):
        fields = dict(result.__dict__)
        fields["seg_embeddings"] = result.seg_embeddings.detach().cpu().numpy()
        return (type(result).__name__, fields)
    return result


def _local(payload: Any) -> Any:
    if isinstance(payload, tuple) and len(payload) == 2 and payload[0] in ("Grounding", "SegmentResult"):
        name, fields = payload
        fields = dict(fields, seg_embeddings=torch.from_numpy(fields["seg_embeddings"]))
        return (Grounding if name == "Grounding" else SegmentResult)(**fields)
    return payload


# -- the child ------------------------------------------------------------------------------


def _child_main(
    conn, cancel, model: str, device: str, dtype: str, threads: int, nice: int, idle: bool, cpus: str
) -> None:
    """The language process: load Sa2VA, then serve one request at a time until told to stop."""
    from sa2va_ros.glibc_malloc import tune_allocator

    allocator = tune_allocator(CHILD_MMAP_THRESHOLD_BYTES, CHILD_TRIM_THRESHOLD_BYTES, CHILD_MALLOC_ARENAS)
    priority = _lower_priority(nice, idle)
    try:
        pin_this_process(parse_cpu_list(cpus))
    except (ValueError, OSError) as exc:  # the node checked them; a caller of this class may not have
        conn.send(("error", Sa2VAError(f"language process: cannot run on CPUs '{cpus}': {exc}")))
        return
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        from .sa2va import Sa2VA

        sa2va = Sa2VA.from_pretrained(model, device=device, dtype=dtype)
    except BaseException as exc:  # noqa: BLE001 - the parent reports it
        conn.send(("error", _sendable(exc)))
        return
    conn.send(("ready", {"info": sa2va.info, "priority": priority, "allocator": allocator}))
    attached: dict[str, shared_memory.SharedMemory] = {}
    while True:
        try:
            message = conn.recv()
        except EOFError:
            break
        if message is None:
            break
        method, name, slots, kwargs, stream = message
        try:
            if name not in attached:
                for old in attached.values():
                    try:
                        old.close()
                    except BufferError:  # a view still alive (an error's traceback): the OS frees it at exit
                        pass
                # A spawned child shares its parent's resource tracker, which holds each name once:
                # attaching here adds nothing to clean up, and the parent alone unlinks the block.
                attached = {name: shared_memory.SharedMemory(name=name)}
            buf = attached[name].buf
            arrays = [np.ndarray(s.shape, np.dtype(s.dtype), buffer=buf, offset=s.offset) for s in slots]

            def on_text(piece: str) -> bool:
                # One round trip per piece: the caller's verdict on THIS piece, as in-process.
                conn.send(("text", piece))
                return bool(conn.recv()) and not cancel.is_set()

            result = _serve(sa2va, method, arrays, kwargs, on_text if stream else StopWhen(cancel.is_set))
            del arrays
            conn.send(("result", _portable(result)))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller
            conn.send(("error", _sendable(exc)))
    for shm in attached.values():
        shm.close()


def _lower_priority(nice: int, idle: bool) -> str:
    """Lower every thread of this process: SCHED_IDLE with ``idle``, else (or where the system
    refuses it) add ``nice``. Returns what was done, and why SCHED_IDLE was not, for the log.

    Both are per thread on Linux. Importing this module (torch) has already started threads by the
    time the child runs, and ``os.nice`` / ``sched_setscheduler(0, ...)`` would change only the
    calling one; threads started later inherit the caller's.
    """
    tasks = Path("/proc/self/task")
    note = ""
    if idle:
        refused = _sched_idle(tasks)
        if refused is None:
            return "SCHED_IDLE"
        note = f"SCHED_IDLE not applied ({refused}); "
    if nice <= 0:
        return note + "default priority"
    if not tasks.is_dir() or not hasattr(os, "setpriority"):
        if hasattr(os, "nice"):
            os.nice(nice)
        return note + f"nice +{nice}"
    for tid in _thread_ids(tasks):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
        except (ProcessLookupError, PermissionError):  # a thread that ended meanwhile
            pass
    return note + f"nice +{nice}"


def _sched_idle(tasks: Path) -> str | None:
    """Every thread of this process under SCHED_IDLE; None, or why it could not be done."""
    if not tasks.is_dir() or not hasattr(os, "SCHED_IDLE"):
        return "not available on this system"
    try:  # the calling thread first: refused here, nothing has changed yet
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError as exc:  # e.g. a seccomp profile that forbids it
        return str(exc)
    for tid in _thread_ids(tasks):
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
        except ProcessLookupError:  # a thread that ended meanwhile
            pass
    return None


def _thread_ids(tasks: Path) -> list[int]:
    return [int(entry.name) for entry in tasks.iterdir()]


def _serve(sa2va, method: str, arrays: list[np.ndarray], kw: dict, on_text) -> Any:
    if method == "ground":
        images = None if kw["none"] else (arrays[0] if kw["single"] else arrays)
        return sa2va.ground(
            images,
            kw["prompt"],
            video=kw["video"],
            history=kw["history"],
            region_masks=kw["region_masks"],
            max_new_tokens=kw["max_new_tokens"],
            on_text=on_text,
        )
    if method == "masks_for":
        return sa2va.masks_for(arrays[0], _local(kw["g"]), region_mask=kw["region_mask"])
    if method == "segment":
        return sa2va.segment(
            arrays[0],
            kw["prompt"],
            history=kw["history"],
            max_new_tokens=kw["max_new_tokens"],
            on_text=on_text,
        )
    if method == "chat":
        image = arrays[0] if arrays else None
        return sa2va.chat(
            kw["prompt"], image, history=kw["history"], max_new_tokens=kw["max_new_tokens"], on_text=on_text
        )
    if method == "describe":
        return sa2va.describe(arrays[0], **kw, on_text=on_text)
    raise ValueError(f"unknown language call {method!r}")


def _sendable(exc: BaseException) -> BaseException:
    """The exception itself when it pickles (InputError etc.), else a Sa2VAError with its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001
        text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return Sa2VAError(f"language process: {text}")
