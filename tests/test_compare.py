"""``core.algonauts2023.compare`` on real finished runs (the ``finished_workspace`` fixture: small fits on the generated demo)."""

from __future__ import annotations


import numpy as np
import pytest

from core.algonauts2023 import compare
from core.viz import charts

from core.viz import surfaces

from core.algonauts2023 import results
from core.algonauts2023.dataset import open_dataset
from core.runs.store import RunStore



@pytest.fixture
def runs(finished_workspace, demo_root):
    return compare.finished_runs(RunStore(finished_workspace), demo_root, 1)


def test_finished_runs_of_a_subject_newest_first(finished_workspace, demo_root, tmp_path):
    store = RunStore(finished_workspace)
    subj1 = compare.finished_runs(store, demo_root, 1)
    assert [r.config["layers"] for r in subj1] == [["features.6"], ["features.3"]]
    assert [r.config["subjects"] for r in compare.finished_runs(store, demo_root, 2)] == [[2]]
    assert compare.finished_runs(store, tmp_path, 1) == []  # another data directory
    assert compare.run_title(subj1[0]) == f"mobilenet_v2 features.6 ridge ({subj1[0].id[-4:]})"
    means = [np.mean([compare.run_scores(r, 1)[f"{h}_median_r"] for h in ("lh", "rh")]) for r in subj1]
    assert compare.best_run(subj1, 1) == subj1[int(np.argmax(means))]


def test_tables_hold_the_runs_results(runs):
    table = compare.roi_table(runs, 1)
    assert list(table.columns) == list(compare.ROI_COLUMNS)
    for run in runs:
        rows = results.load_roi_table(run)
        part = table[table["run_id"] == run.id]
        assert len(part) == len(rows)
        assert part["median_r"].tolist() == pytest.approx([r["median_r"] for r in rows], nan_ok=True)
        assert part["median_noise_normalized"].tolist() == pytest.approx(
            [r["median_noise_normalized"] for r in rows], nan_ok=True)
    assert set(table.loc[table["roi"] == "V1v", "roi_class"]) == {"prf-visualrois"}
    assert set(table.loc[table["roi"] == "all vertices", "roi_class"]) == {""}

    summary = compare.summary_table(runs, 1)
    assert summary["run_id"].tolist() == [r.id for r in runs]
    for (_, row), run in zip(summary.iterrows(), runs):
        m = results.load_metrics(run)["subj01"]
        assert row["lh median r"] == pytest.approx(m["lh_median_r"])
        assert row["noise-normalised score (%)"] == pytest.approx(m["noise_normalized"])
        assert 0 < row["noise-normalised score (%)"] < 100

    pivot = compare.noise_normalized_pivot(table)
    assert list(pivot.columns) == [compare.run_title(r) for r in runs]
    assert pivot.loc[("lh", "V1v"), compare.run_title(runs[0])] == pytest.approx(
        table.query("run_id == @runs[0].id and hemi == 'lh' and roi == 'V1v'")["median_noise_normalized"].item())


def test_grouped_bar_chart(runs):
    table = compare.roi_table(runs, 1)
    fig = charts.roi_bar_chart(table, title="t")
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == 2 * len(runs) and fig.layout.barmode == "group"
    assert [b.name for b in bars[: len(runs)]] == [compare.run_title(r) for r in runs]
    assert [b.showlegend for b in bars] == [True] * len(runs) + [False] * len(runs)
    assert bars[0].yaxis == "y" and bars[-1].yaxis == "y2"  # left above, right below
    expected = table.query("run_id == @runs[0].id and hemi == 'rh'")
    assert list(bars[len(runs)].x) == expected["roi"].tolist()
    assert np.allclose(bars[len(runs)].y, expected["median_r"].to_numpy(float), equal_nan=True)
    assert [a.text for a in fig.layout.annotations] == ["left hemisphere", "right hemisphere"]


def test_layer_roi_matrix_and_heat_map(runs):
    table = compare.roi_table(runs, 1)
    order = {"mobilenet_v2": [f"features.{i}" for i in range(19)]}
    matrix = compare.layer_roi_matrix(table, "lh", order)
    assert matrix.index.tolist() == ["features.3", "features.6"]  # forward order, not newest first
    lh = table[table["hemi"] == "lh"]
    assert matrix.columns.tolist() == lh["roi"].drop_duplicates().tolist()
    assert matrix.loc["features.3", "V1v"] == pytest.approx(
        lh.query("layers == 'features.3' and roi == 'V1v'")["median_r"].item())
    best = charts.best_rows(matrix)
    for roi, layer in best.items():
        assert matrix.loc[layer, roi] == matrix[roi].max()

    fig = charts.layer_heatmap(matrix, title="t")
    heat = fig.data[0]
    assert heat.type == "heatmap" and list(heat.x) == ["features.3", "features.6"]  # layers left to right
    assert list(heat.y) == matrix.columns.tolist()  # ROIs top to bottom
    starred = {(layer, roi) for roi, row in zip(heat.y, heat.text)
               for layer, text in zip(heat.x, row) if text.startswith("★")}  # fmt: skip
    assert starred == {(layer, roi) for roi, layer in best.items()}


def test_heat_map_rows_name_what_differs(runs):
    table = compare.roi_table(runs, 1)
    table.loc[table["run_id"] == runs[0].id, "estimator"] = "ols"  # as if the runs differed in estimator
    rows = compare.layer_roi_matrix(table, "rh").index.tolist()
    assert rows == ["ols · features.6", "ridge · features.3"]
    same = compare.roi_table([runs[0], runs[0]], 1)  # the same label twice: one row
    assert compare.layer_roi_matrix(same, "rh").index.tolist() == ["features.6"]


def test_chart_download_config():
    svg = charts.chart_config("bars", "svg")["toImageButtonOptions"]
    assert svg == {"format": "svg", "filename": "bars", "scale": 1}
    assert charts.chart_config("bars")["toImageButtonOptions"]["format"] == "png"


def test_run_maps_for_the_explore_page(finished_workspace, demo_root, monkeypatch, tmp_path):
    subject = open_dataset(demo_root).subject(1)
    monkeypatch.setenv("BES_WORKSPACE", str(tmp_path / "none"))
    assert compare.run_accuracy_maps(subject, "lh") == {}
    assert not (tmp_path / "none").exists()  # looking creates no workspace

    monkeypatch.setenv("BES_WORKSPACE", str(finished_workspace))
    maps = surfaces.vertex_maps(subject, "rh")  # through the registered provider
    runs = compare.finished_runs(RunStore(finished_workspace), demo_root, 1)
    names = [f"Encoding accuracy: {compare.run_title(r)}" for r in runs]
    assert [n for n in maps if n.startswith("Encoding accuracy")] == names
    m = maps[names[0]]
    assert m.kind == "symmetric" and m.unit == "r" and runs[0].id in m.description
    assert np.array_equal(m.values, results.load_val_r(runs[0], "rh"))


def test_accuracy_on_the_surface(runs, demo_root):
    subject = open_dataset(demo_root).subject(1)
    surfs = {h: surfaces.display_surface("inflated", h, "fsaverage5") for h in ("lh", "rh")}
    fig = compare.accuracy_surface_figure(runs[0], subject, surfs, view="posterior")
    assert fig.layout.title.text == f"subj01: {compare.run_title(runs[0])}"
    assert fig.layout.meta["symmetric"] and fig.layout.scene2 is not None
    r = np.concatenate([results.load_val_r(runs[0], h) for h in ("lh", "rh")])
    assert 0 < fig.layout.meta["vmax"] <= np.nanmax(np.abs(r)) + 1e-6  # symmetric range from the run's r
