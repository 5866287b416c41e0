"""Parity of the InternVL-format MLLM half with the official Sa2VA code.

The oracle is ../shared/fixtures/sa2va-tiny-internvl: a tiny checkpoint in the official
layout and what the official ``predict_forward`` produced on it (float32, CPU).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sa2va_ros.model.checkpoint import load_state_dict
from sa2va_ros.model.internvl import InternVLChat
from sa2va_ros.model.internvl_preprocess import image_pixel_values, video_pixel_values
from sa2va_ros.model.mllm import Turn
from sa2va_ros.model.seg_projection import load_seg_projection

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "sa2va-tiny-internvl"
REFERENCE = FIXTURE / "reference"
END_TOKEN = "<|im_end|>"

pytestmark = pytest.mark.skipif(
    not (REFERENCE / "manifest.json").exists(),
    reason=f"parity fixtures not found at {FIXTURE} (they live in ../shared/fixtures beside the repo; "
    "CI provides them)",
)


def _manifest() -> dict:
    return (
        json.loads((REFERENCE / "manifest.json").read_text())
        if (REFERENCE / "manifest.json").exists()
        else {}
    )


MANIFEST = _manifest()
CASES = {case["id"]: case for case in MANIFEST.get("cases", [])}
TOL = MANIFEST.get("tolerances", {})


def _rgb(relative: str) -> np.ndarray:
    return np.asarray(Image.open(REFERENCE / relative).convert("RGB"))


def _inputs(case: dict) -> tuple[list[np.ndarray], bool, np.ndarray | None]:
    """(images, video, region_masks) as the official call got them (video: the keyframes)."""
    given = case["inputs"]
    masks = None
    if "mask_prompts" in given:
        spec = given["mask_prompts"]
        masks = np.load(REFERENCE / spec["file"])[spec["key"]]
    if "image" in given:
        return [_rgb(given["image"])], False, masks
    if "video_frames" in given:
        frames = [_rgb(f) for f in given["video_frames"]]
        return frames[: case["tiles"]["n_mllm_frames"]], True, masks
    return [], False, masks


def _close(actual: torch.Tensor | np.ndarray, expected: np.ndarray, name: str) -> None:
    actual = actual.detach().float().cpu().numpy() if isinstance(actual, torch.Tensor) else actual
    tol = TOL[name]
    np.testing.assert_allclose(actual, expected, atol=tol["atol"], rtol=tol.get("rtol", 0), err_msg=name)


@pytest.fixture(scope="module")
def model() -> InternVLChat:
    torch.backends.cuda.matmul.allow_tf32 = False
    # Eager attention in float32, as the references were recorded.
    return InternVLChat.from_pretrained(FIXTURE, device="cpu", dtype="float32", attn_implementation="eager")


@pytest.fixture(scope="module")
def projection(model: InternVLChat):
    return load_seg_projection(load_state_dict(FIXTURE), model.hidden_size)


@pytest.fixture(scope="module")
def results(model: InternVLChat) -> dict:
    """One prepare + generate per case, shared by the per-quantity tests below."""
    out = {}
    for case_id, case in CASES.items():
        images, video, masks = _inputs(case)
        prepared = model.prepare(case["text"], images, video=video, region_masks=masks)
        out[case_id] = (prepared, model.generate_prepared(prepared))
    return out


@pytest.mark.parametrize("name", ["a640", "b333"])
def test_image_tiles_match_official(name: str) -> None:
    expected = np.load(REFERENCE / "expected" / f"preprocess_{name}.npz")["pixel_values"]
    actual = image_pixel_values(_rgb(f"inputs/{name}.png"))
    assert actual.shape == expected.shape
    _close(actual, expected, "pixel_values")


def test_video_keyframes_match_official() -> None:
    case = CASES["video_seg"]
    expected = np.load(REFERENCE / case["preprocess_file"])["pixel_values"]
    frames = [_rgb(f) for f in case["inputs"]["video_frames"][: len(expected)]]
    _close(video_pixel_values(frames), expected, "pixel_values")


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_prompt_and_input_ids(case_id: str, results: dict) -> None:
    prepared, _ = results[case_id]
    expected_prompt = (REFERENCE / "expected" / f"{case_id}_prompt.txt").read_text()
    assert prepared.prompt == expected_prompt
    expected_ids = np.load(REFERENCE / "expected" / f"{case_id}.npz")["input_ids"]
    np.testing.assert_array_equal(prepared.input_ids[0].cpu().numpy(), expected_ids)


@pytest.mark.parametrize("case_id", sorted(c for c in CASES if CASES[c]["inputs"]))
def test_pixel_values_and_vit_features(case_id: str, results: dict) -> None:
    prepared, _ = results[case_id]
    case = CASES[case_id]
    _close(
        prepared.pixel_values, np.load(REFERENCE / case["preprocess_file"])["pixel_values"], "pixel_values"
    )
    expected = np.load(REFERENCE / "expected" / f"{case_id}.npz")["vit_embeds_first_and_last_tile"]
    _close(torch.stack([prepared.vit_embeds[0], prepared.vit_embeds[-1]]), expected, "vit_embeds")


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_generation_matches_official(case_id: str, results: dict, model: InternVLChat) -> None:
    _, gen = results[case_id]
    case = CASES[case_id]
    expected = np.load(REFERENCE / "expected" / f"{case_id}.npz")
    # Logits first by argmax (the designed answers have margins near 12), then by value.
    logits = model.language_model.lm_head(gen.extras["step_hidden"]).detach()
    np.testing.assert_array_equal(logits.argmax(-1).numpy(), expected["llm_step_logits"].argmax(-1))
    _close(gen.extras["step_hidden"], expected["llm_step_hidden"], "llm_step_hidden")
    _close(logits, expected["llm_step_logits"], "llm_step_logits")
    assert gen.token_ids == expected["generated_ids"].tolist()
    # The official prediction keeps the end token; Generation.text drops it.
    official = case["expected"]["prediction_text"]
    assert official.endswith(END_TOKEN)
    assert gen.text == official[: -len(END_TOKEN)].strip()
    assert not gen.cancelled and gen.extras["stopped"]


@pytest.mark.parametrize("case_id", sorted(c for c in CASES if CASES[c]["expected"].get("num_seg_tokens")))
def test_seg_hidden_states_and_embeddings(case_id: str, results: dict, projection) -> None:
    _, gen = results[case_id]
    expected = np.load(REFERENCE / "expected" / f"{case_id}.npz")
    assert gen.seg_hidden_states.shape[0] == CASES[case_id]["expected"]["num_seg_tokens"]
    _close(gen.seg_hidden_states, expected["seg_hidden_states"], "seg_hidden_states")
    with torch.inference_mode():
        embeddings = projection(gen.seg_hidden_states)
    _close(embeddings, expected["seg_embeddings"], "seg_embeddings")


def test_chat_answers_have_no_seg_states(results: dict) -> None:
    for case_id, case in CASES.items():
        if not case["expected"].get("num_seg_tokens"):
            assert results[case_id][1].seg_hidden_states.shape == (0, 64)


def test_region_prompt_cells_and_tile(results: dict) -> None:
    prepared, _ = results["region_caption"]
    expected = np.load(REFERENCE / "expected" / "region_caption.npz")
    np.testing.assert_array_equal(prepared.region_cells.cpu().numpy(), expected["prompt_mask_16x16"])
    np.testing.assert_array_equal(prepared.vp_tile_mask.cpu().numpy(), expected["vp_overall_mask"])
    assert (
        prepared.prompt.count("<IMG_CONTEXT>")
        == CASES["region_caption"]["expected"]["num_image_context_tokens"]
    )


def test_generate_entry_point_equals_prepared_path(model: InternVLChat, results: dict) -> None:
    case = CASES["text_chat"]
    gen = model.generate(case["text"])
    assert gen.token_ids == results["text_chat"][1].token_ids
    assert gen.prompt == results["text_chat"][0].prompt


def test_streaming_pieces_add_up_and_cancel(model: InternVLChat) -> None:
    case = CASES["text_chat"]
    pieces: list[str] = []
    gen = model.generate(case["text"], on_text=lambda piece: pieces.append(piece) is None)
    assert "".join(pieces).strip() == gen.text and len(pieces) > 1 and not gen.cancelled

    seen: list[str] = []
    stopped = model.generate(case["text"], on_text=lambda piece: (seen.append(piece), False)[1])
    assert stopped.cancelled and not stopped.extras["stopped"]
    assert len(stopped.token_ids) == 1 and stopped.token_ids == gen.token_ids[:1]


def test_max_new_tokens_truncates(model: InternVLChat) -> None:
    gen = model.generate(CASES["text_chat"]["text"], max_new_tokens=2)
    assert len(gen.token_ids) == 2 and not gen.extras["stopped"]


def test_sdpa_attention_gives_the_same_answer() -> None:
    sdpa = InternVLChat.from_pretrained(FIXTURE, attn_implementation="sdpa")
    case = CASES["video_seg"]
    images, video, _ = _inputs(case)
    gen = sdpa.generate(case["text"], images, video=video)
    expected = np.load(REFERENCE / "expected" / "video_seg.npz")
    assert gen.token_ids == expected["generated_ids"].tolist()
    _close(gen.seg_hidden_states, expected["seg_hidden_states"], "seg_hidden_states")


def test_history_keeps_the_image_in_the_first_turn(model: InternVLChat) -> None:
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


def test_region_prompt_without_placeholder_follows_the_training_layout(model: InternVLChat) -> None:
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
