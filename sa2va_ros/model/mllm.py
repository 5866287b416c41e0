"""The contract between Sa2VA and its multimodal language model (MLLM) adapters.

Sa2VA pairs SAM-2 with one of several MLLM families (InternVL, Qwen2.5-VL, Qwen3-VL).
Each family has its own adapter module (``internvl.py``, ``qwen_vl.py``) implementing
:class:`MLLM`; the rest of the core only talks to this protocol, so adding a family
never touches segmentation or tracking code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

#: Called with each newly decoded piece of text while generating; return False to stop
#: early (used for cancellable streaming answers).
TextCallback = Callable[[str], bool]


class StopWhen:
    """A :data:`TextCallback` that reads no text: generation stops once ``condition()`` is true.

    Cancelling a request needs no text, and saying so lets each backend check it cheaply:
    in-process no piece is decoded per token only to be thrown away, and the language process
    checks a shared flag per token instead of sending every piece to the caller and waiting for
    its verdict (a pipe round trip per decoded piece, each taking the interpreter lock the
    tracking loop needs). ``condition`` is polled from another thread (or, across the
    language process, every :data:`~sa2va_ros.model.language_process.STOP_POLL_S` seconds), so
    it must be cheap and thread-safe, e.g. ``threading.Event.is_set``.
    """

    def __init__(self, condition: Callable[[], bool]) -> None:
        self.condition = condition

    def __call__(self, piece: str) -> bool:
        return not self.condition()


SEG_TOKEN = "[SEG]"
DEFAULT_MAX_NEW_TOKENS = 2048


@dataclass(frozen=True)
class Turn:
    """One past exchange of a multi-turn chat: the user's text and the model's answer."""

    user: str
    assistant: str


@dataclass
class Generation:
    """The raw output of one greedy generation."""

    #: Decoded answer, special tokens such as [SEG] kept, the end token removed.
    text: str
    #: Generated token ids, the end token included when generation stopped on it.
    token_ids: list[int]
    #: (n_seg, hidden) last-layer hidden states at every position whose *input* token is
    #: [SEG], in order: one row per object mask.
    seg_hidden_states: torch.Tensor
    #: The full prompt string after templating (useful for debugging and parity tests).
    prompt: str = ""
    #: True when a TextCallback asked to stop before the end token.
    cancelled: bool = False
    extras: dict = field(default_factory=dict)


class MLLM(Protocol):
    """What every MLLM adapter provides."""

    hidden_size: int
    supports_region_prompts: bool

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
        """Greedy-generate an answer to ``text`` exactly as the official code does.

        ``text`` follows the official convention: ``<image>`` marks where the image(s)
        go; when images are given and ``text`` has no ``<image>``, ``<image>\\n`` is put
        in front. ``images`` are RGB uint8 (H, W, 3); with ``video=True`` they are video
        keyframes (no tiling). ``region_masks`` (n, H, W) bool are region prompts
        (InternVL only). ``history`` holds earlier turns (text only).
        """
        ...
