"""InternLM2 (Sa2VA-8B / -26B) loading pieces and the InternLM2-format checkpoint writer.

The writer output is read back by the real loader (``Sa2VA.from_pretrained``); the weight
layout is checked against hand-built packings and against the official-code fixture.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sa2va_ros.model import internlm2
from sa2va_ros.model.checkpoint import SAM2_PREFIX, inspect_checkpoint, take_prefix
from sa2va_ros.model.errors import CheckpointError
from sa2va_ros.model.internvl import LLM_PREFIX, InternVLChat
from sa2va_ros.model.loading import load_state_dict
from sa2va_ros.testing.internlm2_writer import (
    CHAT_TOKENS,
    UNUSED_NAMES,
    fuse_wqkv,
    llama_to_official,
    write_internlm2_checkpoint,
    write_internlm2_tokenizer,
)

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "sa2va-tiny-internlm2"
IMAGE = (np.random.default_rng(0).random((96, 96, 3)) * 255).astype(np.uint8)
OFFICIAL_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "sam2_config.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
}


@pytest.fixture(scope="module")
def tiny_seg(tmp_path_factory) -> Path:
    return write_internlm2_checkpoint(
        tmp_path_factory.mktemp("il2") / "seg", seed=0, force_seg=True, sam2_image_size=256
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the wqkv packing ----------------------------------------------------------------------------


def test_wqkv_is_unpacked_per_key_value_head() -> None:
    # 4 query heads, 2 kv heads, head_dim 1: rows are [q0 q1 k0 v0 | q2 q3 k1 v1].
    config = {"hidden_size": 4, "num_attention_heads": 4, "num_key_value_heads": 2}
    wqkv = torch.tensor([[0.0], [1.0], [10.0], [20.0], [2.0], [3.0], [11.0], [21.0]])
    q, k, v = internlm2.split_wqkv(wqkv, config)
    assert q.flatten().tolist() == [0, 1, 2, 3]
    assert k.flatten().tolist() == [10, 11] and v.flatten().tolist() == [20, 21]


@pytest.mark.parametrize(("heads", "kv_heads"), [(8, 2), (4, 4), (6, 1)])
def test_wqkv_fuse_and_split_are_inverse(heads: int, kv_heads: int) -> None:
    head_dim = 3
    config = {"hidden_size": heads * head_dim, "num_attention_heads": heads, "num_key_value_heads": kv_heads}
    for shape in [(heads * head_dim,), (heads * head_dim, 5)]:  # bias and weight
        q = torch.randn(heads * head_dim, *shape[1:])
        k, v = (torch.randn(kv_heads * head_dim, *shape[1:]) for _ in range(2))
        fused = fuse_wqkv(q, k, v, config)
        assert fused.shape[0] == (heads + 2 * kv_heads) * head_dim
        for got, want in zip(internlm2.split_wqkv(fused, config), (q, k, v), strict=True):
            assert torch.equal(got, want)


def test_wqkv_of_the_wrong_size_is_a_checkpoint_error() -> None:
    config = {"hidden_size": 8, "num_attention_heads": 4, "num_key_value_heads": 2}
    with pytest.raises(CheckpointError, match="wqkv has 10 rows"):
        internlm2.split_wqkv(torch.zeros(10, 8), config)


def test_official_fixture_tensors_survive_the_round_trip() -> None:
    if not FIXTURE.is_dir():
        pytest.skip(f"{FIXTURE} is missing (the parity fixtures live in ../shared/fixtures beside the repo)")
    config = json.loads((FIXTURE / "config.json").read_text())["llm_config"]
    official = take_prefix(load_state_dict(FIXTURE), LLM_PREFIX)
    llama = internlm2.to_llama_state(official, config)
    assert "model.layers.1.self_attn.k_proj.weight" in llama and "lm_head.weight" in llama
    back = llama_to_official(llama, config)
    assert back.keys() == official.keys()
    assert all(torch.equal(back[k], official[k]) for k in official)


def test_config_maps_rope_scaling_and_grouped_heads() -> None:
    llm = {"num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64, "bias": False}
    cfg = internlm2.llama_config(
        {**llm, "rope_theta": 1e6, "rope_scaling": {"type": "dynamic", "factor": 2.0}}
    )
    rope = getattr(cfg, "rope_parameters", None) or {**cfg.rope_scaling, "rope_theta": cfg.rope_theta}
    assert rope["rope_type"] == "dynamic" and rope["factor"] == 2.0 and rope["rope_theta"] == 1e6
    assert cfg.num_key_value_heads == 2 and cfg.attention_bias is False and cfg.mlp_bias is False
    plain = internlm2.llama_config(llm)
    plain_rope = getattr(plain, "rope_parameters", None) or {
        "rope_type": (plain.rope_scaling or {}).get("rope_type")
    }
    assert plain_rope["rope_type"] in ("default", None)
    with pytest.raises(CheckpointError, match="rope_scaling type 'yarn'"):
        internlm2.llama_config({**llm, "rope_scaling": {"type": "yarn", "factor": 2.0}})


def test_dynamic_ntk_rope_is_internlm2s_beyond_max_positions() -> None:
    """transformers' "dynamic" RoPE computes InternLM2's dynamic NTK cos/sin (pinned on every version)."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    llm = {
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
    }
    cfg = internlm2.llama_config(
        {**llm, "rope_theta": 1e6, "rope_scaling": {"type": "dynamic", "factor": 2.0}}
    )
    rope, dim = LlamaRotaryEmbedding(cfg), 16
    for seq_len in (40, 64, 100, 300):
        positions = torch.arange(seq_len)
        cos, sin = rope(torch.zeros(1), positions[None])
        # The official InternLM2DynamicNTKScalingRotaryEmbedding: a larger base past max positions.
        base = 1e6 if seq_len <= 64 else 1e6 * (2.0 * seq_len / 64 - 1.0) ** (dim / (dim - 2))
        freqs = torch.outer(positions.double(), 1.0 / base ** (torch.arange(0, dim, 2).double() / dim))
        angles = torch.cat([freqs, freqs], dim=-1)
        torch.testing.assert_close(cos[0].double(), angles.cos(), atol=2e-5, rtol=0)
        torch.testing.assert_close(sin[0].double(), angles.sin(), atol=2e-5, rtol=0)


# --- the tokenizer --------------------------------------------------------------------------------


@pytest.mark.parametrize("names", ["unused", "named"])
def test_tokenizer_reads_chat_tokens_under_either_name(tmp_path: Path, names: str) -> None:
    tokenizer = write_internlm2_tokenizer(tmp_path, chat_token_names=names)
    vocab = tokenizer.get_vocab()
    assert not set(UNUSED_NAMES) & vocab.keys()  # their text replaces the file's names
    prompt = (
        "<|im_start|>user\n<img><IMG_CONTEXT></img>\nPlease segment the red mug.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = tokenizer.encode(prompt)
    assert ids[0] == tokenizer.bos_token_id == 1 and ids[1] == vocab["<|im_start|>"]
    for token in CHAT_TOKENS + ("<img>", "<IMG_CONTEXT>", "[SEG]", "<p>", "</vp>"):
        assert tokenizer.encode(token, add_special_tokens=False) == [vocab[token]]
    # The official slow decode: added tokens beyond the SentencePiece vocab joined by spaces, a
    # space before each run of special tokens inside the vocab (and before the text ahead of it).
    assert tokenizer.decode(ids[1:]) == (
        " <|im_start|>user\n <img> <IMG_CONTEXT> </img>  \nPlease segment the red mug.<|im_end|> \n"
        "<|im_start|>assistant\n"
    )
    answer = (
        [vocab[t] for t in ("[SEG]",)]
        + tokenizer.encode(".", add_special_tokens=False)
        + [vocab["<|im_end|>"]]
    )
    assert tokenizer.decode(answer) == "[SEG] .<|im_end|>"  # the official slow tokenizer's spacing
    assert tokenizer.decode(answer, skip_special_tokens=True) == "[SEG] ."


def test_missing_tokenizer_model_is_a_clear_error(tmp_path: Path) -> None:
    write_internlm2_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.model is missing"):
        internlm2.load_tokenizer(tmp_path)


# --- the checkpoint writer ------------------------------------------------------------------------


def test_layout_and_config_follow_the_official_export(tiny_seg: Path) -> None:
    assert OFFICIAL_FILES <= {p.name for p in tiny_seg.iterdir()}
    assert not (tiny_seg / "tokenizer.json").exists()  # InternLM2 repos ship only the SentencePiece model
    info = inspect_checkpoint(tiny_seg)
    assert info.format == "internvl" and info.config["template"] == "internlm2_chat"
    assert info.config["llm_config"]["architectures"] == ["InternLM2ForCausalLM"]
    if FIXTURE.is_dir():  # the same fields as the checkpoint the official code wrote
        official = json.loads((FIXTURE / "config.json").read_text())
        assert set(official) == set(info.config)
        for part in ("llm_config", "vision_config"):
            assert set(official[part]) == set(info.config[part])
            assert {k for k in official[part] if "norm" in k or "bias" in k or "rope" in k} <= info.config[
                part
            ].keys()
        official_state = load_state_dict(FIXTURE)
        written = load_state_dict(tiny_seg)
        shared = [k for k in official_state if not k.startswith(SAM2_PREFIX)]
        assert set(shared) == {k for k in written if not k.startswith(SAM2_PREFIX)}


def test_round_trip_loaded_tensors_equal_written(tiny_seg: Path) -> None:
    state = load_state_dict(tiny_seg)
    model = InternVLChat.from_pretrained(tiny_seg)
    assert type(model.language_model).__name__ == "LlamaForCausalLM"
    config = inspect_checkpoint(tiny_seg).config["llm_config"]
    written = internlm2.to_llama_state(take_prefix(state, LLM_PREFIX), config)
    loaded = model.language_model.state_dict()
    assert loaded.keys() == written.keys()
    assert all(torch.equal(loaded[k], written[k]) for k in written)


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path: Path, tiny_seg: Path) -> None:
    again = write_internlm2_checkpoint(tmp_path / "again", seed=0, force_seg=True, sam2_image_size=256)
    other = write_internlm2_checkpoint(tmp_path / "other", seed=1, force_seg=True, sam2_image_size=256)
    assert _sha256(again / "model.safetensors") == _sha256(tiny_seg / "model.safetensors")
    assert _sha256(again / "tokenizer.model") == _sha256(tiny_seg / "tokenizer.model")
    assert _sha256(other / "model.safetensors") != _sha256(tiny_seg / "model.safetensors")


def test_facade_segments_with_a_force_seg_checkpoint(tiny_seg: Path) -> None:
    from sa2va_ros.model.sa2va import Sa2VA

    model = Sa2VA.from_pretrained(str(tiny_seg), device="cpu", dtype="float32")
    result = model.segment(IMAGE, "Please segment the cup.", max_new_tokens=4)
    assert result.text == "[SEG]" and len(result.masks) == 1
    assert result.masks[0].shape == IMAGE.shape[:2] and result.masks[0].dtype == bool
    vocab = model.mllm.tokenizer.get_vocab()
    assert result.token_ids == [vocab["[SEG]"], vocab["<|im_end|>"]]


def test_other_sizes_and_the_sa2va_8b_vision_tower(tmp_path: Path) -> None:
    path = write_internlm2_checkpoint(
        tmp_path / "8b-style",
        seed=2,
        vision_style="300m",
        chat_token_names="named",
        llm={
            "hidden_size": 96,
            "intermediate_size": 160,
            "num_attention_heads": 6,
            "num_key_value_heads": 3,
            "num_hidden_layers": 3,
        },
        vision={"hidden_size": 48, "intermediate_size": 96, "num_attention_heads": 3, "num_hidden_layers": 1},
        sam2_image_size=256,
    )
    state = load_state_dict(path)
    assert state["language_model.model.layers.2.attention.wqkv.weight"].shape == ((6 + 2 * 3) * 16, 96)
    assert "vision_model.encoder.layers.0.attn.qkv.bias" in state  # InternViT-300M: qkv bias, LayerNorm
    model = InternVLChat.from_pretrained(path)
    assert model.vision_model.config.norm_type == "layer_norm" and model.hidden_size == 96
    gen = model.generate("Describe the image.", [IMAGE], max_new_tokens=3)
    assert 1 <= len(gen.token_ids) <= 3 and gen.prompt.startswith("<|im_start|>user\n<img>")


def test_missing_or_misshaped_llm_tensors_are_named_officially(tmp_path: Path, tiny_seg: Path) -> None:
    from safetensors.torch import save_file

    state = load_state_dict(tiny_seg)
    for name, edit in (
        ("missing", lambda s: s.pop("language_model.model.layers.1.feed_forward.w3.weight")),
        (
            "short",
            lambda s: s.update({"language_model.model.layers.0.attention.wqkv.weight": torch.zeros(10, 64)}),
        ),
    ):
        broken = tmp_path / name
        shutil.copytree(tiny_seg, broken)
        edited = dict(state)
        edit(edited)
        save_file(edited, str(broken / "model.safetensors"))
        with pytest.raises(CheckpointError) as err:
            InternVLChat.from_pretrained(broken)
        message = str(err.value)
        if name == "missing":
            assert "language_model.model.layers.1.feed_forward.w3.weight" in message, message
        else:
            assert "attention.wqkv has 10 rows" in message, message


def test_model_core_does_not_import_the_writers() -> None:
    code = (
        "import sys\n"
        "import sa2va_ros.model.sa2va, sa2va_ros.model.internvl, sa2va_ros.model.internlm2\n"
        "sys.exit(1 if any(m.startswith('sa2va_ros.testing') for m in sys.modules) else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
