"""The Qwen-VL language-model half of Sa2VA (Sa2VA-Qwen2_5-VL-3B/7B, Sa2VA-Qwen3-VL-4B).

The official checkpoints wrap transformers' own ``Qwen2_5_VLForConditionalGeneration`` /
``Qwen3VLForConditionalGeneration`` under the attribute ``model``, so we load those native
classes directly (no ``trust_remote_code``): the config is rebuilt from the fields of the
Sa2VA config (which subclasses the Qwen-VL config) and the weights are renamed with a table.

What the official ``predict_forward`` does, and this adapter reproduces:

* Images go first in the user turn (all of them; a video contributes its keyframes as
  separate images), then the text with every ``<image>`` removed.
* Each image is resized twice: once by ``qwen_vl_utils.process_vision_info`` (multiples of 28
  between 4 and 16384 merged patches) and again by the image processor with
  ``min_pixels=512*28*28`` / ``max_pixels=2048*28*28``. Both resizes are PIL bicubic.
* Greedy decoding; the [SEG] hidden states are the last-layer states at the positions whose
  *input* token is [SEG]: after the final norm for Qwen2.5-VL, BEFORE it for Qwen3-VL (the
  official code reads ``hidden_states[-1]`` of ``generate``, which transformers' Qwen3-VL
  leaves un-normed; see :data:`SEG_BEFORE_FINAL_NORM`).
"""

from __future__ import annotations

import inspect
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image

from .checkpoint import (
    SAM2_PREFIX,
    SEG_PROJECTION_PREFIX,
    CheckpointInfo,
)
from .errors import CheckpointError, InputError, UnsupportedModelError
from .generation import greedy_generate
from .hf_compat import qwen2_vl_pil_image_processor, require_base_vocabulary
from .images import as_rgb_uint8
from .loading import CheckpointTensors, load_strict, plan_from_names, skeleton
from .mllm import DEFAULT_MAX_NEW_TOKENS, SEG_TOKEN, Generation, TextCallback, Turn
from .prompts import SA2VA_ADDED_TOKENS, ensure_image_placeholder, strip_image_placeholder

QwenVariant = Literal["qwen2_5_vl", "qwen3_vl"]

#: Resolution limits the official Sa2VA code hands to the image processor (hard-coded in
#: ``Sa2VAChatModelQwen.__init__``, not read from the checkpoint).
SA2VA_MIN_PIXELS = 512 * 28 * 28
SA2VA_MAX_PIXELS = 2048 * 28 * 28

#: The first resize, done by ``qwen_vl_utils.fetch_image`` with its defaults. The official code
#: never passes ``image_patch_size``, so the factor is 28 even for Qwen3-VL (patch 16).
PRE_RESIZE_FACTOR = 28
PRE_RESIZE_MIN_PIXELS = 4 * 28 * 28
PRE_RESIZE_MAX_PIXELS = 16384 * 28 * 28
MAX_ASPECT_RATIO = 200

IMAGE_PAD = "<|image_pad|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"

#: Tokens the adapter relies on; a tokenizer without one of them is not a Sa2VA Qwen tokenizer.
REQUIRED_TOKENS = SA2VA_ADDED_TOKENS + (
    "<|im_start|>",
    IM_END,
    END_OF_TEXT,
    "<|vision_start|>",
    "<|vision_end|>",
    IMAGE_PAD,
)
#: Control tokens a user text must not contain: they would desynchronise the image features
#: from their placeholders (the official code does not check; we refuse clearly).
FORBIDDEN_IN_TEXT = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")

#: Official weight-name prefix -> native transformers prefix. The Sa2VA wrapper keeps the HF
#: model under ``model``; checkpoints saved by recent transformers (4.52+) use these names.
KEY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("model.model.language_model.", "model.language_model."),
    ("model.model.visual.", "model.visual."),
    ("model.lm_head.", "lm_head."),
)
#: Names written by transformers < 4.52 (LLM directly under ``model.model``, ViT beside it).
#: Only read, never written; tried after KEY_PREFIXES.
LEGACY_KEY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("model.visual.", "model.visual."),
    ("model.model.", "model.language_model."),
)
#: Parts of a Sa2VA checkpoint that other modules load.
OTHER_PARTS = (SAM2_PREFIX, SEG_PROJECTION_PREFIX)
#: Top-level fields of the Sa2VA config that are not Qwen-VL config fields.
SA2VA_ONLY_FIELDS = (
    "architectures",
    "auto_map",
    "model_type",
    "template",
    "transformers_version",
    "_name_or_path",
)

#: Variants whose official [SEG] state is the last decoder layer's output before the final
#: RMSNorm (``generate(...).hidden_states[step][-1]`` of Qwen3VLForConditionalGeneration).
SEG_BEFORE_FINAL_NORM: frozenset[str] = frozenset({"qwen3_vl"})

EMBED_KEY = "model.language_model.embed_tokens.weight"
LM_HEAD_KEY = "lm_head.weight"


# --------------------------------------------------------------------------- config / weights


def detect_variant(config: Mapping) -> QwenVariant:
    """Tell Qwen2.5-VL from Qwen3-VL by the sub-config model types (or their telltale fields)."""
    vision = config.get("vision_config") or {}
    text = config.get("text_config") or {}
    types = {str(vision.get("model_type", "")), str(text.get("model_type", ""))}
    if types & {"qwen3_vl", "qwen3_vl_text"} or "deepstack_visual_indexes" in vision:
        return "qwen3_vl"
    if types & {"qwen2_5_vl", "qwen2_5_vl_text"} or "fullatt_block_indexes" in vision:
        return "qwen2_5_vl"
    raise UnsupportedModelError(
        f"config.json describes a Sa2VA Qwen-format model whose vision tower is "
        f"'{vision.get('model_type', '?')}' and language model '{text.get('model_type', '?')}'; only "
        "Qwen2.5-VL (Sa2VA-Qwen2_5-VL-3B/7B) and Qwen3-VL (Sa2VA-Qwen3-VL-4B) are supported."
    )


def native_config(config: Mapping, attn_implementation: str | None = None):
    """Build the transformers Qwen-VL config from the official Sa2VA config's fields."""
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    variant = detect_variant(config)
    fields = {k: v for k, v in config.items() if k not in SA2VA_ONLY_FIELDS}
    cls = Qwen3VLConfig if variant == "qwen3_vl" else Qwen2_5_VLConfig
    try:
        native = cls(**fields)
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"config.json cannot be read as a {cls.__name__}: {exc}") from exc
    if attn_implementation is not None:
        native._attn_implementation = attn_implementation
    return native


def _is_tied(native) -> bool:
    # The rule transformers (and so the official code) applies: the text config's flag.
    return bool(getattr(native.get_text_config(decoder=True), "tie_word_embeddings", False))


def native_name(key: str) -> str | None:
    """The native name of one official MLLM weight; None when no rule places it."""
    for official, native in KEY_PREFIXES + LEGACY_KEY_PREFIXES:
        if key.startswith(official):
            return native + key[len(official) :]
    return None


def to_native_names(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename the MLLM weights of a Sa2VA state dict; return (renamed, names we cannot place).

    Weights of the other parts (SAM-2, text_hidden_fcs) are skipped: other modules own them.
    """
    renamed: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key.startswith(OTHER_PARTS):
            continue
        native = native_name(key)
        if native is None:
            unknown.append(key)
        else:
            renamed[native] = value
    return renamed, unknown


def official_name(native: str) -> str:
    """The official (current layout) name of one native weight, for messages."""
    for official, prefix in KEY_PREFIXES:
        if native.startswith(prefix):
            return official + native[len(prefix) :]
    return native


def build_model(
    config: Mapping,
    tensors: Mapping[str, torch.Tensor],
    *,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str = "sdpa",
    device: torch.device | str = "cpu",
):
    """Build the native Qwen-VL model from the official config and stream its weights in.

    ``tensors`` is the whole checkpoint (a :class:`loading.CheckpointTensors` or a dict);
    SAM-2 and text_hidden_fcs entries are skipped. Strict: every MLLM weight must be used
    and every model weight present, else CheckpointError listing them (never silently
    random weights). A tied checkpoint may store either the embedding or lm_head.
    """
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

    from .hf_compat import no_init_weights

    native = native_config(config, attn_implementation)
    cls = (
        Qwen3VLForConditionalGeneration
        if detect_variant(config) == "qwen3_vl"
        else Qwen2_5_VLForConditionalGeneration
    )
    with skeleton(), no_init_weights():
        model = cls._from_config(native, dtype=dtype, attn_implementation=attn_implementation)
    if _is_tied(native):
        # One tensor under both names, as transformers ties them; loaded once below.
        model.lm_head.weight = model.get_input_embeddings().weight
    names = [n for n in tensors if not n.startswith(OTHER_PARTS)]
    plan, unplaced = plan_from_names(names, lambda n: [(t, None)] if (t := native_name(n)) else [])
    load_strict(
        model,
        tensors,
        plan,
        "Qwen-VL weights",
        unplaced=unplaced,
        official=official_name,
        device=device,
        dtype=dtype,
        advice="The checkpoint is incomplete or not a Sa2VA Qwen-VL checkpoint.",
    )
    return model.eval()


# --------------------------------------------------------------------------- processor pieces


def load_chat_template(path: Path, tokenizer) -> str:
    """The chat template the official processor would use: chat_template.jinja, then
    chat_template.json, then the tokenizer's own."""
    jinja = path / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text()
    as_json = path / "chat_template.json"
    if as_json.exists():
        try:
            return json.loads(as_json.read_text())["chat_template"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{as_json} has no readable 'chat_template' ({exc}).") from exc
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    raise CheckpointError(
        f"{path} has no chat template (chat_template.jinja, chat_template.json or in "
        "tokenizer_config.json): the processor files are missing; download the model again."
    )


def check_special_tokens(tokenizer, where: Path | str) -> dict[str, int]:
    """Return the ids of REQUIRED_TOKENS or raise CheckpointError naming the missing ones."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in REQUIRED_TOKENS if t not in vocab]
    if missing:
        raise CheckpointError(
            f"The tokenizer in {where} lacks Sa2VA's special tokens {missing}: it is the plain "
            "Qwen-VL tokenizer, not a Sa2VA one. Use the tokenizer files of the Sa2VA checkpoint."
        )
    return {t: vocab[t] for t in REQUIRED_TOKENS}


def pre_resize_size(height: int, width: int) -> tuple[int, int]:
    """Size (h, w) that ``qwen_vl_utils.fetch_image`` gives an image before the processor.

    Hand-written because qwen_vl_utils imports torchvision (unusable here); it is the
    documented smart-resize rule: round each side to a multiple of 28, then scale to fit
    the pixel budget, keeping the aspect ratio.
    """
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise InputError(
            f"The image is {width}x{height}: its aspect ratio is above {MAX_ASPECT_RATIO}, which "
            "Qwen-VL cannot take. Crop it first."
        )
    f = PRE_RESIZE_FACTOR
    h = max(f, round(height / f) * f)
    w = max(f, round(width / f) * f)
    if h * w > PRE_RESIZE_MAX_PIXELS:
        beta = math.sqrt(height * width / PRE_RESIZE_MAX_PIXELS)
        h = math.floor(height / beta / f) * f
        w = math.floor(width / beta / f) * f
    elif h * w < PRE_RESIZE_MIN_PIXELS:
        beta = math.sqrt(PRE_RESIZE_MIN_PIXELS / (height * width))
        h = math.ceil(height * beta / f) * f
        w = math.ceil(width * beta / f) * f
    return h, w


def pre_resize(image: np.ndarray) -> Image.Image:
    """The first (qwen_vl_utils) resize, PIL bicubic as there (PIL's default for RGB)."""
    pil = Image.fromarray(image)  # (H, W, 3) uint8 -> RGB
    h, w = pre_resize_size(image.shape[0], image.shape[1])
    return pil.resize((w, h), Image.BICUBIC)


def _check_text(text: str, what: str) -> None:
    bad = [t for t in FORBIDDEN_IN_TEXT if t in text]
    if bad:
        raise InputError(f"The {what} contains the control token(s) {bad}; remove them.")


def build_messages(text: str, n_images: int, history: Sequence[Turn] = ()) -> list[dict]:
    """Chat messages in the official layout: images first, then the text without ``<image>``.

    ``history`` becomes earlier user/assistant turns (text only). The official Qwen code has
    no multi-turn path with images (its ``past_text`` is only used for text-only prompts);
    separate turns are what the chat template is made for.
    """
    messages: list[dict] = []
    for i, turn in enumerate(history):
        _check_text(turn.user, f"history[{i}].user")
        _check_text(turn.assistant, f"history[{i}].assistant")
        messages.append(
            {"role": "user", "content": [{"type": "text", "text": strip_image_placeholder(turn.user)}]}
        )
        messages.append({"role": "assistant", "content": [{"type": "text", "text": turn.assistant}]})
    _check_text(text, "prompt")
    if n_images:
        text = ensure_image_placeholder(text)
    # Official quirk: `<image>` is deleted wherever it is and the images are put first.
    content: list[dict] = [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": strip_image_placeholder(text)})
    messages.append({"role": "user", "content": content})
    return messages


# --------------------------------------------------------------------------- the adapter


@dataclass
class QwenVLInputs:
    """Everything the language model consumes for one prompt."""

    prompt: str
    input_ids: torch.Tensor  # (1, L) int64
    pixel_values: torch.Tensor | None  # (n_patches, C*T*P*P) float32, all images concatenated
    image_grid_thw: torch.Tensor | None  # (n_images, 3) int64


class QwenVLChat:
    """MLLM adapter (see :class:`sa2va_ros.model.mllm.MLLM`) for Sa2VA's Qwen-VL checkpoints."""

    supports_region_prompts = False

    def __init__(self, model, tokenizer, image_processor, chat_template: str, variant: QwenVariant):
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template = chat_template
        self.variant = variant
        cfg = model.config
        self.hidden_size: int = cfg.get_text_config(decoder=True).hidden_size
        ids = check_special_tokens(tokenizer, "the checkpoint")
        self.seg_token_id = ids[SEG_TOKEN]
        if ids[IMAGE_PAD] != cfg.image_token_id:
            raise CheckpointError(
                f"config.json says the image token is id {cfg.image_token_id} but the tokenizer maps "
                f"{IMAGE_PAD} to {ids[IMAGE_PAD]}: tokenizer and weights come from different models."
            )
        stops = {ids[IM_END], ids[END_OF_TEXT]}
        for c in (cfg, cfg.get_text_config(decoder=True)):
            eos = getattr(c, "eos_token_id", None)
            stops.update(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        self.stop_token_ids: frozenset[int] = frozenset(stops)
        rope_index = inspect.signature(model.model.get_rope_index).parameters
        self._rope_needs_token_types = "mm_token_type_ids" in rope_index

    # ---- loading

    @classmethod
    def from_checkpoint(
        cls,
        info: CheckpointInfo,
        state: Mapping[str, torch.Tensor] | None = None,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        attn_implementation: str | None = None,
    ) -> QwenVLChat:
        """Load from a checkpoint directory. ``state`` is the checkpoint's full state dict when the
        caller has already read it (SAM-2 and text_hidden_fcs entries are ignored here)."""
        from transformers import AutoTokenizer

        if info.format != "qwen_vl":
            raise CheckpointError(f"{info.path} is a '{info.format}' checkpoint, not a Qwen-VL one.")
        variant = detect_variant(info.config)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(info.path))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"Cannot load the tokenizer from {info.path}: {exc}") from exc
        require_base_vocabulary(tokenizer, info.path)
        check_special_tokens(tokenizer, info.path)
        if not (info.path / "preprocessor_config.json").exists():
            raise CheckpointError(
                f"{info.path} has no preprocessor_config.json (the Qwen-VL image processor settings); "
                "download the model again."
            )
        # The PIL processor, whatever class the file names and whether torchvision is installed:
        # the torchvision one resizes differently (see hf_compat).
        image_processor = qwen2_vl_pil_image_processor().from_pretrained(str(info.path))
        template = load_chat_template(info.path, tokenizer)
        tensors = CheckpointTensors(info.path) if state is None else state
        try:
            model = build_model(
                info.config,
                tensors,
                dtype=dtype,
                attn_implementation=attn_implementation or "sdpa",
                device=device,
            )
        finally:
            if state is None:
                tensors.close()
        return cls(model, tokenizer, image_processor, template, variant)

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm_head.weight.dtype

    # ---- prompt + images -> tensors

    def prepare(
        self, text: str, images: Sequence[np.ndarray] = (), history: Sequence[Turn] = ()
    ) -> QwenVLInputs:
        """Template the prompt, preprocess the images and expand the image placeholders."""
        arrays = [as_rgb_uint8(im, f"images[{i}]") for i, im in enumerate(images)]
        messages = build_messages(text, len(arrays), history)
        prompt = self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
        )
        pixel_values = grid = None
        expanded = prompt
        if arrays:
            out = self.image_processor(
                images=[pre_resize(a) for a in arrays],
                # As a size (both releases read it): transformers 5 deprecates min/max_pixels.
                size={"shortest_edge": SA2VA_MIN_PIXELS, "longest_edge": SA2VA_MAX_PIXELS},
                return_tensors="pt",
            )
            pixel_values, grid = out["pixel_values"], out["image_grid_thw"]
            # What the Qwen-VL processor does (it cannot be built here: its video processor
            # needs torchvision): one <|image_pad|> per merged patch of each image, in order.
            merge = self.image_processor.merge_size**2
            counts = iter([int(g.prod()) // merge for g in grid])
            expanded = re.sub(re.escape(IMAGE_PAD), lambda _: IMAGE_PAD * next(counts), prompt)
        input_ids = self.tokenizer(expanded, return_tensors="pt")["input_ids"]
        return QwenVLInputs(prompt, input_ids, pixel_values, grid)

    @torch.inference_mode()
    def _vision(self, inputs: QwenVLInputs) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(merged image tokens of all images, DeepStack features per layer (Qwen3-VL only)).

        transformers 4.57 returns tuples from ``get_image_features`` (Qwen3-VL: per-image
        embeddings and concatenated DeepStack features); 5.x returns a model output with
        ``pooler_output`` and per-image ``deepstack_features``. Both become whole tensors here.
        """
        out = self.model.model.get_image_features(
            inputs.pixel_values.to(self.device, self.dtype), inputs.image_grid_thw.to(self.device)
        )
        if hasattr(out, "pooler_output"):  # transformers >= 5
            per_image, deepstack = out.pooler_output, getattr(out, "deepstack_features", None) or []
        elif self.variant == "qwen3_vl":
            per_image, deepstack = out
        else:
            per_image, deepstack = out, []
        whole = [d if isinstance(d, torch.Tensor) else torch.cat(list(d), dim=0) for d in deepstack]
        return torch.cat(list(per_image), dim=0), whole

    def image_embeddings(self, inputs: QwenVLInputs) -> torch.Tensor:
        """(n_tokens, hidden) vision-tower output after the patch merger, all images."""
        return self._vision(inputs)[0]

    def deepstack_embeddings(self, inputs: QwenVLInputs) -> list[torch.Tensor]:
        """Qwen3-VL only: one (n_tokens, hidden) DeepStack merger output per
        ``deepstack_visual_indexes`` layer, added to the LLM states after its first layers."""
        if self.variant != "qwen3_vl":
            raise InputError("DeepStack features exist only in Qwen3-VL checkpoints.")
        return self._vision(inputs)[1]

    # ---- generation

    def decode_greedy(
        self,
        inputs: QwenVLInputs,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        on_text: TextCallback | None = None,
    ) -> Generation:
        """Greedy decoding through the shared loop (transformers' ``generate``, as the official
        code). ``extras['step_hidden']`` (T, H) is the state that predicted each new token."""
        dev = self.device
        kwargs: dict = {
            "input_ids": inputs.input_ids.to(dev),
            "attention_mask": torch.ones_like(inputs.input_ids, device=dev),
        }
        if inputs.pixel_values is not None:
            kwargs["pixel_values"] = inputs.pixel_values.to(dev, self.dtype)
            kwargs["image_grid_thw"] = inputs.image_grid_thw.to(dev)
            kwargs.update(self._mrope_kwargs(kwargs["input_ids"]))
        out = greedy_generate(
            self.model,
            self.model.model.language_model.norm,
            self.tokenizer,
            generate_kwargs=kwargs,
            prompt_length=inputs.input_ids.shape[1],
            stop_token_ids=sorted(self.stop_token_ids),
            stop_words=(),  # the official Qwen path stops on the end token only
            seg_token_id=self.seg_token_id,
            max_new_tokens=max_new_tokens,
            on_text=on_text,
            seg_before_norm=self.variant in SEG_BEFORE_FINAL_NORM,
        )
        ended = bool(out.token_ids) and out.token_ids[-1] in self.stop_token_ids
        return Generation(
            text=self._final_text(out.token_ids, ended),
            token_ids=out.token_ids,
            seg_hidden_states=out.seg_hidden_states,
            prompt=inputs.prompt,
            cancelled=out.cancelled,
            extras={"step_hidden": out.step_hidden},
        )

    def _mrope_kwargs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the installed transformers needs to give image tokens their 3-D (M-RoPE) positions.

        transformers 5 finds the image tokens through ``mm_token_type_ids`` (0 text, 1 image,
        2 video; its processor returns them) and, when they are missing, silently gives every
        token 1-D positions (Qwen2.5-VL) - different answers. 4.57 finds them from the ids and
        takes no such argument. We never use video tokens (keyframes go in as images).
        """
        if not self._rope_needs_token_types:
            return {}
        return {"mm_token_type_ids": (input_ids == self.model.config.image_token_id).to(torch.int32)}

    def _final_text(self, tokens: list[int], ended: bool) -> str:
        # Official: batch_decode(..., skip_special_tokens=False)[0].strip(), end token included;
        # we strip the same way and then drop the end token.
        text = self.tokenizer.decode(tokens, skip_special_tokens=False).strip()
        if ended:
            end = self.tokenizer.convert_ids_to_tokens(tokens[-1])
            if text.endswith(end):
                text = text[: -len(end)]
        return text

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
        """See :meth:`sa2va_ros.model.mllm.MLLM.generate`. Video keyframes go in as separate
        images, exactly like still images (the official Qwen path has no video tokens)."""
        if region_masks is not None:
            raise InputError(
                "Region (mask) prompts are not available with Sa2VA's Qwen-VL checkpoints (the "
                "official Qwen code has no visual-prompt path). Use an InternVL-based Sa2VA model "
                "such as ByteDance/Sa2VA-4B for describe(mask=...)."
            )
        if video and not images:
            raise InputError("video=True needs at least one keyframe in `images`.")
        inputs = self.prepare(text, images, history)
        return self.decode_greedy(inputs, max_new_tokens=max_new_tokens, on_text=on_text)
