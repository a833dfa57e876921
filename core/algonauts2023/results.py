"""Reading a finished Algonauts 2023 run back: per-vertex r, predictions, ROI tables, summaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.algonauts2023.dataset import parse_subject
from core.runs import artifacts
from core.runs.store import Run
from core.util.errors import UserError

ROI_COLUMNS = ("median_r", "mean_r", "median_noise_normalized")


def _finished(run: Run) -> Run:
    if run.status != "done":
        raise UserError(f"run {run.id} is {run.status}: it has no results to show")
    return run


def subject_dir(run: Run, subject: int | str | None = None) -> Path:
    """The results folder of one subject of a done fit or pipeline run (default: its only subject)."""
    subjects = _finished(run).config.get("subjects") or []
    if subject is None:
        if len(subjects) != 1:
            raise UserError(f"run {run.id} has {len(subjects)} subjects: say which one")
        subject = subjects[0]
    number = parse_subject(subject)
    if number not in subjects:
        raise UserError(f"run {run.id} has no results for subj{number:02d}")
    return run.dir / f"subj{number:02d}"


def load_val_r(run: Run, hemi: str, subject: int | str | None = None) -> np.ndarray:
    """Validation Pearson r per vertex (float32, challenge vertex order)."""
    return artifacts.read_part(subject_dir(run, subject), hemi, "val_r")


def load_test_predictions(run: Run, hemi: str, subject: int | str | None = None) -> np.ndarray:
    """Test predictions (float32, test images x vertices), memory-mapped."""
    return artifacts.read_part(subject_dir(run, subject), hemi, "pred_test", mmap=True)


def load_roi_table(run: Run, subject: int | str | None = None) -> list[dict]:
    """Rows ``{hemi, roi, n_vertices, median_r, mean_r, median_noise_normalized}`` (None where undefined)."""
    return artifacts.with_columns(artifacts.read_roi_table(subject_dir(run, subject)), ROI_COLUMNS)


def load_metrics(run: Run, subject: int | str | None = None) -> dict:
    """The run's ``metrics.json`` (all subjects), or one subject's detailed one."""
    return artifacts.read_metrics(subject_dir(run, subject) if subject is not None else _finished(run).dir)


def submission_path(run: Run) -> Path | None:
    """The validated submission zip of a done pipeline run (None for other runs)."""
    return artifacts.find_submission(_finished(run).dir)
