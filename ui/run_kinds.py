"""The run kinds the dashboard can launch and show: one registration line per kind
(``kind -> RunKindView(short label, help, launch form, table columns, result view)``, see ``ui.runs_panel``)."""

from __future__ import annotations

from functools import partial

from core.algonauts2021.pipeline import TASK_KIND as VIDEO_PIPELINE
from ui import image_runs, search_view, train_view, video_runs
from ui.runs_panel import RunKindView

RUN_KINDS: dict[str, RunKindView] = {
    "fit": RunKindView("fit", image_runs.HELP["fit"], partial(image_runs.form, "fit"), image_runs.columns, image_runs.details),
    "pipeline": RunKindView("pipeline", image_runs.HELP["pipeline"], partial(image_runs.form, "pipeline"), image_runs.columns, image_runs.details),
    "extract": RunKindView("extract", image_runs.HELP["extract"], partial(image_runs.form, "extract"), image_runs.columns),
    VIDEO_PIPELINE: RunKindView("video pipeline (2021)", "Algonauts 2021 clips: features, fits per track, zips",
                                video_runs.form, video_runs.columns, video_runs.details),
    "train": RunKindView("train", train_view.HELP, train_view.form, image_runs.columns, train_view.details, live=True),
    "search": RunKindView("search", search_view.HELP, search_view.form, search_view.columns, search_view.details, live=True),
}  # fmt: skip
