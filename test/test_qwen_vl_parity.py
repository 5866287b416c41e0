"""The Qwen-VL adapter against the official Sa2VA outputs, and on tiny Qwen2.5-VL / Qwen3-VL models.

The parity oracles are ../shared/fixtures/sa2va-tiny-qwen25vl and sa2va-tiny-qwen3vl: tiny
Sa2VA-Qwen2.5-VL / Sa2VA-Qwen3-VL checkpoints in the official layout and what the official
``predict_forward`` produced on them (float32, CPU). The loading rules are checked on the
Qwen2.5-VL one; tiny random checkpoints of both variants, written by the test writers, are read
back by the real loader.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sa2va_ros.model.checkpoint import inspect_checkpoint
from sa2va_ros.model.errors import CheckpointError, InputError, UnsupportedModelError
from sa2va_ros.model.hf_compat import qwen2_vl_pil_image_processor
from sa2va_ros.model.loading import load_state_dict
from sa2va_ros.model.mllm import Turn
from sa2va_ros.model.qwen_vl import (
    KEY_PREFIXES,
    QwenVLChat,
    build_model,
    detect_variant,
    pre_resize_size,
)
from sa2va_ros.model.seg_projection import load_seg_projection
from sa2va_ros.testing.qwen_vl_writer import tiny_qwen_vl_parts

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
FIXTURE = FIXTURES / "sa2va-tiny-qwen25vl"
QWEN3_FIXTURE = FIXTURES / "sa2va-tiny-qwen3vl"
CASES = ("img_seg", "img2_seg_multi", "video_seg", "img_chat", "text_chat")
NUM_KEYFRAMES = 5  # the official video path gives the MLLM the first 5 frames


def _need_fixture(path: Path = FIXTURE) -> None:
    if not path.is_dir():
        pytest.skip(
            f"{path} is missing: the parity fixtures live in the shared/ folder beside the project "
            "checkout (CI always has it)."
        )


_CHATS: dict[Path, QwenVLChat] = {}


def _chat_for(path: Path) -> QwenVLChat:
    _need_fixture(path)
    if path not in _CHATS:
        torch.backends.cuda.matmul.allow_tf32 = False
        _CHATS[path] = QwenVLChat.from_checkpoint(inspect_checkpoint(path), device="cpu", dtype=torch.float32)
    return _CHATS[path]


def _manifest_for(path: Path) -> dict:
    _need_fixture(path)
    return json.loads((path / "reference" / "manifest.json").read_text())


@pytest.fixture(scope="module")
def manifest() -> dict:
    return _manifest_for(FIXTURE)


@pytest.fixture(scope="module")
def chat() -> QwenVLChat:
    return _chat_for(FIXTURE)


def _case(manifest: dict, case_id: str) -> dict:
    return next(c for c in manifest["cases"] if c["id"] == case_id)


def _images(case: dict, fixture: Path = FIXTURE) -> list[np.ndarray]:
    ref = fixture / "reference"
    inputs = case["inputs"]
    if "image" in inputs:
        return [np.asarray(Image.open(ref / inputs["image"]).convert("RGB"))]
    if "video_frames" in inputs:
        frames = inputs["video_frames"][:NUM_KEYFRAMES]
        return [np.asarray(Image.open(ref / f).convert("RGB")) for f in frames]
    return []


def _close(actual: np.ndarray, expected: np.ndarray, tol: dict, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} vs {expected.shape}"
    diff = float(np.abs(actual - expected).max()) if actual.size else 0.0
    ok = np.allclose(actual, expected, atol=tol["atol"], rtol=tol.get("rtol", 0.0))
    assert ok, f"{what}: max abs diff {diff:.3g} above atol {tol['atol']} / rtol {tol.get('rtol', 0.0)}"


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("fixture", [FIXTURE, QWEN3_FIXTURE], ids=["qwen25vl", "qwen3vl"])
@pytest.mark.parametrize("case_id", CASES)
def test_parity_with_official(fixture: Path, case_id: str) -> None:
    chat, manifest = _chat_for(fixture), _manifest_for(fixture)
    case = _case(manifest, case_id)
    tols = manifest["tolerances"]
    expected = np.load(fixture / "reference" / case["expected"]["arrays_file"])
    images = _images(case, fixture)

    inputs = chat.prepare(case["text"], images)
    assert inputs.prompt == (fixture / "reference" / "expected" / f"{case_id}_prompt.txt").read_text()
    np.testing.assert_array_equal(inputs.input_ids[0].numpy(), expected["input_ids"])
    if images:
        pre = np.load(fixture / "reference" / case["preprocess_file"])
        np.testing.assert_array_equal(inputs.image_grid_thw.numpy(), pre["image_grid_thw"])
        _close(inputs.pixel_values.numpy(), pre["pixel_values"], tols["pixel_values"], "pixel_values")
    else:
        assert inputs.pixel_values is None
    if "visual_embeds_first_256" in expected:
        embeds = chat.image_embeddings(inputs)[:256].numpy()
        _close(embeds, expected["visual_embeds_first_256"], tols["vit_embeds"], "visual embeddings")
    if "deepstack_embeds_first_256" in expected:
        deepstack = torch.stack([d[:256] for d in chat.deepstack_embeddings(inputs)]).numpy()
        _close(deepstack, expected["deepstack_embeds_first_256"], tols["vit_embeds"], "deepstack embeddings")

    gen = chat.generate(case["text"], images, video=case["kind"] == "video")
    assert gen.prompt == inputs.prompt
    assert gen.token_ids == expected["generated_ids"].tolist()
    # The official prediction keeps the end token; Generation.text drops it.
    assert gen.text == case["expected"]["prediction_text"].removesuffix("<|im_end|>")
    assert not gen.cancelled

    hidden = gen.extras["step_hidden"]
    _close(hidden.numpy(), expected["llm_step_hidden"], tols["llm_step_hidden"], "llm_step_hidden")
    with torch.inference_mode():
        logits = chat.model.lm_head(hidden).numpy()
    np.testing.assert_array_equal(logits.argmax(-1), expected["llm_step_logits"].argmax(-1))
    _close(logits, expected["llm_step_logits"], tols["llm_step_logits"], "llm_step_logits")

    n_seg = case["expected"]["generated_tokens"].count("[SEG]")
    assert gen.seg_hidden_states.shape == (n_seg, chat.hidden_size)
    if n_seg:
        _close(
            gen.seg_hidden_states.numpy(),
            expected["seg_hidden_states"],
            tols["seg_hidden_states"],
            "seg hidden",
        )
        projection = load_seg_projection(load_state_dict(fixture), chat.hidden_size)
        with torch.inference_mode():
            seg_embeddings = projection(gen.seg_hidden_states).numpy()
        _close(seg_embeddings, expected["seg_embeddings"], tols["seg_embeddings"], "seg embeddings")


def test_streaming_text_matches_answer_and_can_cancel(chat: QwenVLChat, manifest: dict) -> None:
    case = _case(manifest, "img2_seg_multi")
    images = _images(case)
    pieces: list[str] = []
    gen = chat.generate(case["text"], images, on_text=lambda piece: pieces.append(piece) is None)
    assert "".join(pieces) == gen.text == "Sure, [SEG] and [SEG]."

    seen: list[str] = []
    stopped = chat.generate(case["text"], images, on_text=lambda piece: seen.append(piece) or False)
    assert stopped.cancelled
    assert len(stopped.token_ids) == 1 and stopped.token_ids == gen.token_ids[:1]


def test_max_new_tokens_cuts_the_answer(chat: QwenVLChat, manifest: dict) -> None:
    case = _case(manifest, "img2_seg_multi")
    gen = chat.generate(case["text"], _images(case), max_new_tokens=4)
    assert gen.token_ids == [352, 11, 220, 619]
    # The last token is [SEG], never fed back: no hidden state for it (as the official code).
    assert gen.seg_hidden_states.shape == (0, chat.hidden_size)
    assert gen.text == "Sure, [SEG]"


def test_prompt_rules(chat: QwenVLChat) -> None:
    image = np.zeros((64, 96, 3), np.uint8)
    # Without <image> the protocol puts "<image>\n" first; the official code then removes it.
    assert chat.prepare("Hi", [image]).prompt == chat.prepare("<image>\nHi", [image]).prompt
    # History becomes earlier chat turns: the text as it was asked, without its image.
    prompt = chat.prepare("And now?", [], history=[Turn("<image>\nWhat is it?", "A cat.")]).prompt
    assert prompt.endswith(
        "<|im_start|>user\n\nWhat is it?<|im_end|>\n<|im_start|>assistant\nA cat.<|im_end|>\n"
        "<|im_start|>user\nAnd now?<|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(InputError, match="Region .mask. prompts"):
        chat.generate("<image>\nWhat is region1?", [image], region_masks=np.ones((1, 64, 96), bool))
    with pytest.raises(InputError, match="control token"):
        chat.prepare("look <|image_pad|>", [image])
    with pytest.raises(InputError, match="keyframe"):
        chat.generate("<image>\nx", [], video=True)
    assert chat.supports_region_prompts is False


@pytest.mark.parametrize(
    ("height", "width"), [(480, 640), (500, 333), (240, 320), (10, 13), (9000, 7000), (50, 3000)]
)
def test_pre_resize_matches_transformers_smart_resize(height: int, width: int) -> None:
    import sys

    # The module of the PIL processor we use has transformers' smart_resize (4.x and 5.x).
    smart_resize = sys.modules[qwen2_vl_pil_image_processor().__module__].smart_resize
    # transformers' helper implements the same rule as qwen_vl_utils for sides >= 28.
    expected = smart_resize(height, width, factor=28, min_pixels=4 * 28 * 28, max_pixels=16384 * 28 * 28)
    assert pre_resize_size(height, width) == expected


def test_image_processor_is_the_pil_one(chat: QwenVLChat) -> None:
    """Whatever preprocessor_config.json names and whether torchvision is installed: the fast
    (torchvision) processor resizes differently from the official recordings."""
    from transformers.image_processing_utils import BaseImageProcessor

    processor = type(chat.image_processor)
    assert processor is qwen2_vl_pil_image_processor()
    assert "torchvision" not in processor.__module__ and "fast" not in processor.__module__
    assert not any("Torchvision" in c.__name__ or c.__name__.endswith("Fast") for c in processor.__mro__)
    assert issubclass(processor, BaseImageProcessor)


def test_pre_resize_refuses_extreme_aspect_ratio() -> None:
    with pytest.raises(InputError, match="aspect ratio"):
        pre_resize_size(10, 2500)


# --------------------------------------------------------------------------- loading rules


def test_loader_is_strict_about_weight_names(chat: QwenVLChat) -> None:
    info = inspect_checkpoint(FIXTURE)
    state = load_state_dict(FIXTURE)
    missing = dict(state)
    del missing["model.model.language_model.norm.weight"]
    expected = r"1 missing tensor\(s\) \['model\.model\.language_model\.norm\.weight'\]"
    with pytest.raises(CheckpointError, match=expected):
        build_model(info.config, missing)
    extra = dict(
        state, **{"model.model.language_model.extra.weight": torch.zeros(1), "junk.bias": torch.zeros(1)}
    )
    with pytest.raises(CheckpointError, match=r"2 unexpected"):
        build_model(info.config, extra)


def test_tied_checkpoint_may_store_either_embedding(chat: QwenVLChat) -> None:
    """Sa2VA-Qwen2_5-VL-3B / Qwen3-VL-4B tie lm_head to the input embeddings: saving keeps one."""
    config = json.loads(json.dumps(inspect_checkpoint(FIXTURE).config))
    config["text_config"]["tie_word_embeddings"] = True
    state = load_state_dict(FIXTURE)
    for dropped, kept in (
        ("model.lm_head.weight", "model.model.language_model.embed_tokens.weight"),
        ("model.model.language_model.embed_tokens.weight", "model.lm_head.weight"),
    ):
        partial = {k: v for k, v in state.items() if k != dropped}
        model = build_model(config, partial)
        assert model.lm_head.weight is model.model.language_model.embed_tokens.weight
        assert torch.equal(model.lm_head.weight, state[kept])
    config["text_config"]["tie_word_embeddings"] = False
    with pytest.raises(CheckpointError, match="lm_head.weight"):
        build_model(config, {k: v for k, v in state.items() if k != "model.lm_head.weight"})


def test_legacy_weight_names_load_the_same_model(chat: QwenVLChat) -> None:
    """Checkpoints saved by transformers < 4.52 name the LLM model.model.* and the ViT model.visual.*."""
    state = load_state_dict(FIXTURE)
    legacy = {}
    for key, value in state.items():
        key = key.replace("model.model.language_model.", "model.model.").replace(
            "model.model.visual.", "model.visual."
        )
        legacy[key] = value
    assert legacy.keys() != state.keys()
    model = build_model(inspect_checkpoint(FIXTURE).config, legacy)
    reference = chat.model.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, reference[name]), name


def test_tokenizer_without_sa2va_tokens_is_refused(tmp_path: Path) -> None:
    _need_fixture()
    for item in FIXTURE.iterdir():
        if item.is_file():
            shutil.copy(item, tmp_path / item.name)
    tokenizer = json.loads((tmp_path / "tokenizer.json").read_text())
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["content"] != "[SEG]"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer))
    for name in ("added_tokens.json", "tokenizer_config.json"):
        data = json.loads((tmp_path / name).read_text())
        data.pop("[SEG]", None)
        data.get("added_tokens_decoder", {}).pop("619", None)
        (tmp_path / name).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=r"\[SEG\]"):
        QwenVLChat.from_checkpoint(inspect_checkpoint(tmp_path))


def test_unknown_qwen_family_is_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="Qwen2.5-VL"):
        detect_variant(
            {"vision_config": {"model_type": "qwen2_vl"}, "text_config": {"model_type": "qwen2_vl_text"}}
        )


# --------------------------------------------------------------------------- tiny checkpoints


def _write_tiny(directory: Path, variant: str, force_seg: bool, seed: int = 0) -> Path:
    """A tiny checkpoint in the official layout (MLLM part + [SEG] projection + tokenizer)."""
    from safetensors.torch import save_file

    from sa2va_ros.testing.tokenizer_writer import write_tiny_tokenizer

    directory.mkdir(parents=True, exist_ok=True)
    write_tiny_tokenizer(directory, "qwen_vl")
    config, state = tiny_qwen_vl_parts(directory, seed=seed, force_seg=force_seg, variant=variant)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"))
    return directory


@pytest.mark.parametrize("variant", ["qwen2_5_vl", "qwen3_vl"])
def test_tiny_checkpoint_round_trip_and_forced_seg(tmp_path: Path, variant: str) -> None:
    path = _write_tiny(tmp_path / variant, variant, force_seg=True)
    info = inspect_checkpoint(path)
    assert info.format == "qwen_vl" and detect_variant(info.config) == variant
    state = load_state_dict(path)
    assert all(k.startswith(tuple(p for p, _ in KEY_PREFIXES) + ("text_hidden_fcs.",)) for k in state)
    chat = QwenVLChat.from_checkpoint(info, state)
    assert chat.variant == variant
    # Loading and saving are inverses: every stored tensor is in the model, unchanged.
    native = chat.model.state_dict()
    for official, native_prefix in KEY_PREFIXES:
        for key, value in state.items():
            if key.startswith(official):
                assert torch.equal(native[native_prefix + key[len(official) :]], value), key

    vocab = chat.tokenizer.get_vocab()
    seg_id, end_id = vocab["[SEG]"], vocab["<|im_end|>"]
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (90, 150, 3), dtype=np.uint8)
    inputs = chat.prepare("<image>\nPlease segment the cat.", [image])
    n_image_tokens = int((inputs.input_ids == info.config["image_token_id"]).sum())
    assert n_image_tokens == int(inputs.image_grid_thw.prod(-1).sum()) // 4 > 0
    for images, video in (([image], False), ([image, image[::-1], image[:, ::-1]], True), ([], False)):
        gen = chat.generate("Please segment the cat.", images, video=video, max_new_tokens=8)
        assert gen.text == "[SEG]" and gen.token_ids == [seg_id, end_id], (variant, gen.text)
        assert gen.seg_hidden_states.shape == (1, 64)
        assert torch.isfinite(gen.seg_hidden_states).all()
    embedding = load_seg_projection(state, chat.hidden_size)(gen.seg_hidden_states)
    assert embedding.shape == (1, 256)


def test_tiny_qwen3_vl_random_weights_generate_to_the_limit(tmp_path: Path) -> None:
    path = _write_tiny(tmp_path / "q3", "qwen3_vl", force_seg=False, seed=3)
    chat = QwenVLChat.from_checkpoint(inspect_checkpoint(path))
    image = np.full((64, 64, 3), 200, np.uint8)
    first = chat.generate("<image>\nDescribe it.", [image], max_new_tokens=6)
    again = chat.generate("<image>\nDescribe it.", [image], max_new_tokens=6)
    assert first.token_ids == again.token_ids  # greedy: deterministic
    assert len(first.token_ids) == 6 or first.token_ids[-1] in chat.stop_token_ids
    # Qwen3-VL's default template has no system turn; Qwen2.5-VL's has.
    assert first.prompt.startswith("<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>\n")


def test_tiny_qwen2_5_template_renders_like_the_official_one(tmp_path: Path) -> None:
    """The tiny Qwen2.5-VL template (written by us) gives the official template's prompts."""
    _need_fixture()
    path = _write_tiny(tmp_path / "q25", "qwen2_5_vl", force_seg=False)
    chat = QwenVLChat.from_checkpoint(inspect_checkpoint(path))
    official = (FIXTURE / "chat_template.jinja").read_text()
    image = np.zeros((40, 40, 3), np.uint8)
    history = [Turn("What is it?", "A [SEG].")]
    for text, images, past in (("Hello!", [], ()), ("<image>\nSegment it.", [image, image], history)):
        ours = chat.prepare(text, images, past).prompt
        chat.chat_template = official
        assert chat.prepare(text, images, past).prompt == ours
        chat.chat_template = (path / "chat_template.jinja").read_text()


def test_qwen3_vl_writer_makes_checkpoints_of_any_size(tmp_path: Path) -> None:
    """The Qwen3-VL writer's shape overrides give a checkpoint the real loader and the facade run:
    head_dim that is not hidden / heads (as the real 4B), three DeepStack layers, more depth."""
    from sa2va_ros.model import Sa2VA
    from sa2va_ros.testing.tiny_checkpoint import write_tiny_checkpoint

    text = {
        "hidden_size": 96,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "head_dim": 32,
        "rope_scaling": {"rope_type": "default", "mrope_section": [6, 5, 5], "mrope_interleaved": True},
    }
    vision = {"depth": 3, "deepstack_visual_indexes": [0, 1, 2], "out_hidden_size": 96}
    path = write_tiny_checkpoint(
        tmp_path / "q3big",
        "qwen_vl",
        llm="qwen3",
        force_seg=True,
        sam2_image_size=256,
        text_config=text,
        vision_config=vision,
    )
    config = json.loads((path / "config.json").read_text())
    assert config["text_config"]["head_dim"] == 32 and config["text_config"]["hidden_size"] == 96
    assert config["vision_config"]["deepstack_visual_indexes"] == [0, 1, 2]
    model = Sa2VA.from_pretrained(str(path), device="cpu", dtype="float32")
    assert model.mllm.variant == "qwen3_vl" and model.mllm.hidden_size == 96
    image = np.random.default_rng(2).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    result = model.segment(image, "Please segment the cat.")
    assert result.text == "[SEG]" and len(result.masks) == 1 and result.masks[0].shape == (64, 80)
    with pytest.raises(ValueError, match="qwen_vl"):
        write_tiny_checkpoint(tmp_path / "bad", "internvl", text_config={"hidden_size": 32})
