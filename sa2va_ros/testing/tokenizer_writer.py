"""The tiny byte-level BPE tokenizer of test checkpoints, saved as a Qwen2 tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from sa2va_ros.model import prompts

TinyFormat = Literal["internvl", "qwen_vl"]

END_OF_TEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

#: Added tokens in the order of the real tokenizers: Qwen2's specials, then the tokens of
#: the MLLM family (InternVL2.5/3 or Qwen-VL), then Sa2VA's own.
ADDED_TOKENS: dict[str, tuple[str, ...]] = {
    "internvl": (END_OF_TEXT, IM_START, IM_END)
    + ("<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>")
    + prompts.SA2VA_ADDED_TOKENS,
    "qwen_vl": (END_OF_TEXT, IM_START, IM_END)
    + ("<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>")
    + ("<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>")
    + ("<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
    + prompts.SA2VA_ADDED_TOKENS,
}

#: Qwen2's pre-tokenizer split pattern (contractions, letters, single digits, punctuation, spaces).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

#: Text the tiny BPE is trained on: the words of Sa2VA's prompts and answers, so prompts
#: tokenize into a realistic number of pieces.
TRAINING_TEXT = """\
Please segment the red mug in this image.
Can you segment the person on the left? Sure, it is [SEG].
Sure, [SEG]. It is [SEG]. Sure, the segmentation result is [SEG].
Please describe the image in one sentence. A red square on a blue background.
Could you please give me a brief description of the image? Please respond with interleaved
segmentation masks for the corresponding parts of the answer.
<p> A man </p> [SEG] is riding <p> a bicycle </p> [SEG] down <p> the street </p> [SEG].
There are 2 part regions in the picture: region1, region2.
Can you provide me with a detailed description of the region in the picture marked by region1?
What is in the video? Please segment the moving square. Track the green circle and the yellow
rectangle. Where is the cup on the table next to the laptop? The robot arm picks up the box.
Hello! How are you? I am fine, thanks. What can you see? I see a dog, a cat and a chair.
The quick brown fox jumps over the lazy dog near the window at the top right corner, 1 2 3 4 5.
"""
TOKENIZER_VOCAB_SIZE = 600

# --- configs ----------------------------------------------------------------------------------


# --- weights ----------------------------------------------------------------------------------


# --- tokenizer --------------------------------------------------------------------------------


def write_tiny_tokenizer(out_dir: Path, format: TinyFormat = "internvl"):
    """Train a byte-level BPE in milliseconds and save it as a Qwen2 tokenizer.

    Writes tokenizer.json (fast) and vocab.json + merges.txt (slow), tokenizer_config.json,
    special_tokens_map.json and added_tokens.json, as the real checkpoints have them.
    """
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import Qwen2TokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    bpe.train_from_iterator(TRAINING_TEXT.splitlines(), trainer)
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ADDED_TOKENS[format]])
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=bpe,
        bos_token=None,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        unk_token=None,
        additional_special_tokens=[IM_START, IM_END],
        errors="replace",
        add_prefix_space=False,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        model_max_length=32768,
    )
    tokenizer.save_pretrained(str(out_dir))
    _complete_official_files(Path(out_dir), bpe, tokenizer)
    return tokenizer


def _complete_official_files(out_dir: Path, bpe, tokenizer) -> None:
    """Write the tokenizer files a real Qwen2 checkpoint has that transformers 5 no longer saves
    (vocab.json + merges.txt, added_tokens.json, special_tokens_map.json, added_tokens_decoder),
    so a test checkpoint has the official layout whichever transformers wrote it. With 4.57
    every file is already there and nothing changes."""
    import json

    if not (out_dir / "vocab.json").exists() or not (out_dir / "merges.txt").exists():
        bpe.model.save(str(out_dir))
    added = {token.content: index for index, token in sorted(tokenizer.added_tokens_decoder.items())}
    if not (out_dir / "added_tokens.json").exists():
        (out_dir / "added_tokens.json").write_text(json.dumps(added, indent=2, sort_keys=True) + "\n")
    if not (out_dir / "special_tokens_map.json").exists():
        special = {
            "additional_special_tokens": [IM_START, IM_END],
            "eos_token": IM_END,
            "pad_token": END_OF_TEXT,
        }
        (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    config_file = out_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    if "added_tokens_decoder" not in config:
        flags = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
        config["added_tokens_decoder"] = {str(i): {"content": t, **flags} for t, i in added.items()}
        config_file.write_text(json.dumps(config, indent=2) + "\n")
