"""Finished Algonauts 2023 encoding runs side by side: tidy tables (charts: ``core.viz.charts``).

* ``finished_runs`` lists the done fit / pipeline runs that hold results for a subject of a data
  directory, newest first; ``run_title`` names a run in legends and menus.
* ``summary_table`` (median r per hemisphere, challenge score) and ``roi_table`` (every run's
  ``roi_r.csv`` stacked, one row per run, hemisphere and ROI) are pandas tables ready for CSV.
* ``layer_roi_matrix``: which layer predicts which ROI best (drawn by ``core.viz.charts.layer_heatmap``);
  ``accuracy_surface_figure`` puts a run's validation r on fsaverage (``core.viz.plotting``).
* Importing this module registers the ``runs`` per-vertex map provider (``core.viz.surfaces``): the
  validation r of each finished run, offered wherever ``vertex_maps`` is (the Explore page).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.features import backbones

from core.runs import workers

from core.viz import plotting

from core.viz import surfaces

from core.algonauts2023 import results
from core.algonauts2023.dataset import HEMIS, ROI_CLASSES
from core.runs.store import DB_NAME, Run, RunStore, default_workspace

RESULT_KINDS = ("fit", "pipeline", "search", "train")  # run kinds whose folders hold per-subject results
MAX_MAPS = 12  # newest runs offered as per-vertex maps
RUN_COLUMNS = ("run", "run_id", "label", "model", "weights", "layers", "estimator")
ROI_COLUMNS = (*RUN_COLUMNS, "hemi", "roi", "roi_class", "n_vertices", "median_r", "mean_r", "median_noise_normalized")
_ROI_CLASS = {roi: cls for cls, names in ROI_CLASSES.items() for roi in names}


# -- runs --------------------------------------------------------------------------------------
def finished_runs(store: RunStore, data_root: str | os.PathLike, subject: int) -> list[Run]:
    """Done runs (fit, pipeline, search, train) with results for ``subject`` of the data directory ``data_root``, newest first."""
    root = str(Path(data_root).expanduser().resolve())
    return [
        r for r in workers.list_runs(store, status="done")
        if r.kind in RESULT_KINDS and r.config.get("data") == root and subject in (r.config.get("subjects") or [])
    ]  # fmt: skip


def layers_label(run: Run) -> str:
    return "+".join(run.config.get("layers") or [])


def run_title(run: Run) -> str:
    """``"mobilenet_v2 features.6 ridge (3fa9)"``: model, layers, estimator, the weights unless they are
    the offline default (``[random]``), and the end of the run id."""
    cfg = run.config
    weights = f" [{cfg['weights']}]" if cfg.get("weights") not in (None, backbones.OFFLINE) else ""
    return f"{cfg.get('model')} {layers_label(run)} {estimator_label(run)}{weights} ({run.id[-4:]})"


def estimator_label(run: Run) -> str:
    """The model that produced the run's predictions: its estimator, or the run kind (``search``, ``train``)."""
    return run.config.get("estimator") or run.kind


def describe_run(run: Run) -> dict[str, Any]:
    cfg = run.config
    values = (run_title(run), run.id, run.label, cfg.get("model"), cfg.get("weights"), layers_label(run),
              estimator_label(run))  # fmt: skip
    return dict(zip(RUN_COLUMNS, values))


def run_scores(run: Run, subject: int) -> dict[str, float | None]:
    """``{lh_median_r, rh_median_r, noise_normalized}`` of one subject of a done run."""
    m = results.load_metrics(run)[f"subj{subject:02d}"]
    return {k: m.get(k) for k in ("lh_median_r", "rh_median_r", "noise_normalized")}


def best_run(runs: Sequence[Run], subject: int) -> Run:
    """The run with the highest mean over hemispheres of its median validation r for ``subject``."""

    def mean_r(run: Run) -> float:
        s = run_scores(run, subject)
        values = [s[f"{h}_median_r"] for h in HEMIS if s[f"{h}_median_r"] is not None]
        return sum(values) / len(values) if values else -math.inf

    return max(runs, key=mean_r)


def summary_table(runs: Sequence[Run], subject: int) -> pd.DataFrame:
    """One row per run: its config, median r per hemisphere and the noise-normalised challenge score (%)."""
    rows = []
    for run in runs:
        s = run_scores(run, subject)
        rows.append({**describe_run(run), "lh median r": s["lh_median_r"], "rh median r": s["rh_median_r"],
                     "noise-normalised score (%)": s["noise_normalized"]})  # fmt: skip
    return pd.DataFrame(rows)


def roi_table(runs: Sequence[Run], subject: int) -> pd.DataFrame:
    """Every run's per-ROI table stacked: run, config, hemi, roi, roi_class, n_vertices, median_r, mean_r,
    median_noise_normalized (NaN where undefined). ``roi_class`` is empty for ``all vertices``."""
    rows = [{**describe_run(run), **row, "roi_class": _ROI_CLASS.get(row["roi"], "")}
            for run in runs for row in results.load_roi_table(run, subject)]  # fmt: skip
    return pd.DataFrame(rows, columns=list(ROI_COLUMNS))


def noise_normalized_pivot(table: pd.DataFrame, index: Sequence[str] = ("hemi", "roi")) -> pd.DataFrame:
    """Median noise-normalised accuracy (%) with one row per hemisphere and ROI (``index``: the table's
    columns naming a row, e.g. ``("track", "roi")`` for ``roi_table_2021``), one column per run."""
    wide = table.pivot_table(index=list(index), columns="run", values="median_noise_normalized", sort=False)
    return wide.reindex(columns=list(dict.fromkeys(table["run"])))


# -- figures -----------------------------------------------------------------------------------
def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def layer_roi_matrix(table: pd.DataFrame, hemi: str,
                     layer_order: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Median r of one hemisphere, runs x ROIs: a row per run's layer (set), in forward order.

    Rows are labelled by the run's layers, prefixed by model, weights and estimator where the runs
    differ in them; runs with the same label keep the first (the newest, in ``finished_runs`` order).
    ``layer_order`` maps a model to its layers in forward order (``core.features.backbones.list_layers``);
    layers not in it sort naturally after those that are.
    """
    part = table[table["hemi"] == hemi]
    runs = part.drop_duplicates("run")
    prefix = [c for c in ("model", "weights", "estimator") if runs[c].nunique() > 1]
    labels = {r.run: " · ".join([*(str(getattr(r, c)) for c in prefix), r.layers]) for r in runs.itertuples()}
    order = layer_order or {}

    def key(r) -> tuple:
        first = r.layers.split("+")[0]
        known = list(order.get(r.model, ()))
        pos = known.index(first) if first in known else len(known)
        return (*(str(getattr(r, c)) for c in prefix), pos, _natural_key(r.layers))

    keep: dict[str, str] = {}
    for r in runs.itertuples():
        keep.setdefault(labels[r.run], r.run)
    chosen = sorted((r for r in runs.itertuples() if keep[labels[r.run]] == r.run), key=key)
    rois = list(dict.fromkeys(part["roi"]))
    wide = part.pivot_table(index="run", columns="roi", values="median_r", sort=False)
    matrix = wide.reindex(index=[r.run for r in chosen], columns=rois)
    matrix.index = [labels[r.run] for r in chosen]
    matrix.index.name, matrix.columns.name = "layers", "roi"
    return matrix


def accuracy_surface_figure(run: Run, subject: Any, surfs: Mapping[str, surfaces.Surface], **kwargs) -> go.Figure:
    """A run's validation r of ``subject`` on the given surfaces (``{hemi: Surface}``), symmetric cold-hot."""
    values = {h: surfaces.to_surface(results.load_val_r(run, h, subject.number), subject.fsaverage_mask(h),
                                     s.n_vertices) for h, s in surfs.items()}  # fmt: skip
    kwargs = {"cmap": "cold_hot", "symmetric": True, "colorbar_title": "validation r",
              "title": f"{subject.name}: {run_title(run)}", **kwargs}  # fmt: skip
    return plotting.plot_surface_map(dict(surfs), values, **kwargs)


# -- per-vertex maps for the Explore page ------------------------------------------------------
def run_accuracy_maps(subject: Any, hemi: str) -> dict[str, surfaces.VertexMap]:
    """Validation r per vertex of the newest finished runs of ``subject`` (none if no workspace exists yet)."""
    if not (default_workspace() / DB_NAME).is_file():
        return {}
    out = {}
    for run in finished_runs(RunStore(), subject.root, subject.number)[:MAX_MAPS]:
        name = f"Encoding accuracy: {run_title(run)}"
        out[name] = surfaces.VertexMap(
            name, np.asarray(results.load_val_r(run, hemi, subject.number), dtype=np.float32), unit="r",
            kind="symmetric", description=f"Validation Pearson r per vertex of run {run.id} ({run.kind}, "
            f"{run.config.get('model')} {layers_label(run)}, {run.config.get('estimator')}).",
        )  # fmt: skip
    return out


surfaces.register_map_provider("runs", run_accuracy_maps)
