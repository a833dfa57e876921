"""Submission page: the Algonauts 2023 submission zip from chosen finished runs, one per subject, and the
Algonauts 2021 (video) track zips of finished video runs.

Thin layer over ``ui.submission_view``: each zip is built or read, then validated against its dataset
(names, shapes, dtype, finite values, every chosen subject present, size) before it is offered.
"""

from __future__ import annotations

import streamlit as st

from core.runs.store import RunStore
from core.util.errors import UserError
from ui.state import sidebar
from ui.submission_view import image_submission, video_submission

st.set_page_config(page_title="Submission · Brain Encoding Studio", page_icon="🧠", layout="wide")
sel = sidebar()

st.title("Submission")
st.markdown(
    "The challenge takes one zip whose top level holds `subjXX/lh_pred_test.npy` and `subjXX/rh_pred_test.npy`: "
    "float32 test predictions (test images x challenge vertices). Choose one finished run per subject; "
    "each run's test predictions come from its model refitted on all training images."
)
try:
    store = RunStore()
except UserError as exc:
    st.error(str(exc))
    st.stop()
image_submission(store, sel.dataset)

st.header("Videos (Algonauts 2021)")
st.markdown("The 2021 challenge takes one zip per track (`mini_track.zip`, `full_track.zip`), each holding one "
            "pickle of every subject's test predictions per ROI; a finished video run writes and validates them.")
video_submission(store)
