"""Compare page: finished runs of the sidebar's subject side by side.

Per-ROI median r as grouped bars (both hemispheres), a layer x ROI heat map, a run's accuracy on
the cortex, and noise-normalised scores. Tables and figures come from ``core.algonauts2023.compare``; the
surfaces from ``core.viz.surfaces`` / ``core.viz.plotting`` as on the Explore page.
"""

from __future__ import annotations

import streamlit as st

from core.features import backbones

from core.algonauts2023 import compare

from core.viz import plotting

from core.viz import surfaces
from core.algonauts2023.dataset import HEMI_NAMES, HEMIS, ROI_CLASSES
from core.util.errors import UserError
from core.runs.store import RunStore
from ui.controls import run_scores_table
from ui.state import sidebar

st.set_page_config(page_title="Compare · Brain Encoding Studio", page_icon="🧠", layout="wide")
sel = sidebar()
subj = sel.subject

st.title("Compare runs")

DEFAULT_RUNS = 4
ALL_ROIS = "all ROI classes"


@st.cache_data(show_spinner=False)
def forward_order(model: str) -> list[str]:
    """The model's layers in forward order (heat map rows); empty if the model is unknown here."""
    try:
        return backbones.list_layers(model)
    except UserError:
        return []


try:
    store = RunStore()
    runs = compare.finished_runs(store, sel.dataset.root, subj.number)
except UserError as exc:
    st.error(str(exc))
    st.stop()
if not runs:
    st.info(f"No finished fit or pipeline run holds results for {subj.name} of this data directory yet: "
            "launch one on the Runs page.")  # fmt: skip
    st.stop()

by_id = {r.id: r for r in runs}
previous = st.session_state.get("compare_runs")
kept = [i for i in previous or [] if i in by_id]  # runs deleted meanwhile, or another subject's
st.session_state["compare_runs"] = kept if kept or previous == [] else list(by_id)[:DEFAULT_RUNS]
chosen_ids = st.multiselect(
    "Runs", list(by_id), key="compare_runs",
    format_func=lambda i: compare.run_title(by_id[i]) + (f" “{by_id[i].label}”" if by_id[i].label else ""),
    help=f"Finished fit and pipeline runs with results for {subj.name}, newest first.",
)  # fmt: skip
if not chosen_ids:
    st.info("Choose at least one run.")
    st.stop()
chosen = [by_id[i] for i in chosen_ids]
fmt = st.radio("Chart downloads", ("png", "svg"), horizontal=True, key="compare_format", format_func=str.upper,
               help="The camera button in each chart's toolbar saves it in this format.")  # fmt: skip
table = compare.roi_table(chosen, subj.number)

# -- per-ROI bars ------------------------------------------------------------------------------
st.subheader("Median correlation per ROI")
classes = [ALL_ROIS, *[c for c in ROI_CLASSES if c in set(table["roi_class"])]]
if st.session_state.get("compare_roi_class") not in classes:
    st.session_state.pop("compare_roi_class", None)
roi_class = st.selectbox("ROIs", classes, key="compare_roi_class", help="The 'all vertices' bar is always shown.")
shown = table if roi_class == ALL_ROIS else table[table["roi_class"].isin([roi_class, ""])]
st.plotly_chart(compare.roi_bar_chart(shown, title=f"{subj.name}: median validation r per ROI"), theme=None,
                config=compare.chart_config(f"{subj.name}_roi_median_r", fmt), key="compare_bars")  # fmt: skip

# -- layer x ROI -------------------------------------------------------------------------------
st.subheader("Which layer predicts which ROI best")
order = {m: forward_order(m) for m in set(shown["model"])}
matrix = compare.layer_roi_matrix(shown, sel.hemi, order)
heat_title = f"{subj.name}, {HEMI_NAMES[sel.hemi]} hemisphere: median r (★ best layer per ROI)"
st.plotly_chart(compare.layer_heatmap(matrix, title=heat_title), theme=None, key="compare_heatmap",
                config=compare.chart_config(f"{subj.name}_{sel.hemi}_layer_roi", fmt))  # fmt: skip
st.caption("One column per chosen run, labelled by its layers (in the model's forward order); the hemisphere is "
           "the sidebar's. Choose runs of the same model that differ in layer to see the hierarchy.")  # fmt: skip

# -- on the cortex -----------------------------------------------------------------------------
st.subheader("Encoding accuracy on the cortex")
c1, c2 = st.columns([3, 1])
if st.session_state.get("compare_surface_run") not in chosen_ids:
    st.session_state.pop("compare_surface_run", None)
shown_id = c1.selectbox("Run", chosen_ids, key="compare_surface_run", format_func=lambda i: compare.run_title(by_id[i]))
view = c2.selectbox("View", plotting.VIEWS[:4], index=3, key="compare_view",
                    help="Camera preset; drag to rotate, scroll to zoom, double-click to reset.")  # fmt: skip
try:
    surfs = {h: surfaces.display_surface("inflated", h) for h in HEMIS}
except UserError as exc:
    st.error(str(exc))
else:
    fig = compare.accuracy_surface_figure(by_id[shown_id], subj, surfs, view=view, height=460)
    config = {**compare.chart_config(f"{subj.name}_{shown_id}_val_r", fmt), "scrollZoom": True}
    st.plotly_chart(fig, theme=None, key="compare_surface", config=config)
    st.caption(" · ".join(f"{HEMI_NAMES[h]}: {s.label}" for h, s in surfs.items())
               + ". The same maps are offered on the Explore page (Per-vertex map).")  # fmt: skip

# -- scores ------------------------------------------------------------------------------------
st.subheader("Scores")
summary = compare.summary_table(chosen, subj.number)
run_scores_table(summary, {"noise-normalised score (%)": "%.1f", "lh median r": "%.3f", "rh median r": "%.3f"},
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
                 column_config={c: st.column_config.NumberColumn(format="%.1f") for c in pivot.columns})  # fmt: skip
st.download_button("Download the per-ROI table (CSV)", table.to_csv(index=False), mime="text/csv",
                   file_name=f"{subj.name}_roi_scores.csv", key="compare_roi_csv",
                   help="Every chosen run, hemisphere and ROI (all classes): vertices, median and mean r, "
                        "median noise-normalised accuracy.")  # fmt: skip
