"""Videos page: the Algonauts 2021 (videos) path end to end.

A 2021 dataset (default: ``$BES_DATA2021_DIR``, else the embedded video demo, generated on first
use), its clips and per-voxel noise ceiling in the brain's volume; 2021 pipeline runs launched in
the background and followed live; for finished runs the per-ROI median r, the whole-brain
accuracy in the volume, the noise-normalised scores and the validated mini/full-track zips.

Thin layer: the data from ``core.algonauts2021.dataset`` / ``core.algonauts2021.demo``; runs through the run store
(``core.runs.workers``, kind ``core.algonauts2021.pipeline.TASK_KIND``, configs checked before queueing); tables and
bar charts from ``core.algonauts2023.compare``; volumes drawn by ``core.viz.volumes`` (nilearn); zips checked by
``core.algonauts2021.submission``.
"""

from __future__ import annotations

import io
import os
from datetime import datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from core.algonauts2023 import compare

from core.runs import workers

from core.util import paths

from core.algonauts2021 import pipeline as pipeline2021

from core.algonauts2021 import submission as submission2021

from core.viz import volumes
from core.algonauts2021.dataset import FULL_TRACK, MINI_TRACK, TRACK_ROIS, TRACKS, WB, open_dataset2021, subject_name
from core.algonauts2021.demo import is_demo2021
from core.util.errors import UserError
from core.encoding.fitting import ESTIMATORS
from core.runs import artifacts
from core.runs.store import Run, RunStore
from core.features.clips import DEFAULT_N_FRAMES
from ui.controls import backbone_controls, run_scores_table
from ui.state import persist, wait_for_demo, widget_value

st.set_page_config(page_title="Videos · Brain Encoding Studio", page_icon="🧠", layout="wide")

DATA_ENV = "BES_DATA2021_DIR"
POLL_ACTIVE_S = 1.5  # run list refresh while runs are active
POLL_IDLE_S = 5.0  # ... and otherwise (runs launched elsewhere show up)
MAX_PREVIEWS = 4
DEFAULT_RUNS = 4
DEVICES = {"auto": None, "cpu": "cpu", "cuda": "cuda"}
TRACK_LABELS = {MINI_TRACK: "mini track: 9 ROIs", FULL_TRACK: "full track: whole brain (WB)"}
SLICES = {"axial": "z", "coronal": "y", "sagittal": "x"}
N_CUTS = 6  # slices per view, placed by nilearn where the data are


def default_data_dir() -> Path:
    """``$BES_DATA2021_DIR`` when set, else the embedded video demo in the user cache."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else paths.demo2021_dir()


def png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, facecolor="white")
    return buf.getvalue()


@st.cache_data(show_spinner="Drawing the volume…", max_entries=32)
def volume_pngs(key: str, title: str, slices: str, threshold: float, symmetric: bool, cmap: str,
                _img) -> tuple[bytes, bytes]:
    """Glass brain and slices of a volume as PNGs; ``key`` names the volume's content."""
    style = dict(title=title, threshold=threshold, symmetric=symmetric, cmap=cmap)
    return (png(volumes.glass_brain_figure(_img, **style)),
            png(volumes.slices_figure(_img, display_mode=slices, cut_coords=N_CUTS, **style)))  # fmt: skip


@st.cache_data(show_spinner="Checking the submission zip…", max_entries=16)
def checked_zip(path: str, size: int, mtime_ns: int, data_root: str, subjects: tuple[int, ...], _dataset) -> str:
    """The zip's track once it passed ``validate_submission2021`` (``UserError`` otherwise; not cached)."""
    return submission2021.validate_submission2021(path, _dataset, subjects)


def show_volume(key: str, title: str, img, prefix: str, threshold: tuple[str, float, float, float, str], caption: str,
                *, symmetric: bool = True, cmap: str = "cold_hot") -> None:
    """A volume as a glass brain and a row of slices, with the view and threshold controls above.

    ``threshold``: the slider's label, maximum, default, step and format (values closer to 0 are not drawn).
    """
    v1, v2 = st.columns(2)
    slices = v1.radio("Slices", list(SLICES), horizontal=True, key=f"{prefix}_slices")
    label, top, default, step, fmt = threshold
    cut = v2.slider(label, 0.0, top, default, step, format=fmt, key=f"{prefix}_threshold")
    glass, row = volume_pngs(key, title, SLICES[slices], cut, symmetric, cmap, img)
    st.image(glass, width="stretch")
    st.image(row, width="stretch")
    st.caption(caption)


# -- data --------------------------------------------------------------------------------------
with st.sidebar:
    st.header("Video data")
    widget_value("videos_data_dir", str(default_data_dir()))
    st.text_input(
        "Video data directory", key="_w_videos_data_dir", on_change=persist, args=("videos_data_dir",),
        help="Folder with AlgonautsVideos268_All_30fpsmax/ and participants_data_v2021/ as the organisers ship "
             f"them (Algonauts 2021). Default: ${DATA_ENV}, else the embedded video demo.",
    )  # fmt: skip
root = Path(st.session_state["videos_data_dir"]).expanduser()

st.title("Videos")
st.markdown(
    "**Algonauts 2021**: brain responses to 3-second video clips. The *mini track* predicts the voxels of nine "
    "visual ROIs, the *full track* every voxel of the whole brain (a volume in MNI space); each voxel's responses "
    "are averaged over repetitions and its noise ceiling is their split-half reliability."
)
if root == paths.demo2021_dir() and not is_demo2021(root):
    wait_for_demo(root, "core.algonauts2021.demo.ensure_demo2021", "the video demo")
try:
    paths.check_browsable(root)  # BES_DATA_ROOTS: a browser user opens only these folders
    with st.spinner("Reading and checking the video dataset (the first time only: the responses are cached)…"):
        dataset = open_dataset2021(root)
except UserError as exc:
    st.error(str(exc))
    st.stop()

with st.sidebar:
    widget_value("videos_subject", dataset.subjects[0])
    if st.session_state["_w_videos_subject"] not in dataset.subjects:
        st.session_state["_w_videos_subject"] = dataset.subjects[0]
    st.selectbox("Subject", dataset.subjects, key="_w_videos_subject", format_func=subject_name,
                 on_change=persist, args=("videos_subject",))  # fmt: skip
    if root == paths.demo2021_dir():
        st.caption("Showing the embedded video demo (synthetic clips and responses in the real layout).")
subj = dataset.subject(st.session_state["_w_videos_subject"])
info = subj.summary()

# -- summary -----------------------------------------------------------------------------------
st.subheader(f"{subj.name}: summary")
st.caption(f"`{dataset.root}` — {len(dataset.subjects)} subject{'s' if len(dataset.subjects) != 1 else ''}: "
           + ", ".join(subject_name(s) for s in dataset.subjects))  # fmt: skip
mini_rois = info["tracks"].get(MINI_TRACK, [])
m1, m2, m3, m4 = st.columns(4)
m1.metric("Clips (training + test)", f"{dataset.n_train:,} + {dataset.n_test:,}",
          help="The first clips (sorted by name) are the training clips, one per row of the responses; the rest "
               "are the test clips whose responses the challenge keeps.")  # fmt: skip
m2.metric("ROIs", f"{len(mini_rois)}" + (" + WB" if WB in info["n_voxels"] else ""),
          help="Mini-track ROIs present, and the whole brain (full track).")  # fmt: skip
m3.metric("Voxels", f"{info['n_voxels'][WB]:,}" if WB in info["n_voxels"] else
          f"{sum(info['n_voxels'].values()):,}", help="Whole-brain voxels (else: the ROIs' voxels).")  # fmt: skip
m4.metric("Repetitions", " / ".join(str(n) for n in sorted(set(info["n_reps"].values()))),
          help="Repetitions per clip (averaged; their split-half reliability is the noise ceiling).")  # fmt: skip
st.dataframe(
    pd.DataFrame([{"ROI": roi, "track": t, "voxels": info["n_voxels"][roi], "repetitions": info["n_reps"][roi]}
                  for t, rois in info["tracks"].items() for roi in rois]),
    hide_index=True, key="videos_rois",
)  # fmt: skip

# -- clips -------------------------------------------------------------------------------------
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

# -- noise ceiling -----------------------------------------------------------------------------
st.subheader(f"{subj.name}: noise ceiling in the brain")
ceiling = subj.noise_ceiling(WB) if WB in subj.files else None
if ceiling is None:
    st.info(f"{subj.name} has no whole-brain data with two or more repetitions, so there is no per-voxel noise "
            "ceiling to show in the volume.")  # fmt: skip
else:
    show_volume(
        f"noise-ceiling:{subj.file(WB).cached}", f"{subj.name}: noise ceiling (%)",
        volumes.to_nifti(ceiling, subj.voxel_mask(WB)), "videos_nc",
        ("Hide voxels below (%)", 100.0, 10.0, 5.0, "%.0f"),
        "Per whole-brain voxel: the split-half reliability of its responses across repetitions, in percent of the "
        "averaged response's variance. Glass brain (maximum projections), then slices over nilearn's MNI152 template.",
        symmetric=False, cmap="inferno",
    )  # fmt: skip

# -- launch ------------------------------------------------------------------------------------
try:
    store = RunStore()
except UserError as exc:
    st.error(str(exc))
    st.stop()

st.header("Launch a 2021 pipeline run")
st.caption(f"Run store: `{store.workspace}` (set `BES_WORKSPACE` to use another). The run extracts the clips' "
           "features once, fits every chosen subject and track, and writes its validated mini_track.zip / "
           "full_track.zip; it keeps going when the page closes.")  # fmt: skip
c1, c2, c3 = st.columns(3)
subjects = c1.multiselect("Subjects", dataset.subjects, default=dataset.subjects, key="videos_run_subjects",
                          format_func=subject_name,
                          help="The challenge scores every subject: the run's zips hold the chosen ones.")  # fmt: skip
model, weights, layers = backbone_controls(
    "videos", (c2, c3), "torchvision backbones; mobilenet_v2 has ImageNet weights that work offline. "
    "Each layer is averaged over the clip's frames.", "Their features are concatenated (banded: one band each).",
)
d1, d2, d3 = st.columns(3)
tracks = d1.multiselect("Tracks", list(TRACKS), default=list(TRACKS), key="videos_tracks", format_func=TRACK_LABELS.get)
estimator = d2.selectbox("Estimator", ESTIMATORS, key="videos_estimator")
motion = d3.checkbox("Add motion-energy features", key="videos_motion_energy",
                     help="pymoten's motion-energy pyramid on each clip, as one more feature set "
                          "(banded: one more band).")  # fmt: skip
with st.expander("Settings"):
    a1, a2, a3, a4 = st.columns(4)
    n_frames = a1.number_input("Frames per clip", 1, 256, DEFAULT_N_FRAMES, key="videos_frames",
                               help="Evenly spaced frames (first and last included) whose features are averaged.")
    resolution = a2.number_input("Frame resolution (px)", 32, 1024, 112, step=16, key="videos_resolution",
                                 help="Frames are resized to this square size before the backbone.")  # fmt: skip
    max_components = max(1, dataset.n_train - 1)
    if st.session_state.get("videos_components", 0) > max_components:  # a smaller dataset than before
        st.session_state["videos_components"] = max_components
    n_components = a3.number_input("PCA components", 1, max_components, min(100, max_components),
                                   key="videos_components", help="PCA fitted on the training clips only.")  # fmt: skip
    device = a4.selectbox("Device", list(DEVICES), key="videos_device", help="auto: cuda when available")
    b1, b2, _, _ = st.columns(4)
    val_fraction = b1.number_input("Validation fraction", 0.05, 0.5, 0.1, step=0.05, key="videos_val_fraction",
                                   help="Share of the training clips held out to measure validation r.")  # fmt: skip
    seed = b2.number_input("Seed", 0, 2**31 - 1, 0, key="videos_seed")
label = st.text_input("Label (optional)", key="videos_label",
                      help="Shown in the run list; searchable on the Runs page.")  # fmt: skip
config = pipeline2021.Pipeline2021Config(
    data_dir=str(dataset.root), subjects=subjects, model=model, weights=weights, layers=layers, device=DEVICES[device],
    estimator=estimator, tracks=tracks, n_frames=int(n_frames), resolution=int(resolution),
    n_components=int(n_components), val_fraction=float(val_fraction), seed=int(seed),
    motion_energy={} if motion else None,
).to_dict()  # fmt: skip
if st.button("Launch", type="primary", disabled=not (subjects and layers and tracks), key="videos_launch"):
    try:
        with st.spinner("Checking the settings and starting the worker…"):
            launched = workers.launch(store, pipeline2021.TASK_KIND, config, label=label)
    except UserError as exc:
        st.error(str(exc))
    else:
        st.success(f"Launched run {launched.id}: follow it below (or on the Runs page).")
if not (subjects and layers and tracks):
    st.caption("Choose at least one subject, layer and track.")


# -- runs --------------------------------------------------------------------------------------
def progress_text(run: Run) -> str:
    message = f": {run.message}" if run.message and run.message != run.status else ""
    return f"{run.status}{message} ({run.progress:.0%})"


def runs_frame(runs: list[Run]) -> pd.DataFrame:
    return pd.DataFrame({
        "run": [r.id for r in runs],
        "label": [r.label for r in runs],
        "status": [r.status for r in runs],
        "progress": [r.progress for r in runs],
        "subjects": [", ".join(subject_name(s) for s in r.config.get("subjects") or []) for r in runs],
        "model": [r.config.get("model") for r in runs],
        "layers": [compare.layers_label(r) for r in runs],
        "estimator": [r.config.get("estimator") for r in runs],
        "tracks": [", ".join(r.config.get("tracks") or []) for r in runs],
        "frames": [r.config.get("n_frames") for r in runs],
        "resolution": [r.config.get("resolution") for r in runs],
        "seconds": [None if r.seconds is None else round(r.seconds, 1) for r in runs],
        "created": [datetime.fromtimestamp(r.created) for r in runs],
        "message": [r.error if r.error else r.message for r in runs],
    })  # fmt: skip


def state_of(runs: list[Run]) -> tuple[bool, int]:
    return any(r.active for r in runs), sum(r.status == "done" for r in runs)


at_start = state_of(pipeline2021.list_runs_2021(store, dataset.root))


@st.fragment(run_every=POLL_ACTIVE_S if at_start[0] else POLL_IDLE_S)
def runs_panel() -> None:
    runs = pipeline2021.list_runs_2021(store, dataset.root)
    if state_of(runs) != at_start:
        st.rerun()  # runs started or ended: redraw the page (results, polling interval)
    st.subheader("Video runs")
    if not runs:
        st.info("No 2021 run on this data directory yet: launch one above.")
        return
    for run in [r for r in runs if r.active][:10]:
        p1, p2 = st.columns([6, 1], vertical_alignment="bottom")
        p1.progress(min(1.0, max(0.0, run.progress)), text=f"`{run.id}` — {progress_text(run)}")
        p2.button("Cancel", key=f"videos_cancel_{run.id}", on_click=workers.cancel, args=(store, run.id))
    st.dataframe(
        runs_frame(runs), hide_index=True, key="videos_runs_table",
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0, max_value=1.0, format="percent"),
            "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        },
    )  # fmt: skip
    failed = [r for r in runs if r.status == "failed"][:1]
    if failed:
        st.caption(f"Latest failure, {failed[0].id}: {failed[0].error}. Its log is on the Runs page.")


runs_panel()

# -- results -----------------------------------------------------------------------------------
st.header(f"Results for {subj.name}")
done_here = pipeline2021.list_runs_2021(store, dataset.root, status="done")
seen = st.session_state.get("videos_seen_runs")  # finished runs already listed in this session
st.session_state["videos_seen_runs"] = [r.id for r in done_here]
done = [r for r in done_here if subj.number in (r.config.get("subjects") or [])]
if not done:
    st.info(f"No finished 2021 run holds results for {subj.name} of this data directory yet: launch one above.")
    st.stop()
by_id = {r.id: r for r in done}


def title(run_id: str) -> str:
    run = by_id[run_id]
    return compare.run_title(run) + (f" “{run.label}”" if run.label else "")


fresh = [i for i in by_id if seen is not None and i not in seen][:DEFAULT_RUNS]  # finished while watching
previous = st.session_state.get("videos_runs")
kept = [i for i in previous or [] if i in by_id and i not in fresh]  # not deleted meanwhile, nor another subject's
chosen_ids = fresh + kept
st.session_state["videos_runs"] = chosen_ids if chosen_ids or previous == [] else list(by_id)[:DEFAULT_RUNS]
if fresh:
    st.session_state["videos_detail"] = fresh[0]
chosen_ids = st.multiselect("Runs", list(by_id), key="videos_runs", format_func=title,
                            help=f"Finished 2021 runs with results for {subj.name}, newest first.")  # fmt: skip
if chosen_ids:
    chosen = [by_id[i] for i in chosen_ids]
    table = compare.roi_table_2021(chosen, subj.number)
    st.subheader("Median correlation per ROI")
    st.plotly_chart(
        compare.roi_bar_chart(table, title=f"{subj.name}: median validation r per ROI", height=460, facet=None,
                              count="n_voxels", unit="voxels"),
        theme=None, key="videos_bars", config=compare.chart_config(f"{subj.name}_video_roi_median_r"),
    )  # fmt: skip
    st.caption("The mini track's ROIs, then the whole brain (WB, full track); validation r on held-out training "
               "clips. The camera button saves the chart.")  # fmt: skip

    st.subheader("Noise-normalised scores")
    summary = compare.summary_table_2021(chosen, subj.number)
    run_scores_table(summary, {"mini_track 2021 score": "%.3f", "full_track 2021 score": "%.3f",
                               "mini_track score (%)": "%.1f", "full_track score (%)": "%.1f",
                               "WB median r": "%.3f"}, "videos_scores")  # fmt: skip
    st.caption("**2021 score**: the Algonauts 2021 leaderboard's measure — per voxel r / √(split-half "
               "reliability), averaged over each ROI's voxels, then over the mini track's ROIs (full track: over "
               "the whole brain's voxels); voxels with no reliability are left out. **score (%)**: the 2023 "
               "challenge's rule on the same data — r² over the noise ceiling, capped at 100, averaged over voxels.")  # fmt: skip
    st.markdown("**Median noise-normalised accuracy per ROI (%)** — r² over the noise ceiling, per voxel, capped "
                "at 100; the track scores above are the mean over the track's voxels.")  # fmt: skip
    pivot = compare.noise_normalized_pivot(table, index=("track", "roi"))
    st.dataframe(pivot, key="videos_nn",
                 column_config={c: st.column_config.NumberColumn(format="%.1f") for c in pivot.columns})  # fmt: skip
    st.download_button("Download the per-ROI table (CSV)", table.to_csv(index=False), mime="text/csv",
                       file_name=f"{subj.name}_video_roi_scores.csv", key="videos_roi_csv")  # fmt: skip

st.subheader("One run: whole-brain accuracy and submission")
if st.session_state.get("videos_detail") not in by_id:
    st.session_state.pop("videos_detail", None)
run = by_id[st.selectbox("Run", list(by_id), key="videos_detail", format_func=title)]
run_tracks = run.config.get("tracks") or []
if FULL_TRACK in run_tracks and WB in subj.files:
    show_volume(
        f"accuracy:{run.id}:{subj.number}", f"{subj.name}: validation r, {compare.run_title(run)}",
        pipeline2021.wb_accuracy_image(run.dir, subj), "videos_acc",
        ("Hide voxels with |r| below", 1.0, 0.1, 0.05, "%.2f"),
        "Validation Pearson r per whole-brain voxel (held-out training clips). Glass brain (maximum projections), "
        "then slices over nilearn's MNI152 template.",
    )  # fmt: skip
else:
    st.info("This run did not fit the full track: no whole-brain map.")

st.markdown("**Submission zips** — what the challenge takes: one pickle per track, zipped; each is checked "
            "against this dataset (ROIs, subjects, shapes, float32, finite values) before it is offered.")  # fmt: skip
run_subjects = tuple(run.config.get("subjects") or [])
for track in run_tracks:
    path = artifacts.find_submission(run.dir, submission2021.zip_name(track))
    if path is None:
        st.error(f"{run.dir / submission2021.zip_name(track)}: missing, so this run's {track} cannot be offered")
        continue
    stat = path.stat()
    try:
        checked_zip(str(path), stat.st_size, stat.st_mtime_ns, str(dataset.root), run_subjects, dataset)
    except UserError as exc:
        st.error(str(exc))
        continue
    rois = ", ".join(TRACK_ROIS[track])
    st.success(f"`{path.name}` is valid: `{submission2021.pickle_name(track)}` with {rois} for "
               f"{', '.join(subject_name(s) for s in run_subjects)} — float32 predictions for the {dataset.n_test} "
               f"test clips, shapes match the dataset, every value finite "
               f"({stat.st_size / 2**20:.1f} MB).")  # fmt: skip
    st.download_button(f"Download {path.name}", path.read_bytes, file_name=path.name, mime="application/zip",
                       type="primary", key=f"videos_download_{track}")  # fmt: skip
left_out = [subject_name(s) for s in dataset.subjects if s not in run_subjects]
if left_out and run_tracks:
    st.warning(f"Left out of this run: {', '.join(left_out)}. The challenge scores every subject of the dataset.")
