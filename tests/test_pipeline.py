"""``python -m core pipeline`` end to end on the demo, and a real fit run through a detached worker."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.runs import workers

from core.algonauts2023 import pipeline as tasks, results
from core.runs import kinds
from core.cli import main
from core.algonauts2023.dataset import open_dataset
from core.util.errors import UserError
from core.runs.store import RunStore
from core.algonauts2023.submission import build_from_runs
from tests.test_jobs import ROOT, wait_final

FAST = ["--model", "mobilenet_v2", "--weights", "imagenet-offline", "--layers", "features.6", "--device", "cpu",
        "--resolution", "64", "--n-components", "20"]


@pytest.fixture(scope="module")
def feature_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def cache_env(feature_cache, monkeypatch):
    monkeypatch.setenv("BES_CACHE_DIR", str(feature_cache))
    return feature_cache


def test_pipeline_writes_submission_and_metrics(demo_root, cache_env, tmp_path):
    out = tmp_path / "out"
    assert main(["pipeline", "--data", str(demo_root), "--subjects", "1", "--out", str(out), "--quiet", *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "submission.zip"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no work folder left behind
    subj = open_dataset(demo_root).subject(1)
    with zipfile.ZipFile(out / "submission.zip") as zf:
        assert sorted(zf.namelist()) == ["subj01/lh_pred_test.npy", "subj01/rh_pred_test.npy"]
        for hemi in ("lh", "rh"):
            with zf.open(f"subj01/{hemi}_pred_test.npy") as fh:
                pred = np.load(fh)
            assert pred.dtype == np.float32 and pred.shape == (subj.n_test, subj.n_vertices[hemi])
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"subj01", "seconds"}
    m = metrics["subj01"]
    assert set(m) == {"lh_median_r", "rh_median_r", "roi_median_r", "noise_normalized"}
    assert m["lh_median_r"] > 0.1 and m["rh_median_r"] > 0.1 and 0 < m["noise_normalized"] <= 100
    assert "V1v" in m["roi_median_r"]["lh"] and "all vertices" not in m["roi_median_r"]["lh"]
    assert {"extract", "encode", "submission", "total"} <= set(metrics["seconds"])


@pytest.mark.parametrize("change, message", [
    ({"--data": "/no/such/dir"}, "/no/such/dir: data directory not found"),
    ({"--subjects": "7"}, "unknown subject 7"),
    ({"--layers": "features.66"}, "unknown layer 'features.66'"),
    ({"--weights": "nonsense"}, "unknown weights 'nonsense'"),
    ({"--estimator": "pls", "--response-ranks": "8"}, "--response-ranks is for the ridge estimators"),
    ({"--response-ranks": "-1"}, "response ranks must be distinct integers >= 0"),
])
def test_bad_input_one_line_and_nothing_written(demo_root, cache_env, tmp_path, capsys, change, message):
    args = {"--data": str(demo_root), "--subjects": "1", "--out": str(tmp_path / "out")}
    argv = ["pipeline", "--quiet"]
    for k, v in {**args, **change}.items():
        argv += [k, v]
    assert main(argv + _without(FAST, change)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert list(tmp_path.iterdir()) == []


def _without(argv: list[str], change: dict) -> list[str]:
    """``argv`` without the flags (and their values) that ``change`` sets."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in change:
            skip = True
        else:
            out.append(a)
    return out


def test_bad_input_exit_status_of_the_real_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "core", "pipeline", "--data", str(tmp_path / "none"), "--subjects", "1",
                           "--out", str(tmp_path / "out"), *FAST], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "data directory not found" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_argparse_errors_are_one_line_too(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pipeline", "--data", str(tmp_path), "--subjects", "1", "--out", str(tmp_path / "o"),
              "--model", "alexnet", "--weights", "DEFAULT", "--layers", "features.2", "--estimator", "lasso"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid choice: 'lasso'" in err


def test_fit_run_in_worker_then_submission_from_runs(demo_root, feature_cache, tmp_path):
    store = RunStore(tmp_path / "ws")
    base = tasks.EncodingConfig(data=str(demo_root), subjects=[1], resolution=64, n_components=20, device="cpu",
                                cache_dir=str(feature_cache))
    configs = tasks.grid_configs(base, [1], [("mobilenet_v2", "imagenet-offline", ["features.6"])], ["ridge"])
    run = wait_final(store, workers.launch(store, "fit", configs[0], label="demo fit").id, timeout=120)
    assert run.status == "done", store.read_log(run.id)
    assert run.summary["subj01"]["lh_median_r"] > 0.1
    assert store.list(subject=1, model="mobilenet_v2", estimator="ridge")[0].id == run.id
    subj = open_dataset(demo_root).subject(1)
    r = results.load_val_r(run, "rh")
    assert r.shape == (subj.n_vertices["rh"],) and r.dtype == np.float32
    rows = results.load_roi_table(run)
    assert {"hemi": "lh", "roi": "all vertices"}.items() <= rows[0].items()
    assert rows[0]["median_r"] == pytest.approx(run.summary["subj01"]["lh_median_r"])
    assert results.load_metrics(run)["subj01"] == run.summary["subj01"]
    assert results.load_metrics(run, 1)["subject"] == "subj01"
    assert results.load_test_predictions(run, "lh").shape == (subj.n_test, subj.n_vertices["lh"])
    assert results.submission_path(run) is None
    out = build_from_runs(tmp_path / "submission.zip", [run])
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["subj01/lh_pred_test.npy", "subj01/rh_pred_test.npy"]


def test_bad_config_is_refused_before_queueing(demo_root, tmp_path):
    store = RunStore(tmp_path)
    cfg = tasks.EncodingConfig(data=str(demo_root), subjects=[1], layers=["features.6"], estimator="banded")
    with pytest.raises(UserError, match="banded estimator needs at least two layers"):
        workers.launch(store, "fit", cfg.to_dict())
    with pytest.raises(UserError, match="unknown EncodingConfig setting 'layer'"):
        workers.launch(store, "fit", {"data": str(demo_root), "subjects": [1], "layer": "features.6"})
    assert store.list() == []


def test_grid_configs_expand_layers_but_not_for_banded():
    base = tasks.EncodingConfig(data="d", subjects=[1])
    cells = tasks.grid_configs(base, [1, 2], [("alexnet", "DEFAULT", ["features.2", "features.5"])], ["ridge", "banded"])
    assert [(c["subjects"], c["layers"], c["estimator"]) for c in cells] == [
        ([1], ["features.2"], "ridge"), ([1], ["features.5"], "ridge"), ([1], ["features.2", "features.5"], "banded"),
        ([2], ["features.2"], "ridge"), ([2], ["features.5"], "ridge"), ([2], ["features.2", "features.5"], "banded"),
    ]


def test_extract_and_pipeline_kinds(demo_root, feature_cache, tmp_path):
    """Both kinds executed in this process (as a worker does), on features cached by the tests above."""
    store = RunStore(tmp_path)
    base = dict(data=str(demo_root), subjects=[1], layers=["features.6"], resolution=64, n_components=20,
                device="cpu", cache_dir=str(feature_cache))
    extract = store.create("extract", kinds.check_config("extract", base))
    assert workers.execute(store, extract.id) == "done", store.read_log(extract.id)
    path = store.get(extract.id).summary["features"]["subj01"]["features.6"]
    assert (tmp_path / "runs" / extract.id / "features.json").is_file()
    assert Path(path).parent == feature_cache / "features"
    pipeline = store.create("pipeline", kinds.check_config("pipeline", base))
    assert workers.execute(store, pipeline.id) == "done", store.read_log(pipeline.id)
    run = store.get(pipeline.id)
    assert results.submission_path(run).is_file() and set(run.timings) >= {"extract", "encode", "submission"}
