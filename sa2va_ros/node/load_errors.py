"""Why a model failed to load, and the one thing to do about it (configure's error message).

One fixed hint for every failure ("point model at a local copy") sent users with a CUDA problem
to download checkpoints. The hint is picked from what actually failed: the device, the dtype,
the path, the hub, the checkpoint's contents or memory. ROS-free, so it is tested directly.
"""

from __future__ import annotations

import os

from sa2va_ros.model.errors import CheckpointError, InputError, UnsupportedModelError


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _causes(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _is_hub_failure(exc: BaseException) -> bool:
    names = {type(e).__name__ for e in _causes(exc)}
    return bool(
        names
        & {
            "LocalEntryNotFoundError",
            "OfflineModeIsEnabled",
            "ConnectionError",
            "HTTPError",
            "RepositoryNotFoundError",
            "GatedRepoError",
            "Timeout",
        }
    )


def load_hint(exc: BaseException, model: str, device: str, dtype: str) -> str:
    """What to change after ``Sa2VA.from_pretrained(model, device, dtype)`` raised ``exc``."""
    if device.startswith("cuda") and isinstance(exc, InputError) and not _cuda_available():
        return (
            f"device:={device} but this torch has no usable CUDA: set device:=cpu (or auto), or install "
            "a CUDA build of torch for this machine (on Jetson: NVIDIA's wheel for your JetPack)."
        )
    if isinstance(exc, InputError) and "dtype" in str(exc):
        return "set dtype to auto, float32, bfloat16 or float16."
    if any(isinstance(e, MemoryError) or "out of memory" in str(e).lower() for e in _causes(exc)):
        return (
            "not enough memory for this checkpoint on this device: use dtype:=bfloat16 (or float16), "
            "a smaller checkpoint (e.g. ByteDance/Sa2VA-1B), or another device."
        )
    if isinstance(exc, UnsupportedModelError):
        return "use one of the supported checkpoints listed above (-p model:=...)."
    if isinstance(exc, CheckpointError):
        local = os.path.expanduser(model)
        if os.path.isdir(local):
            return (
                f"the folder {local} is not a complete checkpoint: download it again (config.json, "
                "model.safetensors and the tokenizer files) or point model at another copy."
            )
        if _is_hub_failure(exc):
            offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
            how = (
                "HF_HUB_OFFLINE is set, so only the local cache is used"
                if offline
                else "the Hugging Face hub could not be reached"
            )
            return (
                f"{how}: download the checkpoint where the hub is reachable (huggingface-cli download "
                f"{model}) and copy the cache (HF_HOME), or point the node at a local copy: "
                "-p model:=/path/to/Sa2VA-1B."
            )
        return (
            f"'{model}' is no local folder: point model at the folder of a local copy (config.json and "
            "model.safetensors), e.g. -p model:=/data/Sa2VA-1B, or give a hub id such as ByteDance/Sa2VA-1B."
        )
    return "see the error above; the node stays unconfigured."
