"""Submission page: the Algonauts 2023 submission zip from chosen finished runs, one per subject.

Thin layer over ``core.algonauts2023.submission``: the zip is built, then validated against the dataset (names,
shapes, dtype, finite values, every chosen subject present, size) before it is offered.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from core.algonauts2023 import compare

from core.algonauts2023 import submission
from core.algonauts2023.dataset import HEMIS
from core.util.errors import UserError
from core.runs.store import Run, RunStore
from ui.state import sidebar

st.set_page_config(page_title="Submission · Brain Encoding Studio", page_icon="🧠", layout="wide")
sel = sidebar()
ds = sel.dataset

st.title("Submission")
st.markdown(
    "The challenge takes one zip whose top level holds `subjXX/lh_pred_test.npy` and `subjXX/rh_pred_test.npy`: "
    "float32 test predictions (test images x challenge vertices). Choose one finished run per subject; "
    "each run's test predictions come from its model refitted on all training images."
)

NONE = ""


def scores_text(run: Run, subject: int) -> str:
    s = compare.run_scores(run, subject)
    r = " / ".join("–" if s[f"{h}_median_r"] is None else f"{s[f'{h}_median_r']:.3f}" for h in HEMIS)
    nn = "" if s["noise_normalized"] is None else f", score {s['noise_normalized']:.1f} %"
    return f"median r lh / rh {r}{nn}"


try:
    store = RunStore()
    candidates = {s: compare.finished_runs(store, ds.root, s) for s in ds.subjects}
except UserError as exc:
    st.error(str(exc))
    st.stop()
by_id = {r.id: r for runs in candidates.values() for r in runs}
if not by_id:
    st.info("No finished fit or pipeline run on this data directory yet: launch one on the Runs page.")
    st.stop()

st.subheader("Runs")
st.caption("Preselected: each subject's run with the best mean validation median r. Leave a subject out with '(none)'.")
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
    size = path.stat().st_size
    st.success(
        f"Valid: {len(subjects)} subject{'s' if len(subjects) != 1 else ''} x 2 hemispheres, float32, shapes match "
        f"the dataset, every value finite, {size / 2**20:.1f} MB (the limit is {submission.MAX_BYTES // 2**20} MB)."
    )
    st.dataframe(
        pd.DataFrame(
            [{"file": submission.entry_name(s, h), "shape": f"{ds.subject(s).n_test} x {ds.subject(s).n_vertices[h]}",
              "dtype": "float32", "run": built["chosen"][s]} for s in subjects for h in HEMIS]
        ),
        hide_index=True,
        key="submission_contents",
    )  # fmt: skip
    st.download_button("Download the submission zip", path.read_bytes, file_name="algonauts2023_submission.zip",
                       mime="application/zip", type="primary", key="submission_download")  # fmt: skip
    st.caption(f"Saved at `{path}`.")
    left_out = [f"subj{s:02d}" for s in ds.subjects if s not in chosen]
    if left_out:
        st.warning(f"Left out: {', '.join(left_out)}. The challenge scores every subject of the dataset.")
elif built:
    st.caption("The choice changed since the last build: build again to download.")
