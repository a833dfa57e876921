"""The 2021 pipeline end to end on the video demo, and the mini/full-track submission format."""

from __future__ import annotations

import json
import pickle
import pickletools
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest

from core.algonauts2021 import pipeline as pipeline2021
from core.algonauts2021.dataset import MINI_ROIS, WB, open_dataset2021
from core.util.errors import UserError
from core.features.motion_energy import MotionEnergyConfig
from core.algonauts2021.pipeline import read_roi_table, roi_val_r, run_pipeline_2021, summary_lines, wb_accuracy_image
from core.algonauts2021.submission import build_submission2021, read_submission2021, validate_submission2021

FAST = dict(device="cpu", n_frames=2, resolution=64, n_components=10, val_fraction=0.25)


@pytest.fixture(scope="module")
def cache2021(tmp_path_factory):
    return tmp_path_factory.mktemp("cache2021")


@pytest.fixture(scope="module")
def run(demo2021_root, cache2021, tmp_path_factory):
    out = tmp_path_factory.mktemp("run2021")
    calls = []
    metrics = run_pipeline_2021(demo2021_root, None, "mobilenet_v2", "imagenet-offline", ["features.6", "features.13"],
                                out, progress=lambda f, m: calls.append(f), cache_dir=cache2021, **FAST)
    return out, metrics, calls


@pytest.fixture
def dataset(demo2021_root, cache2021):
    return open_dataset2021(demo2021_root, cache_dir=cache2021)


def _predictions(dataset, rois, value=0.5):
    return {roi: {s: np.full((dataset.n_test, dataset.subject(s).n_voxels(roi)), value, np.float32)
                  for s in dataset.subjects} for roi in rois}


def test_pipeline_writes_both_tracks(run, dataset):
    out, metrics, calls = run
    assert sorted(p.name for p in out.iterdir()) == ["full_track.zip", "metrics.json", "mini_track.zip", "sub01",
                                                     "sub02"]
    assert calls == sorted(calls) and calls[-1] == 1.0
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["dataset"]["n_train"] == 40 and metrics["submissions"] == {
        "mini_track": "mini_track.zip", "full_track": "full_track.zip"}
    for s in ("sub01", "sub02"):
        m = metrics[s]
        assert list(m["roi_median_r"]) == list(MINI_ROIS)
        assert -1 < m["wb_median_r"] < 1 and set(m["noise_normalized"]) == {"mini_track", "full_track"}
        # the demo's structure: early visual and place voxels are predictable from the frames
        assert m["roi_median_r"]["PPA"] > 0.3 and np.mean([m["roi_median_r"][r] for r in ("V1", "V2", "V3")]) > 0.2
        rows = read_roi_table(out, s)
        assert [(r["track"], r["roi"]) for r in rows] == [("mini_track", r) for r in MINI_ROIS] + [("full_track", WB)]
        subj = dataset.subject(s)
        assert rows[-1]["n_voxels"] == subj.n_voxels(WB) and rows[0]["median_r"] == m["roi_median_r"]["LOC"]
        assert roi_val_r(out, subj, "FFA").shape == (subj.n_voxels("FFA"),)
        # the 2021 leaderboard score, recomputed from the saved r and the reliabilities
        def nnc(roi):
            r, rel = roi_val_r(out, subj, roi), subj.noise_ceiling(roi) / 100
            return np.mean(r[rel > 0] / np.sqrt(rel[rel > 0]))

        per_roi = [nnc(roi) for roi in MINI_ROIS]
        assert m["nnc_2021"]["mini_track"] == pytest.approx(np.mean(per_roi), rel=1e-5)
        assert [r["mean_nnc"] for r in rows[:-1]] == pytest.approx(per_roi, rel=1e-5)
        assert m["nnc_2021"]["full_track"] == pytest.approx(nnc(WB), rel=1e-5)
    img = wb_accuracy_image(out, dataset.subject(1))
    assert img.shape == (78, 93, 71) and np.count_nonzero(np.asarray(img.dataobj)) > 1000


def test_submission_zips_hold_the_devkit_layout(run, dataset):
    out, _, _ = run
    for track, rois in (("mini_track", MINI_ROIS), ("full_track", (WB,))):
        with zipfile.ZipFile(out / f"{track}.zip") as zf:
            assert zf.namelist() == [f"{track}.pkl"]
            data = zf.read(f"{track}.pkl")
        globals_ = {arg for op, arg, _ in pickletools.genops(data) if op.name in ("SHORT_BINUNICODE", "BINUNICODE")}
        assert {"numpy._core.multiarray", "_reconstruct"} <= globals_ and "builtins" not in globals_
        assert validate_submission2021(out / f"{track}.zip", dataset) == track
        got_track, obj = read_submission2021(out / f"{track}.zip")
        assert got_track == track and list(obj) == list(rois)
        for roi in rois:
            assert list(obj[roi]) == ["sub01", "sub02"]
            for s, pred in obj[roi].items():
                assert pred.dtype == np.float32 and pred.shape == (8, dataset.subject(s).n_voxels(roi))
                assert np.isfinite(pred).all() and pred.std() > 0
    test_pred = np.load(out / "sub02" / "full_track_pred_test.npy")
    np.testing.assert_array_equal(read_submission2021(out / "full_track.zip")[1][WB]["sub02"], test_pred)


def test_builder_checks_before_writing(dataset, tmp_path):
    good = _predictions(dataset, MINI_ROIS)
    bad_shape = {**good, "V1": {1: np.zeros((8, 3), np.float32), 2: good["V1"][2]}}
    nan = {**good, "FFA": {**good["FFA"], 2: np.full_like(good["FFA"][2], np.nan)}}
    no_roi = {k: v for k, v in good.items() if k != "STS"}
    extra = {**good, "WB": good["V1"]}
    for preds, message in ((bad_shape, r"V1 sub01: expected shape \(8, \d+\)"), (nan, "FFA sub02: contains NaN"),
                           (no_roi, "no STS predictions"), (extra, "unexpected ROI 'WB'")):
        with pytest.raises(UserError, match=message):
            build_submission2021(tmp_path / "mini_track.zip", "mini_track", preds, dataset)
    only_sub01 = {roi: {1: per[1]} for roi, per in good.items()}
    with pytest.raises(UserError, match="no LOC predictions for sub02"):
        build_submission2021(tmp_path / "m.zip", "mini_track", only_sub01, dataset, subjects=[1, 2])
    with pytest.raises(UserError, match="unknown track"):
        build_submission2021(tmp_path / "x.zip", "tiny_track", good, dataset)
    assert list(tmp_path.iterdir()) == []
    path = build_submission2021(tmp_path / "one.zip", "full_track", {WB: {"sub01": _predictions(dataset, [WB])[WB][1]}},
                                dataset)
    assert validate_submission2021(path, dataset, ["sub01"]) == "full_track"


def test_validation_rejects_foreign_zips(dataset, tmp_path):
    def zip_with(name, payload):
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(name, payload)
        return path

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    named = {WB: {f"sub{s:02d}": a for s, a in _predictions(dataset, [WB])[WB].items()}}
    with pytest.raises(UserError, match="expected exactly one entry"):
        validate_submission2021(zip_with("results.pkl", pickle.dumps(named)), dataset)
    with pytest.raises(UserError, match="refused to unpickle 'builtins.print'"):
        validate_submission2021(zip_with("full_track.pkl", pickle.dumps({WB: {"sub01": Evil()}})), dataset)
    short = {WB: {"sub01": named[WB]["sub01"][:-1], "sub02": named[WB]["sub02"]}}
    with pytest.raises(UserError, match=r"WB sub01: expected shape"):
        validate_submission2021(zip_with("full_track.pkl", pickle.dumps(short, protocol=4)), dataset)
    assert validate_submission2021(zip_with("full_track.pkl", pickle.dumps(named, protocol=3)), dataset) == "full_track"
    (tmp_path / "junk.zip").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a valid zip file"):
        validate_submission2021(tmp_path / "junk.zip", dataset)


def test_pipeline_checks_before_any_work(demo2021_root, cache2021, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline2021, "extract_video_features", lambda *a, **k: pytest.fail("started work"))
    cases = [
        (dict(layers=["features.66"]), "unknown layer 'features.66'"),
        (dict(estimator="banded"), "banded estimator needs at least two feature sets"),
        (dict(tracks=["half_track"]), "unknown track 'half_track'"),
        (dict(n_components=40), "only 40 training clips"),
        (dict(subjects=["sub07"]), r"unknown subject 7 \(available: 1, 2\)"),
        (dict(motion_energy=MotionEnergyConfig(size=8)), "motion energy: frame size must be between 16 and 512"),
    ]
    for change, message in cases:
        args = dict(subjects=None, model="mobilenet_v2", weights="imagenet-offline", layers=["features.6"],
                    out=tmp_path / "out", cache_dir=cache2021, **FAST)
        args.update(change)
        with pytest.raises(UserError, match=message):
            run_pipeline_2021(demo2021_root, **args)
    assert not (tmp_path / "out").exists()


def test_run_store_task_runs_one_track(demo2021_root, cache2021, tmp_path, run):
    logs = []
    config = dict(data_dir=str(demo2021_root), subjects=["sub02"], model="mobilenet_v2", weights="imagenet-offline",
                  layers=["features.6", "features.13"], tracks=["full_track"], cache_dir=str(cache2021),
                  motion_energy=None, **FAST)
    ctx = SimpleNamespace(config=config, dir=tmp_path, progress=lambda f, m: None, log=logs.append)
    metrics = pipeline2021.run_task(ctx)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full_track.zip", "metrics.json", "sub02"]
    assert metrics["sub02"]["wb_median_r"] == pytest.approx(run[1]["sub02"]["wb_median_r"])  # same features, split
    assert summary_lines(metrics) == [f"sub02: WB {metrics['sub02']['wb_median_r']:.3f}; noise-normalised full_track "
                                      f"{metrics['sub02']['noise_normalized']['full_track']:.1f}%; 2021 leaderboard "
                                      f"score full_track {metrics['sub02']['nnc_2021']['full_track']:.3f}"]
    assert [line.split(":")[0] for line in logs] == ["extract", "encode", "submission"]
