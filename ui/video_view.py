"""Sections of the Videos page (Algonauts 2021): the dataset summary, clip previews, volumes as glass
brain and slices, and the per-ROI results of finished runs. Data from ``core.algonauts2021``; volumes
drawn by ``core.viz.volumes``; charts from ``core.viz.charts``."""

from __future__ import annotations

import io

import pandas as pd
import streamlit as st

from core.algonauts2021.compare import roi_table_2021, summary_table_2021
from core.algonauts2021.dataset import MINI_TRACK, WB, Dataset2021, subject_name
from core.algonauts2023.compare import noise_normalized_pivot, run_title
from core.features.video import probe_video
from core.runs.store import Run
from core.viz import charts, volumes
from ui.controls import run_scores_table
from ui.figures import figure_slot

MAX_PREVIEWS = 4
PROBED_CLIPS = 8  # clips whose length is read for the page's text
SLICES = {"axial": "z", "coronal": "y", "sagittal": "x"}
N_CUTS = 6  # slices per view, placed by nilearn where the data are


@st.cache_data(show_spinner=False, max_entries=64)
def clip_seconds(path: str, mtime_ns: int) -> float:
    return probe_video(path).duration_s


def clip_length_text(dataset: Dataset2021) -> str:
    """``"1-second"`` or ``"2.5–3-second"``: the length of the first clips, read from the files."""
    seconds = [clip_seconds(str(p), p.stat().st_mtime_ns) for p in dataset.videos[:PROBED_CLIPS]]
    lo, hi = min(seconds), max(seconds)
    return f"{lo:.3g}-second" if round(lo, 1) == round(hi, 1) else f"{lo:.2g}–{hi:.2g}-second"


def summary(dataset: Dataset2021, subj) -> None:
    info = subj.summary()
    st.subheader(f"{subj.name}: summary")
    st.caption(f"`{dataset.root}` — {len(dataset.subjects)} subject{'s' if len(dataset.subjects) != 1 else ''}: "
               + ", ".join(subject_name(s) for s in dataset.subjects))  # fmt: skip
    mini_rois = info["tracks"].get(MINI_TRACK, [])
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Clips (training + test)", f"{dataset.n_train:,} + {dataset.n_test:,}",
              help="The first clips (sorted by name) are the training clips, one per row of the responses; the "
                   "rest are the test clips whose responses the challenge keeps.")  # fmt: skip
    m2.metric("ROIs", f"{len(mini_rois)}" + (" + WB" if WB in info["n_voxels"] else ""),
              help="Mini-track ROIs present, and the whole brain (full track).")  # fmt: skip
    m3.metric("Voxels", f"{info['n_voxels'][WB]:,}" if WB in info["n_voxels"] else
              f"{sum(info['n_voxels'].values()):,}", help="Whole-brain voxels (else: the ROIs' voxels).")  # fmt: skip
    m4.metric("Repetitions", " / ".join(str(n) for n in sorted(set(info["n_reps"].values()))),
              help="Repetitions per clip (averaged; their split-half reliability is the noise ceiling).")  # fmt: skip
    st.dataframe(pd.DataFrame([{"ROI": roi, "track": t, "voxels": info["n_voxels"][roi], "repetitions": info["n_reps"][roi]}
                               for t, rois in info["tracks"].items() for roi in rois]),
                 hide_index=True, key="videos_rois")  # fmt: skip


def clips(dataset: Dataset2021) -> None:
    st.subheader("Clips")
    videos = dataset.videos
    defaults = [i for i in (0, 1, dataset.n_train) if i < len(videos)]
    if any(i >= len(videos) for i in st.session_state.get("videos_clips", [])):
        st.session_state.pop("videos_clips")  # a smaller dataset than before
    previews = st.multiselect(
        "Preview clips", list(range(len(videos))), default=defaults, key="videos_clips", max_selections=MAX_PREVIEWS,
        format_func=lambda i: f"{videos[i].name} ({'training' if i < dataset.n_train else 'test'})",
    )  # fmt: skip
    for col, i in zip(st.columns(MAX_PREVIEWS), previews):
        col.video(videos[i])
        col.caption(f"{videos[i].name} · {'training' if i < dataset.n_train else 'test'} clip {i + 1}")


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white")
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=32)
def volume_pngs(key: str, title: str, slices: str, threshold: float, symmetric: bool, cmap: str,
                _img) -> tuple[bytes, bytes]:
    """Glass brain and slices of a volume as PNGs; ``key`` names the volume's content."""
    style = dict(title=title, threshold=threshold, symmetric=symmetric, cmap=cmap)
    return (_png(volumes.glass_brain_figure(_img, **style)),
            _png(volumes.slices_figure(_img, display_mode=slices, cut_coords=N_CUTS, **style)))  # fmt: skip


def show_volume(key: str, title: str, img, prefix: str, threshold: tuple[str, float, float, float, str], caption: str,
                *, symmetric: bool = True, cmap: str = "cold_hot") -> None:
    """A volume as a glass brain and a row of slices, with the view and threshold controls above.

    ``threshold``: the slider's label, maximum, default, step and format (values closer to 0 are not drawn).
    """
    v1, v2 = st.columns(2)
    slices = v1.radio("Slices", list(SLICES), horizontal=True, key=f"{prefix}_slices")
    label, top, default, step, fmt = threshold
    cut = v2.slider(label, 0.0, top, default, step, format=fmt, key=f"{prefix}_threshold")
    glass_slot = figure_slot(290, "Drawing the glass brain…")  # the figures' aspect at the page's width
    row_slot = figure_slot(250, "Drawing the slices…")
    glass, row = volume_pngs(key, title, SLICES[slices], cut, symmetric, cmap, img)
    glass_slot.image(glass, width="stretch")
    row_slot.image(row, width="stretch")
    st.caption(caption)


def roi_results(chosen: list[Run], subj) -> None:
    """Per-ROI bars, the scores table and the noise-normalised table of the chosen runs for one subject."""
    table = roi_table_2021(chosen, subj.number)
    st.subheader("Median correlation per ROI")
    st.plotly_chart(
        charts.roi_bar_chart(table, title=f"{subj.name}: median validation r per ROI", height=460, facet=None,
                             count="n_voxels", unit="voxels"),
        theme=None, key="videos_bars", config=charts.chart_config(f"{subj.name}_video_roi_median_r"),
    )  # fmt: skip
    st.caption("The mini track's ROIs, then the whole brain (WB, full track); validation r on held-out training "
               "clips. The camera button saves the chart.")  # fmt: skip
    st.subheader("Noise-normalised scores")
    run_scores_table(summary_table_2021(chosen, subj.number),
                     {"mini_track 2021 score": "%.3f", "full_track 2021 score": "%.3f", "mini_track score (%)": "%.1f",
                      "full_track score (%)": "%.1f", "WB median r": "%.3f"}, "videos_scores")  # fmt: skip
    st.caption("**2021 score**: the Algonauts 2021 leaderboard's measure — per voxel r / √(split-half "
               "reliability), averaged over each ROI's voxels, then over the mini track's ROIs (full track: over "
               "the whole brain's voxels); voxels with no reliability are left out. **score (%)**: the 2023 "
               "challenge's rule on the same data — r² over the noise ceiling, capped at 100, averaged over voxels.")  # fmt: skip
    st.markdown("**Median noise-normalised accuracy per ROI (%)** — r² over the noise ceiling, per voxel, capped "
                "at 100; the track scores above are the mean over the track's voxels.")  # fmt: skip
    pivot = noise_normalized_pivot(table, index=("track", "roi"))
    st.dataframe(pivot, key="videos_nn",
                 column_config={c: st.column_config.NumberColumn(format="%.1f") for c in pivot.columns})  # fmt: skip
    st.download_button("Download the per-ROI table (CSV)", table.to_csv(index=False), mime="text/csv",
                       file_name=f"{subj.name}_video_roi_scores.csv", key="videos_roi_csv")  # fmt: skip


def title(run: Run) -> str:
    return run_title(run) + (f" “{run.label}”" if run.label else "")
