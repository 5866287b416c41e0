"""The few transformers APIs that moved between the releases we support (4.57 to 5.x).

Each helper hides one move, so the adapters read the same on every release; the behaviour
differences that change numbers (M-RoPE token types, image-feature outputs) are handled
where they matter, in the adapters, with a comment naming the release.
"""

from __future__ import annotations

import contextlib


def no_init_weights() -> contextlib.AbstractContextManager:
    """transformers' context that skips random weight initialisation while building a model.

    Every parameter is overwritten by the checkpoint right after, so drawing random values
    first would only cost time. transformers 5 moved it from ``modeling_utils`` to
    ``initialization``.
    """
    try:
        from transformers.initialization import no_init_weights as skip
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights as skip
    return skip()


def qwen2_vl_pil_image_processor():
    """The PIL (slow) Qwen2-VL image processor class, whatever else is installed.

    Its resize is PIL bicubic, like ``qwen_vl_utils`` and the official recordings. The fast
    processor resizes with torchvision (other numbers), and transformers 5 makes it THE
    ``Qwen2VLImageProcessor`` as soon as torchvision is installed, so the class is named by
    its module here: ``image_processing_pil_qwen2_vl`` (5.x) or ``image_processing_qwen2_vl``
    (4.x, where that module is the PIL one).
    """
    try:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil as processor,
        )
    except ImportError:  # transformers 4.x
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import (
            Qwen2VLImageProcessor as processor,
        )
    return processor


#: Fewer base tokens than this is no real vocabulary: byte-level BPE and byte-fallback
#: SentencePiece models both hold at least the 256 byte tokens.
MIN_BASE_VOCABULARY = 256


def require_base_vocabulary(tokenizer, where: object) -> None:
    """Refuse a tokenizer without its vocabulary files.

    transformers 5 builds a Qwen2 tokenizer from tokenizer_config.json alone when
    tokenizer.json / vocab.json / merges.txt are missing: it has the added tokens and nothing
    else, and encodes ordinary text to nothing. 4.57 raised instead. Both now end here.
    """
    from .errors import CheckpointError

    base = int(getattr(tokenizer, "vocab_size", 0) or 0)
    if base < MIN_BASE_VOCABULARY:
        raise CheckpointError(
            f"{where}: the tokenizer has no vocabulary ({base} base tokens): its files "
            "(tokenizer.json, or vocab.json + merges.txt) are missing. Download the model again."
        )
