"""Tiny random Sa2VA checkpoints in the official layout, for tests, demos and benchmarks.

A written folder looks like a ByteDance/Sa2VA-* download (config.json, model.safetensors
with the official tensor names, tokenizer files, generation_config.json) plus the
``sam2_config.json`` that describes its small SAM-2, so the real loader is what reads it:
no test needs a mock of the model stack. ``force_seg=True`` plants weights that make
greedy decoding answer ``[SEG]`` for any prompt, so a node or tracker test gets masks from
random weights through the real loading and generation code.

The writer is the inverse of the loaders: the weights are drawn for the *native* modules
the loaders build and converted with the loaders' own renaming tables.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

from sa2va_ros.model.checkpoint import SAM2_CONFIG_FILE

from .internvl_writer import TinyLLM, tiny_internvl_config, tiny_internvl_state
from .qwen_vl_writer import tiny_qwen_vl_parts
from .sam2_writer import sam2_official_state_dict, tiny_sam2_config
from .tokenizer_writer import END_OF_TEXT, IM_END, TinyFormat, write_tiny_tokenizer

# --- writers ----------------------------------------------------------------------------------


def _generation_config(tokenizer) -> dict:
    import transformers

    vocab = tokenizer.get_vocab()
    return {
        "bos_token_id": vocab[END_OF_TEXT],
        "eos_token_id": [vocab[IM_END], vocab[END_OF_TEXT]],
        "pad_token_id": vocab[END_OF_TEXT],
        "transformers_version": transformers.__version__,
    }


def _sam2_part(seed: int, image_size: int) -> tuple[dict, dict[str, torch.Tensor]]:
    """A tiny SAM-2: its sam2_config.json and its ``grounding_encoder.sam2_model.*`` tensors."""
    from sa2va_ros.model.sam2_config import build_sam2

    config = tiny_sam2_config(image_size=image_size)
    return config, sam2_official_state_dict(build_sam2(config, seed=seed))


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_with_sam2(
    out: Path,
    config: dict,
    state: dict[str, torch.Tensor],
    generation_config: dict,
    *,
    seed: int,
    sam2_image_size: int,
) -> None:
    """Add a tiny SAM-2 to an MLLM's official tensors and write the checkpoint's weight and JSON
    files: the last step of every format's writer."""
    from safetensors.torch import save_file

    sam2_config, sam2_state = _sam2_part(seed, sam2_image_size)
    save_file(
        {k: v.detach().contiguous().clone() for k, v in {**state, **sam2_state}.items()},
        str(out / "model.safetensors"),
        metadata={"format": "pt"},
    )
    write_json(out / "config.json", config)
    write_json(out / "generation_config.json", generation_config)
    write_json(out / SAM2_CONFIG_FILE, sam2_config)


def write_tiny_checkpoint(
    out_dir: str | os.PathLike,
    format: TinyFormat = "internvl",
    *,
    seed: int = 0,
    force_seg: bool = False,
    llm: TinyLLM = "qwen2",
    sam2_image_size: int = 1024,
    text_config: Mapping | None = None,
    vision_config: Mapping | None = None,
) -> Path:
    """Write a tiny random Sa2VA checkpoint in the official layout; return its folder.

    ``format`` "internvl" gives a ``Sa2VAChatModel`` (InternViT + mlp1 + Qwen2/Qwen3 LLM, as
    Sa2VA-1B/4B/InternVL3-*); "qwen_vl" a ``Sa2VAChatModelQwen`` (``llm`` "qwen2" -> Qwen2.5-VL,
    "qwen3" -> Qwen3-VL). The same ``seed`` always gives the same files. ``force_seg`` plants
    weights that answer "[SEG]" and stop for any prompt. ``sam2_image_size`` below SAM-2's
    1024 (e.g. 256) makes every SAM-2 pass ~10x cheaper for tests and demos on a CPU; it
    changes no weight shape. ``text_config`` / ``vision_config`` (Qwen-VL format only) override
    the tiny shapes, so a test can write a Qwen2.5-VL or Qwen3-VL checkpoint of any size.
    """
    if format not in ("internvl", "qwen_vl"):
        raise ValueError(f"format must be 'internvl' or 'qwen_vl', got {format!r}")
    if llm not in ("qwen2", "qwen3"):
        raise ValueError(f"llm must be 'qwen2' or 'qwen3', got {llm!r}")
    if format == "internvl" and (text_config or vision_config):
        raise ValueError("text_config / vision_config overrides are for the 'qwen_vl' format only.")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = write_tiny_tokenizer(out, format)
    vocab = tokenizer.get_vocab()
    if format == "internvl":
        config = tiny_internvl_config(llm, len(tokenizer), vocab[END_OF_TEXT], vocab[IM_END])
        state = tiny_internvl_state(config, tokenizer, seed, force_seg)
    else:
        variant = "qwen2_5_vl" if llm == "qwen2" else "qwen3_vl"
        config, state = tiny_qwen_vl_parts(
            out, seed, force_seg, variant=variant, text=text_config, vision=vision_config
        )
    save_with_sam2(
        out, config, state, _generation_config(tokenizer), seed=seed, sam2_image_size=sam2_image_size
    )
    return out


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_hub_cache(cache_dir: str | os.PathLike, repo_id: str, *, revision: str = "main", **kwargs) -> Path:
    """Put a tiny checkpoint into a Hugging Face hub cache as if it had been downloaded.

    Layout: ``models--owner--name/{blobs, snapshots/<commit>, refs/<revision>}`` with the
    snapshot files linked to their blobs (copied where symlinks are not allowed). With
    ``HF_HUB_CACHE=cache_dir`` and ``HF_HUB_OFFLINE=1``, ``resolve_checkpoint(repo_id)``
    and ``Sa2VA.from_pretrained(repo_id)`` find it. ``kwargs`` go to
    :func:`write_tiny_checkpoint`. Returns the snapshot folder.
    """
    if repo_id.count("/") != 1:
        raise ValueError(f"repo_id must be 'owner/name', got {repo_id!r}")
    repo = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    with tempfile.TemporaryDirectory() as tmp:
        src = write_tiny_checkpoint(Path(tmp) / "ckpt", **kwargs)
        files = sorted(p for p in src.rglob("*") if p.is_file())
        blobs = {}
        for path in files:
            data = path.read_bytes()
            # The hub names LFS blobs by sha256 and small files by their git blob sha1.
            blobs[path] = (
                hashlib.sha256(data).hexdigest() if path.suffix == ".safetensors" else _git_blob_sha1(data)
            )
        listing = "".join(f"{p.relative_to(src).as_posix()} {h}\n" for p, h in blobs.items())
        commit = hashlib.sha1(listing.encode()).hexdigest()
        snapshot = repo / "snapshots" / commit
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        for path, digest in blobs.items():
            blob = repo / "blobs" / digest
            if not blob.exists():
                shutil.copyfile(path, blob)
            link = snapshot / path.relative_to(src)
            link.parent.mkdir(parents=True, exist_ok=True)
            if link.exists() or link.is_symlink():
                link.unlink()
            try:
                link.symlink_to(os.path.relpath(blob, link.parent))
            except OSError:
                shutil.copyfile(blob, link)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot
