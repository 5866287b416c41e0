"""The `sa2va` command line on the tiny official-layout fixture: every sub-command writes result.json
and mask PNGs (0/255, the input's size) that agree with the official outputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from sa2va_ros.cli import main

INTERNVL = "sa2va-tiny-internvl"


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_segment_console_script_matches_official(fixtures_dir, tmp_path):
    model = fixtures_dir / INTERNVL
    ref = model / "reference"
    exe = shutil.which("sa2va") or pytest.fail("the sa2va console script is not installed (scripts/setup.sh)")
    prompt = "<image>\nPlease segment the red square in this image."
    proc = subprocess.run(
        [exe, "segment", "--model", str(model), "--image", str(ref / "inputs/a640.png"), "--prompt", prompt]
        + ["--out", str(tmp_path), "--device", "cpu", "--dtype", "float32"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["token_ids"] == [352, 11, 220, 617, 13, 607]
    assert result["text"] == "Sure, [SEG]."
    assert result["masks"] == ["mask0.png"]
    mask = _png(tmp_path / "mask0.png")
    assert mask.shape == (480, 640) and set(np.unique(mask)) <= {0, 255}
    want = np.load(ref / "expected/img_seg.npz")["masks_seg0"][0]
    assert np.logical_xor(mask > 0, want).mean() < 0.005


def test_prompt_without_image_tag_gets_one_in_front(fixtures_dir, tmp_path):
    ref = fixtures_dir / INTERNVL / "reference"
    args = [
        "--model",
        str(fixtures_dir / INTERNVL),
        "--out",
        str(tmp_path),
        "--device",
        "cpu",
        "--dtype",
        "float32",
    ]
    # The official text is "<image>\n..."; without the tag the CLI must put "<image>\n" in front.
    assert (
        main(
            [
                "segment",
                *args,
                "--image",
                str(ref / "inputs/a640.png"),
                "--prompt",
                "Please segment the red square in this image.",
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "result.json").read_text())["token_ids"] == [352, 11, 220, 617, 13, 607]


def test_chat_describe_caption_video(fixtures_dir, tmp_path):
    ref = fixtures_dir / INTERNVL / "reference"
    base = ["--model", str(fixtures_dir / INTERNVL), "--device", "cpu", "--dtype", "float32"]
    image = str(ref / "inputs/a640.png")

    assert main(["chat", *base, "--out", str(tmp_path / "chat"), "--prompt", "Hello! How are you?"]) == 0
    assert json.loads((tmp_path / "chat/result.json").read_text())["text"] == "I am fine, thanks."

    mask_png = str(ref / "inputs/region_caption_mask_prompt.png")
    prompt = "<image>Please describe region1 in the picture."
    out = tmp_path / "describe"
    assert (
        main(["describe", *base, "--out", str(out), "--image", image, "--mask", mask_png, "--prompt", prompt])
        == 0
    )
    assert json.loads((out / "result.json").read_text())["text"] == "It is a red square."

    out = tmp_path / "box"
    assert main(["describe", *base, "--out", str(out), "--image", image, "--box", "100,100,300,300"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["region_mask"] == "region.png" and _png(out / "region.png").shape == (480, 640)

    out = tmp_path / "caption"
    assert main(["caption", *base, "--out", str(out), "--image", image]) == 0
    result = json.loads((out / "result.json").read_text())
    assert set(result) >= {"text", "token_ids", "masks", "phrases"}
    assert len(result["masks"]) == len(result["phrases"])

    frames = tmp_path / "frames"
    frames.mkdir()
    for f in sorted((ref / "inputs").glob("v320_frame*.png")):
        shutil.copy(f, frames / f.name)
    out = tmp_path / "video"
    assert (
        main(
            [
                "video",
                *base,
                "--out",
                str(out),
                "--frames",
                str(frames),
                "--prompt",
                "<image>\nPlease segment the moving square.",
            ]
        )
        == 0
    )
    result = json.loads((out / "result.json").read_text())
    assert result["token_ids"] == [330, 267, 220, 617, 13, 607]
    assert len(result["masks"]) == 12 and all(len(per_frame) == 1 for per_frame in result["masks"])
    want = np.load(ref / "expected/video_seg.npz")["masks_seg0"]
    for f, names in enumerate(result["masks"]):
        got = _png(out / names[0]) > 0
        inter, union = np.logical_and(got, want[f]).sum(), np.logical_or(got, want[f]).sum()
        assert union == 0 or inter / union >= 0.99


def test_bad_model_path_is_a_clear_error(tmp_path, capsys):
    code = main(["chat", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--prompt", "hi"])
    assert code == 2
    assert "neither an existing local directory nor a hub id" in capsys.readouterr().err


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
