"""Broken checkpoints and bad inputs fail with the right error class and a useful message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sa2va_ros.model.checkpoint import inspect_checkpoint
from sa2va_ros.model.errors import CheckpointError, InputError, UnsupportedModelError
from sa2va_ros.model.internvl import InternVLChat
from sa2va_ros.model.loading import load_state_dict
from sa2va_ros.model.mllm import Turn
from sa2va_ros.model.seg_projection import load_seg_projection
from sa2va_ros.testing.shards import INDEX_FILE, reshard
from sa2va_ros.testing.tiny_checkpoint import write_tiny_checkpoint

IMAGE = np.zeros((64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("base") / "ckpt", seed=0)


@pytest.fixture()
def ckpt(base: Path, tmp_path: Path) -> Path:
    """A private copy of the base checkpoint that a test may break."""
    return Path(shutil.copytree(base, tmp_path / "ckpt"))


@pytest.fixture(scope="module")
def model(base: Path) -> InternVLChat:
    return InternVLChat.from_pretrained(base)


def _edit_config(path: Path, edit) -> None:
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))


def _edit_weights(path: Path, edit) -> None:
    state = load_file(str(path / "model.safetensors"))
    edit(state)
    save_file(state, str(path / "model.safetensors"))


# --- files ------------------------------------------------------------------------------------


def test_missing_config(ckpt: Path) -> None:
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        InternVLChat.from_pretrained(ckpt)


def test_corrupt_config_json(ckpt: Path) -> None:
    (ckpt / "config.json").write_text('{"architectures": ["Sa2VAChatModel"],')
    with pytest.raises(CheckpointError, match="not valid JSON"):
        inspect_checkpoint(ckpt)


def test_missing_weights(ckpt: Path) -> None:
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        InternVLChat.from_pretrained(ckpt)


def test_truncated_weights(ckpt: Path) -> None:
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        InternVLChat.from_pretrained(ckpt)


def test_pickle_weights_are_refused(ckpt: Path) -> None:
    (ckpt / "model.safetensors").rename(ckpt / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="only pickle weights"):
        InternVLChat.from_pretrained(ckpt)


# --- sharded checkpoints (every official checkpoint above 1B is sharded) ----------------------


@pytest.fixture()
def sharded(ckpt: Path) -> Path:
    """The base checkpoint rewritten as 3 shards with an index, as the hub stores large models."""
    reshard(ckpt, 3)
    return ckpt


def _shard_holding(path: Path, name: str) -> Path:
    return path / json.loads((path / INDEX_FILE).read_text())["weight_map"][name]


def test_sharded_checkpoint_loads_the_same_weights(base: Path, sharded: Path, model: InternVLChat) -> None:
    assert len(list(sharded.glob("model-*-of-00003.safetensors"))) == 3
    assert load_state_dict(sharded).keys() == load_state_dict(base).keys()
    again = InternVLChat.from_pretrained(sharded)
    for part in ("vision_model", "projector", "language_model"):
        reference = getattr(model, part).state_dict()
        for name, value in getattr(again, part).state_dict().items():
            assert torch.equal(value, reference[name]), name


def test_sharded_missing_shard(sharded: Path) -> None:
    (sharded / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"shards listed in model.safetensors.index.json are missing"):
        InternVLChat.from_pretrained(sharded)


def test_sharded_truncated_shard(sharded: Path) -> None:
    shard = sharded / "model-00003-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(
        CheckpointError, match=r"model-00003-of-00003.safetensors cannot be read.*corrupt or truncated"
    ):
        InternVLChat.from_pretrained(sharded)


def test_sharded_pickle_weights_are_refused(sharded: Path) -> None:
    for shard in sharded.glob("model-*.safetensors"):
        shard.rename(shard.with_suffix(".bin"))
    (sharded / INDEX_FILE).rename(sharded / "pytorch_model.bin.index.json")
    with pytest.raises(CheckpointError, match="only pickle weights"):
        InternVLChat.from_pretrained(sharded)


def _edit_shard(path: Path, name: str, edit) -> None:
    shard = _shard_holding(path, name)
    state = load_file(str(shard))
    edit(state)
    save_file(state, str(shard))


def test_sharded_wrong_shape(sharded: Path) -> None:
    name = "language_model.model.layers.1.mlp.down_proj.weight"
    _edit_shard(sharded, name, lambda s: s.update({name: s[name][:, :-1].contiguous()}))
    with pytest.raises(CheckpointError, match=r"wrong shape.*layers\.1\.mlp\.down_proj\.weight: checkpoint"):
        InternVLChat.from_pretrained(sharded)


def test_sharded_missing_tensor(sharded: Path) -> None:
    name = "vision_model.encoder.layers.0.attn.qkv.weight"
    _edit_shard(sharded, name, lambda s: s.pop(name))
    index = json.loads((sharded / INDEX_FILE).read_text())
    del index["weight_map"][name]
    (sharded / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(
        CheckpointError, match=r"1 missing tensor\(s\) \['vision_model\.encoder\.layers\.0\.attn\.qkv"
    ):
        InternVLChat.from_pretrained(sharded)


def test_sharded_index_that_does_not_match_its_shards(sharded: Path) -> None:
    name = "mlp1.1.weight"
    _edit_shard(sharded, name, lambda s: s.pop(name))
    with pytest.raises(CheckpointError, match=r"not in the shard it names.*mlp1\.1\.weight"):
        InternVLChat.from_pretrained(sharded)


# --- architectures ----------------------------------------------------------------------------


def test_unknown_architecture(ckpt: Path) -> None:
    _edit_config(
        ckpt, lambda c: c.update(architectures=["LlavaForConditionalGeneration"], model_type="llava")
    )
    with pytest.raises(UnsupportedModelError, match="not a Sa2VA checkpoint.*ByteDance/Sa2VA-1B"):
        InternVLChat.from_pretrained(ckpt)


def test_unknown_llm_is_refused_with_the_supported_list(ckpt: Path) -> None:
    def to_phi3(config: dict) -> None:
        config["llm_config"].update(architectures=["Phi3ForCausalLM"], model_type="phi3")

    _edit_config(ckpt, to_phi3)
    with pytest.raises(UnsupportedModelError) as err:
        InternVLChat.from_pretrained(ckpt)
    assert "phi3" in str(err.value) and "ByteDance/Sa2VA-26B" in str(err.value)


def test_unknown_chat_template(ckpt: Path) -> None:
    _edit_config(ckpt, lambda c: c.update(template="vicuna_v1"))
    with pytest.raises(UnsupportedModelError, match="vicuna_v1"):
        InternVLChat.from_pretrained(ckpt)


# --- tensors ----------------------------------------------------------------------------------


def test_missing_tensor_is_named_with_its_official_name(ckpt: Path) -> None:
    _edit_weights(ckpt, lambda s: s.pop("vision_model.encoder.layers.1.attn.qkv.weight"))
    with pytest.raises(CheckpointError, match=r"vision_model\.encoder\.layers\.1\.attn\.qkv\.weight"):
        InternVLChat.from_pretrained(ckpt)


def test_unexpected_tensor(ckpt: Path) -> None:
    def add(state: dict) -> None:
        state["language_model.model.layers.7.mlp.up_proj.weight"] = state[
            "language_model.model.norm.weight"
        ].clone()

    _edit_weights(ckpt, lambda s: add(s))
    with pytest.raises(CheckpointError, match=r"1 unexpected.*layers\.7\.mlp\.up_proj"):
        InternVLChat.from_pretrained(ckpt)


def test_wrong_shape(ckpt: Path) -> None:
    def shrink(state: dict) -> None:
        state["mlp1.1.weight"] = state["mlp1.1.weight"][:, :-1].contiguous()

    _edit_weights(ckpt, shrink)
    with pytest.raises(CheckpointError, match="wrong shape"):
        InternVLChat.from_pretrained(ckpt)


def test_config_that_does_not_match_the_weights(ckpt: Path) -> None:
    _edit_config(ckpt, lambda c: c["llm_config"].update(num_hidden_layers=3))
    with pytest.raises(CheckpointError, match="missing tensor"):
        InternVLChat.from_pretrained(ckpt)


def test_seg_projection_missing_or_mismatched(base: Path) -> None:
    state = load_state_dict(base)
    without = {k: v for k, v in state.items() if not k.startswith("text_hidden_fcs.")}
    with pytest.raises(CheckpointError, match="no text_hidden_fcs"):
        load_seg_projection(without)
    with pytest.raises(CheckpointError, match="hidden size"):
        load_seg_projection(state, hidden_size=128)


# --- tokenizer --------------------------------------------------------------------------------


def test_tokenizer_without_sa2va_tokens(ckpt: Path) -> None:
    removed = {"[SEG]", "<p>", "</p>", "<vp>", "</vp>"}
    tokenizer = json.loads((ckpt / "tokenizer.json").read_text())
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["content"] not in removed]
    (ckpt / "tokenizer.json").write_text(json.dumps(tokenizer))
    config = json.loads((ckpt / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"] = {
        k: v for k, v in config["added_tokens_decoder"].items() if v["content"] not in removed
    }
    (ckpt / "tokenizer_config.json").write_text(json.dumps(config))
    added = json.loads((ckpt / "added_tokens.json").read_text())
    (ckpt / "added_tokens.json").write_text(json.dumps({k: v for k, v in added.items() if k not in removed}))
    with pytest.raises(CheckpointError, match=r"lacks Sa2VA's special tokens \['\[SEG\]', '<p>'"):
        InternVLChat.from_pretrained(ckpt)


def test_missing_tokenizer_files(ckpt: Path) -> None:
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (ckpt / name).unlink()
    with pytest.raises(CheckpointError, match="tokenizer"):
        InternVLChat.from_pretrained(ckpt)


def test_unavailable_attention_implementation(base: Path) -> None:
    with pytest.raises(InputError, match="flash_attention_2"):
        InternVLChat.from_pretrained(base, attn_implementation="flash_attention_2")


def test_unknown_dtype(base: Path) -> None:
    with pytest.raises(InputError, match="float64"):
        InternVLChat.from_pretrained(base, dtype="float64")


# --- inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((64, 64, 3), dtype=np.float32), "dtype float32"),
        (np.zeros((64, 64, 5), dtype=np.uint8), "shape"),
        (np.zeros((1, 64, 3), dtype=np.uint8), "at least 2x2"),
        ("image.png", "numpy array"),
    ],
)
def test_bad_images(model: InternVLChat, image: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        model.generate("Describe it.", [image], max_new_tokens=1)


@pytest.mark.parametrize("text", ["", "   ", "<image>", "<image>\n  "])
def test_empty_prompt(model: InternVLChat, text: str) -> None:
    with pytest.raises(InputError, match="empty"):
        model.generate(text, [IMAGE], max_new_tokens=1)


def test_bad_requests(model: InternVLChat) -> None:
    with pytest.raises(InputError, match="one image per question"):
        model.generate("Describe.", [IMAGE, IMAGE], max_new_tokens=1)
    with pytest.raises(InputError, match="placeholder"):
        model.generate("<image> and <image>", [IMAGE], max_new_tokens=1)
    with pytest.raises(InputError, match="placeholder"):
        model.generate("<image> again?", [IMAGE], history=[Turn("<image> first", "ok")], max_new_tokens=1)
    with pytest.raises(InputError, match="reserved token"):
        model.generate("<IMG_CONTEXT> hi", [IMAGE], max_new_tokens=1)
    with pytest.raises(InputError, match="max_new_tokens"):
        model.generate("Describe.", [IMAGE], max_new_tokens=0)
    with pytest.raises(InputError, match="video=True needs"):
        model.generate("Describe.", [], video=True, max_new_tokens=1)


def test_bad_region_masks(model: InternVLChat) -> None:
    good = np.zeros((64, 64), dtype=bool)
    good[10:30, 10:30] = True
    with pytest.raises(InputError, match="must match the image"):
        model.generate(
            "Describe region1.", [IMAGE], region_masks=np.ones((1, 32, 32), bool), max_new_tokens=1
        )
    with pytest.raises(InputError, match="empty"):
        model.generate(
            "Describe region1.", [IMAGE], region_masks=np.zeros((1, 64, 64), bool), max_new_tokens=1
        )
    with pytest.raises(InputError, match="exactly one image"):
        model.generate("Describe region1.", [IMAGE, IMAGE], video=True, region_masks=good, max_new_tokens=1)
    with pytest.raises(InputError, match="exactly one image"):
        model.generate("Describe region1.", [], region_masks=good, max_new_tokens=1)
