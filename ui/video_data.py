"""The Algonauts 2021 video dataset of the dashboard: its own data directory (default ``$BES_DATA2021_DIR``,
else the embedded video demo) and subject, picked in the sidebar of the Videos page.

Why a separate picker: the video challenge ships another dataset (clips and voxels in MNI space, not
images and fsaverage vertices), with its own subjects, so it cannot share the image dataset's sidebar.
"""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from core.algonauts2021.dataset import Dataset2021, open_dataset2021, subject_name
from core.algonauts2021.demo import is_demo2021
from core.util import paths
from core.util.errors import UserError
from ui.state import persist, wait_for_demo, widget_value

DATA_ENV = "BES_DATA2021_DIR"
WHY = ("The video challenge (Algonauts 2021) is another dataset with its own subjects (`sub01` … is that "
       "layout's own naming), so this page has its own data directory and subject here.")


def default_data_dir() -> Path:
    """``$BES_DATA2021_DIR`` when set, else the embedded video demo in the user cache."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else paths.demo2021_dir()


def data_dir() -> Path:
    """The video data directory chosen on the Videos page (else the default)."""
    return Path(st.session_state.get("videos_data_dir") or default_data_dir()).expanduser()


def open_video_dataset(root: Path) -> Dataset2021:
    """The dataset at ``root`` (the video demo is generated on first use); the page stops on a bad folder."""
    try:
        paths.check_browsable(root)  # BES_DATA_ROOTS: a browser user opens only these folders
    except UserError as exc:
        st.error(str(exc))
        st.stop()
    if root == paths.demo2021_dir() and not is_demo2021(root):
        wait_for_demo(root, "core.algonauts2021.demo.ensure_demo2021", "the video demo")
    try:
        with st.spinner("Reading and checking the video dataset (the first time only: the responses are cached)…"):
            return open_dataset2021(root)
    except UserError as exc:
        st.error(str(exc))
        st.stop()


def video_sidebar() -> tuple[Dataset2021, int]:
    """The Videos page's sidebar: data directory and subject; returns the dataset and the subject number."""
    with st.sidebar:
        st.header("Video data")
        widget_value("videos_data_dir", str(default_data_dir()))
        st.text_input(
            "Video data directory", key="_w_videos_data_dir", on_change=persist, args=("videos_data_dir",),
            help="Folder with AlgonautsVideos268_All_30fpsmax/ and participants_data_v2021/ as the organisers ship "
                 f"them (Algonauts 2021). Default: ${DATA_ENV}, else the embedded video demo.",
        )  # fmt: skip
    dataset = open_video_dataset(data_dir())
    with st.sidebar:
        widget_value("videos_subject", dataset.subjects[0])
        if st.session_state["_w_videos_subject"] not in dataset.subjects:
            st.session_state["_w_videos_subject"] = dataset.subjects[0]
        st.selectbox("Subject", dataset.subjects, key="_w_videos_subject", format_func=subject_name,
                     on_change=persist, args=("videos_subject",))  # fmt: skip
        if data_dir() == paths.demo2021_dir():
            st.caption("Showing the embedded video demo (synthetic clips and responses in the real layout).")
        st.caption(WHY)
    return dataset, st.session_state["_w_videos_subject"]
