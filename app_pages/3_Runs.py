"""Runs page: launch feature extraction, encoding fits and other registered run kinds as background runs,
follow them live, cancel them, read their logs and errors.

Thin layer: runs execute in detached worker processes (``core.runs.workers``) and report to the run store
(``core.runs.store``); the launch form and the live list are the shared ``ui.runs_panel``, the run kinds
those registered in ``ui.run_kinds``.
"""

from __future__ import annotations

import streamlit as st

from ui.figures import placeholder_style
from ui.run_kinds import RUN_KINDS
from ui.runs_panel import launch_form, open_store, runs_panel
from ui.state import sidebar

st.set_page_config(page_title="Runs · Brain Encoding Studio", page_icon="🧠", layout="wide")
sidebar()
placeholder_style()

st.title("Runs")
store = open_store()
st.subheader("Launch")
launched = launch_form(store, RUN_KINDS, "runs")
st.subheader("Runs")
runs_panel(store, "runs", RUN_KINDS, select=launched)
