"""The real architecture numbers of every official Sa2VA checkpoint, for rehearsals without downloads.

Why: tests and benchmarks run on tiny checkpoints, but the loader must accept the real
ones (names and shapes exactly as the official code saves them), and the README must say
how much memory each needs. Each entry below carries the numbers of the public config.json
of the checkpoint's base models (the Sa2VA checkpoints copy them: Sa2VA fine-tunes without
changing any shape except the token embeddings, which grow by Sa2VA's added tokens).

:func:`official_tensors` lists the tensors the *official* code creates for an entry (names
written from the official modeling code's module layout, independently of this package's
loader), so a test can check that our loader takes every one of them strictly.

Sources (Hugging Face config.json files):
  [ViT300M]  OpenGVLab/InternViT-300M-448px-V2_5 (= vision_config of InternVL2_5-1B/4B/8B and
             InternVL3-2B/8B/14B): hidden_size 1024, intermediate_size 4096, 24 layers,
             16 heads, qkv_bias true, qk_normalization false, norm_type layer_norm, patch 14, 448 px.
  [ViT6B]    OpenGVLab/InternViT-6B-448px-V1-5 / -V2_5 (vision_config of InternVL2_5-26B):
             hidden_size 3200, intermediate_size 12800, 25 heads, qkv_bias false,
             qk_normalization true, norm_type rms_norm; InternVL2_5-26B keeps 45 of its 48 layers
             (vision_config.num_hidden_layers 45).
  [Q0.5]     Qwen/Qwen2.5-0.5B-Instruct via InternVL2_5-1B llm_config: hidden 896, intermediate 4864,
             24 layers, 14 heads, 2 KV heads.
  [Q1.5]     Qwen/Qwen2.5-1.5B-Instruct via InternVL3-2B: hidden 1536, intermediate 8960, 28 layers,
             12 heads, 2 KV heads.
  [Q3]       Qwen/Qwen2.5-3B-Instruct via InternVL2_5-4B: hidden 2048, intermediate 11008, 36 layers,
             16 heads, 2 KV heads.
  [Q7]       Qwen/Qwen2.5-7B-Instruct via InternVL3-8B: hidden 3584, intermediate 18944, 28 layers,
             28 heads, 4 KV heads.
  [Q14]      Qwen/Qwen2.5-14B-Instruct via InternVL3-14B: hidden 5120, intermediate 13824, 48 layers,
             40 heads, 8 KV heads.
  [IL7]      internlm/internlm2_5-7b-chat via InternVL2_5-8B: hidden 4096, intermediate 14336, 32 layers,
             32 heads, 8 KV heads.
  [IL20]     internlm/internlm2_5-20b-chat (internlm2-chat-20b shapes) via InternVL2_5-26B: hidden 6144,
             intermediate 16384, 48 layers, 48 heads, 8 KV heads.
  [IVL-vocab] InternVL2_5 / InternVL3 llm_config vocab_size: 151674 with a Qwen2.5 LLM (the Qwen2
             tokenizer's 151665 tokens + InternVL's 9), 92553 with InternLM2 (92544 + 9).
             InternVL-format LLMs are untied (llm_config tie_word_embeddings false).
  [QVL3]     Qwen/Qwen2.5-VL-3B-Instruct: text hidden 2048, intermediate 11008, 36 layers, 16 heads,
             2 KV heads, vocab 151936, tie_word_embeddings true; vision depth 32, hidden 1280,
             intermediate 3420, 16 heads, out_hidden_size 2048, patch 14, temporal patch 2, merge 2.
  [QVL7]     Qwen/Qwen2.5-VL-7B-Instruct: text hidden 3584, intermediate 18944, 28 layers, 28 heads,
             4 KV heads, vocab 152064, untied; vision as 3B with out_hidden_size 3584.
  [Q3VL4]    Qwen/Qwen3-VL-4B-Instruct: text hidden 2560, intermediate 9728, 36 layers, 32 heads,
             8 KV heads, head_dim 128, vocab 151936, tie_word_embeddings true; vision depth 24,
             hidden 1024, intermediate 4096, 16 heads, out_hidden_size 2560, patch 16, temporal
             patch 2, merge 2, num_position_embeddings 2304, deepstack_visual_indexes [5, 11, 17].
  [SAM2]     SAM-2 v2.0 Hiera-L: Meta's sam2 package, configs/sam2/sam2_hiera_l.yaml (built by
             sa2va_ros.model.sam2_prompt with no sam2_config.json, as for every official checkpoint).
  [TOK]      Tokenizer sizes (len(tokenizer)): the base tokenizer plus Sa2VA's 5 added tokens
             ([SEG], <p>, </p>, <vp>, </vp>; prompts.SA2VA_ADDED_TOKENS). For the InternVL-format
             checkpoints Sa2VA's training code resizes the embeddings to len(tokenizer), so their
             vocab_size is the base 151674 / 92553 + 5 (derived, not read from a Sa2VA config.json).
             Qwen-VL vocabularies are padded (151936 / 152064) and hold the added tokens unresized.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SA2VA_ADDED = 5  # [SEG], <p>, </p>, <vp>, </vp>
SAM2_PROMPT_DIM = 256

# ------------------------------------------------------------------------------ parts

VIT_300M = dict(  # [ViT300M]
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    qkv_bias=True,
    qk_normalization=False,
    norm_type="layer_norm",
    layer_norm_eps=1e-6,
    image_size=448,
    patch_size=14,
    use_flash_attn=False,
)
VIT_6B_45 = dict(  # [ViT6B]
    hidden_size=3200,
    intermediate_size=12800,
    num_hidden_layers=45,
    num_attention_heads=25,
    qkv_bias=False,
    qk_normalization=True,
    norm_type="rms_norm",
    layer_norm_eps=1e-6,
    image_size=448,
    patch_size=14,
    use_flash_attn=False,
)


def _qwen2(hidden, inter, layers, heads, kv, vocab) -> dict:
    return dict(
        architectures=["Qwen2ForCausalLM"],
        model_type="qwen2",
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        max_position_embeddings=32768,
        tie_word_embeddings=False,
        hidden_act="silu",
    )


def _internlm2(hidden, inter, layers, heads, kv, vocab) -> dict:
    return dict(
        architectures=["InternLM2ForCausalLM"],
        model_type="internlm2",
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        rms_norm_eps=1e-5,
        rope_theta=1000000.0,
        max_position_embeddings=32768,
        bias=False,
        tie_word_embeddings=False,
        hidden_act="silu",
    )


IVL_QWEN_VOCAB = 151674 + SA2VA_ADDED  # [IVL-vocab] + [TOK]
IVL_INTERNLM2_VOCAB = 92553 + SA2VA_ADDED


@dataclass(frozen=True)
class RealSize:
    """One official checkpoint: its repository, format, config.json and tokenizer size."""

    repo: str
    format: str  # "internvl" or "qwen_vl"
    config: dict
    tokenizer_size: int
    llm: str = field(default="")  # "qwen2", "internlm2", "qwen2_5_vl", "qwen3_vl"


def _internvl(repo: str, vit: dict, llm: dict, tokenizer_size: int, template: str) -> RealSize:
    config = {
        "architectures": ["Sa2VAChatModel"],
        "model_type": "sa2va_chat",
        "template": template,
        "downsample_ratio": 0.5,
        "ps_version": "v2",
        "select_layer": -1,
        "force_image_size": 448,
        "vision_config": dict(vit, architectures=["InternVisionModel"], model_type="intern_vit_6b"),
        "llm_config": llm,
    }
    return RealSize(repo, "internvl", config, tokenizer_size, llm["model_type"])


QWEN25_VL_VISION = dict(  # [QVL3] / [QVL7]
    model_type="qwen2_5_vl",
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    in_chans=3,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[7, 15, 23, 31],
    hidden_act="silu",
)


def _qwen25_vl(repo: str, hidden, inter, layers, heads, kv, vocab, tied) -> RealSize:
    text = dict(
        model_type="qwen2_5_vl_text",
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        vocab_size=vocab,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
        tie_word_embeddings=tied,
    )
    config = {
        "architectures": ["Sa2VAChatModelQwen"],
        "model_type": "sa2va_chat",
        "template": "qwen_chat",
        "text_config": text,
        "vision_config": dict(QWEN25_VL_VISION, out_hidden_size=hidden),
        "image_token_id": 151655,
        "video_token_id": 151656,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "tie_word_embeddings": tied,
    }
    return RealSize(repo, "qwen_vl", config, 151665 + SA2VA_ADDED, "qwen2_5_vl")


def _qwen3_vl_4b() -> RealSize:  # [Q3VL4]
    text = dict(
        model_type="qwen3_vl_text",
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        rms_norm_eps=1e-6,
        rope_theta=5000000.0,
        rope_scaling={"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        tie_word_embeddings=True,
    )
    vision = dict(
        model_type="qwen3_vl",
        depth=24,
        hidden_size=1024,
        intermediate_size=4096,
        num_heads=16,
        in_channels=3,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=2560,
        num_position_embeddings=2304,
        deepstack_visual_indexes=[5, 11, 17],
        hidden_act="gelu_pytorch_tanh",
    )
    config = {
        "architectures": ["Sa2VAChatModelQwen"],
        "model_type": "sa2va_chat",
        "template": "qwen_chat",
        "text_config": text,
        "vision_config": vision,
        "image_token_id": 151655,
        "video_token_id": 151656,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "tie_word_embeddings": True,
    }
    # Qwen3 tokenizer: 151669 tokens (Qwen2's 151665 + <think>, </think>, <tool_response>, ...).
    return RealSize("ByteDance/Sa2VA-Qwen3-VL-4B", "qwen_vl", config, 151669 + SA2VA_ADDED, "qwen3_vl")


CHECKPOINTS: dict[str, RealSize] = {
    r.repo: r
    for r in (
        _internvl(
            "ByteDance/Sa2VA-1B",
            VIT_300M,
            _qwen2(896, 4864, 24, 14, 2, IVL_QWEN_VOCAB),
            IVL_QWEN_VOCAB,
            "qwen_chat",
        ),
        _internvl(
            "ByteDance/Sa2VA-4B",
            VIT_300M,
            _qwen2(2048, 11008, 36, 16, 2, IVL_QWEN_VOCAB),
            IVL_QWEN_VOCAB,
            "qwen_chat",
        ),
        _internvl(
            "ByteDance/Sa2VA-8B",
            VIT_300M,
            _internlm2(4096, 14336, 32, 32, 8, IVL_INTERNLM2_VOCAB),
            IVL_INTERNLM2_VOCAB,
            "internlm2_chat",
        ),
        _internvl(
            "ByteDance/Sa2VA-26B",
            VIT_6B_45,
            _internlm2(6144, 16384, 48, 48, 8, IVL_INTERNLM2_VOCAB),
            IVL_INTERNLM2_VOCAB,
            "internlm2_chat",
        ),
        _internvl(
            "ByteDance/Sa2VA-InternVL3-2B",
            VIT_300M,
            _qwen2(1536, 8960, 28, 12, 2, IVL_QWEN_VOCAB),
            IVL_QWEN_VOCAB,
            "qwen_chat",
        ),
        _internvl(
            "ByteDance/Sa2VA-InternVL3-8B",
            VIT_300M,
            _qwen2(3584, 18944, 28, 28, 4, IVL_QWEN_VOCAB),
            IVL_QWEN_VOCAB,
            "qwen_chat",
        ),
        _internvl(
            "ByteDance/Sa2VA-InternVL3-14B",
            VIT_300M,
            _qwen2(5120, 13824, 48, 40, 8, IVL_QWEN_VOCAB),
            IVL_QWEN_VOCAB,
            "qwen_chat",
        ),
        _qwen25_vl("ByteDance/Sa2VA-Qwen2_5-VL-3B", 2048, 11008, 36, 16, 2, 151936, True),
        _qwen25_vl("ByteDance/Sa2VA-Qwen2_5-VL-7B", 3584, 18944, 28, 28, 4, 152064, False),
        _qwen3_vl_4b(),
    )
}


# ------------------------------------------------------------------------------ official names


def _internvit(v: dict) -> dict[str, tuple[int, ...]]:
    """InternViT as the official ``modeling_intern_vit.py`` lays it out (under ``vision_model.``)."""
    h, inter, p = v["hidden_size"], v["intermediate_size"], v["patch_size"]
    n_pos = (v["image_size"] // p) ** 2 + 1
    out = {
        "embeddings.class_embedding": (1, 1, h),
        "embeddings.patch_embedding.weight": (h, 3, p, p),
        "embeddings.patch_embedding.bias": (h,),
        "embeddings.position_embedding": (1, n_pos, h),
    }
    ln = v["norm_type"] == "layer_norm"
    for i in range(v["num_hidden_layers"]):
        b = f"encoder.layers.{i}."
        out[b + "attn.qkv.weight"] = (3 * h, h)
        if v["qkv_bias"]:
            out[b + "attn.qkv.bias"] = (3 * h,)
        if v["qk_normalization"]:
            out[b + "attn.q_norm.weight"] = (h,)
            out[b + "attn.k_norm.weight"] = (h,)
        out[b + "attn.proj.weight"] = (h, h)
        out[b + "attn.proj.bias"] = (h,)
        out[b + "mlp.fc1.weight"] = (inter, h)
        out[b + "mlp.fc1.bias"] = (inter,)
        out[b + "mlp.fc2.weight"] = (h, inter)
        out[b + "mlp.fc2.bias"] = (h,)
        for norm in ("norm1", "norm2"):
            out[b + norm + ".weight"] = (h,)
            if ln:
                out[b + norm + ".bias"] = (h,)
        out[b + "ls1"] = (h,)
        out[b + "ls2"] = (h,)
    return {"vision_model." + k: s for k, s in out.items()}


def _decoder_llm(
    c: dict, prefix: str, *, qk_norm: bool = False, bias: bool = True
) -> dict[str, tuple[int, ...]]:
    """A Qwen2/Qwen3 ``*ForCausalLM`` (transformers' names, which the official checkpoints use)."""
    h, inter, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = c.get("head_dim") or h // c["num_attention_heads"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    out = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
    for i in range(c["num_hidden_layers"]):
        b = f"model.layers.{i}."
        for name, shape in (("q_proj", (q, h)), ("k_proj", (kv, h)), ("v_proj", (kv, h))):
            out[b + f"self_attn.{name}.weight"] = shape
            if bias:
                out[b + f"self_attn.{name}.bias"] = (shape[0],)
        out[b + "self_attn.o_proj.weight"] = (h, q)
        if qk_norm:
            out[b + "self_attn.q_norm.weight"] = (hd,)
            out[b + "self_attn.k_norm.weight"] = (hd,)
        out[b + "mlp.gate_proj.weight"] = (inter, h)
        out[b + "mlp.up_proj.weight"] = (inter, h)
        out[b + "mlp.down_proj.weight"] = (h, inter)
        out[b + "input_layernorm.weight"] = (h,)
        out[b + "post_attention_layernorm.weight"] = (h,)
    if not c.get("tie_word_embeddings", False):
        out["lm_head.weight"] = (v, h)
    return {prefix + k: s for k, s in out.items()}


def _internlm2_llm(c: dict) -> dict[str, tuple[int, ...]]:
    """InternLM2 as the official ``modeling_internlm2.py`` lays it out (fused ``wqkv``)."""
    h, inter, v = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = h // c["num_attention_heads"]
    qkv = (c["num_attention_heads"] + 2 * c["num_key_value_heads"]) * hd
    out = {"model.tok_embeddings.weight": (v, h), "model.norm.weight": (h,), "output.weight": (v, h)}
    for i in range(c["num_hidden_layers"]):
        b = f"model.layers.{i}."
        out[b + "attention.wqkv.weight"] = (qkv, h)
        out[b + "attention.wo.weight"] = (h, h)
        out[b + "feed_forward.w1.weight"] = (inter, h)
        out[b + "feed_forward.w3.weight"] = (inter, h)
        out[b + "feed_forward.w2.weight"] = (h, inter)
        out[b + "attention_norm.weight"] = (h,)
        out[b + "ffn_norm.weight"] = (h,)
    return {"language_model." + k: s for k, s in out.items()}


def _qwen25_vl_vision(v: dict) -> dict[str, tuple[int, ...]]:
    h, inter, p, t, m = (
        v[k]
        for k in (
            "hidden_size",
            "intermediate_size",
            "patch_size",
            "temporal_patch_size",
            "spatial_merge_size",
        )
    )
    out = {"patch_embed.proj.weight": (h, 3, t, p, p)}
    for i in range(v["depth"]):
        b = f"blocks.{i}."
        out |= {
            b + "norm1.weight": (h,),
            b + "norm2.weight": (h,),
            b + "attn.qkv.weight": (3 * h, h),
            b + "attn.qkv.bias": (3 * h,),
            b + "attn.proj.weight": (h, h),
            b + "attn.proj.bias": (h,),
            b + "mlp.gate_proj.weight": (inter, h),
            b + "mlp.gate_proj.bias": (inter,),
            b + "mlp.up_proj.weight": (inter, h),
            b + "mlp.up_proj.bias": (inter,),
            b + "mlp.down_proj.weight": (h, inter),
            b + "mlp.down_proj.bias": (h,),
        }
    merged = h * m * m
    out |= {
        "merger.ln_q.weight": (h,),
        "merger.mlp.0.weight": (merged, merged),
        "merger.mlp.0.bias": (merged,),
        "merger.mlp.2.weight": (v["out_hidden_size"], merged),
        "merger.mlp.2.bias": (v["out_hidden_size"],),
    }
    return out


def _qwen3_vl_vision(v: dict) -> dict[str, tuple[int, ...]]:
    h, inter, p, t, m = (
        v[k]
        for k in (
            "hidden_size",
            "intermediate_size",
            "patch_size",
            "temporal_patch_size",
            "spatial_merge_size",
        )
    )
    out_h, merged = v["out_hidden_size"], h * m * m
    out = {
        "patch_embed.proj.weight": (h, 3, t, p, p),
        "patch_embed.proj.bias": (h,),
        "pos_embed.weight": (v["num_position_embeddings"], h),
    }
    for i in range(v["depth"]):
        b = f"blocks.{i}."
        out |= {
            b + "norm1.weight": (h,),
            b + "norm1.bias": (h,),
            b + "norm2.weight": (h,),
            b + "norm2.bias": (h,),
            b + "attn.qkv.weight": (3 * h, h),
            b + "attn.qkv.bias": (3 * h,),
            b + "attn.proj.weight": (h, h),
            b + "attn.proj.bias": (h,),
            b + "mlp.linear_fc1.weight": (inter, h),
            b + "mlp.linear_fc1.bias": (inter,),
            b + "mlp.linear_fc2.weight": (h, inter),
            b + "mlp.linear_fc2.bias": (h,),
        }

    def merger(prefix: str, norm: int) -> dict[str, tuple[int, ...]]:
        return {
            prefix + "norm.weight": (norm,),
            prefix + "norm.bias": (norm,),
            prefix + "linear_fc1.weight": (merged, merged),
            prefix + "linear_fc1.bias": (merged,),
            prefix + "linear_fc2.weight": (out_h, merged),
            prefix + "linear_fc2.bias": (out_h,),
        }

    out |= merger("merger.", h)  # the final merger normalises before the 2x2 shuffle
    for k in range(len(v["deepstack_visual_indexes"])):
        out |= merger(f"deepstack_merger_list.{k}.", merged)  # deepstack mergers after it
    return out


def official_tensors(entry: RealSize) -> dict[str, tuple[int, ...]]:
    """Every MLLM + ``text_hidden_fcs`` tensor of the official checkpoint: name -> shape.

    SAM-2 (``grounding_encoder.sam2_model.*``) is Meta's Hiera-L and is listed by the test
    from Meta's own module (``sam2_prompt.build_sam2``), renamed as Sa2VA saves it.
    """
    c = entry.config
    if entry.format == "internvl":
        vit, llm = c["vision_config"], c["llm_config"]
        width = vit["hidden_size"] * int(1 / c["downsample_ratio"]) ** 2
        h = llm["hidden_size"]
        out = _internvit(vit)
        out |= {
            "mlp1.0.weight": (width,),
            "mlp1.0.bias": (width,),
            "mlp1.1.weight": (h, width),
            "mlp1.1.bias": (h,),
            "mlp1.3.weight": (h, h),
            "mlp1.3.bias": (h,),
        }
        out |= _internlm2_llm(llm) if entry.llm == "internlm2" else _decoder_llm(llm, "language_model.")
    else:
        text, vision = c["text_config"], c["vision_config"]
        h = text["hidden_size"]
        qwen3 = entry.llm == "qwen3_vl"
        out = _decoder_llm(text, "", qk_norm=qwen3, bias=not qwen3)
        out = {
            (
                "model.lm_head.weight"
                if k == "lm_head.weight"
                else "model.model.language_model." + k[len("model.") :]
            ): s
            for k, s in out.items()
        }
        visual = _qwen3_vl_vision(vision) if qwen3 else _qwen25_vl_vision(vision)
        out |= {"model.model.visual." + k: s for k, s in visual.items()}
    out |= {
        "text_hidden_fcs.0.weight": (h, h),
        "text_hidden_fcs.0.bias": (h,),
        "text_hidden_fcs.2.weight": (SAM2_PROMPT_DIM, h),
        "text_hidden_fcs.2.bias": (SAM2_PROMPT_DIM,),
    }
    return out


def llm_hidden_size(entry: RealSize) -> int:
    c = entry.config
    return (c["llm_config"] if entry.format == "internvl" else c["text_config"])["hidden_size"]
