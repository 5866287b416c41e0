"""Prompt text: templates, placeholders, region text and grounded-caption parsing."""

from __future__ import annotations

import pytest

from sa2va_ros.model import prompts
from sa2va_ros.model.errors import InputError, UnsupportedModelError
from sa2va_ros.model.mllm import Turn


def test_qwen_chat_user_turn_and_history() -> None:
    template = prompts.get_template("qwen-chat")
    assert template.user_turn("Hi {x}") == "<|im_start|>user\nHi {x}<|im_end|>\n<|im_start|>assistant\n"
    rendered = template.render("And now?", [Turn("Q1", "A1 [SEG]"), Turn("Q2", "A2")])
    assert rendered == (
        "<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\nA1 [SEG]<|im_end|>\n"
        "<|im_start|>user\nQ2<|im_end|>\n<|im_start|>assistant\nA2<|im_end|>\n"
        "<|im_start|>user\nAnd now?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert template.stop_words == ("<|im_end|>", "<|endoftext|>")
    assert prompts.get_template("internlm2_chat").stop_words == ("<|im_end|>",)
    with pytest.raises(UnsupportedModelError, match="llama3"):
        prompts.get_template("llama3")


def test_image_and_video_blocks() -> None:
    assert prompts.internvl_image_tokens(2, 3) == "<img>" + "<IMG_CONTEXT>" * 6 + "</img>"
    block = "<img>" + "<IMG_CONTEXT>" * 2 + "</img>"
    assert prompts.internvl_video_tokens(3, 2) == f"{block}\n{block}\n{block}"
    assert prompts.ensure_image_placeholder("Describe.") == "<image>\nDescribe."
    assert prompts.ensure_image_placeholder("Describe.", region_prompts=True) == "<image>Describe."
    assert prompts.ensure_image_placeholder("x <image> y") == "x <image> y"
    with pytest.raises(InputError):
        prompts.ensure_image_placeholder("<image><image>")
    assert prompts.strip_image_placeholder("<image>\nHello") == "\nHello"


def test_region_prompt_text() -> None:
    text = prompts.region_prompt([2, 0])
    assert text == (
        "\nThere are 2 part regions in the picture: "
        "region1<vp><IMG_CONTEXT><IMG_CONTEXT></vp>, region2<vp></vp>.\n"
    )


def test_default_prompts_have_one_image() -> None:
    for text in (
        prompts.DEFAULT_REGION_PROMPT,
        prompts.GROUNDED_CAPTION_PROMPT,
        prompts.segmentation_prompt("x"),
    ):
        assert text.count("<image>") == 1
    assert "region1" in prompts.DEFAULT_REGION_PROMPT
    with pytest.raises(InputError):
        prompts.segmentation_prompt("  ")


def test_grounded_caption_parser() -> None:
    answer = "<p> A man </p> [SEG] rides <p> a bike </p>  [SEG] past <p> a tree </p> near [SEG] the road."
    parsed = prompts.parse_grounded_caption(answer)
    assert parsed.text == "A man rides a bike past a tree near the road."
    assert parsed.phrases == (
        prompts.GroundedPhrase("A man", 0),
        prompts.GroundedPhrase("a bike", 1),
        prompts.GroundedPhrase("a tree", None),  # text between the phrase and the next [SEG]
    )
    assert prompts.parse_grounded_caption("Nothing grounded.").phrases == ()
    assert prompts.parse_grounded_caption("[SEG] then <p>cat</p>[SEG]").phrases == (
        prompts.GroundedPhrase("cat", 1),
    )
