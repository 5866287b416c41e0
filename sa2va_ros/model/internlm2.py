"""InternLM2, the language model of Sa2VA-8B / -26B, on transformers' own Llama classes.

transformers has no InternLM2 class, and the official one needs ``trust_remote_code``
(and no longer generates on recent transformers). InternLM2 is a Llama with other
parameter names and one fused projection, so it runs as ``LlamaForCausalLM``:

* :data:`TOP_LEVEL_NAMES` / :data:`LAYER_NAMES` rename the tensors;
* ``attention.wqkv`` is split by :func:`split_wqkv` (while streaming, through
  :func:`llama_targets`). It is packed per key-value head: for each kv head, its
  ``num_heads / num_kv_heads`` query heads, then its key head, then its value head, each
  ``head_dim`` rows (not [all q | all k | all v]);
* :func:`llama_config` maps the config, RoPE scaling (dynamic NTK) included.

The SentencePiece tokenizer is :class:`InternLM2Tokenizer`, a reimplementation of the
official slow ``InternLM2Tokenizer`` on the ``sentencepiece`` library: same ids, same
decoded text (including its quirks), independent of the transformers version.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch

from .errors import CheckpointError

ARCHITECTURE = "InternLM2ForCausalLM"
MODEL_TYPE = "internlm2"

# --- weights: official InternLM2 name <-> transformers Llama name ---------------------------

#: Outside the decoder layers.
TOP_LEVEL_NAMES: dict[str, str] = {
    "model.tok_embeddings.weight": "model.embed_tokens.weight",
    "model.norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
#: The untied output head (absent when the config ties it to the embedding).
OFFICIAL_LM_HEAD = "output.weight"
#: Inside decoder layer ``i``; both sides are under ``model.layers.{i}.``.
LAYER_NAMES: dict[str, str] = {
    "attention_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attention.wo.weight": "self_attn.o_proj.weight",
    "attention.wo.bias": "self_attn.o_proj.bias",  # config "bias": true
    "feed_forward.w1.weight": "mlp.gate_proj.weight",
    "feed_forward.w3.weight": "mlp.up_proj.weight",
    "feed_forward.w2.weight": "mlp.down_proj.weight",
}
#: The fused attention input projection and the three Llama tensors it holds.
FUSED_QKV: dict[str, tuple[str, str, str]] = {
    "attention.wqkv.weight": (
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
    ),
    "attention.wqkv.bias": ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
}
_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)$")


def head_layout(config: dict) -> tuple[int, int, int]:
    """(num_heads, num_kv_heads, head_dim) of an official InternLM2 ``llm_config``."""
    values = {**OFFICIAL_LLM_DEFAULTS, **config}
    heads = int(values["num_attention_heads"])
    kv_heads = int(values.get("num_key_value_heads") or heads)
    return heads, kv_heads, int(values["hidden_size"]) // heads


def split_wqkv(wqkv: torch.Tensor, config: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused ``wqkv`` weight (or bias) -> (q, k, v) in Llama's layout.

    Query head ``h * groups + g`` is the g-th query row block of kv group h, which is also
    the head Llama's ``repeat_kv`` pairs with kv head h: no permutation beyond the unpack.
    """
    heads, kv_heads, head_dim = head_layout(config)
    groups = heads // kv_heads
    rest = wqkv.shape[1:]
    if wqkv.shape[0] != (heads + 2 * kv_heads) * head_dim:
        raise CheckpointError(
            f"attention.wqkv has {wqkv.shape[0]} rows; the config ({heads} heads, {kv_heads} key-value "
            f"heads of {head_dim}) needs {(heads + 2 * kv_heads) * head_dim}."
        )
    packed = wqkv.reshape(kv_heads, groups + 2, head_dim, *rest)
    q = packed[:, :groups].reshape(heads * head_dim, *rest)
    k = packed[:, groups].reshape(kv_heads * head_dim, *rest)
    v = packed[:, groups + 1].reshape(kv_heads * head_dim, *rest)
    return q.contiguous(), k.contiguous(), v.contiguous()


def _piece(config: dict, index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A loader ``Slot.take``: piece ``index`` (0 q, 1 k, 2 v) of a fused ``wqkv``."""
    return lambda wqkv: split_wqkv(wqkv, config)[index]


def llama_targets(name: str, config: dict) -> list[tuple]:
    """Where one official InternLM2 tensor (``language_model.`` stripped) goes in
    LlamaForCausalLM, for the streaming loader: [(llama key, None, take or None)].

    A fused ``wqkv`` feeds q/k/v, each taking its piece while it is read (one tensor at a
    time, shapes checked on meta first). Names no table knows pass through unchanged, so
    strict loading reports them.
    """
    if name in TOP_LEVEL_NAMES:
        return [(TOP_LEVEL_NAMES[name], None, None)]
    layer = _LAYER.match(name)
    if layer and layer.group(2) in FUSED_QKV:
        prefix = f"model.layers.{layer.group(1)}."
        return [(prefix + part, None, _piece(config, k)) for k, part in enumerate(FUSED_QKV[layer.group(2)])]
    if layer and layer.group(2) in LAYER_NAMES:
        return [(f"model.layers.{layer.group(1)}.{LAYER_NAMES[layer.group(2)]}", None, None)]
    return [(name, None, None)]


def to_llama_state(official: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """:func:`llama_targets` applied to a whole dict (the test writers check their output
    with it; the loader streams the same targets instead)."""
    native: dict[str, torch.Tensor] = {}
    for name, tensor in official.items():
        for key, _, take in llama_targets(name, config):
            native[key] = tensor if take is None else take(tensor)
    return native


def official_name(llama_name: str) -> str:
    """The official name of one Llama tensor (for error messages)."""
    for official, native in TOP_LEVEL_NAMES.items():
        if native == llama_name:
            return official
    layer = _LAYER.match(llama_name)
    if layer:
        rest = layer.group(2)
        for official, native in LAYER_NAMES.items():
            if native == rest:
                return f"model.layers.{layer.group(1)}.{official}"
        for official, parts in FUSED_QKV.items():
            if rest in parts:
                return f"model.layers.{layer.group(1)}.{official}"
    return llama_name


# --- config -----------------------------------------------------------------------------------

#: Official ``InternLM2Config`` defaults, for fields a config.json leaves out.
OFFICIAL_LLM_DEFAULTS = {
    "vocab_size": 103168,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-6,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "tie_word_embeddings": False,
    "bias": True,
    "rope_theta": 10000,
    "rope_scaling": None,
}
#: Official field -> LlamaConfig field (the RoPE fields are handled by :func:`rope_kwargs`).
LLAMA_CONFIG_FIELDS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_hidden_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "num_key_value_heads": "num_key_value_heads",
    "hidden_act": "hidden_act",
    "max_position_embeddings": "max_position_embeddings",
    "initializer_range": "initializer_range",
    "rms_norm_eps": "rms_norm_eps",
    "pad_token_id": "pad_token_id",
    "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",
    "tie_word_embeddings": "tie_word_embeddings",
    "bias": "attention_bias",
}
#: InternLM2 ``rope_scaling.type`` -> transformers ``rope_type``. The official dynamic NTK
#: (base * (factor * len / max_pos - (factor - 1)) ** (d / (d - 2)) beyond max_pos) is
#: transformers' "dynamic"; "linear" divides positions by the factor in both.
ROPE_TYPES = {"dynamic": "dynamic", "linear": "linear"}


def is_internlm2(llm_config: dict) -> bool:
    """True when an InternVL-format ``llm_config`` describes an InternLM2 language model."""
    archs = llm_config.get("architectures") or []
    return ARCHITECTURE in archs or llm_config.get("model_type") == MODEL_TYPE


def rope_kwargs(config: dict) -> dict:
    """The LlamaConfig RoPE arguments: ``rope_parameters`` on transformers 5, else theta + scaling."""
    from transformers import LlamaConfig

    values = {**OFFICIAL_LLM_DEFAULTS, **config}
    theta = float(values["rope_theta"])
    scaling = values.get("rope_scaling")
    params: dict = {"rope_type": "default"}
    if scaling:
        kind = scaling.get("type") or scaling.get("rope_type")
        if kind not in ROPE_TYPES:
            raise CheckpointError(
                f"llm_config.rope_scaling type '{kind}' is not one InternLM2 defines "
                f"({', '.join(ROPE_TYPES)})."
            )
        params = {"rope_type": ROPE_TYPES[kind], "factor": float(scaling["factor"])}
    if "rope_parameters" in LlamaConfig().to_dict():  # transformers >= 5
        return {"rope_parameters": {**params, "rope_theta": theta}}
    return {"rope_theta": theta, "rope_scaling": None if params["rope_type"] == "default" else params}


def llama_config(llm_config: dict):
    """transformers ``LlamaConfig`` computing what the official InternLM2 computes."""
    from transformers import LlamaConfig

    values = {**OFFICIAL_LLM_DEFAULTS, **llm_config}
    kwargs = {dst: values[src] for src, dst in LLAMA_CONFIG_FIELDS.items()}
    kwargs["num_key_value_heads"] = kwargs["num_key_value_heads"] or kwargs["num_attention_heads"]
    return LlamaConfig(**kwargs, **rope_kwargs(llm_config), mlp_bias=False, attention_dropout=0.0)


# --- tokenizer ----------------------------------------------------------------------------------

TOKENIZER_MODEL = "tokenizer.model"


def _content(token) -> str | None:
    """A special token given as a string or as an AddedToken dict in tokenizer_config.json."""
    return token.get("content") if isinstance(token, dict) else token


def _clean_up(text: str) -> str:
    """transformers' ``clean_up_tokenization``, which the official tokenizer always applies."""
    for before, after in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(before, after)
    return text


class InternLM2Tokenizer:
    """The InternLM2 SentencePiece tokenizer without remote code.

    Reproduces the official slow tokenizer (``tokenization_internlm2.py`` on transformers'
    ``PreTrainedTokenizer``), which Sa2VA-8B / -26B use:

    * ``encode`` splits the text on added tokens (longest match first), encodes the rest
      with SentencePiece and prepends ``<s>`` (``add_bos_token``);
    * the chat tokens are pieces of the SentencePiece model; some files name them
      ``[UNUSED_TOKEN_14x]`` and only ``added_tokens_decoder`` gives their text;
    * ``decode`` joins added tokens that are not special (``[SEG]``, ``<p>``, ...) and special
      ones beyond the SentencePiece vocab with spaces, and applies transformers'
      ``clean_up_tokenization`` inside each stretch: ``Sure,  [SEG] .<|im_end|>``.
    """

    def __init__(
        self,
        model_file: Path,
        added_tokens: dict[int, str],
        *,
        bos_token: str = "<s>",
        eos_token: str = "</s>",
        unk_token: str = "<unk>",
        pad_token: str | None = "</s>",
        additional_special_tokens: Sequence[str] = (),
        add_bos_token: bool = True,
        add_eos_token: bool = False,
    ) -> None:
        import sentencepiece as spm

        self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        self.sp_size = self.sp.get_piece_size()
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        self._decoder: dict[int, str] = dict(added_tokens)
        self._encoder: dict[str, int] = {text: i for i, text in self._decoder.items()}
        self.bos_token, self.eos_token, self.unk_token, self.pad_token = (
            bos_token,
            eos_token,
            unk_token,
            pad_token,
        )
        self.additional_special_tokens = tuple(additional_special_tokens)
        named = (bos_token, eos_token, unk_token, pad_token)
        self.all_special_tokens = tuple(
            dict.fromkeys([t for t in named if t] + list(additional_special_tokens))
        )
        special = set(self.all_special_tokens)
        # Added tokens decoded as their own text (the official "legacy added tokens").
        self._standalone = {t for t in self._encoder if t not in special} | {
            t for t in self.additional_special_tokens if self.convert_tokens_to_ids(t) >= self.sp_size
        }
        # Longest first: at one position the longest added token wins, as transformers' trie does.
        alternatives = sorted(self._encoder, key=len, reverse=True)
        self._split = (
            re.compile("(" + "|".join(re.escape(t) for t in alternatives) + ")") if alternatives else None
        )

    @property
    def vocab_size(self) -> int:
        """Pieces of the SentencePiece model, added tokens excluded (transformers' meaning)."""
        return self.sp_size

    # -- ids of the named tokens (the official class takes bos/eos from the SentencePiece model)

    @property
    def bos_token_id(self) -> int:
        return self.sp.bos_id()

    @property
    def eos_token_id(self) -> int:
        return self.sp.eos_id()

    @property
    def unk_token_id(self) -> int:
        return self.sp.unk_id()

    @property
    def pad_token_id(self) -> int | None:
        return None if self.pad_token is None else self.convert_tokens_to_ids(self.pad_token)

    def __len__(self) -> int:
        return len(self.get_vocab())

    def get_vocab(self) -> dict[str, int]:
        """Piece -> id, with the added tokens' text in place of their pieces' names."""
        vocab = {self.convert_ids_to_tokens(i): i for i in range(self.sp_size)}
        vocab.update(self._encoder)
        return vocab

    def convert_tokens_to_ids(self, token: str) -> int:
        if token in self._encoder:
            return self._encoder[token]
        return self.sp.piece_to_id(token)

    def convert_ids_to_tokens(self, index: int) -> str:
        if index in self._decoder:
            return self._decoder[index]
        if not 0 <= index < self.sp_size:
            raise IndexError(
                f"token id {index} is outside the vocabulary (0..{self.sp_size - 1} + added tokens)."
            )
        return self.sp.id_to_piece(index)

    def tokenize(self, text: str) -> list[str]:
        """Added tokens whole, the text between them as SentencePiece pieces."""
        parts = self._split.split(text) if self._split else [text]
        tokens: list[str] = []
        for part in parts:
            if not part:
                continue
            tokens.extend([part] if part in self._encoder else self.sp.encode(part, out_type=str))
        return tokens

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.convert_tokens_to_ids(t) for t in self.tokenize(text)]
        if add_special_tokens:
            ids = ([self.bos_token_id] if self.add_bos_token else []) + ids
            ids = ids + ([self.eos_token_id] if self.add_eos_token else [])
        return ids

    def _pieces_to_string(self, tokens: list[str]) -> str:
        """The official ``convert_tokens_to_string``: special tokens verbatim, a space before each run."""
        out, pending, prev_special = "", [], False
        for token in tokens:
            if token in self.all_special_tokens:
                out += ("" if prev_special else " ") + self.sp.decode(pending) + token
                pending, prev_special = [], True
            else:
                pending.append(token)
                prev_special = False
        # The official code then adds a prefix space and drops the first character: a no-op.
        return _clean_up(out + self.sp.decode(pending))

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        if isinstance(ids, torch.Tensor):
            ids = ids.flatten().tolist()
        texts: list[str] = []
        run: list[str] = []
        for index in ids:
            token = self.convert_ids_to_tokens(int(index))
            if skip_special_tokens and token in self.all_special_tokens:
                continue
            if token in self._standalone:
                if run and (text := self._pieces_to_string(run)):
                    texts.append(text)
                run = []
                texts.append(token)
            else:
                run.append(token)
        if run:
            texts.append(self._pieces_to_string(run))
        return " ".join(texts)


def load_tokenizer(path: Path) -> InternLM2Tokenizer:
    """The InternLM2 tokenizer of a checkpoint: ``tokenizer.model`` + ``tokenizer_config.json``
    (+ ``added_tokens.json``, ``special_tokens_map.json`` when present)."""

    def read(name: str) -> dict:
        file = path / name
        if not file.exists():
            return {}
        try:
            return json.loads(file.read_text())
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"{file} is not valid JSON ({exc}): the file is corrupt.") from exc

    model_file = path / TOKENIZER_MODEL
    if not model_file.exists():
        raise CheckpointError(
            f"{path}: {TOKENIZER_MODEL} is missing. An InternLM2 checkpoint (Sa2VA-8B / -26B) needs its "
            "SentencePiece tokenizer.model beside config.json."
        )
    config = read("tokenizer_config.json")
    special_map = read("special_tokens_map.json")
    added: dict[int, str] = {
        int(i): t["content"] for i, t in (config.get("added_tokens_decoder") or {}).items()
    }
    for text, index in read("added_tokens.json").items():
        added.setdefault(int(index), text)

    def named(key: str, default: str | None) -> str | None:
        return _content(config.get(key, special_map.get(key, default)))

    extra = config.get("additional_special_tokens") or special_map.get("additional_special_tokens") or []
    try:
        return InternLM2Tokenizer(
            model_file,
            added,
            bos_token=named("bos_token", "<s>"),
            eos_token=named("eos_token", "</s>"),
            unk_token=named("unk_token", "<unk>"),
            pad_token=named("pad_token", "</s>"),
            additional_special_tokens=[_content(t) for t in extra],
            add_bos_token=bool(config.get("add_bos_token", True)),
            add_eos_token=bool(config.get("add_eos_token", False)),
        )
    except (OSError, RuntimeError) as exc:  # sentencepiece raises these for a corrupt model file
        raise CheckpointError(f"{model_file} cannot be read as a SentencePiece model ({exc}).") from exc
