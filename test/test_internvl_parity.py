"""Parity of the InternVL-format MLLM half with the official Sa2VA code.

The oracles are ../shared/fixtures/sa2va-tiny-internvl (InternViT-300M + Qwen2, like Sa2VA-1B/4B)
and sa2va-tiny-internlm2 (InternViT-6B + InternLM2, like Sa2VA-26B): tiny checkpoints in the
official layout and what the official ``predict_forward`` produced on them (float32, CPU).
Every test runs on both.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sa2va_ros.model.internvl import InternVLChat
from sa2va_ros.model.internvl_preprocess import image_pixel_values, video_pixel_values
from sa2va_ros.model.loading import load_state_dict
from sa2va_ros.model.mllm import StopWhen, Turn
from sa2va_ros.model.seg_projection import load_seg_projection

ROOT = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
#: The InternVL-format fixtures; the parity tests fail (not skip) when one of them is missing.
NAMES = ("sa2va-tiny-internvl", "sa2va-tiny-internlm2")
#: The six cases every InternVL-format fixture records.
CASE_IDS = ("img_seg", "img2_seg_multi", "video_seg", "img_chat", "region_caption", "text_chat")
END_TOKEN = "<|im_end|>"

pytestmark = pytest.mark.skipif(
    not ROOT.is_dir(),
    reason=f"parity fixtures not found at {ROOT} (they live in ../shared/fixtures beside the repo; "
    "CI provides them)",
)


@dataclass
class Fixture:
    """One fixture folder: the checkpoint, its reference outputs and their tolerances."""

    name: str
    path: Path = field(init=False)
    reference: Path = field(init=False)
    cases: dict = field(init=False)
    tol: dict = field(init=False)

    def __post_init__(self) -> None:
        self.path = ROOT / self.name
        self.reference = self.path / "reference"
        manifest = json.loads((self.reference / "manifest.json").read_text())
        self.cases = {case["id"]: case for case in manifest["cases"]}
        self.tol = manifest["tolerances"]

    def rgb(self, relative: str) -> np.ndarray:
        return np.asarray(Image.open(self.reference / relative).convert("RGB"))

    def expected(self, case_id: str):
        return np.load(self.reference / "expected" / f"{case_id}.npz")

    def inputs(self, case: dict) -> tuple[list[np.ndarray], bool, np.ndarray | None]:
        """(images, video, region_masks) as the official call got them (video: the keyframes)."""
        given = case["inputs"]
        masks = None
        if "mask_prompts" in given:
            spec = given["mask_prompts"]
            masks = np.load(self.reference / spec["file"])[spec["key"]]
        if "image" in given:
            return [self.rgb(given["image"])], False, masks
        if "video_frames" in given:
            frames = [self.rgb(f) for f in given["video_frames"]]
            return frames[: case["tiles"]["n_mllm_frames"]], True, masks
        return [], False, masks

    def close(self, actual: torch.Tensor | np.ndarray, expected: np.ndarray, name: str) -> None:
        actual = actual.detach().float().cpu().numpy() if isinstance(actual, torch.Tensor) else actual
        tol = self.tol[name]
        np.testing.assert_allclose(actual, expected, atol=tol["atol"], rtol=tol.get("rtol", 0), err_msg=name)


@cache
def _fixture(name: str) -> Fixture:
    return Fixture(name)


@cache
def _model(name: str) -> InternVLChat:
    torch.backends.cuda.matmul.allow_tf32 = False
    # Eager attention in float32, as the references were recorded.
    return InternVLChat.from_pretrained(
        _fixture(name).path, device="cpu", dtype="float32", attn_implementation="eager"
    )


@cache
def _results(name: str) -> dict:
    """One prepare + generate per case, shared by the per-quantity tests below."""
    fx, model = _fixture(name), _model(name)
    out = {}
    for case_id, case in fx.cases.items():
        images, video, masks = fx.inputs(case)
        prepared = model.prepare(case["text"], images, video=video, region_masks=masks)
        out[case_id] = (prepared, model.generate_prepared(prepared))
    return out


@pytest.fixture(params=NAMES, scope="module")
def fx(request) -> Fixture:
    return _fixture(request.param)


@pytest.fixture(scope="module")
def model(fx: Fixture) -> InternVLChat:
    return _model(fx.name)


@pytest.fixture(scope="module")
def projection(fx: Fixture, model: InternVLChat):
    return load_seg_projection(load_state_dict(fx.path), model.hidden_size)


@pytest.fixture(scope="module")
def results(fx: Fixture) -> dict:
    return _results(fx.name)


def test_every_fixture_has_the_six_cases(fx: Fixture) -> None:
    assert tuple(fx.cases) == CASE_IDS


@pytest.mark.parametrize("name", ["a640", "b333"])
def test_image_tiles_match_official(fx: Fixture, name: str) -> None:
    expected = np.load(fx.reference / "expected" / f"preprocess_{name}.npz")["pixel_values"]
    actual = image_pixel_values(fx.rgb(f"inputs/{name}.png"))
    assert actual.shape == expected.shape
    fx.close(actual, expected, "pixel_values")


def test_video_keyframes_match_official(fx: Fixture) -> None:
    case = fx.cases["video_seg"]
    expected = np.load(fx.reference / case["preprocess_file"])["pixel_values"]
    frames = [fx.rgb(f) for f in case["inputs"]["video_frames"][: len(expected)]]
    fx.close(video_pixel_values(frames), expected, "pixel_values")


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_prompt_and_input_ids(fx: Fixture, case_id: str, results: dict) -> None:
    prepared, _ = results[case_id]
    expected_prompt = (fx.reference / "expected" / f"{case_id}_prompt.txt").read_text()
    assert prepared.prompt == expected_prompt
    expected_ids = fx.expected(case_id)["input_ids"]
    np.testing.assert_array_equal(prepared.input_ids[0].cpu().numpy(), expected_ids)


@pytest.mark.parametrize("case_id", [c for c in CASE_IDS if c != "text_chat"])
def test_pixel_values_and_vit_features(fx: Fixture, case_id: str, results: dict) -> None:
    prepared, _ = results[case_id]
    case = fx.cases[case_id]
    fx.close(
        prepared.pixel_values, np.load(fx.reference / case["preprocess_file"])["pixel_values"], "pixel_values"
    )
    expected = fx.expected(case_id)["vit_embeds_first_and_last_tile"]
    fx.close(torch.stack([prepared.vit_embeds[0], prepared.vit_embeds[-1]]), expected, "vit_embeds")


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_generation_matches_official(fx: Fixture, case_id: str, results: dict, model: InternVLChat) -> None:
    _, gen = results[case_id]
    case = fx.cases[case_id]
    expected = fx.expected(case_id)
    # Logits first by argmax (the designed answers have margins near 12), then by value.
    logits = model.language_model.lm_head(gen.extras["step_hidden"]).detach()
    np.testing.assert_array_equal(logits.argmax(-1).numpy(), expected["llm_step_logits"].argmax(-1))
    fx.close(gen.extras["step_hidden"], expected["llm_step_hidden"], "llm_step_hidden")
    fx.close(logits, expected["llm_step_logits"], "llm_step_logits")
    assert gen.token_ids == expected["generated_ids"].tolist()
    # The official prediction keeps the end token; Generation.text drops it.
    official = case["expected"]["prediction_text"]
    assert official.endswith(END_TOKEN)
    assert gen.text == official[: -len(END_TOKEN)].strip()
    assert not gen.cancelled and gen.extras["stopped"]


@pytest.mark.parametrize("case_id", ["img_seg", "img2_seg_multi", "video_seg"])
def test_seg_hidden_states_and_embeddings(fx: Fixture, case_id: str, results: dict, projection) -> None:
    _, gen = results[case_id]
    expected = fx.expected(case_id)
    assert gen.seg_hidden_states.shape[0] == fx.cases[case_id]["expected"]["num_seg_tokens"]
    fx.close(gen.seg_hidden_states, expected["seg_hidden_states"], "seg_hidden_states")
    with torch.inference_mode():
        embeddings = projection(gen.seg_hidden_states)
    fx.close(embeddings, expected["seg_embeddings"], "seg_embeddings")


def test_chat_answers_have_no_seg_states(fx: Fixture, results: dict) -> None:
    for case_id, case in fx.cases.items():
        if not case["expected"].get("num_seg_tokens"):
            assert results[case_id][1].seg_hidden_states.shape == (0, 64)


def test_region_prompt_cells_and_tile(fx: Fixture, results: dict) -> None:
    prepared, _ = results["region_caption"]
    expected = fx.expected("region_caption")
    np.testing.assert_array_equal(prepared.region_cells.cpu().numpy(), expected["prompt_mask_16x16"])
    np.testing.assert_array_equal(prepared.vp_tile_mask.cpu().numpy(), expected["vp_overall_mask"])
    assert (
        prepared.prompt.count("<IMG_CONTEXT>")
        == fx.cases["region_caption"]["expected"]["num_image_context_tokens"]
    )


def test_generate_entry_point_equals_prepared_path(fx: Fixture, model: InternVLChat, results: dict) -> None:
    case = fx.cases["text_chat"]
    gen = model.generate(case["text"])
    assert gen.token_ids == results["text_chat"][1].token_ids
    assert gen.prompt == results["text_chat"][0].prompt


def test_streaming_pieces_add_up_and_cancel(fx: Fixture, model: InternVLChat) -> None:
    case = fx.cases["text_chat"]
    pieces: list[str] = []
    gen = model.generate(case["text"], on_text=lambda piece: pieces.append(piece) is None)
    assert "".join(pieces).strip() == gen.text and len(pieces) > 1 and not gen.cancelled

    seen: list[str] = []
    stopped = model.generate(case["text"], on_text=lambda piece: (seen.append(piece), False)[1])
    assert stopped.cancelled and not stopped.extras["stopped"]
    assert len(stopped.token_ids) == 1 and stopped.token_ids == gen.token_ids[:1]


class _TextBlind(StopWhen):
    """A StopWhen that fails if generation hands it text: it must be polled, never fed."""

    def __call__(self, piece: str) -> bool:
        raise AssertionError(f"a StopWhen was fed text: {piece!r}")


def test_stop_when_polls_a_condition_and_reads_no_text(fx: Fixture, model: InternVLChat) -> None:
    text = fx.cases["text_chat"]["text"]
    full = model.generate(text, on_text=_TextBlind(lambda: False))
    assert full.token_ids == model.generate(text).token_ids and not full.cancelled
    polls: list[int] = []
    stopped = model.generate(text, on_text=_TextBlind(lambda: polls.append(1) or len(polls) >= 3))
    assert stopped.cancelled and stopped.token_ids == full.token_ids[:3] and len(polls) == 3


def test_max_new_tokens_truncates(fx: Fixture, model: InternVLChat) -> None:
    gen = model.generate(fx.cases["text_chat"]["text"], max_new_tokens=2)
    assert len(gen.token_ids) == 2 and not gen.extras["stopped"]


def test_sdpa_attention_gives_the_same_answer(fx: Fixture) -> None:
    sdpa = InternVLChat.from_pretrained(fx.path, attn_implementation="sdpa")
    case = fx.cases["video_seg"]
    images, video, _ = fx.inputs(case)
    gen = sdpa.generate(case["text"], images, video=video)
    expected = fx.expected("video_seg")
    assert gen.token_ids == expected["generated_ids"].tolist()
    fx.close(gen.seg_hidden_states, expected["seg_hidden_states"], "seg_hidden_states")


def test_history_keeps_the_image_in_the_first_turn(fx: Fixture, model: InternVLChat) -> None:
    square = np.zeros((32, 32, 3), dtype=np.uint8)  # one tile
    history = [Turn("What is this?", "A square."), Turn("Which colour?", "Black.")]
    prepared = model.prepare("Please segment it.", [square], history=history)
    block = "<img>" + "<IMG_CONTEXT>" * 256 + "</img>"
    assert prepared.prompt == (
        f"<|im_start|>user\n{block}\nWhat is this?<|im_end|>\n<|im_start|>assistant\nA square.<|im_end|>\n"
        "<|im_start|>user\nWhich colour?<|im_end|>\n<|im_start|>assistant\nBlack.<|im_end|>\n"
        "<|im_start|>user\nPlease segment it.<|im_end|>\n<|im_start|>assistant\n"
    )
    text_only = model.prepare("<image>Hi", history=[Turn("<image>Q", "A")])
    assert "<image>" not in text_only.prompt and text_only.pixel_values is None


def test_region_prompt_without_placeholder_follows_the_training_layout(
    fx: Fixture, model: InternVLChat
) -> None:
    square = np.zeros((32, 32, 3), dtype=np.uint8)
    mask = np.zeros((32, 32), dtype=bool)
    mask[:8, :8] = True  # the top-left quarter: 4x4 cells of the 16x16 grid
    prepared = model.prepare("What is region1?", [square], region_masks=mask)
    region = "region1<vp>" + "<IMG_CONTEXT>" * 16 + "</vp>"
    assert prepared.prompt.endswith(
        f"</img>\nThere are 1 part regions in the picture: {region}.\nWhat is region1?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert int(prepared.region_cells.sum()) == 16
