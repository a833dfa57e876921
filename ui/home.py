"""The Home page: what the studio does, a four-step quick start and the tour, with links to the pages."""

from __future__ import annotations

import streamlit as st

from ui.state import sidebar

PAGES = {  # file -> (title, what it holds); the files keep their URLs (/Dataset, /Explore, ...)
    "app_pages/1_Dataset.py": ("Dataset", "subjects, image and vertex counts, ROIs per hemisphere, stimulus images"),
    "app_pages/2_Explore.py": ("Explore", "responses, ROIs and per-vertex maps (noise ceiling, encoding accuracy) on fsaverage"),
    "app_pages/3_Runs.py": ("Runs", "launch feature extraction and encoding fits in the background and follow them"),
    "app_pages/4_Compare.py": ("Compare", "per-ROI accuracy of runs side by side"),
    "app_pages/5_Submission.py": ("Submission", "build and download the challenge submission zip"),
    "app_pages/6_Flatmaps.py": ("Flatmaps", "any map as a flat map (pycortex or nilearn) and a shareable WebGL viewer"),
    "app_pages/7_Videos.py": ("Videos", "the Algonauts 2021 video challenge: data, runs, ROI bars, glass brains, submissions"),
}


def page_file(title: str) -> str:
    """The file of the page titled ``title`` (relative to the repository root)."""
    return next(path for path, (name, _) in PAGES.items() if name == title)


def home() -> None:
    sel = sidebar()
    st.title("Brain Encoding Studio")
    st.markdown(
        "Build, judge and submit **fMRI encoding models**: predict a person's brain responses to images from the "
        "features of a deep neural network, on the Natural Scenes Dataset in the Algonauts 2023 layout.  \n"
        f"Current data: `{sel.dataset.root}` — {len(sel.dataset.subjects)} subject(s)."
    )
    st.subheader("Quick start")
    steps = st.columns(4)
    with steps[0]:
        st.markdown("**1. Open Runs**")
        st.page_link(page_file("Runs"), label="Runs", icon="▶️")
    with steps[1]:
        st.markdown("**2. Launch a fit**")
        st.caption("Keep the defaults (mobilenet_v2, one layer, ridge) and press **Launch**; it runs in the "
                   "background and its progress shows below the form.")  # fmt: skip
    with steps[2]:
        st.markdown("**3. Compare**")
        st.page_link(page_file("Compare"), label="Compare", icon="📊")
        st.caption("Per-ROI accuracy of the finished runs side by side.")
    with steps[3]:
        st.markdown("**4. Submit**")
        st.page_link(page_file("Submission"), label="Submission", icon="📦")
        st.caption("Build and validate the challenge zip.")
    st.info(f"A full submission needs a run per subject ({len(sel.dataset.subjects)} here): on Runs choose "
            "**Scope: grid** with every subject to fit them all in one go.")  # fmt: skip
    st.subheader("Tour")
    for path, (title, what) in PAGES.items():
        c1, c2 = st.columns([1, 5], vertical_alignment="center")
        c1.page_link(path, label=title)
        c2.markdown(what)
    st.caption("Everything here is also available without the dashboard: `python -m core --help`.")
