"""The InternVL-format Sa2VA language half: InternViT + ``mlp1`` + a Qwen2/Qwen3/InternLM2 LLM.

Covers Sa2VA-1B / -4B / -8B / -26B / -InternVL3-2B / -8B / -14B. Everything is built from
transformers' native classes (no ``trust_remote_code``):

* InternViT -> ``InternVLVisionModel``. It computes what the official InternViT computes
  (pre-norm blocks with layer scale, optional QK RMS-norm, no final norm when
  ``use_mean_pooling`` is on); only parameter names differ, so :data:`VISION_RENAMES`
  maps them and the fused ``attn.qkv`` is split into q/k/v. Two details differ and are
  handled or harmless: the QK norms' epsilon (set to ``layer_norm_eps`` after building)
  and the order of the attention scaling ((q.k)*s instead of (q*s).k, a float32 rounding
  difference of ~1e-6 in the features).
* ``mlp1`` (LayerNorm, Linear, GELU, Linear) keeps the official indices 0, 1, 3.
  Both InternViT styles load: InternViT-300M (LayerNorm, qkv bias; Sa2VA-1B/4B/8B) and
  InternViT-6B (RMSNorm, QK-norm over the full width, no qkv bias; Sa2VA-26B).
* The LLM -> ``Qwen2ForCausalLM`` / ``Qwen3ForCausalLM`` built from ``llm_config``;
  ``language_model.*`` keys are already the native names. InternLM2 (Sa2VA-8B / -26B)
  -> ``LlamaForCausalLM`` through ``internlm2.py``, with its SentencePiece tokenizer.

Loading is strict: any missing, unexpected or mis-shaped tensor is a CheckpointError.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import internlm2, prompts
from . import internvl_preprocess as pre
from .checkpoint import CheckpointInfo, inspect_checkpoint
from .devices import resolve_dtype
from .errors import CheckpointError, InputError, UnsupportedModelError
from .generation import greedy_generate
from .hf_compat import require_base_vocabulary
from .images import as_bool_mask, as_rgb_uint8
from .loading import CheckpointTensors, load_strict, plan_from_names, skeleton
from .mllm import DEFAULT_MAX_NEW_TOKENS, SEG_TOKEN, Generation, TextCallback, Turn

VISION_PREFIX = "vision_model."
PROJECTOR_PREFIX = "mlp1."
LLM_PREFIX = "language_model."
#: Every prefix this adapter consumes (SAM-2 and text_hidden_fcs belong to other modules).
MLLM_PREFIXES = (VISION_PREFIX, PROJECTOR_PREFIX, LLM_PREFIX)

# --- official InternViT <-> transformers InternVLVisionModel ----------------------------------

#: (official name, native name); ``{i}`` is a layer index, ``{s}`` the rest of the name.
VISION_RENAMES: tuple[tuple[str, str], ...] = (
    ("embeddings.class_embedding", "embeddings.cls_token"),
    ("embeddings.position_embedding", "embeddings.position_embeddings"),
    ("embeddings.patch_embedding.{s}", "embeddings.patch_embeddings.projection.{s}"),
    ("encoder.layers.{i}.attn.proj.{s}", "encoder.layer.{i}.attention.projection_layer.{s}"),
    ("encoder.layers.{i}.attn.q_norm.{s}", "encoder.layer.{i}.attention.q_norm.{s}"),
    ("encoder.layers.{i}.attn.k_norm.{s}", "encoder.layer.{i}.attention.k_norm.{s}"),
    ("encoder.layers.{i}.norm1.{s}", "encoder.layer.{i}.layernorm_before.{s}"),
    ("encoder.layers.{i}.norm2.{s}", "encoder.layer.{i}.layernorm_after.{s}"),
    ("encoder.layers.{i}.ls1", "encoder.layer.{i}.lambda_1"),
    ("encoder.layers.{i}.ls2", "encoder.layer.{i}.lambda_2"),
    ("encoder.layers.{i}.mlp.{s}", "encoder.layer.{i}.mlp.{s}"),
)
#: Official fused tensors and the native tensors they hold, concatenated on dim 0.
VISION_FUSED: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "encoder.layers.{i}.attn.qkv.{s}",
        (
            "encoder.layer.{i}.attention.q_proj.{s}",
            "encoder.layer.{i}.attention.k_proj.{s}",
            "encoder.layer.{i}.attention.v_proj.{s}",
        ),
    ),
)

#: Official ``InternVisionConfig`` defaults (used for fields a config.json leaves out).
OFFICIAL_VISION_DEFAULTS = {
    "num_channels": 3,
    "patch_size": 14,
    "image_size": 224,
    "qkv_bias": False,
    "hidden_size": 3200,
    "num_attention_heads": 25,
    "intermediate_size": 12800,
    "qk_normalization": True,
    "num_hidden_layers": 48,
    "hidden_act": "gelu",
    "norm_type": "rms_norm",
    "layer_norm_eps": 1e-6,
    "initializer_factor": 0.1,
}
#: Official vision_config field -> InternVLVisionConfig field.
VISION_CONFIG_FIELDS = {
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "hidden_act": "hidden_act",
    "norm_type": "norm_type",
    "layer_norm_eps": "layer_norm_eps",
    "image_size": "image_size",
    "patch_size": "patch_size",
    "num_channels": "num_channels",
    "qkv_bias": "attention_bias",
    "qk_normalization": "use_qk_norm",
    "initializer_factor": "layer_scale_init_value",
}


def _template_regex(template: str) -> re.Pattern:
    pattern = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{s\}", r"(?P<s>.+)")
    return re.compile(pattern + "$")


def _fill(template: str, match: re.Match) -> str:
    groups = match.groupdict()
    return template.replace("{i}", groups.get("i") or "").replace("{s}", groups.get("s") or "")


def vision_native_targets(name: str) -> list[tuple[str, tuple[int, int] | None]]:
    """Where one official InternViT tensor (prefix stripped) goes in InternVLVisionModel:
    [(native name, chunk (k, n) of dim 0 or None)]. A fused q/k/v tensor feeds three.

    Names no rule knows are passed through unchanged, so strict loading reports them.
    """
    for fused, parts in VISION_FUSED:
        match = _template_regex(fused).match(name)
        if match:
            return [(_fill(part, match), (k, len(parts))) for k, part in enumerate(parts)]
    for src, dst in VISION_RENAMES:
        match = _template_regex(src).match(name)
        if match:
            return [(_fill(dst, match), None)]
    return [(name, None)]


def vision_to_native(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official InternViT tensors (prefix stripped) -> InternVLVisionModel names."""
    native: dict[str, torch.Tensor] = {}
    for name, tensor in official.items():
        for target, part in vision_native_targets(name):
            native[target] = tensor if part is None else tensor.chunk(part[1], dim=0)[part[0]]
    return native


def vision_official_name(native_name: str) -> str:
    """The official name of one native vision tensor (for error messages)."""
    for fused, parts in VISION_FUSED:
        for part in parts:
            match = _template_regex(part).match(native_name)
            if match:
                return _fill(fused, match)
    for src, dst in VISION_RENAMES:
        match = _template_regex(dst).match(native_name)
        if match:
            return _fill(src, match)
    return native_name


def vision_config(official: dict):
    """transformers ``InternVLVisionConfig`` equivalent to an official ``vision_config`` dict."""
    from transformers.models.internvl import InternVLVisionConfig

    values = {**OFFICIAL_VISION_DEFAULTS, **official}
    kwargs = {dst: values[src] for src, dst in VISION_CONFIG_FIELDS.items()}
    # The official InternViT has no final norm and no dropout at inference.
    return InternVLVisionConfig(
        **kwargs,
        use_mean_pooling=True,
        use_absolute_position_embeddings=True,
        use_mask_token=False,
        hidden_dropout_prob=0.0,
        attention_dropout=0.0,
        projection_dropout=0.0,
    )


#: llm_config architecture -> (config class, model class) in transformers.
LLM_CLASSES = {
    "Qwen2ForCausalLM": ("Qwen2Config", "Qwen2ForCausalLM"),
    "Qwen3ForCausalLM": ("Qwen3Config", "Qwen3ForCausalLM"),
    # Renamed and re-packed onto Llama by internlm2.py (the config comes from internlm2.llama_config).
    internlm2.ARCHITECTURE: ("LlamaConfig", "LlamaForCausalLM"),
}


def llm_classes(llm_config: dict):
    """The transformers (config class, model class) for ``llm_config`` or UnsupportedModelError."""
    import transformers

    archs = llm_config.get("architectures") or []
    arch = archs[0] if archs else ""
    if arch not in LLM_CLASSES:
        raise UnsupportedModelError(
            f"The language model of this checkpoint is '{arch or llm_config.get('model_type')}'. Natively "
            f"supported: {', '.join(LLM_CLASSES)} (Sa2VA-1B/4B/8B/26B and Sa2VA-InternVL3-*)."
        )
    config_name, model_name = LLM_CLASSES[arch]
    return getattr(transformers, config_name), getattr(transformers, model_name)


class Projector(nn.Sequential):
    """``mlp1``: LayerNorm -> Linear -> GELU -> Linear from pixel-shuffled ViT features to the LLM."""

    def __init__(self, vit_hidden: int, llm_hidden: int, downsample_ratio: float) -> None:
        width = vit_hidden * int(1 / downsample_ratio) ** 2
        super().__init__(
            nn.LayerNorm(width), nn.Linear(width, llm_hidden), nn.GELU(), nn.Linear(llm_hidden, llm_hidden)
        )


def pixel_shuffle(x: torch.Tensor, scale: float, ps_version: str) -> torch.Tensor:
    """(n, w, h, c) -> (n, h*s, w*s, c/s^2), the official space-to-depth step.

    ``ps_version`` "v1" (early InternVL) leaves the result transposed, as the official code does.
    """
    n, w, h, c = x.shape
    x = x.reshape(n, w, int(h * scale), int(c / scale)).permute(0, 2, 1, 3)
    x = x.reshape(n, int(h * scale), int(w * scale), int(c / (scale * scale)))
    return x if ps_version == "v1" else x.permute(0, 2, 1, 3).contiguous()


def _prefixed(prefix: str, rename=lambda name: [(name, None)]):
    """A renamer for :func:`loading.plan_from_names`: official ``prefix + name`` -> module keys."""

    def to_module(official: str) -> list[tuple]:
        return rename(official[len(prefix) :]) if official.startswith(prefix) else []

    return to_module


def _load_part(
    module: nn.Module, tensors, prefix: str, what: str, *, device, dtype, rename=None, official=None
):
    """Stream the checkpoint tensors under ``prefix`` into ``module`` (strict, see loading.py)."""
    names = [n for n in tensors if n.startswith(prefix)]
    plan, _ = plan_from_names(names, _prefixed(prefix, rename) if rename else _prefixed(prefix))
    load_strict(
        module,
        tensors,
        plan,
        what,
        official=official or (lambda k: prefix + k),
        device=device,
        dtype=dtype,
    )


def build_internvl(
    config: dict,
    tensors,
    *,
    device: torch.device,
    dtype: torch.dtype,
    attn_implementation: str | None = None,
    where: object = "config.json",
):
    """Build InternViT, ``mlp1`` and the LLM of an InternVL-format config as skeletons and
    stream their weights from ``tensors`` (a checkpoint or a dict; strict).

    An InternLM2 LLM is built as ``LlamaForCausalLM``; its tensors are renamed and its fused
    ``wqkv`` split while streaming (``internlm2.llama_targets``). Returns (vision_model,
    projector, language_model, llm_config). ``device`` "meta" rehearses a load: every name
    and shape is checked, nothing is allocated.
    """
    from transformers.models.internvl import InternVLVisionModel

    from .hf_compat import no_init_weights

    vcfg_official = config.get("vision_config") or {}
    llm_cfg_dict = dict(config.get("llm_config") or {})
    config_cls, model_cls = llm_classes(llm_cfg_dict)
    downsample_ratio = float(config.get("downsample_ratio", 0.5))
    is_internlm2 = internlm2.is_internlm2(llm_cfg_dict)
    head = LLM_PREFIX + (internlm2.OFFICIAL_LM_HEAD if is_internlm2 else "lm_head.weight")
    # A tied lm_head is stored once (as the embedding); an untied one is its own tensor.
    llm_cfg_dict["tie_word_embeddings"] = head not in tensors and bool(
        llm_cfg_dict.get("tie_word_embeddings", False)
    )
    vcfg = vision_config(vcfg_official)
    llm_cfg = internlm2.llama_config(llm_cfg_dict) if is_internlm2 else config_cls(**llm_cfg_dict)
    # Named explicitly (sdpa unless asked): the default choice is transformers' and may change.
    attn = {"attn_implementation": attn_implementation or "sdpa"}
    try:
        # Parameters without storage: every one of them is filled from the checkpoint.
        with skeleton(), no_init_weights():
            vision_model = InternVLVisionModel._from_config(vcfg, dtype=dtype, **attn)
            language_model = model_cls._from_config(llm_cfg, dtype=dtype, **attn)
            projector = Projector(vcfg.hidden_size, llm_cfg.hidden_size, downsample_ratio)
    except (ImportError, ValueError) as exc:
        if attn_implementation in (None, "eager", "sdpa"):
            raise CheckpointError(
                f"{where}: config.json does not describe a buildable model ({exc})."
            ) from exc
        raise InputError(
            f"attn_implementation='{attn_implementation}' cannot be used here ({exc}). "
            "Use 'sdpa' or 'eager' ('flash_attention_2' needs the flash-attn package and a GPU)."
        ) from exc
    if vcfg.use_qk_norm:
        # transformers builds the QK norms with eps 1e-6; the official ones use layer_norm_eps.
        for layer in vision_model.encoder.layer:
            layer.attention.q_norm.variance_epsilon = vcfg.layer_norm_eps
            layer.attention.k_norm.variance_epsilon = vcfg.layer_norm_eps
    on = {"device": device, "dtype": dtype}
    _load_part(
        vision_model,
        tensors,
        VISION_PREFIX,
        "vision model (vision_model.*)",
        rename=vision_native_targets,
        official=lambda k: VISION_PREFIX + vision_official_name(k),
        **on,
    )
    _load_part(projector, tensors, PROJECTOR_PREFIX, "projector (mlp1.*)", **on)
    if is_internlm2:  # official InternLM2 names (fused wqkv) -> LlamaForCausalLM keys
        _load_part(
            language_model,
            tensors,
            LLM_PREFIX,
            "language model (language_model.*)",
            rename=lambda name: internlm2.llama_targets(name, llm_cfg_dict),
            official=lambda k: LLM_PREFIX + internlm2.official_name(k),
            **on,
        )
    else:
        _load_part(language_model, tensors, LLM_PREFIX, "language model (language_model.*)", **on)
    if llm_cfg.tie_word_embeddings:
        language_model.tie_weights()
    return vision_model, projector, language_model, llm_cfg


def load_tokenizer(path: Path, llm_config: dict | None = None):
    """The checkpoint's tokenizer, checked for Sa2VA's special tokens.

    AutoTokenizer for Qwen LLMs; InternLM2's SentencePiece tokenizer (remote code in the
    official repos) is read by ``internlm2.load_tokenizer``.
    """
    from transformers import AutoTokenizer

    try:
        if llm_config is not None and internlm2.is_internlm2(llm_config):
            tokenizer = internlm2.load_tokenizer(path)
        else:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
    except CheckpointError:
        raise
    except Exception as exc:  # missing/corrupt tokenizer files raise many different types
        raise CheckpointError(
            f"{path}: the tokenizer cannot be loaded ({type(exc).__name__}: {exc}). The checkpoint needs its "
            "tokenizer files (tokenizer.json or vocab.json + merges.txt, tokenizer_config.json)."
        ) from exc
    require_base_vocabulary(tokenizer, path)
    vocab = tokenizer.get_vocab()
    missing = [t for t in prompts.INTERNVL_REQUIRED_TOKENS if t not in vocab]
    if missing:
        raise CheckpointError(
            f"{path}: the tokenizer lacks Sa2VA's special tokens {missing}. This is not a Sa2VA checkpoint's "
            "tokenizer (a base InternVL/Qwen tokenizer?); use the tokenizer saved with the Sa2VA model."
        )
    return tokenizer


@dataclass
class PreparedPrompt:
    """Everything fed to the language model for one question (also used by parity tests)."""

    prompt: str
    input_ids: torch.Tensor  # (1, N)
    inputs_embeds: torch.Tensor  # (1, N, H)
    pixel_values: torch.Tensor | None  # (n_tiles, 3, 448, 448)
    vit_embeds: torch.Tensor | None  # (n_tiles, tokens_per_tile, H)
    region_cells: torch.Tensor | None  # (n_regions, grid, grid) bool
    vp_tile_mask: torch.Tensor | None  # (n_tiles,) bool: the tile feeding the <vp> tokens


class InternVLChat:
    """The MLLM protocol for InternVL-format Sa2VA checkpoints."""

    supports_region_prompts = True

    def __init__(
        self,
        info: CheckpointInfo,
        state: dict[str, torch.Tensor] | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        attn_implementation: str | None = None,
    ) -> None:
        """Build the model from ``info`` and the checkpoint tensors ``state``.

        ``state`` may hold the whole checkpoint (SAM-2 and text_hidden_fcs are ignored
        here); it is read from ``info.path`` when not given. ``attn_implementation`` is
        "eager", "sdpa" or "flash_attention_2"; None means "sdpa".
        """
        if info.format != "internvl":
            raise UnsupportedModelError(f"{info.path} is a '{info.format}' checkpoint, not InternVL-format.")
        config = info.config
        self.device = torch.device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.template = prompts.get_template(config.get("template", "qwen_chat"))
        vcfg_official = config.get("vision_config") or {}
        llm_classes(dict(config.get("llm_config") or {}))  # refuse an unsupported LLM before any I/O
        self.downsample_ratio = float(config.get("downsample_ratio", 0.5))
        self.ps_version = config.get("ps_version", "v1")
        self.select_layer = int(config.get("select_layer", -1))
        patch = int({**OFFICIAL_VISION_DEFAULTS, **vcfg_official}["patch_size"])
        self.grid = int(pre.TILE_SIZE // patch * self.downsample_ratio)
        self.tokens_per_tile = self.grid * self.grid

        self.tokenizer = load_tokenizer(info.path, config.get("llm_config") or {})
        tensors = CheckpointTensors(info.path) if state is None else state
        try:
            parts = build_internvl(
                config,
                tensors,
                device=self.device,
                dtype=self.dtype,
                attn_implementation=attn_implementation,
                where=info.path,
            )
            self.vision_model, self.projector, self.language_model, llm_cfg = parts
        finally:
            if state is None:
                tensors.close()
        if self.select_layer != -1:
            # hidden_states[select_layer] of the official ViT = output of the first
            # num_layers + 1 + select_layer blocks: run only those.
            keep = len(self.vision_model.encoder.layer) + 1 + self.select_layer
            self.vision_model.encoder.layer = self.vision_model.encoder.layer[:keep]
        for module in (self.vision_model, self.language_model, self.projector):
            module.eval().requires_grad_(False)

        self.hidden_size = int(llm_cfg.hidden_size)
        vocab = self.tokenizer.get_vocab()
        self.img_context_id = vocab[prompts.IMG_CONTEXT_TOKEN]
        self.seg_token_id = vocab[SEG_TOKEN]
        self.stop_token_ids = [vocab[w] for w in self.template.stop_words if w in vocab]
        if not self.stop_token_ids:
            raise CheckpointError(
                f"{info.path}: the tokenizer has none of the stop tokens {self.template.stop_words} of "
                f"template '{self.template.name}'."
            )
        # The official generation config also stops on the tokenizer's eos (InternLM2: </s>).
        eos = self.tokenizer.eos_token_id
        if eos is not None and eos not in self.stop_token_ids:
            self.stop_token_ids.append(eos)
        n_embed = self.language_model.get_input_embeddings().weight.shape[0]
        if max(vocab.values()) >= n_embed:
            raise CheckpointError(
                f"{info.path}: the tokenizer has ids up to {max(vocab.values())} but the language model "
                f"embeds only {n_embed} tokens: tokenizer and weights do not belong together."
            )

    @classmethod
    def from_checkpoint(
        cls,
        info: CheckpointInfo,
        state: dict[str, torch.Tensor] | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        attn_implementation: str | None = None,
    ) -> InternVLChat:
        """Build from an inspected checkpoint and (optionally) its already loaded tensors."""
        return cls(info, state, device=device, dtype=dtype, attn_implementation=attn_implementation)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        attn_implementation: str | None = None,
    ) -> InternVLChat:
        """Load from a local checkpoint directory (see checkpoint.resolve_checkpoint for hub ids)."""
        info = inspect_checkpoint(Path(path))
        return cls(info, device=device, dtype=dtype, attn_implementation=attn_implementation)

    # --- images ------------------------------------------------------------------------------

    def pixel_values(self, images: Sequence[np.ndarray], video: bool) -> torch.Tensor:
        """The official MLLM input: tiles of one image, or one 448 tile per video keyframe."""
        return pre.video_pixel_values(images) if video else pre.image_pixel_values(images[0])

    @torch.inference_mode()
    def vision_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(n_tiles, 3, 448, 448) -> (n_tiles, tokens_per_tile, H_llm): ViT without CLS, shuffle, mlp1."""
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        hidden = self.vision_model(pixel_values=pixel_values).last_hidden_state[:, 1:, :]
        side = int(hidden.shape[1] ** 0.5)
        hidden = hidden.reshape(hidden.shape[0], side, side, -1)
        hidden = pixel_shuffle(hidden, self.downsample_ratio, self.ps_version)
        hidden = hidden.reshape(hidden.shape[0], -1, hidden.shape[-1])
        return self.projector(hidden)

    # --- prompts -----------------------------------------------------------------------------

    def prepare(
        self,
        text: str,
        images: Sequence[np.ndarray] = (),
        *,
        video: bool = False,
        history: Sequence[Turn] = (),
        region_masks: np.ndarray | None = None,
    ) -> PreparedPrompt:
        """Validate inputs and build the prompt, its ids and its embeddings as the official code does."""
        if not isinstance(text, str) or not text.replace(prompts.IMAGE_PLACEHOLDER, "").strip():
            raise InputError("The prompt is empty: ask a question or give an instruction.")
        if prompts.IMG_CONTEXT_TOKEN in text or any(prompts.IMG_CONTEXT_TOKEN in t.user for t in history):
            raise InputError(f"The prompt contains the reserved token {prompts.IMG_CONTEXT_TOKEN}.")
        frames = [as_rgb_uint8(img, f"image {i}") for i, img in enumerate(images)]
        if len(frames) > 1 and not video:
            raise InputError(
                f"{len(frames)} images were given; InternVL Sa2VA takes one image per question "
                "(pass video=True for video keyframes)."
            )
        if video and not frames:
            raise InputError("video=True needs at least one keyframe.")
        cells = None
        if region_masks is not None:
            if video or len(frames) != 1:
                raise InputError("Region prompts need exactly one image (not a video).")
            masks = np.asarray(region_masks)
            masks = masks[None] if masks.ndim == 2 else masks
            if masks.ndim != 3 or len(masks) == 0:
                raise InputError(f"region_masks must be (n, H, W) bool, got shape {masks.shape}.")
            masks = np.stack(
                [as_bool_mask(m, frames[0].shape[:2], f"region mask {i}") for i, m in enumerate(masks)]
            )
            cells = pre.region_cells(masks, self.grid)

        turns = [Turn(t.user, t.assistant) for t in history]
        pixel_values = vit_embeds = vp_tile = None
        if not frames:
            text = prompts.strip_image_placeholder(text)
            turns = [Turn(prompts.strip_image_placeholder(t.user), t.assistant) for t in turns]
        else:
            pixel_values = self.pixel_values(frames, video)
            n = pixel_values.shape[0]
            if video:
                block = prompts.internvl_video_tokens(n, self.tokens_per_tile)
            else:
                block = prompts.internvl_image_tokens(n, self.tokens_per_tile)
            if cells is not None:
                block += prompts.region_prompt(cells.flatten(1).sum(1).tolist())
            text, turns = self._place_image(text, turns, block, cells is not None)

        prompt = self.template.render(text, turns)
        input_ids = torch.tensor([self.tokenizer.encode(prompt)], dtype=torch.long, device=self.device)
        embed = self.language_model.get_input_embeddings()
        with torch.inference_mode():
            inputs_embeds = embed(input_ids)
        if pixel_values is not None:
            vit_embeds = self.vision_features(pixel_values).to(inputs_embeds.dtype)
            hidden = vit_embeds.shape[-1]
            features = [vit_embeds.reshape(-1, hidden)]
            if cells is not None:
                # <vp> tokens take the features of the last tile (the thumbnail, or the only
                # tile) at the region's cells; they follow all the tiles' tokens.
                vp_tile = torch.zeros(len(vit_embeds), dtype=torch.bool)
                vp_tile[-1] = True
                tile = vit_embeds[-1].reshape(-1, hidden)
                features += [tile[mask.flatten().to(tile.device)] for mask in cells]
            features = torch.cat(features)
            selected = input_ids[0] == self.img_context_id
            if int(selected.sum()) != len(features):
                raise InputError(
                    f"The prompt has {int(selected.sum())} image-context tokens but the image gives "
                    f"{len(features)} features; the text must not contain '<img>' or '<vp>' markup."
                )
            with torch.inference_mode():
                inputs_embeds[0, selected] = features
        return PreparedPrompt(prompt, input_ids, inputs_embeds, pixel_values, vit_embeds, cells, vp_tile)

    @staticmethod
    def _place_image(text: str, turns: list[Turn], block: str, regions: bool) -> tuple[str, list[Turn]]:
        """Expand ``<image>`` where the caller put it, else in the first user turn.

        In a multi-turn chat the image belongs to the first question (the official demo
        keeps it in ``past_text``); follow-up questions are text only.
        """
        where = [i for i, t in enumerate(turns) if prompts.IMAGE_PLACEHOLDER in t.user]
        total = text.count(prompts.IMAGE_PLACEHOLDER) + sum(
            t.user.count(prompts.IMAGE_PLACEHOLDER) for t in turns
        )
        if total > 1:
            raise InputError("Only one '<image>' placeholder is allowed in a conversation.")
        if not where and prompts.IMAGE_PLACEHOLDER not in text:
            if turns:
                first = turns[0]
                turns[0] = Turn(prompts.ensure_image_placeholder(first.user, regions), first.assistant)
                where = [0]
            else:
                text = prompts.ensure_image_placeholder(text, regions)
        if where:
            i = where[0]
            turns[i] = Turn(prompts.expand_image_placeholder(turns[i].user, block), turns[i].assistant)
        else:
            text = prompts.expand_image_placeholder(text, block)
        return text, turns

    # --- generation --------------------------------------------------------------------------

    def generate(
        self,
        text: str,
        images: Sequence[np.ndarray] = (),
        *,
        video: bool = False,
        history: Sequence[Turn] = (),
        region_masks: np.ndarray | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        on_text: TextCallback | None = None,
    ) -> Generation:
        """Greedy answer as the official ``predict_forward`` gives it (see mllm.MLLM)."""
        prepared = self.prepare(text, images, video=video, history=history, region_masks=region_masks)
        return self.generate_prepared(prepared, max_new_tokens=max_new_tokens, on_text=on_text)

    def generate_prepared(
        self,
        prepared: PreparedPrompt,
        *,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        on_text: TextCallback | None = None,
    ) -> Generation:
        """Generate from an already prepared prompt (the step parity tests look inside)."""
        out = greedy_generate(
            self.language_model,
            self.language_model.model.norm,
            self.tokenizer,
            generate_kwargs={
                "inputs_embeds": prepared.inputs_embeds,
                "attention_mask": torch.ones_like(prepared.input_ids),
            },
            prompt_length=0,
            stop_token_ids=self.stop_token_ids,
            stop_words=self.template.stop_words,
            seg_token_id=self.seg_token_id,
            max_new_tokens=max_new_tokens,
            on_text=on_text,
        )
        ids = out.token_ids
        answer_ids = ids[:-1] if ids and ids[-1] in self.stop_token_ids else ids
        text = self.tokenizer.decode(answer_ids, skip_special_tokens=False).strip()
        return Generation(
            text=text,
            token_ids=ids,
            seg_hidden_states=out.seg_hidden_states,
            prompt=prepared.prompt,
            cancelled=out.cancelled,
            extras={"step_hidden": out.step_hidden, "stopped": out.stopped},
        )
