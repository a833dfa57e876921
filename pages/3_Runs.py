"""Runs page: launch feature extraction and encoding fits as background runs, follow them live, cancel
them, read their logs and errors.

Thin layer: runs execute in detached worker processes (``core.runs.workers``) and report to the run store
(``core.runs.store``); the list below polls the store in a fragment, so the page stays responsive.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

from core.runs import workers as jobs

from core.algonauts2023 import pipeline
from core.algonauts2023.dataset import HEMIS
from core.encoding.fitting import ESTIMATORS
from core.util.errors import UserError
from core.features.extraction import REDUCTIONS
from core.runs.store import ACTIVE, STATUSES, Run, RunStore
from ui.controls import backbone_controls
from ui.state import sidebar
from ui import train_view

st.set_page_config(page_title="Runs · Brain Encoding Studio", page_icon="🧠", layout="wide")
sel = sidebar()
ds = sel.dataset

st.title("Runs")

POLL_ACTIVE_S = 1.5  # list refresh while runs are active
POLL_IDLE_S = 5.0  # ... and otherwise (runs launched elsewhere show up)
LIST_LIMIT = 200
LOG_CHARS = 20_000
DEVICES = {"auto": None, "cpu": "cpu", "cuda": "cuda"}
KINDS = {
    "fit": "fit: features, encoding model, validation r and test predictions",
    "pipeline": "pipeline: a fit plus the run's own submission zip",
    "extract": "extract: features only (cached for later fits)",
}

try:
    store = RunStore()
except UserError as exc:
    st.error(str(exc))
    st.stop()
st.caption(f"Run store: `{store.workspace}` (set `BES_WORKSPACE` to use another). "
           "Runs keep going when the page closes.")


# -- launch ------------------------------------------------------------------------------------
st.subheader("Launch")
grid = st.radio("Scope", ("one subject", "grid"), horizontal=True, key="runs_scope",
                help="grid: one fit per subject x layer x estimator (the banded estimator takes all the layers "
                     "at once), executed by a dispatcher a few at a time") == "grid"  # fmt: skip
c1, c2, c3 = st.columns(3)
if grid:
    subjects = c1.multiselect("Subjects", ds.subjects, default=[sel.subject.number], key="runs_subjects",
                              format_func=lambda n: f"subj{n:02d}")  # fmt: skip
    kind = "fit"
else:
    subjects = [sel.subject.number]
    c1.markdown(f"**Subject:** {sel.subject.name} (from the sidebar)")
    kind = c1.selectbox("Kind", list(KINDS), format_func=KINDS.get, key="runs_kind")
model, weights, layers = backbone_controls(
    "runs", (c2, c3), "torchvision backbones; mobilenet_v2 has ImageNet weights that work offline",
    "One run: the layers' features are concatenated (banded: one band each). Grid: one run per layer.",
)
if kind != "extract":
    if grid:
        estimators = st.multiselect("Estimators", ESTIMATORS, default=["ridge"], key="runs_estimators")
    else:
        estimators = [st.selectbox("Estimator", ESTIMATORS, key="runs_estimator")]

with st.expander("Settings"):
    a1, a2, a3, a4 = st.columns(4)
    resolution = a1.number_input("Image resolution (px)", 32, 1024, 112, step=16, key="runs_resolution",
                                 help="Images are resized to this square size before the backbone.")  # fmt: skip
    reduction = a2.selectbox("Reduction", REDUCTIONS, key="runs_reduction", help="pca: fitted on training images only")
    max_components = max(1, min(ds.subject(s).n_train for s in subjects or ds.subjects) - 1)
    if st.session_state.get("runs_components", 0) > max_components:  # a smaller dataset than before
        st.session_state["runs_components"] = max_components
    n_components = a3.number_input("PCA components", 1, max_components, min(100, max_components), key="runs_components",
                                   disabled=reduction != "pca")  # fmt: skip
    device = a4.selectbox("Device", list(DEVICES), key="runs_device", help="auto: cuda when available")
    b1, b2, b3, b4 = st.columns(4)
    val_fraction = b1.number_input("Validation fraction", 0.05, 0.5, 0.1, step=0.05, key="runs_val_fraction",
                                   help="Share of the training images held out to measure validation r.")  # fmt: skip
    seed = b2.number_input("Seed", 0, 2**31 - 1, 0, key="runs_seed")
    if grid:
        workers = b3.number_input("Runs at once", 1, 16, 1, key="runs_workers", help="Local worker processes.")
        ray_address = b4.text_input("Ray address (optional)", key="runs_ray",
                                    help="Each run as a Ray task. Empty: $BES_RAY_ADDRESS, else local workers.")
label = st.text_input("Label (optional)", key="runs_label", help="Shown in the run list; searchable.")

common = dict(data=str(ds.root), model=model, weights=weights, layers=layers, device=DEVICES[device],
              resolution=int(resolution), reduction=reduction, n_components=int(n_components),
              seed=int(seed))  # fmt: skip
if grid:
    base = pipeline.EncodingConfig(subjects=subjects, val_fraction=float(val_fraction), **common)
    configs = pipeline.grid_configs(base, subjects, [(model, weights, layers)], estimators)
elif kind == "extract":
    configs = [pipeline.FeatureConfig(subjects=subjects, **common).to_dict()]
else:
    configs = [pipeline.EncodingConfig(subjects=subjects, estimator=estimators[0], val_fraction=float(val_fraction),
                                    **common).to_dict()]  # fmt: skip
st.caption(f"{len(configs)} run{'s' if len(configs) != 1 else ''} will be launched."
           if configs else "Choose at least one subject, layer and estimator.")  # fmt: skip

if st.button("Launch", type="primary", disabled=not configs or not layers, key="runs_launch"):
    try:
        with st.spinner("Checking the settings and starting the worker…"):
            if grid:
                launched = jobs.launch_grid(store, "fit", configs, label=label, max_workers=int(workers),
                                            ray_address=ray_address.strip() or None)  # fmt: skip
            else:
                launched = [jobs.launch(store, kind, configs[0], label=label)]
    except UserError as exc:
        st.error(str(exc))
    else:
        st.session_state["runs_detail"] = launched[0].id
        st.success(f"Launched {len(launched)} run{'s' if len(launched) != 1 else ''}: "
                   + ", ".join(r.id for r in launched[:5]) + (" …" if len(launched) > 5 else ""))  # fmt: skip

train_view.launcher(store, ds)


# -- runs --------------------------------------------------------------------------------------
def median_r(run: Run, hemi: str) -> float | None:
    subjects = run.config.get("subjects") or []
    if len(subjects) != 1 or not isinstance(run.summary, dict):
        return None
    return (run.summary.get(f"subj{subjects[0]:02d}") or {}).get(f"{hemi}_median_r")


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run": [r.id for r in runs],
            "label": [r.label for r in runs],
            "kind": [r.kind for r in runs],
            "status": [r.status for r in runs],
            "progress": [r.progress for r in runs],
            "subjects": [", ".join(f"subj{s:02d}" for s in r.config.get("subjects") or []) for r in runs],
            "model": [r.config.get("model") for r in runs],
            "layers": ["+".join(r.config.get("layers") or []) for r in runs],
            "estimator": [r.config.get("estimator") for r in runs],
            **{f"{h} median r": [median_r(r, h) for r in runs] for h in HEMIS},
            "seconds": [None if r.seconds is None else round(r.seconds, 1) for r in runs],
            "created": [datetime.fromtimestamp(r.created) for r in runs],
            "message": [r.error if r.error else r.message for r in runs],
        }
    )


def describe(run: Run) -> str:
    return f"{run.id} · {run.kind}" + (f" “{run.label}”" if run.label else "")


def progress_text(run: Run) -> str:
    message = f": {run.message}" if run.message and run.message != run.status else ""
    return f"{run.status}{message} ({run.progress:.0%})"


active_at_start = bool(jobs.list_runs(store, status=ACTIVE))


@st.fragment(run_every=POLL_ACTIVE_S if active_at_start else POLL_IDLE_S)
def runs_panel() -> None:
    if bool(jobs.list_runs(store, status=ACTIVE)) != active_at_start:
        st.rerun()  # runs started or all ended: redraw with the other polling interval
    st.subheader("Runs")
    f1, f2 = st.columns([2, 1])
    statuses = f1.multiselect("Status", STATUSES, key="runs_status_filter", placeholder="all statuses")
    search = f2.text_input("Search id or label", key="runs_search")
    runs = jobs.list_runs(store, status=statuses or None, search=search.strip() or None, limit=LIST_LIMIT)
    if not runs:
        st.info("No runs yet: launch one above." if not (statuses or search) else "No run matches the filters.")
        return
    for run in [r for r in runs if r.active][:10]:
        st.progress(min(1.0, max(0.0, run.progress)), text=f"`{run.id}` {run.kind} — {progress_text(run)}")
    st.dataframe(
        runs_frame(runs),
        hide_index=True,
        key="runs_table",
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
            "lh median r": st.column_config.NumberColumn(format="%.3f"),
            "rh median r": st.column_config.NumberColumn(format="%.3f"),
            "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        },
    )

    st.subheader("Run details")
    ids = [r.id for r in runs]
    if st.session_state.get("runs_detail") not in ids:
        st.session_state["runs_detail"] = ids[0]
    by_id = {r.id: r for r in runs}
    run_id = st.selectbox("Run", ids, key="runs_detail", format_func=lambda i: describe(by_id[i]))
    run = jobs.get_run(store, run_id)
    parts = [run.status, run.message if run.message != run.status else "",
             f"{run.seconds:.1f} s" if run.seconds else ""]  # fmt: skip
    st.markdown("**Status:** " + " · ".join(p for p in parts if p))
    if run.active:
        st.progress(min(1.0, max(0.0, run.progress)), text=progress_text(run))
        b1, b2, _ = st.columns([1, 1, 3])
        b1.button("Cancel run", key="runs_cancel", on_click=jobs.cancel, args=(store, run.id))
        if run.group:
            b2.button("Cancel the whole grid", key="runs_cancel_grid", on_click=jobs.cancel_group,
                      args=(store, run.group))  # fmt: skip
    if run.error:
        st.error(f"{run.status}: {run.error}")
    train_view.details(store, run)
    if run.status == "done" and run.kind in ("fit", "pipeline"):
        st.caption("Compare it with other runs on the Compare page; submit it on the Submission page.")
    log, config, results = st.tabs(["Log", "Config", "Results"])
    log.code(store.read_log(run.id, LOG_CHARS) or "(no log yet)", language=None)
    config.json(run.config)
    results.json({"summary": run.summary, "timings": run.timings, "group": run.group, "directory": str(run.dir)})


runs_panel()
