"""Videos page: the Algonauts 2021 (videos) path end to end.

A 2021 dataset (default: ``$BES_DATA2021_DIR``, else the embedded video demo, generated on first use), its
clips and per-voxel noise ceiling in the brain's volume; 2021 pipeline runs and searches (Lange 2021's
setting) launched in the background and followed live; for finished runs the per-ROI median r, the
whole-brain accuracy in the volume, the noise-normalised scores and the validated mini/full-track zips.

Thin layer: the data and its sidebar from ``ui.video_data``; launch forms and zips from ``ui.video_runs`` and
``ui.search_view``; the run list is the shared ``ui.runs_panel``; sections from ``ui.video_view``.
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from core.algonauts2021 import pipeline as pipeline2021
from core.algonauts2021.dataset import FULL_TRACK, WB
from core.algonauts2023.compare import run_title
from core.viz import volumes
from ui import search_view, video_view
from ui.figures import placeholder_style
from ui.run_kinds import RUN_KINDS
from ui.runs_panel import launch_form, open_store, runs_panel
from ui.video_data import video_sidebar
from ui.video_runs import offer_zips, run_tracks

st.set_page_config(page_title="Videos · Brain Encoding Studio", page_icon="🧠", layout="wide")
DEFAULT_RUNS = 4
placeholder_style()

st.title("Videos")
dataset, subject = video_sidebar()
subj = dataset.subject(subject)
st.markdown(
    f"**Algonauts 2021**: brain responses to {video_view.clip_length_text(dataset)} video clips. The *mini track* "
    "predicts the voxels of nine visual ROIs, the *full track* every voxel of the whole brain (a volume in MNI "
    "space); each voxel's responses are averaged over repetitions and its noise ceiling is their split-half "
    "reliability. Subjects are named `sub01` … as in the 2021 layout (`subj01` … is the 2023 one)."
)
video_view.summary(dataset, subj)
video_view.clips(dataset)

# -- noise ceiling -----------------------------------------------------------------------------
st.subheader(f"{subj.name}: noise ceiling in the brain")
ceiling = subj.noise_ceiling(WB) if WB in subj.files else None
if ceiling is None:
    st.info(f"{subj.name} has no whole-brain data with two or more repetitions, so there is no per-voxel noise "
            "ceiling to show in the volume.")  # fmt: skip
else:
    video_view.show_volume(
        f"noise-ceiling:{subj.file(WB).cached}", f"{subj.name}: noise ceiling (%)",
        volumes.to_nifti(ceiling, subj.voxel_mask(WB)), "videos_nc",
        ("Hide voxels below (%)", 100.0, 10.0, 5.0, "%.0f"),
        "Per whole-brain voxel: the split-half reliability of its responses across repetitions, in percent of the "
        "averaged response's variance. Glass brain (maximum projections), then slices over nilearn's MNI152 template.",
        symmetric=False, cmap="inferno",
    )  # fmt: skip

# -- launch and follow -------------------------------------------------------------------------
st.header("Launch a 2021 run")
store = open_store()
video_kinds = {
    pipeline2021.TASK_KIND: replace(RUN_KINDS[pipeline2021.TASK_KIND], details=None),  # its results: below
    "search": replace(RUN_KINDS["search"], label="search (2021)", help=search_view.VIDEO_HELP,
                      form=search_view.video_form),
}  # fmt: skip
launched = launch_form(store, video_kinds, "videos")
st.subheader("Video runs")
runs_panel(store, "videos_list", video_kinds, filters=False, select=launched,
           list_runs=lambda status=None, **_: pipeline2021.list_runs_2021(store, dataset.root, status=status),
           empty="No 2021 run on this data directory yet: launch one above.")  # fmt: skip

# -- results -----------------------------------------------------------------------------------
st.header(f"Results for {subj.name}")
done_here = pipeline2021.list_runs_2021(store, dataset.root, status="done")
seen = st.session_state.get("videos_seen_runs")  # finished runs already listed in this session
st.session_state["videos_seen_runs"] = [r.id for r in done_here]
by_id = {r.id: r for r in done_here if subj.number in (r.config.get("subjects") or [])}
if not by_id:
    st.info(f"No finished 2021 run holds results for {subj.name} of this data directory yet: launch one above.")
    st.stop()

fresh = [i for i in by_id if seen is not None and i not in seen][:DEFAULT_RUNS]  # finished while watching
previous = st.session_state.get("videos_runs")
kept = [i for i in previous or [] if i in by_id and i not in fresh]  # not deleted meanwhile, nor another subject's
chosen_ids = fresh + kept
st.session_state["videos_runs"] = chosen_ids if chosen_ids or previous == [] else list(by_id)[:DEFAULT_RUNS]
if fresh:
    st.session_state["videos_detail"] = fresh[0]
chosen_ids = st.multiselect("Runs", list(by_id), key="videos_runs", format_func=lambda i: video_view.title(by_id[i]),
                            help=f"Finished 2021 runs with results for {subj.name}, newest first.")  # fmt: skip
if chosen_ids:
    video_view.roi_results([by_id[i] for i in chosen_ids], subj)

st.subheader("One run: whole-brain accuracy and submission")
if st.session_state.get("videos_detail") not in by_id:
    st.session_state.pop("videos_detail", None)
run = by_id[st.selectbox("Run", list(by_id), key="videos_detail", format_func=lambda i: video_view.title(by_id[i]))]
if FULL_TRACK in run_tracks(run) and WB in subj.files:
    video_view.show_volume(
        f"accuracy:{run.id}:{subj.number}", f"{subj.name}: validation r, {run_title(run)}",
        pipeline2021.wb_accuracy_image(run.dir, subj), "videos_acc",
        ("Hide voxels with |r| below", 1.0, 0.1, 0.05, "%.2f"),
        "Validation Pearson r per whole-brain voxel (held-out training clips). Glass brain (maximum projections), "
        "then slices over nilearn's MNI152 template.",
    )  # fmt: skip
else:
    st.info("This run did not fit the full track: no whole-brain map.")
st.markdown("**Submission zips** — what the challenge takes: one pickle per track, zipped; each is checked "
            "against this dataset (ROIs, subjects, shapes, float32, finite values) before it is offered.")  # fmt: skip
offer_zips(run, dataset, "videos")
