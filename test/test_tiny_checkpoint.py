"""The tiny-checkpoint writer: official layout, exact round trip, force_seg, hub cache."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sa2va_ros.model import prompts
from sa2va_ros.model.checkpoint import (
    SAM2_PREFIX,
    SEG_PROJECTION_PREFIX,
    inspect_checkpoint,
    take_prefix,
)
from sa2va_ros.model.internvl import (
    LLM_PREFIX,
    PROJECTOR_PREFIX,
    VISION_PREFIX,
    InternVLChat,
    vision_to_native,
)
from sa2va_ros.model.loading import load_state_dict
from sa2va_ros.model.seg_projection import load_seg_projection
from sa2va_ros.testing.internvl_writer import vision_to_official
from sa2va_ros.testing.tiny_checkpoint import write_hub_cache, write_tiny_checkpoint
from sa2va_ros.testing.tokenizer_writer import write_tiny_tokenizer

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "fixtures" / "sa2va-tiny-internvl"
# Square and small: one 448 tile, so the ViT runs once.
IMAGE = (np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8)
OFFICIAL_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "sam2_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
}


@pytest.fixture(scope="module")
def tiny_seg(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "seg", seed=0, force_seg=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout_and_config_follow_the_official_export(tiny_seg: Path) -> None:
    assert OFFICIAL_FILES <= {p.name for p in tiny_seg.iterdir()}
    info = inspect_checkpoint(tiny_seg)
    assert info.format == "internvl" and info.sam2_config is not None
    config = info.config
    assert config["architectures"] == ["Sa2VAChatModel"] and config["model_type"] == "sa2va_chat"
    assert config["llm_config"]["architectures"] == ["Qwen2ForCausalLM"]
    assert config["vision_config"]["architectures"] == ["InternVisionModel"]
    if FIXTURE.is_dir():  # the same fields as a checkpoint the official code wrote
        official = json.loads((FIXTURE / "config.json").read_text())
        ignore = {"dtype", "torch_dtype", "transformers_version", "layer_types", "tie_word_embeddings"}
        assert set(official) - ignore == set(config) - ignore
        for part in ("llm_config", "vision_config"):
            assert set(official[part]) - ignore == set(config[part]) - ignore
    state = load_state_dict(tiny_seg)
    prefixes = (VISION_PREFIX, PROJECTOR_PREFIX, LLM_PREFIX, SAM2_PREFIX, SEG_PROJECTION_PREFIX)
    assert all(k.startswith(prefixes) for k in state)
    assert f"{VISION_PREFIX}encoder.layers.0.attn.qkv.weight" in state  # official fused names
    assert f"{VISION_PREFIX}encoder.layers.1.ls2" in state
    assert {f"{PROJECTOR_PREFIX}{i}.weight" for i in (0, 1, 3)} <= state.keys()


def test_tokenizer_fast_and_slow_agree_and_know_sa2va_tokens(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    write_tiny_tokenizer(tmp_path, "internvl")
    fast = AutoTokenizer.from_pretrained(str(tmp_path))
    slow = AutoTokenizer.from_pretrained(str(tmp_path), use_fast=False)
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:  # 5.x has one (tokenizers-backed) class
        assert type(fast).__name__ == "Qwen2TokenizerFast" and type(slow).__name__ == "Qwen2Tokenizer"
    text = prompts.TEMPLATES["qwen_chat"].user_turn(
        prompts.internvl_image_tokens(1, 3) + "\nPlease segment the red mug. <p> mug </p> [SEG]"
    )
    assert fast.encode(text) == slow.encode(text)
    assert fast.decode(fast.encode(text)) == text
    vocab = fast.get_vocab()
    for token in prompts.INTERNVL_REQUIRED_TOKENS + ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert fast.encode(token) == [vocab[token]]
    assert fast.eos_token == "<|im_end|>" and fast.pad_token == "<|endoftext|>" and fast.bos_token is None


def test_round_trip_loaded_tensors_equal_written(tiny_seg: Path) -> None:
    state = load_state_dict(tiny_seg)
    model = InternVLChat.from_pretrained(tiny_seg)
    vision = take_prefix(state, VISION_PREFIX)
    assert vision_to_official(vision_to_native(vision)).keys() == vision.keys()
    for name, tensor in vision_to_official(vision_to_native(vision)).items():
        assert torch.equal(tensor, vision[name]), name
    parts = (
        (model.vision_model, vision_to_native(vision)),
        (model.projector, take_prefix(state, PROJECTOR_PREFIX)),
        (model.language_model, take_prefix(state, LLM_PREFIX)),
    )
    for module, written in parts:
        loaded = module.state_dict()
        assert loaded.keys() == written.keys()
        for name, tensor in written.items():
            assert torch.equal(loaded[name], tensor), name


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path: Path, tiny_seg: Path) -> None:
    again = write_tiny_checkpoint(tmp_path / "again", seed=0, force_seg=True)
    other = write_tiny_checkpoint(tmp_path / "other", seed=1, force_seg=True)
    assert _sha256(again / "model.safetensors") == _sha256(tiny_seg / "model.safetensors")
    assert (again / "tokenizer.json").read_text() == (tiny_seg / "tokenizer.json").read_text()
    assert _sha256(other / "model.safetensors") != _sha256(tiny_seg / "model.safetensors")


def test_force_seg_answers_seg_through_the_real_loader(tiny_seg: Path) -> None:
    model = InternVLChat.from_pretrained(tiny_seg)
    projection = load_seg_projection(load_state_dict(tiny_seg), model.hidden_size)
    for text, images in (("Please segment the cup.", [IMAGE]), ("What is this?", [IMAGE]), ("Hi", [])):
        gen = model.generate(text, images, max_new_tokens=8)
        assert gen.text == "[SEG]" and gen.extras["stopped"], (text, gen.text)
        assert gen.seg_hidden_states.shape == (1, model.hidden_size)
        with torch.inference_mode():
            embedding = projection(gen.seg_hidden_states)
        assert embedding.shape == (1, 256) and torch.isfinite(embedding).all()


def test_qwen3_llm_and_random_weights(tmp_path: Path) -> None:
    path = write_tiny_checkpoint(tmp_path / "q3", seed=3, llm="qwen3")
    config = json.loads((path / "config.json").read_text())["llm_config"]
    assert config["architectures"] == ["Qwen3ForCausalLM"] and config["model_type"] == "qwen3"
    model = InternVLChat.from_pretrained(path)
    assert type(model.language_model).__name__ == "Qwen3ForCausalLM"
    gen = model.generate("Describe the image.", [IMAGE], max_new_tokens=3)
    assert len(gen.token_ids) <= 3 and gen.prompt.startswith("<|im_start|>user\n<img>")


def test_facade_segments_with_a_force_seg_checkpoint(tiny_seg: Path) -> None:
    from sa2va_ros.model.sa2va import Sa2VA

    model = Sa2VA.from_pretrained(str(tiny_seg), device="cpu")
    result = model.segment(IMAGE, "Please segment the cup.", max_new_tokens=4)
    assert result.text == "[SEG]" and len(result.masks) == 1
    assert result.masks[0].shape == IMAGE.shape[:2] and result.masks[0].dtype == bool


def test_qwen_vl_format_is_written_in_its_official_layout(tmp_path: Path) -> None:
    path = write_tiny_checkpoint(tmp_path / "qwen", "qwen_vl", seed=0, force_seg=True)
    info = inspect_checkpoint(path)
    assert info.format == "qwen_vl" and info.config["architectures"] == ["Sa2VAChatModelQwen"]
    state = load_state_dict(path)
    assert any(k.startswith(SAM2_PREFIX) for k in state) and any(k.startswith("model.") for k in state)
    from sa2va_ros.model.qwen_vl import QwenVLChat

    model = QwenVLChat.from_checkpoint(info, state)
    gen = model.generate("Please segment the cup.", [IMAGE], max_new_tokens=4)
    assert gen.text == "[SEG]" and gen.seg_hidden_states.shape[0] == 1


def test_hub_cache_resolves_offline(tmp_path: Path) -> None:
    snapshot = write_hub_cache(tmp_path / "hub", "tiny-org/sa2va-tiny", seed=0, force_seg=True)
    assert (snapshot / "config.json").is_file()
    repo = tmp_path / "hub" / "models--tiny-org--sa2va-tiny"
    assert (repo / "refs" / "main").read_text() == snapshot.name
    # huggingface_hub reads HF_HUB_CACHE / HF_HUB_OFFLINE at import: use a fresh interpreter.
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"), PYTHONPATH=str(REPO))
    script = (
        "from sa2va_ros.model.checkpoint import resolve_checkpoint, inspect_checkpoint\n"
        "from sa2va_ros.model.errors import CheckpointError\n"
        "p = resolve_checkpoint('tiny-org/sa2va-tiny')\n"
        "print(p); print(inspect_checkpoint(p).format)\n"
        "try:\n    resolve_checkpoint('tiny-org/not-there')\n"
        "except CheckpointError as e:\n    print('missing:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert Path(lines[0]).resolve() == snapshot.resolve() and lines[1] == "internvl"
    assert lines[2].startswith("missing:") and "not in the local Hugging Face cache" in lines[2]
