"""The ``search`` run kind in the runs panel (``ui.runs_panel``): its launch form, score columns and the live
view of a running or finished search.

``form(key)`` draws the backbone and the search's own settings (``search_settings``) and returns the launch
(``video_form(key)``: the same on the Videos page's Algonauts 2021 dataset, with candidate frame counts);
``live_view(run, subject)`` reads the run's Optuna study (``study.db`` in its folder, opened
read-only between the workers' writes): best so far per scope, the trials of a scope as a
parallel-coordinates plot and parameter importances (Optuna's Plotly figures), and which layer
won where on the cortex.
"""

from __future__ import annotations

import warnings
from dataclasses import fields

import numpy as np
import pandas as pd
import streamlit as st

from pathlib import Path

from core.algonauts2023.dataset import HEMI_NAMES, HEMIS
from core.runs import artifacts
from core.runs.store import Run
from core.algonauts2021.dataset import is_2021_layout
from core.search import space, study
from core.search.layouts import layout_of
from core.search.study import SearchConfig
from core.util.errors import UserError
from ui import image_runs, video_runs
from ui.controls import backbone_controls
from ui.runs_panel import DEVICES, Launch
from ui.state import chosen_dataset, get_dataset
from ui.video_data import data_dir, open_video_dataset

SCOPE_HELP = ("One Optuna study per ROI, ROI class or hemisphere (the hemispheres always: vertices outside every "
              "ROI take theirs).")


HELP = "per-scope hyper-parameter search (Optuna) on the sidebar's subject, then its submission zip"
VIDEO_HELP = ("Lange 2021's setting: an Optuna study per mini-track ROI and the whole brain, frames per clip "
              "searched too, then the mini_track.zip / full_track.zip")
VIDEO_SCOPES = "each mini-track ROI and the whole brain (full track)"
FRAME_CHOICES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
DEFAULT_FRAMES = next(f for f in fields(SearchConfig) if f.name == "frames").default_factory()


def form(key: str) -> Launch | None:
    """A search on the sidebar's dataset and subject: candidate layers, then the search's own settings."""
    key = f"{key}_search"  # the other kinds' forms use the same prefix
    ds = chosen_dataset()
    subject = ds.subject(st.session_state["_w_subject"])
    c1, c2, c3 = st.columns(3)
    c1.markdown(f"**Subject:** {subject.name} (from the sidebar)")
    device = c1.selectbox("Device", list(DEVICES), key=f"{key}_device", help="auto: cuda when available")
    model, weights, layers = backbone_controls(
        key, (c2, c3), "torchvision, timm or open_clip backbones; mobilenet_v2 has ImageNet weights that work offline",
        "Candidate layers: each is extracted once; every trial picks one (banded ridge: several).")
    settings = search_settings(key, subject.n_train)
    if not layers or not settings["estimators"]:
        st.caption("Choose at least one layer and one estimator.")
        return None
    config = SearchConfig(data=str(ds.root), subjects=[subject.number], model=model, weights=weights, layers=layers,
                          device=DEVICES[device], reduction="pca", **settings)
    st.caption(size_caption([subject], config))
    return Launch("search", [config.to_dict()])


def video_form(key: str) -> Launch | None:
    """A search on the Videos page's 2021 dataset: subjects, candidate layers and frame counts, then the
    search's own settings (its scopes are fixed: :data:`VIDEO_SCOPES`)."""
    key = f"{key}_search"
    dataset = open_video_dataset(data_dir())
    c1, c2, c3 = st.columns(3)
    subjects = video_runs.subjects_picker(c1, dataset, key)
    model, weights, layers = backbone_controls(
        key, (c2, c3), "torchvision, timm or open_clip backbones; mobilenet_v2 has ImageNet weights that work "
        "offline. Each layer is averaged over the clip's frames.",
        "Candidate layers: each is extracted once per frame count; every trial picks one (banded ridge: several).")
    f1, f2, f3 = st.columns(3)
    frames = f1.multiselect("Frames per clip (candidates)", FRAME_CHOICES, default=DEFAULT_FRAMES,
                            key=f"{key}_frames",
                            help="Each count of evenly spaced frames is extracted once; every trial picks one.")
    resolution = video_runs.resolution_picker(f2, key)
    device = f3.selectbox("Device", list(DEVICES), key=f"{key}_device", help="auto: cuda when available")
    settings = search_settings(key, dataset.n_train, fixed_scopes=VIDEO_SCOPES)
    if not (subjects and layers and frames and settings["estimators"]):
        st.caption("Choose at least one subject, layer, frame count and estimator.")
        return None
    config = SearchConfig(data=str(dataset.root), subjects=subjects, model=model, weights=weights, layers=layers,
                          device=DEVICES[device], resolution=resolution, frames=sorted(frames), **settings)
    layout = layout_of(str(dataset.root), subjects)
    st.caption(f"One search on `{dataset.root}`, subject after subject; it writes the winners' validated "
               f"mini_track.zip / full_track.zip. {size_caption([layout.subject(s) for s in subjects], config)}")
    return Launch("search", [config.to_dict()])


def size_caption(subjects: list, config: SearchConfig) -> str:
    """How big the search is before it is launched: its studies (every subject's scopes) x trials."""
    n = sum(len(study.scopes(s, config.scope)) for s in subjects)
    limit = "; the time limit may stop it sooner" if config.timeout else ""
    return (f"{n} studies × {config.trials} trials = {n * config.trials:,} trials, each a {config.folds}-fold CV "
            f"fit{limit}.")


def details(run: Run) -> None:
    """The live view, on the run's own subject (a 2021 search's: its tracks)."""
    data, number = Path(run.config["data"]).expanduser(), run.config["subjects"][0]
    if is_2021_layout(data):
        subject = layout_of(str(data), [number]).subject(number)
    else:
        subject = get_dataset(data).subject(number)
    live_view(run, subject, key=f"search_{run.id}")


def columns(run: Run) -> dict:
    """A 2021 search's columns are the 2021 runs' (tracks, frames), a 2023 one's the image runs'."""
    video = is_2021_layout(Path(run.config["data"]).expanduser())
    return (video_runs.columns if video else image_runs.columns)(run)


def search_settings(key: str, n_train: int, fixed_scopes: str | None = None) -> dict:
    """The search's own settings (trials, scope, budget, space) as ``SearchConfig`` fields; ``fixed_scopes``:
    what the scopes are where the layout fixes them (then no scope picker, and no ``scope`` field)."""
    c1, c2, c3, c4 = st.columns(4)
    trials = c1.number_input("Trials per scope", 1, 500, 30, key=f"{key}_trials")
    if fixed_scopes is None:
        scope = {"scope": c2.selectbox("Scope", study.SCOPES, key=f"{key}_scope", help=SCOPE_HELP)}
    else:
        scope = {}
        c2.markdown(f"**Scopes:** {fixed_scopes}")
    jobs = c3.number_input("Parallel workers", 1, 64, 1, key=f"{key}_jobs",
                           help="Local worker processes sharing the study; Ray tasks when $BES_RAY_ADDRESS is set.")
    timeout = c4.number_input("Time limit (s, 0: none)", 0, 7 * 24 * 3600, 0, step=60, key=f"{key}_timeout",
                              help="No trial starts after this, shared evenly by the subjects; a hemisphere "
                                   "(2021: every scope) without a finished trial still gets one.")
    d1, d2, d3, d4 = st.columns(4)
    estimators = d1.multiselect("Estimators", space.ESTIMATORS, default=list(space.ESTIMATORS),
                                key=f"{key}_estimators")
    n_components = d2.number_input("PCA size (trials use its first k)", 8, max(8, n_train - 1),
                                   min(1000, max(8, n_train - 1)), key=f"{key}_pca")
    pool = d3.number_input("Also pool to k x k (0: no)", 0, 16, 7, key=f"{key}_pool",
                           help="Pooled layers are a reduction the trials may take; with k > 1 the kernel "
                                "estimator may also add each layer's global average (one value per channel), "
                                "weighted as its layer.")
    sampler = d4.selectbox("Sampler", study.SAMPLERS, key=f"{key}_sampler",
                           help="tpe: Optuna's default, handles the conditional space; gp: Gaussian process")
    e1, e2 = st.columns(4)[:2]
    top = e1.number_input(
        "Vertices choose among the best k trials", 1, 100, 5, key=f"{key}_top",
        help="Each vertex chooses among the k best trials of every scope holding it (its ROI's or class's, its "
             "hemisphere's), by its own CV r.")
    average = e2.number_input(
        "... and average the best n of them", 1, 100, 5, key=f"{key}_average",
        help="Each vertex's predictions are the average of the n trials with the best CV r on it among those "
             "(1: the best one).")
    return dict(trials=int(trials), **scope, jobs=int(jobs), timeout=float(timeout) or None,
                estimators=list(estimators), n_components=int(n_components), pool_size=int(pool), sampler=sampler,
                top_trials=int(top), average_trials=int(average))


def _study(run: Run, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=study.storage(artifacts.study_storage(run.dir)))


def best_table(chosen) -> pd.DataFrame:
    return pd.DataFrame({
        "scope": [sc.name for sc, _, _ in chosen],
        "vertices": [int(sc.mask.sum()) for sc, _, _ in chosen],
        "finished trials": [n for _, _, n in chosen],
        "best CV score": [None if p is None else p["cv_score"] for _, p, _ in chosen],
        "best configuration": ["" if p is None else space.describe(p) for _, p, _ in chosen],
    })


def live_view(run: Run, subject, key: str = "search_view") -> None:
    """Best so far per scope, trials and importances of one scope, and the winning layer per vertex."""
    if not (run.dir / artifacts.STUDY).is_file():
        st.info("The search has not started its studies yet (features are being extracted).")
        return
    kind = run.config.get("scope", "roi")
    url = artifacts.study_storage(run.dir)
    try:
        chosen = study.best_by_scope(subject, kind, url)
    except UserError as exc:
        st.error(str(exc))
        return
    st.markdown("**Best so far per scope** (CV score: noise-normalised % with a noise ceiling, else median r)")
    st.dataframe(best_table(chosen), hide_index=True, key=f"{key}_best",
                 column_config={"best CV score": st.column_config.NumberColumn(format="%.3f")})
    started = [study.study_name(subject, sc) for sc, p, n in chosen if n]
    if not started:
        return
    name = st.selectbox("Scope", started, key=f"{key}_scope")
    s = _study(run, name)
    import optuna.visualization as vis

    c1, c2 = st.columns(2)
    c1.plotly_chart(vis.plot_parallel_coordinate(s), key=f"{key}_parallel")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c2.plotly_chart(vis.plot_param_importances(s), key=f"{key}_importances")
    except (RuntimeError, ValueError) as exc:  # too few finished trials
        c2.caption(f"Parameter importances: not yet ({str(exc).splitlines()[0]})")
    st.plotly_chart(vis.plot_optimization_history(s), key=f"{key}_history")
    layer_map(run, subject, kind, url, key)


def layer_map(run: Run, subject, kind: str, url: str, key: str) -> None:
    """Which layer won where: on the cortex when fsaverage meshes are at hand, else as vertex counts."""
    won = study.winning_layers(subject, kind, url)
    labels = next(iter(won.values()))[1]
    if not labels:
        return
    st.markdown("**Which layer won where**")
    st.caption("By each scope's best trial so far. In the result each vertex averages the best, by its own CV r, "
               "of the top trials of every scope holding it (the subject's metrics.json lists them per scope).")
    counts = pd.DataFrame({HEMI_NAMES.get(p, p): [int((won[p][0] == i).sum()) for i in range(len(labels))]
                           for p in won}, index=labels)
    if set(won) != set(HEMIS):  # 2021 tracks: voxels, no cortex surface
        st.dataframe(counts, key=f"{key}_layer_counts")
        return
    try:
        from core.viz import plotting, surfaces

        surfs = {h: surfaces.display_surface("inflated", h) for h in HEMIS}
        values = {h: surfaces.to_surface(np.where(won[h][0] >= 0, won[h][0], np.nan).astype(np.float32),
                                         subject.fsaverage_mask(h), surfs[h].n_vertices) for h in HEMIS}
        fig = plotting.plot_surface_map(surfs, values, labels=dict(enumerate(labels)), height=420,
                                        colorbar_title="layer")
        st.plotly_chart(fig, theme=None, key=f"{key}_layers")
    except UserError as exc:
        st.caption(f"No cortex view ({exc}); vertices per winning layer:")
    st.dataframe(counts, key=f"{key}_layer_counts")
