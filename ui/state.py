"""The shared sidebar: data directory (default: the embedded demo), subject and hemisphere.

Every page calls ``sidebar()`` first. Choices live in ``st.session_state`` under stable keys so
they survive page switches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core import demo, paths
from core.dataset import HEMI_NAMES, HEMIS, Dataset, Subject, open_dataset
from core.errors import UserError

DATA_DIR_ENV = "BES_DATA_DIR"


@dataclass
class Selection:
    dataset: Dataset
    subject: Subject
    hemi: str


def default_data_dir() -> Path:
    """``$BES_DATA_DIR`` when set, else the embedded demo in the user cache."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else paths.demo_dir()


def _ensure_demo(path: Path) -> None:
    """Generate the demo dataset on first start, with a progress bar."""
    if path == paths.demo_dir() and not path.exists():
        bar = st.progress(0.0, text="Creating the demo dataset (first start only)…")
        demo.ensure_demo(path, progress=lambda f, msg="": bar.progress(f, text=f"Creating the demo dataset: {msg}"))
        bar.empty()


@st.cache_resource(show_spinner="Reading the dataset…", max_entries=4)
def load_dataset(root: str, _stamp: float) -> Dataset:
    """Open and validate once per directory (re-read when the folder changes)."""
    return open_dataset(root)


def get_dataset(root: Path) -> Dataset:
    _ensure_demo(root)
    stamp = root.stat().st_mtime if root.exists() else 0.0
    return load_dataset(str(root), stamp)


def persist(key: str) -> None:
    st.session_state[key] = st.session_state[f"_w_{key}"]


def widget_value(key: str, default):
    st.session_state.setdefault(key, default)
    st.session_state[f"_w_{key}"] = st.session_state[key]


def sidebar() -> Selection:
    """Draw the sidebar and return the current selection; stops the page on a dataset error."""
    with st.sidebar:
        st.header("Data")
        widget_value("data_dir", str(default_data_dir()))
        st.text_input(
            "Data directory",
            key="_w_data_dir",
            on_change=persist,
            args=("data_dir",),
            help="Folder with subj01 … subj08 in the Algonauts 2023 layout. Default: the embedded demo.",
        )
        root = Path(st.session_state["data_dir"]).expanduser()
        try:
            dataset = get_dataset(root)
        except UserError as exc:
            st.error(str(exc))
            st.stop()
        widget_value("subject", dataset.subjects[0])
        if st.session_state["_w_subject"] not in dataset.subjects:
            st.session_state["_w_subject"] = dataset.subjects[0]
        st.selectbox(
            "Subject",
            dataset.subjects,
            key="_w_subject",
            format_func=lambda n: f"subj{n:02d}",
            on_change=persist,
            args=("subject",),
        )
        widget_value("hemi", HEMIS[0])
        st.radio(
            "Hemisphere",
            HEMIS,
            key="_w_hemi",
            format_func=lambda h: HEMI_NAMES[h],
            horizontal=True,
            on_change=persist,
            args=("hemi",),
        )
        if root == paths.demo_dir():
            st.caption("Showing the embedded demo dataset (synthetic responses in the real layout).")
    subject = dataset.subject(st.session_state["_w_subject"])
    return Selection(dataset=dataset, subject=subject, hemi=st.session_state["_w_hemi"])
