"""AppTest for the Flatmaps page on the generated demo: flat maps of every kind of map without pycortex's
fsaverage subject (nilearn's fsaverage5), PNG download, and what it says when pycortex pieces are missing."""

from __future__ import annotations

import io
import socket
import sys

import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from core.viz import flatmaps
from tests.conftest import page_file
from tests.pycortex_store import use_filestore

PAGE = page_file("Flatmaps")


@pytest.fixture(autouse=True)
def demo_env(demo_root, monkeypatch, tmp_path):
    monkeypatch.setenv("BES_DATA_DIR", str(demo_root))
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    st.cache_data.clear()
    return demo_root


@pytest.fixture
def no_fsaverage(tmp_path):
    """pycortex with an empty filestore: no fsaverage subject, whatever the user's filestore holds."""
    store = tmp_path / "pycortex-db"
    store.mkdir()
    with use_filestore(store):
        yield store


@pytest.fixture
def drawn(monkeypatch) -> list:
    """Every ``flatmap_png`` call the page makes: ``(kwargs, png)``."""
    calls = []
    real = flatmaps.flatmap_png

    def spy(values, **kwargs):
        png = real(values, **kwargs)
        calls.append((kwargs, png))
        return png

    monkeypatch.setattr(flatmaps, "flatmap_png", spy)
    return calls


def run_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, at.exception
    return at


def texts(elements) -> str:
    return " | ".join(e.value for e in elements)


def test_flat_map_of_every_kind_of_map_without_pycortex_fsaverage(no_fsaverage, drawn):
    at = run_page()
    # the default: the response to training image 1, from nilearn's fsaverage5, with visual ROI borders
    kwargs, png = drawn[-1]
    assert kwargs["backend"] == "nilearn" and kwargs["title"] == "subj01: response to training image 1"
    assert set(kwargs["rois"]) == {"lh", "rh"} and "V1v" in kwargs["roi_names"].values()
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.width > 1.8 * img.height and img.height > 1000
    assert len(at.get("image")) == 1
    assert [b.proto.label for b in at.get("download_button")] == ["Download PNG"]
    assert "nilearn's fsaverage5 flat mesh" in texts(at.caption)
    info = texts(at.info)
    assert f"fsaverage subject is not in its filestore {no_fsaverage}" in info
    assert "The pycortex WebGL viewer is unavailable" in info
    assert at.button(key="flat_download").label == "Download pycortex's fsaverage subject"

    at.number_input(key="flat_image").set_value(3).run()
    assert not at.exception and drawn[-1][0]["title"] == "subj01: response to training image 3"

    at.radio(key="flat_mode").set_value("ROIs").run()
    assert not at.exception
    kwargs = drawn[-1][0]
    assert kwargs["title"] == "subj01: prf-visualrois" and kwargs["labels"][1] == "V1v"

    at.radio(key="flat_mode").set_value("Per-vertex map").run()
    assert not at.exception
    kwargs = drawn[-1][0]
    assert kwargs["title"] == "subj01: Noise ceiling" and kwargs["colorbar_title"] == "Noise ceiling (%)"
    assert kwargs["cmap"] == "hot" and kwargs["symmetric"] is False

    at.selectbox(key="flat_borders").set_value("(none)").run()
    assert not at.exception and drawn[-1][0]["rois"] is None
    at.sidebar.selectbox[0].select(2).run()
    assert not at.exception and drawn[-1][0]["title"] == "subj02: Noise ceiling"


def test_download_of_fsaverage_says_plainly_when_it_cannot_be_reached(no_fsaverage, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(socket, "create_connection", offline)
    at = run_page()
    at.button(key="flat_download").click().run()
    assert not at.exception
    error = texts(at.error)
    assert "ndownloader.figshare.com cannot be reached" in error and "Until then flat maps use nilearn's fsaverage5" in error
    assert len(at.get("image")) == 1  # the flat map is still there


def test_page_without_pycortex(monkeypatch, drawn):
    monkeypatch.setitem(sys.modules, "cortex", None)  # `import cortex` raises ImportError
    at = run_page()
    assert "pip install pycortex==1.4.0" in texts(at.warning)
    assert "The pycortex WebGL viewer is unavailable: pycortex is not available" in texts(at.info)
    assert drawn[-1][0]["backend"] == "nilearn" and len(at.get("image")) == 1
