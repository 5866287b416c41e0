"""Prompt text of Sa2VA as data: chat templates, image/region placeholders, default questions.

Everything here is plain string work with no model or tokenizer, so both MLLM adapters
(``internvl.py`` and ``qwen_vl.py``) and the tests share one definition of what the
official code feeds the language model. The strings follow the official Sa2VA code
(``projects/sa2va/hf/models/templates.py`` and ``modeling_sa2va_chat.py``) character for
character: a single changed newline changes the token ids and the answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import InputError, UnsupportedModelError
from .mllm import SEG_TOKEN, Turn

# --- special tokens -------------------------------------------------------------------------

IMAGE_PLACEHOLDER = "<image>"
IMG_START_TOKEN = "<img>"
IMG_END_TOKEN = "</img>"
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"
VP_START_TOKEN = "<vp>"
VP_END_TOKEN = "</vp>"
PHRASE_START_TOKEN = "<p>"
PHRASE_END_TOKEN = "</p>"

#: Tokens Sa2VA adds to every tokenizer (the training configs' ``special_tokens``).
SA2VA_ADDED_TOKENS = (SEG_TOKEN, PHRASE_START_TOKEN, PHRASE_END_TOKEN, VP_START_TOKEN, VP_END_TOKEN)
#: Tokens the InternVL image path needs on top of those.
INTERNVL_IMAGE_TOKENS = (IMG_START_TOKEN, IMG_END_TOKEN, IMG_CONTEXT_TOKEN)
#: Every token an InternVL-format Sa2VA tokenizer must know as a single id.
INTERNVL_REQUIRED_TOKENS = SA2VA_ADDED_TOKENS + INTERNVL_IMAGE_TOKENS


# --- chat templates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatTemplate:
    """One xtuner-style chat template, as the official ``PROMPT_TEMPLATE`` entries.

    ``instruction`` holds ``{input}``; ``suffix`` ends an assistant answer and ``sep``
    follows it when the conversation continues (xtuner's training format).
    """

    name: str
    system: str
    instruction: str
    suffix: str
    sep: str
    stop_words: tuple[str, ...]

    def user_turn(self, text: str) -> str:
        """The prompt of one user turn, ending where the assistant starts writing."""
        # str.replace rather than str.format: user text may contain braces.
        return self.instruction.replace("{input}", text)

    def render(self, text: str, history: Sequence[Turn] = (), system: str | None = None) -> str:
        """The full prompt: optional system turn, past turns, then the new user turn.

        The official ``predict_forward`` renders only the user turn (no system prompt) and
        prepends an opaque ``past_text`` for follow-ups; past turns are rendered here the
        way xtuner formats them during training: ``user turn + answer + suffix + sep``.
        """
        parts = [self.system.replace("{system}", system)] if system else []
        for turn in history:
            parts.append(self.user_turn(turn.user) + turn.assistant + self.suffix + self.sep)
        parts.append(self.user_turn(text))
        return "".join(parts)


_IM_SYSTEM = "<|im_start|>system\n{system}<|im_end|>\n"
_IM_INSTRUCTION = "<|im_start|>user\n{input}<|im_end|>\n<|im_start|>assistant\n"

#: The templates Sa2VA checkpoints name in ``config.json["template"]`` (official
#: templates.py): Sa2VA-1B/4B/InternVL3-* use ``qwen_chat``; Sa2VA-8B/26B ``internlm2_chat``.
TEMPLATES: dict[str, ChatTemplate] = {
    "qwen_chat": ChatTemplate(
        name="qwen_chat",
        system=_IM_SYSTEM,
        instruction=_IM_INSTRUCTION,
        suffix="<|im_end|>",
        sep="\n",
        stop_words=("<|im_end|>", "<|endoftext|>"),
    ),
    "internlm2_chat": ChatTemplate(
        name="internlm2_chat",
        system=_IM_SYSTEM,
        instruction=_IM_INSTRUCTION,
        suffix="<|im_end|>",
        sep="\n",
        stop_words=("<|im_end|>",),
    ),
}


def get_template(name: str) -> ChatTemplate:
    """Look up a template by the name stored in config.json (``-`` and ``_`` both accepted)."""
    key = (name or "").replace("-", "_")
    if key not in TEMPLATES:
        raise UnsupportedModelError(
            f"config.json names chat template '{name}', which is not one Sa2VA uses; "
            f"known templates: {', '.join(TEMPLATES)}."
        )
    return TEMPLATES[key]


# --- image placeholders -----------------------------------------------------------------------


def image_token_block(num_tokens: int) -> str:
    """``<img><IMG_CONTEXT>*num_tokens</img>``: one image (all its tiles) or one frame."""
    return IMG_START_TOKEN + IMG_CONTEXT_TOKEN * num_tokens + IMG_END_TOKEN


def internvl_image_tokens(num_tiles: int, tokens_per_tile: int = 256) -> str:
    """The expansion of ``<image>`` for one tiled image (every tile inside one block)."""
    return image_token_block(num_tiles * tokens_per_tile)


def internvl_video_tokens(num_frames: int, tokens_per_frame: int = 256) -> str:
    """The expansion of ``<image>`` for video keyframes: one block per frame, joined by ``\\n``.

    The official code builds ``(block + "\\n") * n`` and strips it, which is this join.
    """
    return "\n".join([image_token_block(tokens_per_frame)] * num_frames)


def region_prompt(cell_counts: Sequence[int]) -> str:
    """The region (visual prompt) text that follows the image tokens.

    ``cell_counts[i]`` is the number of true cells of region i on the 16x16 grid; each
    cell becomes one ``<IMG_CONTEXT>`` between ``<vp>`` and ``</vp>``.
    """
    regions = [
        f"region{i + 1}{VP_START_TOKEN}{IMG_CONTEXT_TOKEN * int(k)}{VP_END_TOKEN}"
        for i, k in enumerate(cell_counts)
    ]
    return f"\nThere are {len(regions)} part regions in the picture: " + ", ".join(regions) + ".\n"


def ensure_image_placeholder(text: str, region_prompts: bool = False) -> str:
    """Put ``<image>`` in front of ``text`` when it has none (images were given).

    With region prompts only ``<image>`` is added: the region text that replaces it
    starts with its own newline (the official/training layout is ``<image>Question``).
    """
    count = text.count(IMAGE_PLACEHOLDER)
    if count > 1:
        raise InputError(
            f"The prompt contains {count} '{IMAGE_PLACEHOLDER}' placeholders; Sa2VA takes one image "
            "(or one set of video keyframes) per question, marked by at most one '<image>'."
        )
    if count == 1:
        return text
    return IMAGE_PLACEHOLDER + ("" if region_prompts else "\n") + text


def expand_image_placeholder(text: str, replacement: str) -> str:
    """Replace the (single) ``<image>`` of ``text`` with ``replacement``."""
    return text.replace(IMAGE_PLACEHOLDER, replacement)


def strip_image_placeholder(text: str) -> str:
    """Text-only questions: the official code deletes any ``<image>``."""
    return text.replace(IMAGE_PLACEHOLDER, "")


# --- default questions ------------------------------------------------------------------------

#: Asked by ``describe()`` when the caller gives no prompt: the first of the official
#: region questions (datasets/common.py VP_QUESTIONS) with ``<region>`` -> ``region1``,
#: written ``<image>Question`` as the region training data is.
DEFAULT_REGION_PROMPT = (
    "<image>Can you provide me with a detailed description of the region in the picture marked by region1?"
)

#: Asked by ``caption()``: the grounded-caption question of the Sa2VA model cards.
GROUNDED_CAPTION_PROMPT = (
    "<image>\nCould you please give me a brief description of the image? Please respond with "
    "interleaved segmentation masks for the corresponding parts of the answer."
)


def segmentation_prompt(target: str) -> str:
    """A referring-segmentation question in the style of the training data."""
    target = target.strip()
    if not target:
        raise InputError("The object to segment is empty: say what to segment, e.g. 'the red mug'.")
    return f"<image>\nPlease segment {target}."


# --- grounded captions ------------------------------------------------------------------------


@dataclass(frozen=True)
class GroundedPhrase:
    """A phrase of a grounded caption and the index of its [SEG] (= mask) in the answer."""

    phrase: str
    #: Index among all [SEG] tokens of the answer, i.e. of the mask; None when the model
    #: wrote the phrase without a [SEG].
    seg_index: int | None


@dataclass(frozen=True)
class GroundedCaption:
    """A parsed grounded caption: readable text and the grounded phrases in order."""

    text: str
    phrases: tuple[GroundedPhrase, ...]


_PHRASE_OR_SEG = re.compile(
    re.escape(PHRASE_START_TOKEN) + r"(.*?)" + re.escape(PHRASE_END_TOKEN) + r"|" + re.escape(SEG_TOKEN),
    re.DOTALL,
)
_TAG = re.compile(r"<[^<>]*>")


def parse_grounded_caption(answer: str) -> GroundedCaption:
    """Parse ``... <p> phrase </p> [SEG] ...`` into text and (phrase, [SEG] index) pairs.

    A phrase owns the next [SEG] when only whitespace separates them (the training
    format); any other [SEG] still counts for the numbering, so ``seg_index`` always
    points at the matching mask. The text drops tags and [SEG] and squeezes spaces, as
    the official GCG evaluation does.
    """
    phrases: list[GroundedPhrase] = []
    seg_count = 0
    pending: str | None = None  # a phrase waiting for its [SEG]
    last_end = 0
    for match in _PHRASE_OR_SEG.finditer(answer):
        between = answer[last_end : match.start()]
        if pending is not None and between.strip():
            phrases.append(GroundedPhrase(pending, None))
            pending = None
        if match.group(0) == SEG_TOKEN:
            if pending is not None:
                phrases.append(GroundedPhrase(pending, seg_count))
                pending = None
            seg_count += 1
        else:
            if pending is not None:
                phrases.append(GroundedPhrase(pending, None))
            pending = match.group(1).strip()
        last_end = match.end()
    if pending is not None:
        phrases.append(GroundedPhrase(pending, None))
    text = _TAG.sub("", answer.replace(SEG_TOKEN, ""))
    text = " ".join(text.split())
    return GroundedCaption(text=text, phrases=tuple(phrases))
