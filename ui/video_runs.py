"""The Algonauts 2021 (video) run kind in the runs panel (``ui.runs_panel``): its launch form, score
columns and result view, and the validated submission zips of a finished run (Videos and Submission pages).
A search on a 2021 dataset (``ui.search_view.video_form``) shares its pickers, columns and zips."""

from __future__ import annotations

import streamlit as st

from core.algonauts2021 import pipeline as pipeline2021
from core.algonauts2021 import submission as submission2021
from core.algonauts2021.dataset import TRACK_ROIS, TRACKS, Dataset2021, subject_name
from core.encoding.fitting import ESTIMATORS
from core.features.clips import DEFAULT_N_FRAMES
from core.runs import artifacts
from core.runs.store import Run
from core.util.errors import UserError
from ui.controls import backbone_controls
from ui.runs_panel import DEVICES, Launch
from ui.video_data import data_dir, open_video_dataset

TRACK_LABELS = {"mini_track": "mini: 9 ROIs", "full_track": "full: whole brain"}
TRACK_HELP = "mini track: the voxels of nine visual ROIs; full track: every voxel of the whole brain (WB)."


def run_tracks(run: Run) -> list[str]:
    """The tracks a 2021 run fitted: its config's, or both for a search (its scopes cover both)."""
    return list(TRACKS) if run.kind == "search" else list(run.config.get("tracks") or [])


def columns(run: Run) -> dict:
    """A 2021 run's columns (a search's frames: its candidates)."""
    summary = run.summary if isinstance(run.summary, dict) else {}
    wb = [m.get("wb_median_r") for m in summary.values() if isinstance(m, dict) and m.get("wb_median_r") is not None]
    frames = run.config.get("frames") or [run.config.get("n_frames")]
    return {"WB median r": sum(wb) / len(wb) if wb else None,
            "subjects": ", ".join(subject_name(s) for s in run.config.get("subjects") or []),
            "tracks": ", ".join(run_tracks(run)), "frames": " ".join(str(f) for f in frames),
            "resolution": run.config.get("resolution")}  # fmt: skip


def subjects_picker(column, dataset: Dataset2021, key: str) -> list[int]:
    return column.multiselect("Subjects", dataset.subjects, default=dataset.subjects, key=f"{key}_run_subjects",
                              format_func=subject_name,
                              help="The challenge scores every subject: the run's zips hold the chosen ones.")  # fmt: skip


def resolution_picker(column, key: str) -> int:
    return int(column.number_input("Frame resolution (px)", 32, 1024, 112, step=16, key=f"{key}_resolution",
                                   help="Frames are resized to this square size before the backbone."))  # fmt: skip


def details(run: Run) -> None:
    st.markdown("Its per-ROI bars, brain maps and validated zips are on the [Videos](Videos) page; its zips are "
                "also offered on the [Submission](Submission) page.")  # fmt: skip


def form(key: str) -> Launch | None:
    """The settings of a 2021 pipeline run on the video dataset of the Videos page."""
    dataset = open_video_dataset(data_dir())
    c1, c2, c3 = st.columns(3)
    subjects = subjects_picker(c1, dataset, key)
    model, weights, layers = backbone_controls(
        key, (c2, c3), "torchvision backbones; mobilenet_v2 has ImageNet weights that work offline. "
        "Each layer is averaged over the clip's frames.", "Their features are concatenated (banded: one band each).",
    )
    d1, d2, d3 = st.columns(3)
    tracks = d1.multiselect("Tracks", list(TRACKS), default=list(TRACKS), key=f"{key}_tracks",
                            format_func=TRACK_LABELS.get, help=TRACK_HELP)  # fmt: skip
    estimator = d2.selectbox("Estimator", ESTIMATORS, key=f"{key}_estimator")
    motion = d3.checkbox("Add motion-energy features", key=f"{key}_motion_energy",
                         help="pymoten's motion-energy pyramid on each clip, as one more feature set "
                              "(banded: one more band).")  # fmt: skip
    with st.expander("Settings"):
        a1, a2, a3, a4 = st.columns(4)
        n_frames = a1.number_input("Frames per clip", 1, 256, DEFAULT_N_FRAMES, key=f"{key}_frames",
                                   help="Evenly spaced frames (first and last included) whose features are averaged.")
        resolution = resolution_picker(a2, key)
        max_components = max(1, dataset.n_train - 1)
        if st.session_state.get(f"{key}_components", 0) > max_components:  # a smaller dataset than before
            st.session_state[f"{key}_components"] = max_components
        n_components = a3.number_input("PCA components", 1, max_components, min(100, max_components),
                                       key=f"{key}_components", help="PCA fitted on the training clips only.")
        device = a4.selectbox("Device", list(DEVICES), key=f"{key}_device", help="auto: cuda when available")
        b1, b2, _, _ = st.columns(4)
        val_fraction = b1.number_input("Validation fraction", 0.05, 0.5, 0.1, step=0.05, key=f"{key}_val_fraction",
                                       help="Share of the training clips held out to measure validation r.")  # fmt: skip
        seed = b2.number_input("Seed", 0, 2**31 - 1, 0, key=f"{key}_seed")
    if not (subjects and layers and tracks):
        st.caption("Choose at least one subject, layer and track.")
        return None
    config = pipeline2021.Pipeline2021Config(
        data_dir=str(dataset.root), subjects=subjects, model=model, weights=weights, layers=layers,
        device=DEVICES[device], estimator=estimator, tracks=tracks, n_frames=int(n_frames), resolution=resolution,
        n_components=int(n_components), val_fraction=float(val_fraction), seed=int(seed),
        motion_energy={} if motion else None,
    ).to_dict()  # fmt: skip
    st.caption(f"One run on `{dataset.root}`: it extracts the clips' features once, fits every chosen subject and "
               "track, and writes its validated mini_track.zip / full_track.zip.")  # fmt: skip
    return Launch(pipeline2021.TASK_KIND, [config])


@st.cache_data(show_spinner="Checking the submission zip…", max_entries=16)
def checked_zip(path: str, size: int, mtime_ns: int, data_root: str, subjects: tuple[int, ...], _dataset) -> str:
    """The zip's track once it passed ``validate_submission2021`` (``UserError`` otherwise; not cached)."""
    return submission2021.validate_submission2021(path, _dataset, subjects)


def offer_zips(run: Run, dataset: Dataset2021, key: str) -> None:
    """Each track zip of a finished 2021 run, checked against ``dataset`` before it is offered for download."""
    run_subjects = tuple(run.config.get("subjects") or [])
    for track in run_tracks(run):
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
        st.success(f"`{path.name}` is valid: `{submission2021.pickle_name(track)}` with {', '.join(TRACK_ROIS[track])} "
                   f"for {', '.join(subject_name(s) for s in run_subjects)} — float32 predictions for the "
                   f"{dataset.n_test} test clips, shapes match the dataset, every value finite "
                   f"({stat.st_size / 2**20:.1f} MB).")  # fmt: skip
        st.download_button(f"Download {path.name}", path.read_bytes, file_name=path.name, mime="application/zip",
                           type="primary", key=f"{key}_download_{track}")  # fmt: skip
    left_out = [subject_name(s) for s in dataset.subjects if s not in run_subjects]
    if left_out and run_tracks(run):
        st.warning(f"Left out of this run: {', '.join(left_out)}. The challenge scores every subject of the dataset.")
