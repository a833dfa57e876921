"""The Algonauts 2023 submission: a zip of ``subjXX/{lh,rh}_pred_test.npy`` at its top level.

Each file is float32, (test images x challenge vertices) of that subject and hemisphere. The zip
is built in a temporary file, validated against the dataset (names, shapes, dtype, finite values,
every chosen subject present, under ``MAX_BYTES``) and only then renamed into place, so a zip at
the destination is always a valid one.
"""

from __future__ import annotations

import os
import re
import time
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from core.algonauts2023.dataset import HEMIS, Dataset, open_dataset
from core.util.errors import UserError
from core.util.fileio import atomic_path
from core.runs.store import Run

MAX_BYTES = 300 * 1024 * 1024
_ENTRY = re.compile(r"^subj(\d{2})/(lh|rh)_pred_test\.npy$")

Predictions = Mapping[int, Mapping[str, np.ndarray]]  # subject -> hemisphere -> (n_test, n_vertices)


def entry_name(subject: int, hemi: str) -> str:
    return f"subj{subject:02d}/{hemi}_pred_test.npy"


def _check_array(where: str, array: np.ndarray, expected: tuple[int, int]) -> None:
    if array.dtype != np.float32:
        raise UserError(f"{where}: expected float32 predictions, found {array.dtype}")
    if array.shape != expected:
        raise UserError(f"{where}: expected shape {expected} (test images x vertices), found {array.shape}")
    if not np.isfinite(array).all():
        raise UserError(f"{where}: contains NaN or infinite values")


def validate_submission(path: str | os.PathLike, dataset: Dataset, subjects: list[int]) -> None:
    """Raise ``UserError`` (one line) unless ``path`` is a valid submission for ``subjects``."""
    path = Path(path)
    size = path.stat().st_size
    if size >= MAX_BYTES:
        raise UserError(f"{path}: {size / 2**20:.0f} MB, the challenge accepts less than {MAX_BYTES // 2**20} MB")
    expected = {entry_name(s, h) for s in subjects for h in HEMIS}
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            extra = sorted(n for n in names if n not in expected)
            if extra:
                raise UserError(f"{path}: unexpected entry '{extra[0]}' (only subjXX/{{lh,rh}}_pred_test.npy at the top)")
            missing = sorted(expected - set(names))
            if missing:
                raise UserError(f"{path}: missing {missing[0]} (every chosen subject needs both hemispheres)")
            for name in sorted(expected):
                subject, hemi = _ENTRY.match(name).groups()  # type: ignore[union-attr]
                subj = dataset.subject(int(subject))
                with zf.open(name) as fh:
                    try:
                        array = np.lib.format.read_array(fh, allow_pickle=False)
                    except ValueError as exc:
                        raise UserError(f"{path}: {name} is not a readable .npy array ({exc})") from None
                _check_array(f"{path}: {name}", array, (subj.n_test, subj.n_vertices[hemi]))
    except zipfile.BadZipFile as exc:
        raise UserError(f"{path}: not a valid zip file ({exc})") from None


def build_submission(out: str | os.PathLike, predictions: Predictions, dataset: Dataset) -> Path:
    """Write and validate the submission zip for ``predictions`` at ``out`` (atomically)."""
    out = Path(out)
    if not predictions:
        raise UserError("no predictions to submit: choose at least one subject")
    subjects = sorted(int(s) for s in predictions)
    for s in subjects:
        subj = dataset.subject(s)
        for hemi in HEMIS:
            if hemi not in predictions[s]:
                raise UserError(f"subj{s:02d}: no {hemi} test predictions")
            _check_array(f"subj{s:02d} {hemi} predictions", np.asarray(predictions[s][hemi]),
                         (subj.n_test, subj.n_vertices[hemi]))
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            for s in subjects:
                for hemi in HEMIS:
                    info = zipfile.ZipInfo(entry_name(s, hemi), date_time=time.localtime()[:6])
                    info.compress_type = zipfile.ZIP_DEFLATED
                    with zf.open(info, "w", force_zip64=True) as fh:
                        np.lib.format.write_array(fh, np.asarray(predictions[s][hemi]), allow_pickle=False)
        validate_submission(tmp, dataset, subjects)
    return out


def prediction_path(run_dir: Path, subject: int, hemi: str) -> Path:
    """Where a run keeps a subject's test predictions (its run directory mirrors the zip)."""
    return run_dir / entry_name(subject, hemi)


def build_from_runs(out: str | os.PathLike, runs: list[Run], data: str | os.PathLike | None = None) -> Path:
    """The submission from chosen finished fit or pipeline runs (each subject in exactly one of them).

    The dataset is ``data`` if given, else the one the runs were fitted on (they must agree).
    """
    if not runs:
        raise UserError("no runs chosen: choose one finished run per subject")
    by_subject: dict[int, Run] = {}
    for run in runs:
        if run.status != "done":
            raise UserError(f"run {run.id} is {run.status}, not done: only finished runs can be submitted")
        subjects = run.config.get("subjects") or []
        if not subjects or not all(prediction_path(run.dir, s, h).is_file() for s in subjects for h in HEMIS):
            raise UserError(f"run {run.id} ({run.kind}) has no test predictions")
        for subject in subjects:
            if subject in by_subject:
                raise UserError(f"two runs for subj{subject:02d} ({by_subject[subject].id} and {run.id}): choose one")
            by_subject[subject] = run
    roots = {str(r.config.get("data")) for r in runs}
    if data is None and len(roots) != 1:
        raise UserError(f"the chosen runs were fitted on different data directories ({', '.join(sorted(roots))})")
    dataset = open_dataset(data if data is not None else roots.pop(), sorted(by_subject))
    predictions = {s: {h: np.load(prediction_path(r.dir, s, h), mmap_mode="r", allow_pickle=False) for h in HEMIS}
                   for s, r in by_subject.items()}
    return build_submission(out, predictions, dataset)
