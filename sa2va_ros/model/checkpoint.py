"""Finding, reading and classifying Sa2VA checkpoints in the official Hugging Face layout.

Only finding files and format detection live here; reading tensors into modules is the job
of ``loading.py``, driven by the per-family modules (``internvl.py``, ``qwen_vl.py``,
``sam2_prompt.py``, ``seg_projection.py``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from .errors import CheckpointError, UnsupportedModelError

CheckpointFormat = Literal["internvl", "qwen_vl"]

#: Official checkpoints we know how to run, for error messages.
SUPPORTED_CHECKPOINTS = (
    "ByteDance/Sa2VA-1B",
    "ByteDance/Sa2VA-4B",
    "ByteDance/Sa2VA-8B",
    "ByteDance/Sa2VA-26B",
    "ByteDance/Sa2VA-InternVL3-2B",
    "ByteDance/Sa2VA-InternVL3-8B",
    "ByteDance/Sa2VA-InternVL3-14B",
    "ByteDance/Sa2VA-Qwen2_5-VL-3B",
    "ByteDance/Sa2VA-Qwen2_5-VL-7B",
    "ByteDance/Sa2VA-Qwen3-VL-4B",
)

SAM2_PREFIX = "grounding_encoder.sam2_model."
SEG_PROJECTION_PREFIX = "text_hidden_fcs."
SAM2_CONFIG_FILE = "sam2_config.json"


@dataclass(frozen=True)
class CheckpointInfo:
    """What we learnt about a checkpoint directory before loading any weights."""

    path: Path
    format: CheckpointFormat
    config: dict
    #: Contents of ``sam2_config.json`` when present (tiny/test checkpoints); ``None``
    #: means SAM-2 v2.0 Hiera-L, which is what every official checkpoint uses.
    sam2_config: dict | None


def resolve_checkpoint(model: str | os.PathLike, revision: str | None = None) -> Path:
    """Return a local directory holding the checkpoint ``model``.

    ``model`` is a local directory or a Hugging Face hub id. Hub ids are resolved with
    ``huggingface_hub.snapshot_download``, which looks in the local cache first, honours
    ``HF_HUB_OFFLINE=1`` / ``HF_HOME`` / ``HF_HUB_CACHE`` and shows download progress.
    """
    local = Path(model).expanduser()
    if local.is_dir():
        return local.resolve()
    text = str(model)
    if local.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise CheckpointError(
            f"Model '{text}' is neither an existing local directory nor a hub id of the form "
            "'owner/name'. Pass a folder with config.json and *.safetensors, or a hub id such "
            "as ByteDance/Sa2VA-1B."
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(
            text,
            revision=revision,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"],
        )
    except LocalEntryNotFoundError as exc:
        raise CheckpointError(
            f"Model '{text}' is not in the local Hugging Face cache and the hub cannot be "
            f"reached (HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}). Download it "
            f"where the hub is reachable (huggingface-cli download {text}) and copy the cache, "
            "or pass the path of a local copy."
        ) from exc
    except Exception as exc:  # network errors, 404, gated repos...
        raise CheckpointError(
            f"Could not fetch model '{text}' from the Hugging Face hub: {exc}. "
            "Check the id and your network, or pass the path of a local copy."
        ) from exc
    return Path(path)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path} is missing: the checkpoint is incomplete.") from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}): the file is corrupt.") from exc


def detect_format(config: dict, where: Path | str = "config.json") -> CheckpointFormat:
    """Classify a checkpoint by its ``config.json``; refuse what we cannot run natively."""
    archs = config.get("architectures") or []
    model_type = config.get("model_type", "")
    # Checked first: the Qwen-format configs also say model_type "sa2va_chat".
    if "Sa2VAChatModelQwen" in archs or any("Qwen" in a and "Sa2VA" in a for a in archs):
        return "qwen_vl"
    if "Sa2VAChatModel" in archs or model_type == "sa2va_chat":
        llm = config.get("llm_config") or {}
        llm_archs = llm.get("architectures") or []
        llm_type = llm.get("model_type", "")
        if llm_type.startswith(("qwen2", "qwen3", "internlm2")) or any(
            a.startswith(("Qwen", "InternLM2")) for a in llm_archs
        ):
            return "internvl"
        raise UnsupportedModelError(
            f"{where}: the language model is '{llm_type or llm_archs}', not one of the Qwen2/Qwen3/InternLM2 "
            f"models of the official checkpoints. Supported checkpoints: {', '.join(SUPPORTED_CHECKPOINTS)}."
        )
    raise UnsupportedModelError(
        f"{where}: architectures={archs!r}, model_type={model_type!r} is not a Sa2VA checkpoint. "
        f"Supported checkpoints: {', '.join(SUPPORTED_CHECKPOINTS)}."
    )


def inspect_checkpoint(path: Path) -> CheckpointInfo:
    """Read ``config.json`` (and ``sam2_config.json`` when present) and detect the format."""
    config = _read_json(path / "config.json")
    fmt = detect_format(config, path / "config.json")
    sam2_file = path / SAM2_CONFIG_FILE
    sam2_config = _read_json(sam2_file) if sam2_file.exists() else None
    return CheckpointInfo(path=path, format=fmt, config=config, sam2_config=sam2_config)


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint (single file or sharded with an index)."""
    index = path / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
        files = [path / s for s in shards]
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise CheckpointError(
                f"{path}: shards listed in model.safetensors.index.json are missing: {missing}. "
                "The download is incomplete; download the model again."
            )
        return files
    single = path / "model.safetensors"
    if single.exists():
        return [single]
    if list(path.glob("*.bin")) or list(path.glob("*.pt")):
        raise CheckpointError(
            f"{path} has only pickle weights (*.bin / *.pt). For safety we load safetensors only; "
            "convert the weights to safetensors first."
        )
    raise CheckpointError(f"{path} has no model.safetensors (or index): not a checkpoint folder.")


def take_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Return the entries under ``prefix`` with the prefix removed."""
    n = len(prefix)
    return {k[n:]: v for k, v in state.items() if k.startswith(prefix)}
