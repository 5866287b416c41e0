"""SAM-2 half of Sa2VA against the official outputs recorded in ../shared/fixtures.

The expected ``seg_embeddings`` are fed straight to SAM-2, so these tests check the SAM-2 half
(preprocessing, backbone, language-prompted decoder, keyframes + memory tracking) independently
of the language model. The video case runs through the streaming tracker, frame by frame.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from sa2va_ros.model.checkpoint import SAM2_PREFIX
from sa2va_ros.model.errors import CheckpointError
from sa2va_ros.model.loading import load_state_dict
from sa2va_ros.model.sam2_config import build_sam2, sam2_model_config
from sa2va_ros.model.sam2_prompt import SA2VA_MEAN, Sa2VASam2, load_sam2_weights, run_sam_heads
from sa2va_ros.model.tracker import StreamingTracker, TrackerConfig
from sa2va_ros.testing.sam2_writer import sam2_official_state_dict, tiny_sam2_config

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
NAMES = ("sa2va-tiny-internvl", "sa2va-tiny-qwen25vl")
IMAGE_CASES = (("img_seg", "a640"), ("img2_seg_multi", "b333"))


def _fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_dir():
        pytest.skip(
            f"{path} is missing: the parity fixtures come from the shared/ folder beside the project "
            "checkout (tiny official-layout checkpoints with the official code's outputs)."
        )
    return path


@cache
def _state(name: str) -> dict[str, torch.Tensor]:
    return load_state_dict(_fixture(name))


@cache
def _sam2(name: str) -> Sa2VASam2:
    path = _fixture(name)
    return Sa2VASam2.from_checkpoint(_state(name), json.loads((path / "sam2_config.json").read_text()))


@cache
def _tolerances(name: str) -> dict:
    return json.loads((_fixture(name) / "reference" / "manifest.json").read_text())["tolerances"]


def _image(name: str, stem: str) -> np.ndarray:
    return np.asarray(Image.open(_fixture(name) / "reference" / "inputs" / f"{stem}.png").convert("RGB"))


def _expected(name: str, case: str) -> dict[str, np.ndarray]:
    return dict(np.load(_fixture(name) / "reference" / "expected" / f"{case}.npz"))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _check_logits(name: str, ours: np.ndarray, ref: np.ndarray, what: str) -> None:
    tol = _tolerances(name)["low_res_logits"]
    np.testing.assert_allclose(ours, ref, atol=tol["atol"], rtol=tol["rtol"], err_msg=what)
    assert np.mean(np.sign(ours) == np.sign(ref)) >= 0.999, what


# ----------------------------------------------------------------------------- loading


@pytest.mark.parametrize("name", NAMES)
def test_official_state_dict_is_exact_inverse_of_loading(name: str) -> None:
    ours = sam2_official_state_dict(_sam2(name).model)
    ref = {k: v for k, v in _state(name).items() if k.startswith(SAM2_PREFIX)}
    assert sorted(ours) == sorted(ref)
    assert any(k.endswith(".g_weight") for k in ours)
    for key, value in ref.items():
        assert torch.equal(ours[key], value), key


def test_tiny_config_round_trip() -> None:
    config = tiny_sam2_config(image_size=128)
    json.dumps(config)  # the schema is plain JSON, like the fixtures' sam2_config.json
    model = build_sam2(config, seed=3)
    saved = sam2_official_state_dict(model)
    again = build_sam2(config, seed=4)
    assert not torch.equal(again.no_mem_embed, model.no_mem_embed)
    load_sam2_weights(again, saved)
    assert sorted(sam2_official_state_dict(again)) == sorted(saved)
    for key, value in sam2_official_state_dict(again).items():
        assert torch.equal(value, saved[key]), key
    assert again.image_size == 128
    assert again.memory_attention.layers[0].self_attn.freqs_cis.shape[0] == (128 // 16) ** 2


def test_fixture_schema_matches_tiny_config_schema() -> None:
    fixture = json.loads((_fixture(NAMES[0]) / "sam2_config.json").read_text())
    ours = tiny_sam2_config()
    assert set(fixture) <= set(ours) | {"_comment"}
    assert set(ours["changed_from_sa2va_hiera_l"]) <= set(fixture["changed_from_sa2va_hiera_l"])
    big = tiny_sam2_config(image_size=256)
    assert "image_size" in big["changed_from_sa2va_hiera_l"] and sam2_model_config(big).image_size == 256


def test_hiera_l_default_has_sa2va_flags() -> None:
    cfg = sam2_model_config(None)
    assert cfg.image_encoder.trunk.embed_dim == 144
    assert list(cfg.image_encoder.trunk.stages) == [2, 6, 36, 4]
    assert cfg.memory_attention.num_layers == 4
    extra = OmegaConf.to_container(cfg.sam_mask_decoder_extra_args)
    assert extra == {
        "dynamic_multimask_via_stability": True,
        "dynamic_multimask_stability_delta": 0.05,
        "dynamic_multimask_stability_thresh": 0.98,
    }
    assert cfg.num_maskmem == 7 and cfg.multimask_output_for_tracking and cfg.use_obj_ptrs_in_encoder
    assert not cfg.add_tpos_enc_to_obj_ptrs and cfg.only_obj_ptrs_in_the_past_for_eval


def test_strict_loading_names_every_problem() -> None:
    config = tiny_sam2_config(image_size=64)
    model = build_sam2(config)
    state = sam2_official_state_dict(model)
    bad = dict(state)
    missing = SAM2_PREFIX + "no_mem_embed"
    del bad[missing]
    bad[SAM2_PREFIX + "surprise.weight"] = torch.zeros(1)
    key = SAM2_PREFIX + "obj_ptr_proj.layers.0.weight"
    bad[key] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError) as err:
        load_sam2_weights(build_sam2(config), bad)
    text = str(err.value)
    assert "1 missing" in text and "no_mem_embed" in text
    assert "1 unexpected" in text and "surprise.weight" in text
    assert "1 tensor(s) of the wrong shape" in text and "obj_ptr_proj.layers.0.weight" in text
    with pytest.raises(CheckpointError, match="no 'grounding_encoder"):
        load_sam2_weights(model, {})


def test_config_refuses_unknown_or_unlisted_changes() -> None:
    config = tiny_sam2_config(image_size=64)
    config["changed_from_sa2va_hiera_l"].append("image_encoder.trunk.no_such_field")
    config["model"]["image_encoder"]["trunk"]["no_such_field"] = 1
    with pytest.raises(CheckpointError, match="no_such_field"):
        sam2_model_config(config)
    config = tiny_sam2_config(image_size=64)
    config["model"]["num_maskmem"] = 3  # changed but not listed
    with pytest.raises(CheckpointError, match="num_maskmem"):
        sam2_model_config(config)


# ----------------------------------------------------------------------------- images


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("stem", "frames"), [("a640", ["a640"]), ("b333", ["b333"]), ("v320", None)])
def test_preprocess(name: str, stem: str, frames: list[str] | None) -> None:
    expected = np.load(_fixture(name) / "reference" / "expected" / f"preprocess_{stem}.npz")[
        "sam2_pixel_values"
    ]
    frames = frames or [f"v320_frame{i:02d}" for i in range(expected.shape[0])]
    sam2 = _sam2(name)
    ours = np.stack([sam2.preprocess(_image(name, f)).numpy() for f in frames])
    atol = _tolerances(name)["sam2_pixel_values"]["atol"]
    np.testing.assert_allclose(ours, expected, atol=atol, rtol=0)
    assert SA2VA_MEAN[0] == 0.484375  # the bfloat16-rounded mean the official code uses


# Only the InternVL fixture records SAM-2 feature slices (the Qwen one is checked via logits).
@pytest.mark.parametrize("name", NAMES[:1])
@pytest.mark.parametrize(("case", "stem"), [*IMAGE_CASES, ("video_seg", "v320_frame00")])
def test_backbone_features(name: str, case: str, stem: str) -> None:
    ref = _expected(name, case)
    sam2 = _sam2(name)
    features = sam2.encode(_image(name, stem))
    (s4, s8), s16 = sam2.high_res_features(features, 1), features.vision_feats[-1]
    s16 = s16.permute(1, 2, 0).reshape(1, -1, *features.feat_sizes[-1])
    tol = _tolerances(name)["sam2_features"]
    # The recorded stride-4/8 slices are those after the decoder's conv_s0/conv_s1 projections
    # (forward_image replaces them in place), whatever the manifest's description says.
    for ours, key in (
        (s16[:, :8], "sam2_feat_s16_c0_8"),
        (s8[:, :2, ::2, ::2], "sam2_feat_s8_c0_2_sub2"),
        (s4[:, :2, ::4, ::4], "sam2_feat_s4_c0_2_sub4"),
    ):
        np.testing.assert_allclose(ours.numpy(), ref[key], atol=tol["atol"], rtol=tol["rtol"], err_msg=key)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(("case", "stem"), IMAGE_CASES)
def test_image_segmentation(name: str, case: str, stem: str) -> None:
    ref = _expected(name, case)
    tol = _tolerances(name)
    out = _sam2(name).segment_image(_image(name, stem), torch.from_numpy(ref["seg_embeddings"]))
    n = ref["seg_embeddings"].shape[0]
    assert out.masks.shape == (n, *ref["masks_seg0"].shape[1:]) and out.masks.dtype == bool
    for k in range(n):
        _check_logits(name, out.low_res_logits[k].numpy(), ref[f"low_res_logits_seg{k}"][0], f"{case} seg{k}")
        np.testing.assert_allclose(
            out.ious[k].numpy(), ref[f"decoder_ious_seg{k}"][0], atol=tol["decoder_ious"]["atol"], rtol=0
        )
        np.testing.assert_allclose(
            out.object_score_logits[k].numpy(),
            ref[f"object_score_logits_seg{k}"][0],
            atol=tol["object_score_logits"]["atol"],
            rtol=0,
        )
        assert _iou(out.masks[k], ref[f"masks_seg{k}"][0]) >= tol["masks"]["min_iou"]


@pytest.mark.parametrize("name", NAMES)
def test_video_segmentation_through_streaming_tracker(name: str) -> None:
    """The official offline algorithm (5 keyframes from frame 0, then memory tracking) and
    our online tracker fed one frame at a time give the same logits and masks."""
    ref = _expected(name, "video_seg")
    tol = _tolerances(name)
    n_frames = ref["masks_seg0"].shape[0]
    tracker = StreamingTracker(_sam2(name), TrackerConfig(num_keyframes=5))
    tid = tracker.add_object(torch.from_numpy(ref["seg_embeddings"][0]), label="square")
    for i in range(n_frames):
        (obj,) = tracker.step(_image(name, f"v320_frame{i:02d}"))
        assert obj.id == tid and obj.is_keyframe == (i < 5)
        _check_logits(name, obj.low_res_logits.numpy(), ref["low_res_logits_seg0"][i], f"frame {i}")
        # One decoder call per frame: 5 conditioning frames, then the tracked ones, in order.
        np.testing.assert_allclose(
            obj.ious.numpy(), ref["decoder_ious_seg0"][i], atol=tol["decoder_ious"]["atol"]
        )
        assert (
            abs(obj.object_score_logit - ref["object_score_logits_seg0"][i][0])
            <= tol["object_score_logits"]["atol"]
        )
        assert obj.mask.shape == ref["masks_seg0"].shape[1:]
        assert _iou(obj.mask, ref["masks_seg0"][i]) >= tol["masks"]["min_iou"], f"frame {i}"


# ----------------------------------------------------------------------------- point prompts


def test_point_and_box_prompts_follow_sam2() -> None:
    """Our prompt path equals Meta's own ``_forward_sam_heads`` wherever SAM-2 thinks the
    object is present (Meta's then masks absent objects to -1024; Sa2VA never does)."""
    sam2 = Sa2VASam2(build_sam2(tiny_sam2_config(image_size=256), seed=0))
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    features = sam2.encode(image)
    score_bias = sam2.model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias
    prompts = (
        ([(200.0, 150.0)], [1], None),
        (None, None, (100, 80, 420, 300)),
        ([(200.0, 150.0), (500.0, 400.0)], [1, 0], (100, 80, 420, 300)),
    )
    seen_present = set()
    for shift in (0.0, 8.0):  # random weights say "absent"; shift the score head to cover "present" too
        with torch.no_grad():
            score_bias += shift
        for points, labels, box in prompts:
            coords, lab = sam2.prompt_to_points(features.orig_hw, points, labels, box)
            pix = sam2.conditioning_pix_feat(features, 1)
            high = sam2.high_res_features(features, 1)
            multimask = sam2.model._use_multimask(True, {"point_labels": lab})
            with torch.inference_mode():
                ours = run_sam_heads(
                    sam2.model,
                    sam2.model.sam_mask_decoder,
                    pix,
                    high,
                    point_coords=coords,
                    point_labels=lab,
                    multimask_output=multimask,
                )
                meta = sam2.model._forward_sam_heads(
                    pix, {"point_coords": coords, "point_labels": lab}, None, high, multimask
                )
            present = ours.object_score_logits > 0
            seen_present.add(bool(present.item()))
            expected = torch.where(
                present[:, :, None, None], ours.low_res_masks, torch.full_like(meta[3], -1024.0)
            )
            torch.testing.assert_close(meta[3], expected)
            torch.testing.assert_close(meta[2], ours.ious)
            torch.testing.assert_close(meta[5], ours.obj_ptr)
    assert seen_present == {False, True}
    # The one-shot API runs the same path (last prompt: a box plus a positive and a negative click).
    mask = sam2.mask_from_prompt(image, points=points, point_labels=labels, box=box)
    assert mask.shape == image.shape[:2] and mask.dtype == bool
    np.testing.assert_array_equal(mask, sam2.logits_to_masks(ours.low_res_masks, features.orig_hw)[0])
