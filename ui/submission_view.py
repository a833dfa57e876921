"""Sections of the Submission page: the Algonauts 2023 zip built from one finished run per subject, and the
Algonauts 2021 track zips of finished video runs. Zips are built and validated by
``core.algonauts2023.submission`` / ``core.algonauts2021.submission`` before they are offered."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from core.algonauts2021.pipeline import list_runs_2021
from core.algonauts2023 import compare, submission
from core.algonauts2023.dataset import HEMIS
from core.runs.store import Run, RunStore
from core.util.errors import UserError
from ui.video_data import data_dir, default_data_dir, open_video_dataset
from ui.video_runs import offer_zips

NONE = ""


def scores_text(run: Run, subject: int) -> str:
    s = compare.run_scores(run, subject)
    r = " / ".join("–" if s[f"{h}_median_r"] is None else f"{s[f'{h}_median_r']:.3f}" for h in HEMIS)
    nn = "" if s["noise_normalized"] is None else f", score {s['noise_normalized']:.1f} %"
    return f"median r lh / rh {r}{nn}"


def image_submission(store: RunStore, ds) -> None:
    """Pick a run per subject (best preselected), build and validate the zip, offer it."""
    candidates = {s: compare.finished_runs(store, ds.root, s) for s in ds.subjects}
    by_id = {r.id: r for runs in candidates.values() for r in runs}
    if not by_id:
        st.info("No finished fit or pipeline run on this data directory yet: launch one on the Runs page.")
        return
    st.subheader("Runs")
    st.caption("Preselected: each subject's run with the best mean validation median r. Leave a subject out with "
               "'(none)'. A full submission needs a run per subject: a grid on the Runs page fits them in one go.")
    chosen: dict[int, str] = {}
    for s, runs in candidates.items():
        options = [NONE, *(r.id for r in runs)]
        key = f"submission_run_{s}"
        if st.session_state.get(key) not in options:
            st.session_state[key] = compare.best_run(runs, s).id if runs else NONE
        run_id = st.selectbox(
            f"subj{s:02d}", options, key=key, disabled=not runs,
            format_func=lambda i, s=s: f"{compare.run_title(by_id[i])} — {scores_text(by_id[i], s)}" if i else "(none)",
            help=None if runs else f"No finished run holds results for subj{s:02d}.",
        )  # fmt: skip
        if run_id != NONE:
            chosen[s] = run_id
    subjects = sorted(chosen)
    built = st.session_state.get("submission_built")
    if st.button("Build and validate the submission", type="primary", disabled=not chosen, key="submission_build"):
        if built:
            Path(built["path"]).unlink(missing_ok=True)  # one zip per session in the workspace
        out = store.workspace / "submissions" / f"submission-{time.strftime('%Y%m%d-%H%M%S')}-{len(subjects)}subj.zip"
        runs = [by_id[i] for i in dict.fromkeys(chosen[s] for s in subjects)]
        try:
            with st.spinner("Building and validating the zip…"):
                submission.build_from_runs(out, runs, data=ds.root)
                submission.validate_submission(out, ds, subjects)  # exactly the chosen subjects, no others
        except UserError as exc:
            out.unlink(missing_ok=True)
            st.session_state.pop("submission_built", None)
            st.error(str(exc))
        else:
            st.session_state["submission_built"] = {"path": str(out), "chosen": dict(chosen)}
        built = st.session_state.get("submission_built")

    if built and built["chosen"] == chosen and Path(built["path"]).is_file():
        path = Path(built["path"])
        st.success(f"Valid: {len(subjects)} subject{'s' if len(subjects) != 1 else ''} x 2 hemispheres, float32, "
                   f"shapes match the dataset, every value finite, {path.stat().st_size / 2**20:.1f} MB (the limit is "
                   f"{submission.MAX_BYTES // 2**20} MB).")  # fmt: skip
        st.dataframe(pd.DataFrame([{"file": submission.entry_name(s, h), "dtype": "float32", "run": built["chosen"][s],
                                    "shape": f"{ds.subject(s).n_test} x {ds.subject(s).n_vertices[h]}"}
                                   for s in subjects for h in HEMIS]),
                     hide_index=True, key="submission_contents", column_order=["file", "shape", "dtype", "run"])  # fmt: skip
        st.download_button("Download the submission zip", path.read_bytes, file_name="algonauts2023_submission.zip",
                           mime="application/zip", type="primary", key="submission_download")  # fmt: skip
        st.caption(f"Saved at `{path}`.")
        left_out = [f"subj{s:02d}" for s in ds.subjects if s not in chosen]
        if left_out:
            st.warning(f"Left out: {', '.join(left_out)}. The challenge scores every subject of the dataset.")
    elif built:
        st.caption("The choice changed since the last build: build again to download.")


def video_submission(store: RunStore) -> None:
    """The validated track zips of a finished 2021 run on the Videos page's data directory."""
    runs = list_runs_2021(store, data_dir(), status="done")  # pipeline runs and searches
    if not runs:
        st.info(f"No finished 2021 (video) run on `{data_dir()}` yet: launch one on the Videos page"
                + ("." if data_dir() == default_data_dir() else " (its data directory is set there)."))
        return
    by_id = {r.id: r for r in runs}
    if st.session_state.get("submission_video_run") not in by_id:
        st.session_state.pop("submission_video_run", None)
    run = by_id[st.selectbox("Video run", list(by_id), key="submission_video_run",
                             format_func=lambda i: compare.run_title(by_id[i]),
                             help="Finished 2021 runs on the Videos page's data directory, newest first.")]
    offer_zips(run, open_video_dataset(data_dir()), "submission_video")
