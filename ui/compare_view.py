"""Sections of the Compare page: finished Algonauts 2023 runs of the sidebar's subject side by side, and
the mini-track per-ROI bars of finished Algonauts 2021 (video) runs beside them. Tables from
``core.algonauts2023.compare`` / ``core.algonauts2021.compare``, charts from ``core.viz.charts``."""

from __future__ import annotations

import streamlit as st

from core.algonauts2021.compare import finished_runs_2021, roi_table_2021
from core.algonauts2021.dataset import MINI_TRACK, subject_name
from core.algonauts2023 import compare
from core.algonauts2023.dataset import HEMI_NAMES, HEMIS, ROI_CLASSES
from core.features import backbones
from core.runs.store import Run, RunStore
from core.util.errors import UserError
from core.viz import charts, plotting, surfaces
from ui.controls import run_scores_table
from ui.figures import figure_slot
from ui.map_picker import roi_class_help

DEFAULT_RUNS = 4
ALL_ROIS = "all ROI classes"


@st.cache_data(show_spinner=False)
def forward_order(model: str) -> list[str]:
    """The model's layers in forward order (heat map rows); empty if the model is unknown here."""
    try:
        return backbones.list_layers(model)
    except UserError:
        return []


def title(run: Run) -> str:
    return compare.run_title(run) + (f" “{run.label}”" if run.label else "")


def pick_runs(runs: list[Run], key: str, help: str, where=st) -> list[Run]:
    """A multiselect of ``runs`` (newest first), the newest ``DEFAULT_RUNS`` chosen until the user chooses."""
    by_id = {r.id: r for r in runs}
    previous = st.session_state.get(key)
    kept = [i for i in previous or [] if i in by_id]  # runs deleted meanwhile, or another subject's
    st.session_state[key] = kept if kept or previous == [] else list(by_id)[:DEFAULT_RUNS]
    chosen = where.multiselect("Runs", list(by_id), key=key, format_func=lambda i: title(by_id[i]), help=help)
    return [by_id[i] for i in chosen]


def video_bars(store: RunStore, where=st) -> None:
    """Mini-track median r per ROI of finished 2021 runs (their own subjects, ``sub01`` …)."""
    runs = finished_runs_2021(store)
    subjects = sorted({s for r in runs for s in r.config.get("subjects") or []})
    if st.session_state.get("compare_video_subject") not in subjects:
        st.session_state["compare_video_subject"] = st.session_state.get("videos_subject", subjects[0])
        if st.session_state["compare_video_subject"] not in subjects:
            st.session_state["compare_video_subject"] = subjects[0]
    subject = where.selectbox("Video subject", subjects, key="compare_video_subject", format_func=subject_name,
                              help="Algonauts 2021 subjects, named as in that layout.")  # fmt: skip
    chosen = pick_runs([r for r in runs if subject in r.config.get("subjects", [])], "compare_video_runs",
                       "Finished 2021 (video) runs, newest first; more on the Videos page.", where)  # fmt: skip
    table = roi_table_2021(chosen, subject)
    mini = table[table["track"] == MINI_TRACK]
    if mini.empty:
        where.info("Choose a run that fitted the mini track.")
        return
    where.plotly_chart(charts.roi_bar_chart(mini, title=f"Videos, {subject_name(subject)}: median r, mini track",
                                            height=520, facet=None, count="n_voxels", unit="voxels"),
                       theme=None, key="compare_video_bars",
                       config=charts.chart_config(f"{subject_name(subject)}_video_mini_track_r"))  # fmt: skip


def image_section(store: RunStore, sel, *, with_videos: bool) -> None:
    """Every 2023 section; with ``with_videos``, the 2021 bars sit beside the 2023 ones."""
    subj = sel.subject
    runs = compare.finished_runs(store, sel.dataset.root, subj.number)
    if not runs:
        st.info(f"No finished fit or pipeline run holds results for {subj.name} of this data directory yet: "
                "launch one on the Runs page.")  # fmt: skip
        if with_videos:
            st.subheader("Video runs (Algonauts 2021)")
            video_bars(store)
        return
    chosen = pick_runs(runs, "compare_runs", f"Finished fit and pipeline runs with results for {subj.name}, newest first.")
    if not chosen:
        st.info("Choose at least one run.")
        return
    fmt = st.radio("Chart downloads", ("png", "svg"), horizontal=True, key="compare_format", format_func=str.upper,
                   help="The camera button in each chart's toolbar saves it in this format.")  # fmt: skip
    table = compare.roi_table(chosen, subj.number)

    st.subheader("Median correlation per ROI")
    left, right = st.columns([3, 2]) if with_videos else (st.container(), None)
    classes = [ALL_ROIS, *[c for c in ROI_CLASSES if c in set(table["roi_class"])]]
    if st.session_state.get("compare_roi_class") not in classes:
        st.session_state.pop("compare_roi_class", None)
    roi_class = left.selectbox("ROIs", classes, key="compare_roi_class",
                               help="The 'all vertices' bar is always shown.  \n" + roi_class_help(classes[1:]))
    shown = table if roi_class == ALL_ROIS else table[table["roi_class"].isin([roi_class, ""])]
    left.plotly_chart(charts.roi_bar_chart(shown, title=f"{subj.name}: median validation r per ROI"), theme=None,
                      config=charts.chart_config(f"{subj.name}_roi_median_r", fmt), key="compare_bars")  # fmt: skip
    if right is not None:
        video_bars(store, right)

    st.subheader("Which layer predicts which ROI best")
    matrix = compare.layer_roi_matrix(shown, sel.hemi, {m: forward_order(m) for m in set(shown["model"])})
    heat_title = f"{subj.name}, {HEMI_NAMES[sel.hemi]} hemisphere: median r (★ best layer per ROI)"
    st.plotly_chart(charts.layer_heatmap(matrix, title=heat_title), theme=None, key="compare_heatmap",
                    config=charts.chart_config(f"{subj.name}_{sel.hemi}_layer_roi", fmt))  # fmt: skip
    st.caption("One column per chosen run, labelled by its layers (in the model's forward order); the hemisphere is "
               "the sidebar's. Choose runs of the same model that differ in layer to see the hierarchy.")  # fmt: skip

    st.subheader("Encoding accuracy on the cortex")
    by_id = {r.id: r for r in chosen}
    c1, c2, c3 = st.columns([3, 1, 1])
    if st.session_state.get("compare_surface_run") not in by_id:
        st.session_state.pop("compare_surface_run", None)
    shown_id = c1.selectbox("Run", list(by_id), key="compare_surface_run", format_func=lambda i: compare.run_title(by_id[i]))
    view = c2.selectbox("View", plotting.VIEWS[:4], index=3, key="compare_view",
                        help="Camera preset; drag to rotate, scroll to zoom, double-click to reset.")  # fmt: skip
    both = c3.radio("Hemispheres", ("selected", "both"), key="compare_hemis", horizontal=True,
                    format_func=lambda o: HEMI_NAMES[sel.hemi] if o == "selected" else "both",
                    help="The sidebar's hemisphere (one 3-D scene: drawn sooner), or both side by side.") == "both"  # fmt: skip
    slot = figure_slot(520, "Drawing the brain…")
    try:
        surfs = {h: surfaces.display_surface("inflated", h) for h in (HEMIS if both else (sel.hemi,))}
    except UserError as exc:
        slot.error(str(exc))
    else:
        fig = compare.accuracy_surface_figure(by_id[shown_id], subj, surfs, view=view, height=520)
        slot.plotly_chart(fig, theme=None, key="compare_surface",
                          config={**charts.chart_config(f"{subj.name}_{shown_id}_val_r", fmt), "scrollZoom": True})
        st.caption(" · ".join(f"{HEMI_NAMES[h]}: {s.label}" for h, s in surfs.items())
                   + ". The same maps are offered on the Explore page (Per-vertex map).")  # fmt: skip

    st.subheader("Scores")
    summary = compare.summary_table(chosen, subj.number)
    run_scores_table(summary, {"lh median r": "%.3f", "rh median r": "%.3f", "noise-normalised score (%)": "%.1f"},
                     "compare_summary")  # fmt: skip
    st.download_button("Download the scores (CSV)", summary.to_csv(index=False), file_name=f"{subj.name}_run_scores.csv",
                       mime="text/csv", key="compare_summary_csv")  # fmt: skip
    st.markdown("**Median noise-normalised accuracy per ROI (%)** — the challenge's metric: r² over the noise "
                "ceiling, per vertex, capped at 100.")  # fmt: skip
    if table["median_noise_normalized"].isna().all():
        st.info(f"No noise ceiling is shipped for {subj.name} (noise_ceiling/subjXX/{{lh,rh}}.npy), so there are "
                "no noise-normalised scores; the table below has the correlations.")  # fmt: skip
    else:
        pivot = compare.noise_normalized_pivot(shown)
        st.dataframe(pivot, key="compare_nn",
                     column_config={c: st.column_config.NumberColumn(format="%.1f", width="small") for c in pivot.columns})
    st.download_button("Download the per-ROI table (CSV)", table.to_csv(index=False), mime="text/csv",
                       file_name=f"{subj.name}_roi_scores.csv", key="compare_roi_csv",
                       help="Every chosen run, hemisphere and ROI (all classes): vertices, median and mean r, "
                            "median noise-normalised accuracy.")  # fmt: skip
