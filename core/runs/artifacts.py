"""The run folder: its file names, every writer and every reader (no other module touches these files).

A result folder (a run's directory, or ``--out`` of ``pipeline`` / ``fit``) holds one folder per
subject, named as its challenge names subjects (``subj01`` for 2023, ``sub01`` for 2021), and each
subject's results per *part* (a hemisphere ``lh`` / ``rh`` in 2023, a track ``mini_track`` /
``full_track`` in 2021)::

    OUT/<subject>/<part>_val_r.npy         float32 (n_targets,)          validation Pearson r per vertex / voxel
    OUT/<subject>/<part>_pred_test.npy     float32 (n_test, n_targets)   test predictions, refit on all training stimuli
    OUT/<subject>/<part>_alphas.npy        float32 (n_targets,)          chosen ridge alpha (ridge, banded)
    OUT/<subject>/<part>_band_weights.npy  float32 (n_bands, n_targets)  chosen band weights (banded)
    OUT/<subject>/metrics.json             details: config, split, per-ROI r, alphas, timings (written last)
    OUT/<subject>/roi_r.csv                per-ROI table (its columns are the challenge's)
    OUT/features.json                      extraction runs: feature entries per subject and layer
    OUT/submission.zip | <track>.zip       validated submissions (their content belongs to the submission modules)
    OUT/study.db                           searches: the Optuna study storage (SQLite; a rerun resumes from it)
    OUT/trials.csv                         searches: every trial (scope, parameters, CV score, state, seconds)
    OUT/trial_r/<study>/<trial>.npy        searches: float32 (2, n_vertices) a finished trial's CV r and alpha per vertex
    OUT/checkpoint.pt                      train runs: the training state after the last epoch (resume)
    OUT/training_curve.json                train runs: per epoch loss and validation score (live)
    OUT/metrics.json                       the summary, written last: its presence marks a complete result

Every write is atomic (``core.util.fileio``). Readers raise ``UserError`` naming the missing file.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from core.util.errors import UserError
from core.util.fileio import atomic_path, save_npy, write_json, write_text
from core.util.npystream import npy_complete

METRICS = "metrics.json"
ROI_TABLE = "roi_r.csv"
SUBMISSION = "submission.zip"
FEATURES = "features.json"
STUDY = "study.db"
TRIALS = "trials.csv"
TRIAL_ARRAYS = "trial_r"
CHECKPOINT = "checkpoint.pt"
TRAINING_CURVE = "training_curve.json"
PART_ARRAYS = ("val_r", "pred_test", "alphas", "band_weights")
_TEXT_COLUMNS = ("hemi", "track", "roi", "roi_class")


def part_file(part: str, what: str) -> str:
    """The file name of one per-part array (``what`` in :data:`PART_ARRAYS`), e.g. ``lh_val_r.npy``."""
    if what not in PART_ARRAYS:
        raise ValueError(f"unknown result array '{what}' (known: {', '.join(PART_ARRAYS)})")
    return f"{part}_{what}.npy"


# -- writers ------------------------------------------------------------------------------------
def write_subject(out_dir: str | os.PathLike, arrays: Mapping[str, Mapping[str, np.ndarray | None]],
                  details: dict) -> Path:
    """One subject's results: ``arrays[part][what]`` (None: not written), then ``metrics.json`` last."""
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for part, named in arrays.items():
        for what, array in named.items():
            if array is not None:
                files.append(save_npy(out / part_file(part, what), np.asarray(array, np.float32)).name)
    write_json(out / METRICS, {**details, "files": files})
    return out


def write_roi_table(subject_dir: str | os.PathLike, rows: list[dict]) -> Path:
    """The per-ROI table (one row per part and ROI); undefined numbers are written as empty cells."""
    if not rows:
        raise ValueError("an ROI table needs at least one row")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else v
                       for k, v in row.items()} for row in rows])
    return write_text(Path(subject_dir) / ROI_TABLE, buf.getvalue())


def write_summary(out_dir: str | os.PathLike, summary: dict) -> Path:
    """The result folder's ``metrics.json`` (strict JSON; written last)."""
    return write_json(Path(out_dir) / METRICS, summary)


def write_features(out_dir: str | os.PathLike, listing: dict) -> Path:
    """An extraction run's feature entries: ``{subject: {layer: path}}``."""
    return write_json(Path(out_dir) / FEATURES, listing)


def study_storage(out_dir: str | os.PathLike) -> str:
    """The SQLAlchemy URL of a search's Optuna storage in this folder."""
    return f"sqlite:///{(Path(out_dir).expanduser().resolve() / STUDY).as_posix()}"


def write_trials(out_dir: str | os.PathLike, rows: list[dict]) -> Path:
    """A search's ``trials.csv``: one row per trial; columns are the union of the rows' keys, in order."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns or ["scope"], lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])
    return write_text(Path(out_dir) / TRIALS, buf.getvalue())


def read_trials(out_dir: str | os.PathLike) -> list[dict]:
    """Rows of ``trials.csv``: numbers as float (int where whole), empty cells as None, text as str."""
    path = _existing(Path(out_dir) / TRIALS, "trials table")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key, value in row.items():
            if value == "":
                row[key] = None
                continue
            try:
                number = float(value)
            except ValueError:
                continue
            row[key] = int(number) if number.is_integer() and "." not in value and "e" not in value else number
    return rows


def _trial_file(out_dir: str | os.PathLike, study: str, number: int) -> Path:
    return Path(out_dir) / TRIAL_ARRAYS / study / f"{int(number)}.npy"


def write_trial_arrays(out_dir: str | os.PathLike, study: str, number: int, r: np.ndarray,
                       alphas: np.ndarray | None) -> Path:
    """A finished trial's CV r and chosen alpha (NaN: none) per vertex of its scope, for the assembly."""
    alphas = np.full(len(r), np.nan) if alphas is None else alphas
    path = _trial_file(out_dir, study, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_npy(path, np.stack([r, alphas]).astype(np.float32))


def read_trial_arrays(out_dir: str | os.PathLike, study: str, number: int,
                      n_vertices: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    """What :func:`write_trial_arrays` kept: ``(r, alphas or None)``; None when absent or not of that shape
    (the assembly then runs the trial's CV again)."""
    path = _trial_file(out_dir, study, number)
    if not npy_complete(path, (2, n_vertices), np.float32):
        return None
    r, alphas = np.load(path, allow_pickle=False)
    return r, (None if np.isnan(alphas).all() else alphas)


def write_checkpoint(out_dir: str | os.PathLike, state: dict) -> Path:
    """A training state (tensors, numbers, strings, lists, dicts) as ``checkpoint.pt``, atomically."""
    import torch

    path = Path(out_dir) / CHECKPOINT
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def write_training_curve(out_dir: str | os.PathLike, curve: list[dict]) -> Path:
    """A train run's per-epoch ``[{phase, epoch, train_loss, val_score, ...}]``."""
    return write_json(Path(out_dir) / TRAINING_CURVE, curve)


def submission_file(out_dir: str | os.PathLike, name: str = SUBMISSION) -> Path:
    """Where a submission zip of this folder goes (its builder writes it atomically)."""
    return Path(out_dir) / name


# -- readers ------------------------------------------------------------------------------------
def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UserError(f"{path}: no {what} in this result folder")
    return path


def read_part(subject_dir: str | os.PathLike, part: str, what: str = "val_r", *, mmap: bool = False) -> np.ndarray:
    """One per-part array (``mmap``: memory-mapped, for test predictions)."""
    path = _existing(Path(subject_dir) / part_file(part, what), f"{part} {what.replace('_', ' ')}")
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def read_roi_table(subject_dir: str | os.PathLike) -> list[dict]:
    """Rows of the per-ROI table: ``n_*`` columns as int, text columns as str, others float (None if empty)."""
    path = _existing(Path(subject_dir) / ROI_TABLE, "per-ROI table")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key, value in row.items():
            if key in _TEXT_COLUMNS:
                continue
            if key.startswith("n_"):
                row[key] = int(value)
            else:
                row[key] = float(value) if value else None
    return rows


def with_columns(rows: Iterable[dict], columns: Iterable[str]) -> list[dict]:
    """``rows`` with each of ``columns`` present (None where an older result folder lacks it)."""
    columns = list(columns)
    return [{**{c: None for c in columns}, **row} for row in rows]


def read_metrics(folder: str | os.PathLike) -> dict[str, Any]:
    """A folder's ``metrics.json`` (the summary of a result folder, or one subject's details)."""
    path = _existing(Path(folder) / METRICS, METRICS)
    return json.loads(path.read_text(encoding="utf-8"))


def read_features(out_dir: str | os.PathLike) -> dict:
    return json.loads(_existing(Path(out_dir) / FEATURES, FEATURES).read_text(encoding="utf-8"))


def read_checkpoint(out_dir: str | os.PathLike) -> dict | None:
    """The training state of a folder (None when it has none); tensors only, never arbitrary objects."""
    import torch

    path = Path(out_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated by a full disk, not a checkpoint at all
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: unreadable checkpoint ({first[:160]})") from None
    if not isinstance(state, dict):
        raise UserError(f"{path}: not a training checkpoint")
    return state


def has_checkpoint(out_dir: str | os.PathLike) -> bool:
    return (Path(out_dir) / CHECKPOINT).is_file()


def read_training_curve(out_dir: str | os.PathLike) -> list[dict]:
    """The training curve written so far (empty before the first epoch ends)."""
    path = Path(out_dir) / TRAINING_CURVE
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []


def find_submission(out_dir: str | os.PathLike, name: str = SUBMISSION) -> Path | None:
    """The submission zip of a result folder, or None when it has none."""
    path = submission_file(out_dir, name)
    return path if path.is_file() else None
