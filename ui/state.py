"""The shared sidebar: data directory (default: the embedded demo), subject and hemisphere.

Every page calls ``sidebar()`` first. Choices live in ``st.session_state`` under stable keys so
they survive page switches.
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core.algonauts2023 import demo

from core.util import paths
from core.algonauts2023.dataset import HEMI_NAMES, HEMIS, Dataset, Subject, open_dataset
from core.util.errors import UserError

@dataclass
class Selection:
    dataset: Dataset
    subject: Subject
    hemi: str




@st.cache_resource(show_spinner=False)
def _demo_job(path: str, generator: str) -> dict:
    """Run ``core.<generator>(path, progress)`` in one background thread shared by every session,
    so that a page change or a second browser tab does not stop or restart the generation."""
    job = {"fraction": 0.0, "message": "starting", "error": None, "done": False}
    module, func = generator.rsplit(".", 1)

    def work() -> None:
        try:
            ensure = getattr(importlib.import_module(module), func)
            ensure(Path(path), progress=lambda f, msg="": job.update(fraction=f, message=msg))
        except Exception as exc:  # shown to every session waiting on it
            job["error"] = str(exc)
        finally:
            job["done"] = True

    threading.Thread(target=work, name=f"{func}-generator", daemon=True).start()
    return job


def wait_for_demo(path: Path, generator: str, what: str) -> None:
    """Show a progress bar until the demo at ``path`` exists (``generator``: e.g. ``core.algonauts2023.demo.ensure_demo``)."""
    job = _demo_job(str(path), generator)
    bar = st.progress(0.0, text=f"Creating {what} (first start only)…")
    while not job["done"]:
        bar.progress(min(1.0, max(0.0, job["fraction"])), text=f"Creating {what} (first start only): {job['message']}")
        time.sleep(0.3)
    bar.empty()
    if job["error"]:
        _demo_job.clear()  # let a reload try again
        st.error(job["error"])
        st.stop()


def _ensure_demo(path: Path) -> None:
    if path == paths.demo_dir() and not demo.is_demo(path):
        wait_for_demo(path, "core.algonauts2023.demo.ensure_demo", "the demo dataset")


@st.cache_resource(show_spinner="Reading the dataset…", max_entries=4)
def load_dataset(root: str, _stamp: float) -> Dataset:
    """Open and validate once per directory (re-read when the folder changes)."""
    return open_dataset(root)


def get_dataset(root: Path) -> Dataset:
    try:
        stamp = root.stat().st_mtime
    except OSError:
        stamp = 0.0  # open_dataset says what is wrong
    return load_dataset(str(root), stamp)


def chosen_dataset() -> Dataset:
    """The dataset of the sidebar's data directory, for forms drawn after ``sidebar()`` has checked it."""
    return get_dataset(Path(st.session_state["data_dir"]).expanduser())


def persist(key: str) -> None:
    st.session_state[key] = st.session_state[f"_w_{key}"]


def widget_value(key: str, default):
    st.session_state.setdefault(key, default)
    st.session_state[f"_w_{key}"] = st.session_state[key]


def sidebar() -> Selection:
    """Draw the sidebar and return the current selection; stops the page on a dataset error."""
    widget_value("data_dir", str(paths.default_data_dir()))  # the CLI's `info` has the same default
    _ensure_demo(Path(st.session_state["data_dir"]).expanduser())
    with st.sidebar:
        st.header("Data")
        st.text_input(
            "Data directory",
            key="_w_data_dir",
            on_change=persist,
            args=("data_dir",),
            help="Folder with subj01 … subj08 in the Algonauts 2023 layout. Default: the embedded demo. "
                 "Only folders under BES_DATA_ROOTS (set by whoever runs the server) can be opened.",
        )
        root = Path(st.session_state["data_dir"]).expanduser()
        try:
            paths.check_browsable(root)  # BES_DATA_ROOTS: a browser user opens only these folders
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
