"""sa2va-eval end to end with a real (tiny, random) Sa2VA checkpoint: the image layouts and ROS 2
bags go through the CLI, the model core and the metrics; the summaries' counts and fields are
checked, and resuming is checked on the files left behind (videos: test_eval_e2e_video.py).

The tiny checkpoint answers [SEG] to any prompt (``force_seg``), so masks are produced; the
official parity fixture (which answers garbage to our prompts) checks the empty-prediction path.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _eval_data import (
    moving_square,
    run_cli,
    save_mask,
    write_fast_tiny_checkpoint,
    write_image_bag,
    write_image_jsonl,
    write_refcoco,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return write_fast_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_refcoco_layout_and_resume(tmp_path, capsys, tiny_model):
    write_refcoco(tmp_path / "ref")
    args = ["image", "--model", tiny_model, "--layout", "refcoco", "--data", str(tmp_path / "ref")]
    args += ["--out", str(tmp_path / "out")]
    first = run_cli(capsys, *args, "--limit", "1")
    assert first["count"] == 1
    first_line = lines(tmp_path / "out" / "results.jsonl")[0]
    summary = run_cli(capsys, *args)  # resumes: only the two missing expressions run
    assert summary["count"] == 3 and set(summary) >= {"cIoU", "gIoU", "count"}
    assert 0 <= summary["cIoU"] <= 100 and 0 <= summary["gIoU"] <= 100
    recs = lines(tmp_path / "out" / "results.jsonl")
    assert len(recs) == 3 and recs[0] == first_line
    assert all(json.loads(r)["found"] for r in recs)  # force_seg: every answer has [SEG]
    assert len(list((tmp_path / "out" / "masks").glob("*.png"))) == 3
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary


def test_image_jsonl_layout(tmp_path, capsys, tiny_model):
    path, _ = write_image_jsonl(tmp_path / "mine", n=1)
    args = ["image", "--model", tiny_model, "--layout", "jsonl", "--data", str(path)]
    summary = run_cli(capsys, *args, "--out", str(tmp_path / "out"), "--max-new-tokens", "8")
    assert summary["count"] == 1 and (tmp_path / "out" / "masks" / "s0.png").is_file()


def test_bag_replay_scored_by_stamp(tmp_path, capsys, tiny_model):
    frames, masks = moving_square(3)
    stamps = write_image_bag(tmp_path / "bag", frames, encoding="bgr8", storage="mcap")
    for i in (0, 2):  # ground truth on two frames, named by header stamp
        save_mask(tmp_path / "gt" / f"{stamps[i]}.png", masks[i])
    args = ["bag", "--model", tiny_model, "--bag", str(tmp_path / "bag"), "--topic", "/camera/image_raw"]
    args += ["--prompt", "the red square", "--gt", str(tmp_path / "gt"), "--out", str(tmp_path / "out")]
    s = run_cli(capsys, *args)
    assert s["count"] == 1 and s["frames"] == 3 and s["scored_frames"] == 2 and s["method"] == "streaming"
    assert set(s) >= {"J", "F", "J&F", "fps"}
    written = sorted(p.name for p in (tmp_path / "out" / "masks").iterdir())
    assert written == ["000000.png", "000001.png", "000002.png"]
    log = [json.loads(x) for x in lines(tmp_path / "out" / "frames.jsonl")]
    assert [x["stamp_ns"] for x in log] == stamps


def test_compressed_bag_without_ground_truth(tmp_path, capsys, tiny_model):
    frames, _ = moving_square(1)
    write_image_bag(tmp_path / "bag", frames, compressed="jpeg", topic="/cam/compressed", storage="sqlite3")
    args = ["bag", "--model", tiny_model, "--bag", str(tmp_path / "bag"), "--topic", "/cam/compressed"]
    s = run_cli(capsys, *args, "--prompt", "the red square", "--out", str(tmp_path / "out"))
    assert s["count"] == 0 and s["J"] is None and s["frames"] == 1


def test_official_fixture_without_seg_gives_empty_predictions(tmp_path, capsys):
    ckpt = FIXTURES / "sa2va-tiny-internvl"
    if not ckpt.is_dir():
        pytest.skip(f"parity fixtures not found at {FIXTURES} (they live in the project's shared/fixtures)")
    path, _ = write_image_jsonl(tmp_path / "mine", n=1)
    args = ["image", "--model", str(ckpt), "--layout", "jsonl", "--data", str(path)]
    s = run_cli(capsys, *args, "--out", str(tmp_path / "out"), "--max-new-tokens", "4")
    rec = json.loads(lines(tmp_path / "out" / "results.jsonl")[0])
    assert "[SEG]" not in rec["answer"] and rec["found"] is False
    assert s["count"] == 1 and s["cIoU"] == 0.0 and s["gIoU"] == 0.0  # empty prediction of an object
