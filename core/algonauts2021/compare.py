"""Finished Algonauts 2021 (video) runs side by side: tidy tables ready for CSV and ``core.viz.charts``.

* ``summary_table_2021``: one row per run, its whole-brain median r and per track the 2021
  leaderboard score and the noise-normalised score (%).
* ``roi_table_2021``: every run's per-ROI table stacked (per track and ROI instead of per hemisphere).
* ``finished_runs_2021``: the done runs (2021 pipeline runs and searches) holding a subject, on any data
  directory (the Compare page's side-by-side view), newest first.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from core.algonauts2021.dataset import TRACKS, is_2021_layout, subject_name
from core.algonauts2021.pipeline import read_roi_table, run_data_2021
from core.algonauts2023.compare import RUN_COLUMNS, describe_run
from core.runs import artifacts, workers
from core.runs.store import Run, RunStore

ROI_COLUMNS_2021 = ("track", "roi", "n_voxels", "median_r", "mean_r", "median_noise_normalized", "mean_nnc")


def finished_runs_2021(store: RunStore, subject: int | None = None) -> list[Run]:
    """Done 2021 pipeline runs and searches on a 2021 dataset (holding ``subject`` when given), newest first."""
    return [r for r in workers.list_runs(store, status="done")
            if (data := run_data_2021(r)) is not None and (r.kind != "search" or is_2021_layout(data))
            and (subject is None or subject in (r.config.get("subjects") or []))]  # fmt: skip


def summary_table_2021(runs: Sequence[Run], subject: int) -> pd.DataFrame:
    """One row per ``core.algonauts2021.pipeline`` run: its config, whole-brain median r, and per track the 2021
    leaderboard score (mean r / sqrt(reliability)) and the noise-normalised score (%) (None for a track
    the run did not fit)."""
    rows = []
    for run in runs:
        m = artifacts.read_metrics(run.dir)[subject_name(subject)]
        nn, nnc = m.get("noise_normalized") or {}, m.get("nnc_2021") or {}
        rows.append({**describe_run(run), "WB median r": m.get("wb_median_r"),
                     **{f"{t} 2021 score": nnc.get(t) for t in TRACKS},
                     **{f"{t} score (%)": nn.get(t) for t in TRACKS}})  # fmt: skip
    return pd.DataFrame(rows)


def roi_table_2021(runs: Sequence[Run], subject: int) -> pd.DataFrame:
    """Every ``core.algonauts2021.pipeline`` run's per-ROI table stacked: run, config, track, roi (mini-track ROIs,
    then ``WB``), n_voxels, median_r, mean_r, median_noise_normalized, mean_nnc (NaN where undefined)."""
    rows = [{**describe_run(run), **row} for run in runs for row in read_roi_table(run.dir, subject)]
    return pd.DataFrame(rows, columns=[*RUN_COLUMNS, *ROI_COLUMNS_2021])
