"""The Algonauts 2023 run kinds in the runs panel (``ui.runs_panel``): the launch form of fit, pipeline
and extract runs (one subject, or a grid of fits), their score columns and their result view."""

from __future__ import annotations

import streamlit as st

from core.algonauts2023 import pipeline
from core.algonauts2023.dataset import HEMIS
from core.encoding.fitting import ESTIMATORS
from core.encoding.lowrank import DEFAULT_RANKS
from core.features.extraction import REDUCTIONS
from core.runs.store import Run
from ui.controls import backbone_controls
from ui.runs_panel import DEVICES, Launch
from ui.state import chosen_dataset

HELP = {
    "fit": "features, encoding model, validation r and test predictions (one subject, or a grid)",
    "pipeline": "a fit plus the run's own submission zip",
    "extract": "features only (cached for later fits)",
}


def subject_names(run: Run) -> str:
    return ", ".join(f"subj{s:02d}" for s in run.config.get("subjects") or [])


def median_r(run: Run, hemi: str) -> float | None:
    """A one-subject run's median validation r of ``hemi`` from its summary (None while it runs)."""
    subjects = run.config.get("subjects") or []
    if len(subjects) != 1 or not isinstance(run.summary, dict):
        return None
    return (run.summary.get(f"subj{subjects[0]:02d}") or {}).get(f"{hemi}_median_r")


def columns(run: Run) -> dict:
    return {**{f"{h} median r": median_r(run, h) for h in HEMIS}, "subjects": subject_names(run)}


def details(run: Run) -> None:
    if run.kind == "extract":
        return
    scores = " · ".join(f"{h} median r {r:.3f}" for h in HEMIS if (r := median_r(run, h)) is not None)
    st.markdown((f"**Validation:** {scores}. " if scores else "")
                + "Compare it with other runs on the [Compare](Compare) page; submit it on the "
                "[Submission](Submission) page.")  # fmt: skip


def form(kind: str, key: str) -> Launch | None:
    """The settings of a 2023 run of ``kind`` on the sidebar's dataset and subject."""
    ds = chosen_dataset()
    subject = ds.subject(st.session_state["_w_subject"])
    grid = kind == "fit" and st.radio(
        "Scope", ("one subject", "grid"), horizontal=True, key=f"{key}_scope",
        help="grid: one fit per subject x layer x estimator (the banded estimator takes all the layers at once), "
             "executed by a dispatcher a few at a time. A full submission needs a run per subject: a grid over "
             "every subject does it in one go.") == "grid"  # fmt: skip
    c1, c2, c3 = st.columns(3)
    if grid:
        subjects = c1.multiselect("Subjects", ds.subjects, default=[subject.number], key=f"{key}_subjects",
                                  format_func=lambda n: f"subj{n:02d}")  # fmt: skip
    else:
        subjects = [subject.number]
        c1.markdown(f"**Subject:** {subject.name} (from the sidebar)")
    model, weights, layers = backbone_controls(
        key, (c2, c3), "torchvision backbones; mobilenet_v2 has ImageNet weights that work offline",
        "One run: the layers' features are concatenated (banded: one band each). Grid: one run per layer.",
    )
    estimators = []
    if kind != "extract":
        if grid:
            estimators = st.multiselect("Estimators", ESTIMATORS, default=["ridge"], key=f"{key}_estimators")
        else:
            estimators = [c1.selectbox("Estimator", ESTIMATORS, key=f"{key}_estimator")]
    with st.expander("Settings"):
        a1, a2, a3, a4 = st.columns(4)
        resolution = a1.number_input("Image resolution (px)", 32, 1024, 112, step=16, key=f"{key}_resolution",
                                     help="Images are resized to this square size before the backbone.")  # fmt: skip
        reduction = a2.selectbox("Reduction", REDUCTIONS, key=f"{key}_reduction", help="pca: fitted on training images only")
        max_components = max(1, min(ds.subject(s).n_train for s in subjects or ds.subjects) - 1)
        if st.session_state.get(f"{key}_components", 0) > max_components:  # a smaller dataset than before
            st.session_state[f"{key}_components"] = max_components
        n_components = a3.number_input("PCA components", 1, max_components, min(100, max_components),
                                       key=f"{key}_components", disabled=reduction != "pca")  # fmt: skip
        device = a4.selectbox("Device", list(DEVICES), key=f"{key}_device", help="auto: cuda when available")
        b1, b2, b3, b4 = st.columns(4)
        val_fraction = b1.number_input("Validation fraction", 0.05, 0.5, 0.1, step=0.05, key=f"{key}_val_fraction",
                                       help="Share of the training images held out to measure validation r.")  # fmt: skip
        seed = b2.number_input("Seed", 0, 2**31 - 1, 0, key=f"{key}_seed")
        low_rank = kind != "extract" and b4.checkbox(
            "Reduced-rank targets", True, key=f"{key}_low_rank",
            help="Ridge estimators: each vertex also chooses, with its alpha, the rank of the responses it is "
                 f"fitted on (the first k principal components of the training responses, k in "
                 f"{', '.join(map(str, DEFAULT_RANKS[1:]))}, or all of them). Solved in the dual.")  # fmt: skip
        if grid:
            workers = b3.number_input("Runs at once", 1, 16, 1, key=f"{key}_workers",
                                      help="Local worker processes; with $BES_RAY_ADDRESS set where the server runs, "
                                           "each run is a task on that Ray cluster instead.")  # fmt: skip
    common = dict(data=str(ds.root), model=model, weights=weights, layers=layers, device=DEVICES[device],
                  resolution=int(resolution), reduction=reduction, n_components=int(n_components), seed=int(seed))
    ranks = {} if kind == "extract" or low_rank else {"response_ranks": [0]}
    if grid:
        base = pipeline.EncodingConfig(subjects=subjects, val_fraction=float(val_fraction), **common, **ranks)
        configs = pipeline.grid_configs(base, subjects, [(model, weights, layers)], estimators)
    elif kind == "extract":
        configs = [pipeline.FeatureConfig(subjects=subjects, **common).to_dict()]
    else:
        configs = [pipeline.EncodingConfig(subjects=subjects, estimator=estimators[0], val_fraction=float(val_fraction),
                                           **common, **ranks).to_dict()]  # fmt: skip
    if not configs or not layers:
        st.caption("Choose at least one subject, layer and estimator.")
        return None
    st.caption(f"{len(configs)} run{'s' if len(configs) != 1 else ''} will be launched.")
    if grid:
        return Launch(kind, configs, grid=True, max_workers=int(workers))
    return Launch(kind, configs)
