"""sa2va-eval end to end on every video layout (MeViS, Ref-DAVIS17, ReVOS, JSON lines) with a real
tiny Sa2VA checkpoint, the official offline algorithm and the streaming tracker side by side."""

from __future__ import annotations

from pathlib import Path

import pytest
from _eval_data import (
    run_cli,
    write_fast_tiny_checkpoint,
    write_mevis,
    write_refdavis,
    write_revos,
    write_video_jsonl,
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return write_fast_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


def video(capsys, model: str, layout: str, data: Path, out: Path, *extra: str) -> dict:
    argv = ["video", "--model", model, "--max-new-tokens", "8", "--layout", layout]
    return run_cli(capsys, *argv, "--data", str(data), "--out", str(out), *extra)


def test_mevis_both_methods_side_by_side(tmp_path, capsys, tiny_model):
    write_mevis(tmp_path / "mevis", n_frames=2)
    s = video(
        capsys, tiny_model, "mevis", tmp_path / "mevis", tmp_path / "out", "--limit", "1", "--method", "both"
    )
    assert s["method"] == "offline" and s["count"] == 1  # the headline is the official algorithm
    assert set(s["by_method"]) == {"offline", "streaming"}
    for m in ("offline", "streaming"):
        part = s["by_method"][m]
        assert part["count"] == 1 and part["fps"] > 0
        assert part["J&F"] == pytest.approx((part["J"] + part["F"]) / 2, abs=1e-3)
        masks = tmp_path / "out" / m / "masks" / "vid_a" / "0"  # the MeViS submission layout
        assert sorted(p.name for p in masks.iterdir()) == ["00000.png", "00001.png"]


def test_refdavis_offline(tmp_path, capsys, tiny_model):
    write_refdavis(tmp_path / "davis", n_frames=2)
    s = video(capsys, tiny_model, "refdavis", tmp_path / "davis", tmp_path / "out", "--limit", "1")
    assert s["method"] == "offline" and s["count"] == 1 and "by_method" not in s
    assert set(s) >= {"J", "F", "J&F", "count"}


def test_revos_streaming_by_type(tmp_path, capsys, tiny_model):
    write_revos(tmp_path / "revos", n_frames=2)
    s = video(capsys, tiny_model, "revos", tmp_path / "revos", tmp_path / "out", "--method", "streaming")
    assert s["method"] == "streaming" and s["count"] == 2
    assert s["by_type"]["referring"]["count"] == 1 and s["by_type"]["reason"]["count"] == 1


def test_jsonl_streaming_grounded_on_two_keyframes(tmp_path, capsys, tiny_model):
    path, _ = write_video_jsonl(tmp_path / "clips", n_frames=2)
    extra = ("--limit", "1", "--method", "streaming", "--ground-frames", "2")
    s = video(capsys, tiny_model, "jsonl", path, tmp_path / "out", *extra)
    assert s["count"] == 1 and set(s) >= {"J", "F", "J&F", "count"}
