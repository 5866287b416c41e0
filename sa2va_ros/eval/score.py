"""Scoring masks already on disk (any method's output), with no model.

Layout (same names under ``--pred`` and ``--gt``):
  * ``image``: one PNG per image: ``gt/<name>.png`` against ``pred/<name>.png`` (sub-folders allowed);
  * ``video``: one folder per video (or per video/expression, any depth) holding one PNG per
    frame: ``gt/<video>/<frame>.png`` against ``pred/<video>/<frame>.png``. Only frames with a
    ground-truth PNG are scored.
Non-zero pixels are the object (palette, grey or colour PNGs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from ..model.errors import InputError
from . import metrics
from .datasets import read_mask_png
from .results import RESULTS_FILE, ResultStore


def _pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".png" and p.is_file())


def _check_dirs(pred: Path, gt: Path) -> None:
    for name, d in (("--pred", pred), ("--gt", gt)):
        if not Path(d).is_dir():
            raise InputError(f"{name} {d} is not a folder.")


def _missing_error(missing: list[str], pred: Path) -> InputError:
    shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
    return InputError(
        f"{len(missing)} ground-truth mask(s) have no prediction under {pred} ({shown}); "
        "name predictions like the ground truth, or pass --missing-as-empty to score them as empty masks."
    )


def score_images(
    pred: Path,
    gt: Path,
    out: Path | None = None,
    missing_as_empty: bool = False,
    progress: bool = True,
) -> dict:
    """cIoU / gIoU of ``pred`` PNGs against same-named ``gt`` PNGs."""
    pred, gt = Path(pred), Path(gt)
    _check_dirs(pred, gt)
    names = [p.relative_to(gt).as_posix() for p in _pngs(gt)]
    if not names:
        raise InputError(f"no PNG under {gt}.")
    missing = [n for n in names if not (pred / n).is_file()]
    if missing and not missing_as_empty:
        raise _missing_error(missing, pred)

    def one(name: str) -> dict:
        g = read_mask_png(gt / name)
        p = read_mask_png(pred / name) if (pred / name).is_file() else None
        return {"id": name, **metrics.image_sample_scores(p, g)}

    records = _run(names, one, out, progress)
    return metrics.summarize_image(records)


def score_videos(
    pred: Path,
    gt: Path,
    out: Path | None = None,
    missing_as_empty: bool = False,
    progress: bool = True,
) -> dict:
    """J / F / J&F of per-video folders of frame PNGs in ``pred`` against ``gt``."""
    pred, gt = Path(pred), Path(gt)
    _check_dirs(pred, gt)
    videos: dict[str, list[str]] = {}
    for p in _pngs(gt):
        rel = p.relative_to(gt)
        if len(rel.parts) < 2:
            raise InputError(
                f"{p} is directly in --gt: for --kind video each video is a sub-folder of frame PNGs."
            )
        videos.setdefault(rel.parent.as_posix(), []).append(rel.stem)
    if not videos:
        raise InputError(f"no PNG under {gt}.")
    missing = [
        f"{v}/{f}.png"
        for v, frames in videos.items()
        for f in frames
        if not (pred / v / f"{f}.png").is_file()
    ]
    if missing and not missing_as_empty:
        raise _missing_error(missing, pred)

    def one(video: str) -> dict:
        gts = {f: read_mask_png(gt / video / f"{f}.png") for f in videos[video]}
        preds = {
            f: read_mask_png(pred / video / f"{f}.png")
            for f in videos[video]
            if (pred / video / f"{f}.png").is_file()
        }
        return {"id": video, **metrics.video_sample_scores(preds, gts)}

    records = _run(list(videos), one, out, progress)
    return metrics.summarize_video(records)


def _run(ids: list[str], one: Callable[[str], dict], out: Path | None, progress: bool) -> list[dict]:
    store = ResultStore(Path(out) / RESULTS_FILE) if out is not None else None
    records = []
    for sid in tqdm(ids, desc="scoring", unit="sample", disable=not progress):
        if store is not None and sid in store:
            continue
        rec = one(sid)
        if store is not None:
            store.add(rec)
        records.append(rec)
    return store.records(ids) if store is not None else records
