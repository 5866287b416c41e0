"""Where an evaluation keeps its results: resumable per-sample records, the summary, the table.

A full benchmark run takes hours on a GPU; a crash or a pre-empted job must not lose it.
Every finished sample is appended (and flushed to disk) as one JSON line before the next
starts, and a rerun with the same output folder skips the samples already there.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from ..model.errors import InputError

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
RUN_FILE = "run.json"
MASKS_DIR = "masks"


class ResultStore:
    """Append-only JSON-lines file of per-sample records keyed by ``record["id"]``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._records: dict[str, dict] = {}
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        for n, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if n >= len(lines) - 2:  # the last line of a run killed mid-write: redo that sample
                    continue
                raise InputError(
                    f"{self.path} line {n + 1} is corrupt; delete the file to start over."
                ) from None
            self._records[str(rec["id"])] = rec
        # Rewrite without a torn tail so that appends start on a fresh line.
        with open(self.path, "w", encoding="utf-8") as f:
            for rec in self._records.values():
                f.write(json.dumps(rec) + "\n")

    def __contains__(self, sample_id: object) -> bool:
        return str(sample_id) in self._records

    def __len__(self) -> int:
        return len(self._records)

    def add(self, record: dict) -> None:
        """Append one finished sample durably (flush + fsync) before the caller moves on."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self._records[str(record["id"])] = record

    def records(self, ids: Iterable[str] | None = None) -> list[dict]:
        """All records, or those of ``ids`` that are done, in that order."""
        if ids is None:
            return list(self._records.values())
        return [self._records[i] for i in ids if i in self._records]


def safe_relpath(sample_id: str) -> PurePosixPath:
    """``sample_id`` as a relative path for its mask files; refuse ids that would escape the folder."""
    p = PurePosixPath(sample_id.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise InputError(
            f"sample id '{sample_id}' cannot name a folder (absolute or '..'): choose another id."
        )
    return p


def prepare_out_dir(out: Path, settings: Mapping, overwrite: bool = False) -> Path:
    """Create ``out`` or check it holds a run with the same ``settings`` (so resuming is safe).

    ``overwrite`` deletes what an earlier run of this tool wrote there (only its own files).
    """
    out = Path(out)
    run_file = out / RUN_FILE
    settings = json.loads(json.dumps(dict(settings)))  # normalise (tuples, Paths via str)
    if run_file.is_file():
        previous = json.loads(run_file.read_text(encoding="utf-8"))
        if overwrite:
            _remove_run(out)
        elif previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise InputError(
                f"{out} holds a run with other settings ({', '.join(changed)}); "
                "resume it with the same arguments, choose another --out, or pass --overwrite."
            )
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(
            f"{out} exists and is not an output folder of sa2va-eval; choose an empty or new folder."
        )
    out.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")
    return out


def _remove_run(out: Path) -> None:
    for p in out.rglob(RESULTS_FILE):
        p.unlink()
    for p in list(out.rglob(MASKS_DIR)):
        if p.is_dir():
            shutil.rmtree(p)
    for name in (SUMMARY_FILE, "frames.jsonl"):
        for p in out.rglob(name):
            p.unlink()


def write_summary(out: Path | None, summary: Mapping) -> None:
    if out is not None:
        tmp = Path(out) / (SUMMARY_FILE + ".tmp")
        tmp.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        tmp.replace(Path(out) / SUMMARY_FILE)


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.1f}"
    return str(v)


def format_table(rows: Mapping[str, Mapping], columns: Iterable[str]) -> str:
    """A plain-text table: one row per name (method, subset), the given metric columns."""
    columns = list(columns)
    header = [""] + columns
    body = [[name] + [_fmt(r.get(c)) for c in columns] for name, r in rows.items()]
    widths = [max(len(x[i]) for x in [header] + body) for i in range(len(header))]
    lines = [
        "  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(line, widths, strict=True)))
        for line in [header] + body
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def round_floats(obj: object, digits: int = 4) -> object:
    """Round the floats of a summary for printing (the JSON keeps 4 decimals of a percent)."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, dict):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, list):
        return [round_floats(v, digits) for v in obj]
    return obj
