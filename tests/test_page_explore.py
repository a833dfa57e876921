"""AppTest for the Explore page: every control, on the generated demo and on a hand-built dataset."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.viz import surfaces
from tests.conftest import REALDATA, make_tiny_dataset, page_file

PAGE = page_file("Explore")
FULL_DIR = REALDATA / "fsaverage"


@pytest.fixture(autouse=True)
def no_full_fsaverage(monkeypatch, tmp_path):
    monkeypatch.delenv(surfaces.FSAVERAGE_DIR_ENV, raising=False)
    monkeypatch.delenv("NILEARN_SHARED_DATA", raising=False)
    monkeypatch.setenv("NILEARN_DATA", str(tmp_path / "nilearn_data"))
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def demo_env(demo_root, monkeypatch):
    monkeypatch.setenv("BES_DATA_DIR", str(demo_root))
    return demo_root


@pytest.fixture
def tiny_env(tmp_path, monkeypatch):
    root = make_tiny_dataset(tmp_path / "data", subjects=(1, 2))
    monkeypatch.setenv("BES_DATA_DIR", str(root))
    return root


def run_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def figure(at: AppTest) -> dict:
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def scenes(fig: dict) -> list[str]:
    return sorted(k for k in fig["layout"] if k.startswith("scene"))


def data_trace(fig: dict) -> dict | None:
    return next((t for t in fig["data"] if t.get("name") == "data"), None)


def colorbar(fig: dict) -> dict:
    return next(t for t in fig["data"] if t["type"] == "scatter3d")["marker"]["colorbar"]


def captions(at: AppTest) -> str:
    return " | ".join(c.value for c in at.caption)


def test_response_to_an_image(demo_env):
    at = run_page()
    assert at.title[0].value == "Explore"
    assert at.radio(key="explore_mode").value == "Response to an image"
    fig = figure(at)
    assert fig["layout"]["title"]["text"] == "subj01: response to training image 1"
    assert scenes(fig) == ["scene"] and data_trace(fig) is not None
    assert colorbar(fig)["title"]["text"] == "response (z)"
    assert "left: inflated, fsaverage5 (10,242 vertices)" in captions(at)
    assert len(at.get("image")) == 1  # the stimulus beside the brain
    assert at.get("image")[0].proto.imgs[0].caption.startswith("train-0001_nsd-")

    # another image: new title, new values; the rerun is fast (meshes cached)
    before = data_trace(fig)["customdata"]
    t0 = time.perf_counter()
    at.number_input(key="explore_image").set_value(7).run()
    elapsed = time.perf_counter() - t0
    assert not at.exception
    fig = figure(at)
    assert fig["layout"]["title"]["text"] == "subj01: response to training image 7"
    assert data_trace(fig)["customdata"] != before
    assert at.get("image")[0].proto.imgs[0].caption.startswith("train-0007_nsd-")
    assert elapsed < 1.0, f"rerun after a change of image took {elapsed:.2f}s"

    # colour controls
    at.selectbox(key="explore_resp_cmap").set_value("RdBu_r").run()
    at.radio(key="explore_resp_range").set_value("positive").run()
    at.number_input(key="explore_resp_threshold").set_value(1.5).run()
    assert not at.exception
    fig = figure(at)
    cd = np.array([np.nan if x is None else x for x in _decode(data_trace(fig)["customdata"])], dtype=float)
    assert np.nanmin(np.abs(cd)) >= 1.5
    bar = next(t for t in fig["data"] if t["type"] == "scatter3d")["marker"]
    assert bar["cmin"] == 0 and bar["colorscale"][0][1] == "rgb(5,48,97)"


def _decode(value):
    """Plotly's base64 typed arrays -> list (AppTest sees the JSON Streamlit sends)."""
    if isinstance(value, dict) and "bdata" in value:
        import base64

        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).tolist()
    return value


def test_surface_controls(demo_env):
    at = run_page()
    assert at.selectbox(key="explore_view").value == "posterior"  # visual cortex first
    assert figure(at)["layout"]["scene"]["camera"]["eye"]["y"] < 0
    at.selectbox(key="explore_view").set_value("lateral").run()
    at.radio(key="explore_hemis").set_value("both").run()
    assert not at.exception
    fig = figure(at)
    assert scenes(fig) == ["scene", "scene2"]
    assert fig["layout"]["scene"]["camera"]["eye"]["x"] < 0 < fig["layout"]["scene2"]["camera"]["eye"]["x"]
    assert "left: inflated" in captions(at) and "right: inflated" in captions(at)

    at.selectbox(key="explore_view").set_value("ventral").run()
    assert figure(at)["layout"]["scene"]["camera"]["eye"]["z"] < 0
    for mesh in ("pial", "white", "sphere"):
        at.selectbox(key="explore_mesh").set_value(mesh).run()
        assert not at.exception
        assert f"left: {mesh}, fsaverage5" in captions(at)
    at.selectbox(key="explore_mesh").set_value("flat").run()
    assert at.selectbox(key="explore_view").disabled
    assert figure(at)["layout"]["scene"]["camera"]["eye"]["z"] > 0

    # the sidebar's hemisphere drives the single-hemisphere view
    at.radio(key="explore_hemis").set_value("selected").run()
    at.sidebar.radio[0].set_value("rh").run()
    assert not at.exception
    assert "right: flat, fsaverage5" in captions(at)


def test_full_fsaverage_missing_is_explained(demo_env):
    at = run_page()
    at.expander[0]  # the "Full fsaverage" expander exists
    assert "full fsaverage not found" in captions(at)
    at.selectbox(key="explore_resolution").set_value("fsaverage").run()
    assert not at.exception
    assert len(at.error) == 1 and "full fsaverage not found" in at.error[0].value
    assert not at.get("plotly_chart")


@pytest.mark.skipif(not (FULL_DIR / "pial_left.gii.gz").is_file(), reason="no local full fsaverage")
def test_full_fsaverage_from_a_user_directory(demo_env):
    at = run_page()
    at.text_input(key="explore_fsaverage_dir").set_value(str(FULL_DIR)).run()
    assert not at.exception
    assert f"full fsaverage from {FULL_DIR}" in captions(at)
    assert "left: inflated, fsaverage (40,962 vertices, decimated)" in captions(at)
    assert data_trace(figure(at)) is not None
    at.checkbox(key="explore_full_detail").check().run()
    assert "left: inflated, fsaverage (163,842 vertices)" in captions(at)
    # no flat map in that directory: auto uses fsaverage5's
    at.selectbox(key="explore_mesh").set_value("flat").run()
    assert "left: flat, fsaverage5" in captions(at)


def test_rois_whole_class_single_and_absent(tiny_env):
    at = run_page()
    at.radio(key="explore_mode").set_value("ROIs").run()
    assert not at.exception
    assert at.selectbox(key="explore_roi_class").options == ["prf-visualrois"]
    fig = figure(at)
    assert colorbar(fig)["ticktext"] == ["V1v", "hV4"]
    assert fig["layout"]["title"]["text"] == "subj01: prf-visualrois"

    at.selectbox(key="explore_roi_prf-visualrois").set_value("hV4").run()
    assert not at.exception and not at.warning
    assert colorbar(figure(at))["ticktext"] == ["hV4"]

    at.selectbox(key="explore_roi_prf-visualrois").set_value("V3d").run()
    assert not at.exception
    assert [w.value for w in at.warning] == [
        "V3d does not exist in subj01's left hemisphere. ROIs of prf-visualrois that exist there: V1v, hV4."
    ]
    fig = figure(at)  # the bare cortex is still shown
    assert data_trace(fig) is None

    at.radio(key="explore_hemis").set_value("both").run()
    assert len(at.warning) == 2 and "right hemisphere" in at.warning[1].value


def test_rois_on_the_demo(demo_env):
    at = run_page()
    at.radio(key="explore_mode").set_value("ROIs").run()
    at.selectbox(key="explore_roi_class").set_value("floc-faces").run()
    assert not at.exception
    names = colorbar(figure(at))["ticktext"]
    assert "FFA-1" in names
    at.selectbox(key="explore_roi_floc-faces").set_value("FFA-1").run()
    assert not at.exception and not at.warning
    assert figure(at)["layout"]["title"]["text"] == "subj01: FFA-1 (floc-faces)"


def test_per_vertex_maps(demo_env):
    at = run_page()
    at.radio(key="explore_mode").set_value("Per-vertex map").run()
    assert not at.exception
    assert at.selectbox(key="explore_map").options == ["Noise ceiling"]
    fig = figure(at)
    assert colorbar(fig)["title"]["text"] == "Noise ceiling (%)"
    bar = next(t for t in fig["data"] if t["type"] == "scatter3d")["marker"]
    assert bar["cmin"] == 0 and bar["cmax"] > 0
    assert fig["layout"]["title"]["text"] == "subj01: Noise ceiling"


def test_per_vertex_maps_extra_provider(demo_env):
    """A map added through the registry hook (how encoding-accuracy runs plug in) is offered."""

    def runs(subject, hemi):
        n = subject.n_vertices[hemi]
        return {"Encoding accuracy (test run)": surfaces.VertexMap("Encoding accuracy (test run)",
                                                                   np.linspace(-0.2, 0.8, n, dtype=np.float32),
                                                                   unit="r", kind="symmetric")}  # fmt: skip

    surfaces.register_map_provider("test_runs", runs)
    try:
        at = run_page()
        at.radio(key="explore_mode").set_value("Per-vertex map").run()
        at.selectbox(key="explore_map").set_value("Encoding accuracy (test run)").run()
        assert not at.exception
        fig = figure(at)
        bar = next(t for t in fig["data"] if t["type"] == "scatter3d")["marker"]
        assert bar["cmin"] == pytest.approx(-0.8, abs=1e-3) and bar["cmax"] == pytest.approx(0.8, abs=1e-3)
    finally:
        surfaces.unregister_map_provider("test_runs")


def test_no_maps_is_said_plainly(tiny_env):
    at = run_page()
    at.radio(key="explore_mode").set_value("Per-vertex map").run()
    assert not at.exception
    assert len(at.info) == 1 and "No per-vertex maps are stored for subj01" in at.info[0].value
    assert data_trace(figure(at)) is None


def test_switching_subject_keeps_the_page_working(demo_env):
    at = run_page()
    at.number_input(key="explore_image").set_value(100).run()
    at.sidebar.selectbox[0].select(2).run()
    assert not at.exception
    assert figure(at)["layout"]["title"]["text"].startswith("subj02: response to training image")


def test_picking_an_roi_turns_the_camera_to_face_it(demo_env):
    at = run_page()
    at.radio(key="explore_mode").set_value("ROIs").run()
    at.selectbox(key="explore_roi_class").set_value("floc-faces").run()
    at.selectbox(key="explore_roi_floc-faces").set_value("FFA-1").run()
    assert not at.exception
    assert at.selectbox(key="explore_view").value == "ventral"  # FFA lies on the ventral surface
    assert figure(at)["layout"]["scene"]["camera"]["eye"]["z"] < 0
    assert "View: ventral, the preset that faces FFA-1." in captions(at)
    at.selectbox(key="explore_roi_class").set_value("floc-bodies").run()
    at.selectbox(key="explore_roi_floc-bodies").set_value("EBA").run()
    assert at.selectbox(key="explore_view").value == "lateral"  # the extrastriate body area: lateral occipital
