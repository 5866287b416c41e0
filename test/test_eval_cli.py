"""sa2va-eval without a model: dataset readers, bag reading, resumable results and the score command."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _eval_data import (
    moving_square,
    save_mask,
    write_image_bag,
    write_image_jsonl,
    write_mevis,
    write_refcoco,
    write_refdavis,
    write_revos,
    write_video_jsonl,
)

from sa2va_ros.eval import bags, datasets, metrics, results
from sa2va_ros.eval.cli import main
from sa2va_ros.model.errors import InputError


def run_cli(capsys, *argv) -> tuple[int, dict | None, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    summary = json.loads(lines[-1]) if code == 0 else None
    return code, summary, captured.out + captured.err


# ----------------------------------------------------------------------------- readers


def test_refcoco_layout(tmp_path):
    gts = write_refcoco(tmp_path)
    samples = datasets.load_refcoco(tmp_path, "refcoco", "val")
    assert [s.id for s in samples] == ["7_70", "7_71", "8_80"]
    assert samples[0].text == "<image>\n Please segment red square in this image."  # official wording
    assert samples[0].image_path.is_file()
    for s in samples:
        np.testing.assert_array_equal(s.load_gt(), gts[s.id])
    assert 130 <= gts["7_70"].sum() <= 170  # the 12x12 polygon, filled the COCO way
    (train,) = datasets.load_refcoco(tmp_path, "refcoco", "train")  # uncompressed RLE target
    np.testing.assert_array_equal(train.load_gt(), gts["9_90"])
    with pytest.raises(InputError, match="splits there: train, val"):
        datasets.load_refcoco(tmp_path, "refcoco", "testA")
    with pytest.raises(InputError, match=r"refs\(umd\).p"):
        datasets.load_refcoco(tmp_path, "refcocog", "val")


def test_image_jsonl_layout(tmp_path):
    path, gts = write_image_jsonl(tmp_path)
    samples = datasets.load_image_jsonl(path)
    assert [s.id for s in samples] == ["s0", "s1", "s2"]
    for s in samples:
        np.testing.assert_array_equal(s.load_gt(), gts[s.id])
    path.write_text(json.dumps({"image": "img/0.png", "mask": "gt/0.png"}) + "\n")
    with pytest.raises(InputError, match="missing 'expression'"):
        datasets.load_image_jsonl(path)


def test_mevis_layout(tmp_path):
    gts = write_mevis(tmp_path)
    samples = datasets.load_meta_expressions("mevis", tmp_path)
    assert [s.id for s in samples] == ["vid_a/0", "vid_b/0", "vid_b/1"]
    assert samples[0].text == "<image>\nPlease segment the moving square."
    assert samples[2].text == "<image>\n both things? Please respond with a segmentation mask."  # a question
    assert len(samples[0].frame_paths) == 6 and samples[0].frame_paths[0].suffix == ".jpg"
    for s in samples:
        gt = s.load_gt()
        assert list(gt) == list(s.frame_names)
        for name in gt:
            np.testing.assert_array_equal(gt[name], gts[s.id][name])
    assert not samples[0].load_gt()["00005"].any()  # None in mask_dict = absent that frame


def test_mevis_without_masks_predicts_only(tmp_path):
    write_mevis(tmp_path)
    (tmp_path / "mask_dict.json").unlink()
    samples = datasets.load_meta_expressions("mevis", tmp_path)
    assert all(s.load_gt is None for s in samples)


def test_revos_layout(tmp_path):
    types = write_revos(tmp_path)
    samples = datasets.load_meta_expressions("revos", tmp_path)
    assert {s.id: s.type_id for s in samples} == types
    assert samples[0].frame_paths[0] == tmp_path / "UVO" / "clip1" / "00000.jpg"
    assert sum(m.sum() for m in samples[0].load_gt().values()) == 5 * 144


@pytest.mark.parametrize("pickled", [False, True])
def test_refdavis_layouts(tmp_path, pickled):
    gts = write_refdavis(tmp_path, pickle_masks=pickled)
    samples = datasets.load_meta_expressions("refdavis", tmp_path)
    assert [s.id for s in samples] == ["bike/0", "bike/1"]
    for s in samples:
        gt = s.load_gt()
        assert list(gt) == list(s.frame_names)
        for name in gt:
            np.testing.assert_array_equal(gt[name], gts[s.id][name])


def test_video_jsonl_layout(tmp_path):
    path, gts = write_video_jsonl(tmp_path)
    samples = datasets.load_video_jsonl(path)
    assert [s.id for s in samples] == ["clip0", "clip1"]
    assert list(samples[1].load_gt()) == ["00000", "00002", "00004"]  # only annotated frames
    for s in samples:
        for name, m in s.load_gt().items():
            np.testing.assert_array_equal(m, gts[s.id][name])


def test_mask_png_reading(tmp_path):
    m = np.zeros((5, 6), bool)
    m[1:3, 2:4] = True
    datasets.write_mask_png(tmp_path / "a.png", m)
    np.testing.assert_array_equal(datasets.read_mask_png(tmp_path / "a.png"), m)
    save_mask(tmp_path / "p.png", m, value=3)
    assert datasets.read_mask_png(tmp_path / "p.png", object_id=3).sum() == 4
    assert datasets.read_mask_png(tmp_path / "p.png", object_id=1).sum() == 0


# ----------------------------------------------------------------------------- bags


@pytest.mark.parametrize(
    "storage,encoding,pad",
    [
        ("mcap", "rgb8", 0),
        ("sqlite3", "bgr8", 3),
        ("mcap", "mono8", 5),
        ("mcap", "rgba8", 0),
        ("sqlite3", "bgra8", 4),
    ],
)
def test_bag_raw_images_round_trip(tmp_path, storage, encoding, pad):
    frames, _ = moving_square(3)
    stamps = write_image_bag(tmp_path / "bag", frames, encoding=encoding, storage=storage, pad=pad)
    got = list(bags.iter_bag_images(tmp_path / "bag", "/camera/image_raw"))
    assert [f.index for f in got] == [0, 1, 2]
    assert [f.stamp_ns for f in got] == stamps
    for f, ref in zip(got, frames, strict=True):
        expected = np.repeat(ref[:, :, :1], 3, axis=2) if encoding == "mono8" else ref
        np.testing.assert_array_equal(f.image, expected)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_bag_compressed_images(tmp_path, fmt):
    frames, _ = moving_square(2)
    write_image_bag(tmp_path / "bag", frames, compressed=fmt, topic="/cam/compressed")
    got = list(bags.iter_bag_images(tmp_path / "bag", "/cam/compressed", max_frames=1))
    assert len(got) == 1
    err = np.abs(got[0].image.astype(int) - frames[0].astype(int))
    if fmt == "png":
        assert err.max() == 0
    else:  # lossy: colours right (RGB, not BGR) away from the square's edges
        assert err.mean() < 3 and err[16, 10].max() < 8


def test_bag_wrong_topic_lists_image_topics(tmp_path):
    frames, _ = moving_square(1)
    write_image_bag(tmp_path / "bag", frames)
    with pytest.raises(InputError, match=r"/camera/image_raw \(Image\)"):
        list(bags.iter_bag_images(tmp_path / "bag", "/nope"))
    assert bags.image_topics(tmp_path / "bag") == {"/camera/image_raw": "sensor_msgs/msg/Image"}


def test_gt_names_by_index_or_stamp():
    frames = [(0, 1_700_000_000_000_000_000), (1, 1_700_000_000_100_000_000)]
    assert bags.match_gt_names(["000001"], frames) == {"000001": 1}
    assert bags.match_gt_names(["1700000000100000000"], frames) == {"1700000000100000000": 1}
    with pytest.raises(InputError, match="match neither"):
        bags.match_gt_names(["7"], frames)
    with pytest.raises(InputError, match="mix frame indices and stamps"):
        bags.match_gt_names(["0", "1700000000100000000"], frames)
    with pytest.raises(InputError, match="named by frame index"):
        bags.match_gt_names(["frame_a"], frames)


# ----------------------------------------------------------------------------- results store


def test_result_store_resumes_and_drops_a_torn_last_line(tmp_path):
    store = results.ResultStore(tmp_path / "r.jsonl")
    store.add({"id": "a", "x": 1})
    store.add({"id": "b", "x": 2})
    with open(tmp_path / "r.jsonl", "a") as f:
        f.write('{"id": "c", "x"')  # killed mid-write
    again = results.ResultStore(tmp_path / "r.jsonl")
    assert "a" in again and "b" in again and "c" not in again
    again.add({"id": "c", "x": 3})
    assert [r["x"] for r in results.ResultStore(tmp_path / "r.jsonl").records(["c", "a", "zz"])] == [3, 1]


def test_out_dir_refuses_other_settings_and_foreign_folders(tmp_path):
    results.prepare_out_dir(tmp_path / "o", {"model": "a"})
    results.prepare_out_dir(tmp_path / "o", {"model": "a"})  # same: resume
    with pytest.raises(InputError, match="other settings \\(model\\)"):
        results.prepare_out_dir(tmp_path / "o", {"model": "b"})
    results.prepare_out_dir(tmp_path / "o", {"model": "b"}, overwrite=True)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "thesis.tex").write_text("x")
    with pytest.raises(InputError, match="not an output folder"):
        results.prepare_out_dir(tmp_path / "foreign", {"model": "a"})
    with pytest.raises(InputError, match="cannot name a folder"):
        results.safe_relpath("../../etc")


# ----------------------------------------------------------------------------- score command


def _image_dirs(tmp_path):
    z = np.zeros((10, 10), bool)
    gt1, pred1 = z.copy(), z.copy()
    gt1[0, :] = True
    pred1[0, :5] = True  # I=5 U=10
    gt2 = z.copy()
    gt2[2:5, :] = True  # predicted exactly: I=U=30
    for name, g, p in (("a", gt1, pred1), ("sub/b", gt2, gt2), ("c", z, z)):
        save_mask(tmp_path / "gt" / f"{name}.png", g)
        save_mask(tmp_path / "pred" / f"{name}.png", p)
    return tmp_path / "pred", tmp_path / "gt"


def test_score_images_by_hand(tmp_path, capsys):
    pred, gt = _image_dirs(tmp_path)
    code, summary, text = run_cli(
        capsys, "score", "--kind", "image", "--pred", str(pred), "--gt", str(gt), "--no-progress"
    )
    assert code == 0, text
    assert summary == {"cIoU": 87.5, "gIoU": pytest.approx(83.3333, abs=1e-4), "count": 3}
    assert "cIoU" in text.splitlines()[0]  # the table comes first


def test_score_missing_prediction(tmp_path, capsys):
    pred, gt = _image_dirs(tmp_path)
    (pred / "a.png").unlink()
    code, _, text = run_cli(
        capsys, "score", "--kind", "image", "--pred", str(pred), "--gt", str(gt), "--no-progress"
    )
    assert code == 2 and "a.png" in text and "--missing-as-empty" in text
    code, summary, _ = run_cli(
        capsys,
        "score",
        "--kind",
        "image",
        "--pred",
        str(pred),
        "--gt",
        str(gt),
        "--missing-as-empty",
        "--no-progress",
    )
    assert code == 0 and summary["cIoU"] == 75.0 and summary["count"] == 3


def test_score_videos_against_metrics_and_resume(tmp_path, capsys):
    expected = []
    for v, shift in (("v1", 0), ("v2", 2), ("nested/v3", 4)):
        _, masks = moving_square(4)
        preds = [np.roll(m, shift, axis=1) for m in masks]
        for i, (m, p) in enumerate(zip(masks, preds, strict=True)):
            save_mask(tmp_path / "gt" / v / f"{i:05d}.png", m)
            save_mask(tmp_path / "pred" / v / f"{i:05d}.png", p)
        expected.append(metrics.video_sample_scores(preds, masks))
    args = [
        "score",
        "--kind",
        "video",
        "--pred",
        str(tmp_path / "pred"),
        "--gt",
        str(tmp_path / "gt"),
        "--out",
        str(tmp_path / "out"),
        "--no-progress",
    ]
    code, summary, text = run_cli(capsys, *args)
    assert code == 0, text
    ref = metrics.summarize_video(expected)
    assert summary["count"] == 3
    for k in ("J", "F", "J&F"):
        assert summary[k] == pytest.approx(ref[k], abs=1e-4)
    assert summary["J"] < 100 and summary["F"] < 100
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    code, again, _ = run_cli(capsys, *args)  # resumed: nothing recomputed, same answer
    assert code == 0 and again == summary
    assert (tmp_path / "out" / "results.jsonl").read_text().splitlines() == lines


def test_score_video_needs_subfolders(tmp_path, capsys):
    save_mask(tmp_path / "gt" / "00000.png", np.ones((4, 4), bool))
    (tmp_path / "pred").mkdir()
    code, _, text = run_cli(
        capsys,
        "score",
        "--kind",
        "video",
        "--pred",
        str(tmp_path / "pred"),
        "--gt",
        str(tmp_path / "gt"),
        "--no-progress",
    )
    assert code == 2 and "sub-folder" in text


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("image", "video", "bag", "score"):
        assert cmd in out
