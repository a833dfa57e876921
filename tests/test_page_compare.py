"""AppTest for the Compare page (and the run maps it adds to the Explore page), on real finished runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.algonauts2023 import compare

from core.algonauts2023 import results
from core.runs.store import RunStore
from tests.conftest import page_file
from tests.test_page_explore import _decode

PAGE = page_file("Compare")


@pytest.fixture
def runs(finished_env, demo_root):
    """The workspace's subj01 runs, newest first; the page sees the workspace and the demo."""
    return compare.finished_runs(finished_env, demo_root, 1)


def run_page(page: str = PAGE) -> AppTest:
    at = AppTest.from_file(page, default_timeout=90).run()
    assert not at.exception, at.exception
    return at


def chart(at: AppTest, key: str) -> tuple[dict, dict]:
    """``(figure, config)`` of the Plotly chart with this key."""
    found = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert len(found) == 1, f"no chart {key}"
    return json.loads(found[0].proto.spec), json.loads(found[0].proto.config)


def test_bars_heat_map_surface_and_scores(runs):
    at = run_page()
    assert at.title[0].value == "Compare runs"
    assert at.multiselect(key="compare_runs").value == [r.id for r in runs]  # both subj01 runs, newest first

    bars, config = chart(at, "compare_bars")
    traces = [t for t in bars["data"] if t["type"] == "bar"]
    assert [t["name"] for t in traces] == [compare.run_title(r) for r in runs] * 2
    rows = [row for row in results.load_roi_table(runs[1]) if row["hemi"] == "rh"]
    rh_old = traces[3]
    assert rh_old["x"] == [row["roi"] for row in rows]
    assert np.allclose(_decode(rh_old["y"]), [row["median_r"] for row in rows], equal_nan=True)
    assert config["toImageButtonOptions"] == {"format": "png", "filename": "subj01_roi_median_r", "scale": 2}

    heat, _ = chart(at, "compare_heatmap")
    assert heat["data"][0]["x"] == ["features.3", "features.6"]  # forward order of the model's layers
    assert "left hemisphere" in heat["layout"]["title"]["text"]

    surface, _ = chart(at, "compare_surface")
    assert surface["layout"]["title"]["text"] == f"subj01: {compare.run_title(runs[0])}"
    assert "scene2" not in surface["layout"]  # the sidebar's hemisphere, one scene
    at.radio(key="compare_hemis").set_value("both").run()
    assert "scene2" in chart(at, "compare_surface")[0]["layout"]  # both hemispheres side by side

    summary = at.dataframe[0].value
    assert summary["run"].tolist() == [compare.run_title(r) for r in runs]
    assert summary["noise-normalised score (%)"].tolist() == pytest.approx(
        [results.load_metrics(r)["subj01"]["noise_normalized"] for r in runs])
    nn = at.dataframe[1].value
    assert nn.loc[("lh", "V1v")].notna().all()
    assert {b.proto.label for b in at.get("download_button")} == {
        "Download the scores (CSV)", "Download the per-ROI table (CSV)"}
    assert all(b.proto.url.endswith(".csv") for b in at.get("download_button"))


def test_controls(runs):
    at = run_page()
    at.radio(key="compare_format").set_value("svg").run()
    for key in ("compare_bars", "compare_heatmap", "compare_surface"):
        assert chart(at, key)[1]["toImageButtonOptions"]["format"] == "svg"

    at.selectbox(key="compare_roi_class").set_value("prf-visualrois").run()
    assert not at.exception
    x = chart(at, "compare_bars")[0]["data"][0]["x"]
    assert x == ["all vertices", "V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"]
    assert chart(at, "compare_heatmap")[0]["data"][0]["y"] == x

    at.selectbox(key="compare_surface_run").set_value(runs[1].id).run()
    assert chart(at, "compare_surface")[0]["layout"]["title"]["text"] == f"subj01: {compare.run_title(runs[1])}"

    at.sidebar.radio[0].set_value("rh").run()  # the heat map follows the sidebar's hemisphere
    assert "right hemisphere" in chart(at, "compare_heatmap")[0]["layout"]["title"]["text"]

    at.multiselect(key="compare_runs").set_value([runs[1].id]).run()
    assert len([t for t in chart(at, "compare_bars")[0]["data"] if t["type"] == "bar"]) == 2

    at.sidebar.selectbox[0].select(2).run()  # subj02 has its own run: chosen by default
    assert not at.exception
    assert at.multiselect(key="compare_runs").value == [
        r.id for r in compare.finished_runs(RunStore(), runs[0].config["data"], 2)]
    at.multiselect(key="compare_runs").set_value([]).run()
    assert not at.exception and at.info[0].value == "Choose at least one run."


def test_no_runs_yet(runs, monkeypatch, tmp_path):
    monkeypatch.setenv("BES_WORKSPACE", str(tmp_path / "empty"))
    at = run_page()
    assert "No finished fit or pipeline run holds results for subj01" in at.info[0].value
    assert not at.get("plotly_chart")


def test_explore_offers_the_runs_accuracy(runs):
    at = run_page(page_file("Explore"))
    at.radio(key="explore_mode").set_value("Per-vertex map").run()
    names = at.selectbox(key="explore_map").options
    assert names == ["Noise ceiling", *(f"Encoding accuracy: {compare.run_title(r)}" for r in runs)]
    at.selectbox(key="explore_map").set_value(names[1]).run()
    assert not at.exception
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    bar = next(t for t in fig["data"] if t["type"] == "scatter3d")["marker"]
    assert bar["cmin"] == pytest.approx(-bar["cmax"]) and bar["colorbar"]["title"]["text"] == f"{names[1]} (r)"
