"""Compare page: finished runs of the sidebar's subject side by side.

Per-ROI median r as grouped bars (both hemispheres; finished Algonauts 2021 video runs' mini-track bars
beside them), a layer x ROI heat map, a run's accuracy on the cortex, and noise-normalised scores. The
sections are ``ui.compare_view``'s.
"""

from __future__ import annotations

import streamlit as st

from core.algonauts2021.compare import finished_runs_2021
from core.runs.store import RunStore
from core.util.errors import UserError
from ui.compare_view import image_section
from ui.figures import placeholder_style
from ui.state import sidebar

st.set_page_config(page_title="Compare · Brain Encoding Studio", page_icon="🧠", layout="wide")
sel = sidebar()
placeholder_style()
st.title("Compare runs")

try:
    store = RunStore()
    with_videos = bool(finished_runs_2021(store))
except UserError as exc:
    st.error(str(exc))
    st.stop()
image_section(store, sel, with_videos=with_videos)
