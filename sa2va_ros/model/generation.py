"""Greedy generation that also returns the [SEG] hidden states, with cancellable streaming.

Shared by the MLLM adapters. It drives transformers' own ``generate`` (the loop the
official Sa2VA code uses, so the numerics are the same) and adds what Sa2VA needs:

* the last-layer hidden state of every step, taken with a forward hook on the final
  norm instead of ``output_hidden_states=True``, which would keep every layer's states
  for the whole prompt (hundreds of MB for a tiled image on a real model). The [SEG]
  states come from the norm's output or, where the official code takes them from
  before the norm (Qwen3-VL), from its input;
* stop words checked on a short tail of the answer each step: the official criterion
  decodes the whole answer every step (quadratic in its length);
* a text callback fed with incremental text, which can cancel the generation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from .errors import InputError
from .mllm import StopWhen, TextCallback

#: Decoding this many trailing tokens is enough to see any stop word.
_STOP_WORD_WINDOW = 16


@dataclass
class GreedyOutput:
    """Raw result of :func:`greedy_generate`."""

    #: New tokens only (the end token included when generation stopped on it).
    token_ids: list[int]
    #: (T, H) post-final-norm hidden state of the position that predicted token t.
    step_hidden: torch.Tensor
    #: (n_seg, H) hidden states at the positions whose *input* token is [SEG] (post- or
    #: pre-final-norm, see ``greedy_generate``'s ``seg_before_norm``).
    seg_hidden_states: torch.Tensor
    #: True when generation ended on a stop token or stop word (not on max_new_tokens / cancel).
    stopped: bool
    cancelled: bool


class IncrementalDecoder:
    """Turns a growing list of token ids into text deltas without re-decoding everything.

    Byte-level BPE may split one character over several tokens; a delta is only released
    once it no longer ends in the replacement character.
    """

    def __init__(self, tokenizer, skip_ids: Sequence[int] = ()) -> None:
        self._tokenizer = tokenizer
        self._skip = set(skip_ids)
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def push(self, token_id: int) -> str:
        if token_id in self._skip:
            return ""
        self._ids.append(token_id)
        decode = self._tokenizer.decode
        prefix_text = decode(self._ids[self._prefix : self._read], skip_special_tokens=False)
        new_text = decode(self._ids[self._prefix :], skip_special_tokens=False)
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self._ids)
            return new_text[len(prefix_text) :]
        return ""


class _StopAndStream(StoppingCriteria):
    """Stops on stop words (official quirk: newlines ignored) and feeds ``on_text``."""

    def __init__(
        self,
        tokenizer,
        prompt_length: int,
        stop_words: Sequence[str],
        stop_token_ids: Sequence[int],
        on_text: TextCallback | None,
    ) -> None:
        self._tokenizer = tokenizer
        self._prompt_length = prompt_length
        self._stop_words = tuple(stop_words)
        # A StopWhen reads no text: polled once per step, nothing decoded for it.
        self._stop_when = on_text.condition if isinstance(on_text, StopWhen) else None
        self._on_text = None if self._stop_when is not None else on_text
        self._decoder = IncrementalDecoder(tokenizer, skip_ids=stop_token_ids) if self._on_text else None
        self._seen = 0
        self._tail: list[int] = []
        self.cancelled = False
        self.stopped_on_word = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        # Only the tokens added since the last call cross to the CPU: O(1) per step.
        fresh = input_ids[0, self._prompt_length + self._seen :].tolist()
        self._seen += len(fresh)
        self._tail = (self._tail + fresh)[-_STOP_WORD_WINDOW:]
        done = False
        if self._stop_when is not None and self._stop_when():
            self.cancelled = done = True
        elif self._on_text is not None:
            for token in fresh:
                piece = self._decoder.push(token)
                if piece and self._on_text(piece) is False:
                    self.cancelled = done = True
                    break
        if self._stop_words and not done:
            # The official criterion compares the end of the decoded answer, with \r and \n
            # removed, to each stop word; the tail is enough for the same verdict.
            tail = self._tokenizer.decode(self._tail, skip_special_tokens=False)
            tail = tail.replace("\r", "").replace("\n", "")
            if any(tail.endswith(word) for word in self._stop_words):
                self.stopped_on_word = done = True
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class _LastPositionRecorder:
    """Forward hook keeping the last position of the final norm's output at every step
    (and, with ``inputs=True``, of its input: the last decoder layer's raw output)."""

    def __init__(self, inputs: bool = False) -> None:
        self.rows: list[torch.Tensor] = []
        self.input_rows: list[torch.Tensor] | None = [] if inputs else None

    def __call__(self, module: nn.Module, args, output) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        self.rows.append(hidden[0, -1].detach())
        if self.input_rows is not None:
            self.input_rows.append(args[0][0, -1].detach().clone())


def greedy_generate(
    model: nn.Module,
    final_norm: nn.Module,
    tokenizer,
    *,
    generate_kwargs: dict,
    prompt_length: int,
    stop_token_ids: Sequence[int],
    stop_words: Sequence[str],
    seg_token_id: int,
    max_new_tokens: int,
    on_text: TextCallback | None = None,
    seg_before_norm: bool = False,
) -> GreedyOutput:
    """Run ``model.generate(**generate_kwargs)`` greedily and collect Sa2VA's extras.

    ``prompt_length`` is how many leading ids of the returned sequence are the prompt
    (0 when generating from ``inputs_embeds``, where transformers returns new tokens only).
    ``final_norm`` is the language model's last norm: its output is the "last-layer hidden
    state" of the official code (transformers replaces the last entry of
    ``hidden_states`` with the normed output). ``seg_before_norm`` takes the [SEG] states
    from the norm's input instead: the official Qwen3-VL code reads
    ``generate(...).hidden_states[step][-1]``, which ``Qwen3VLForConditionalGeneration``
    (transformers 4.57, the official pin) leaves un-normed. Recording it ourselves keeps
    that choice independent of what a transformers release puts in ``hidden_states``.
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}.")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_token_ids[0]
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=list(stop_token_ids),
        pad_token_id=pad_id,
        # Qwen tokenizers have no BOS; the model's own value keeps transformers from warning.
        bos_token_id=tokenizer.bos_token_id
        if tokenizer.bos_token_id is not None
        else getattr(getattr(model, "generation_config", None), "bos_token_id", None),
    )
    criteria = _StopAndStream(tokenizer, prompt_length, stop_words, stop_token_ids, on_text)
    recorder = _LastPositionRecorder(inputs=seg_before_norm)
    handle = final_norm.register_forward_hook(recorder)
    try:
        with torch.inference_mode():
            sequences = model.generate(
                **generate_kwargs,
                generation_config=config,
                stopping_criteria=StoppingCriteriaList([criteria]),
                use_cache=True,
            )
    finally:
        handle.remove()
    token_ids = sequences[0, prompt_length:].tolist()
    if len(recorder.rows) != len(token_ids):
        raise RuntimeError(
            f"Internal error: {len(recorder.rows)} forward passes for {len(token_ids)} generated tokens; "
            "the language model ran a pass this code does not expect (prefill chunking?)."
        )
    step_hidden = torch.stack(recorder.rows) if recorder.rows else torch.zeros(0)
    # Row t (t >= 1) is the pass whose input token is token_ids[t - 1].
    seg_rows = [t for t in range(1, len(token_ids)) if token_ids[t - 1] == seg_token_id]
    seg_source = torch.stack(recorder.input_rows) if seg_before_norm and recorder.rows else step_hidden
    seg_hidden = seg_source[seg_rows] if seg_rows else step_hidden.new_zeros((0, step_hidden.shape[-1]))
    stopped = bool(token_ids) and (token_ids[-1] in set(stop_token_ids) or criteria.stopped_on_word)
    return GreedyOutput(
        token_ids=token_ids,
        step_hidden=step_hidden,
        seg_hidden_states=seg_hidden,
        stopped=stopped and not criteria.cancelled,
        cancelled=criteria.cancelled,
    )
