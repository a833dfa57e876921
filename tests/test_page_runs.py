"""AppTest for the Runs page: launch from the page (one run, a grid), cancel, status, logs and errors."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from core.runs import workers
from core.runs.store import RunStore
from tests.conftest import page_file
from tests.test_jobs import SLEEP, wait_final, wait_running

PAGE = page_file("Runs")


@pytest.fixture
def env(demo_root, monkeypatch, tmp_path) -> RunStore:
    """An empty run store in a temporary workspace, seen by the page; the demo as data."""
    monkeypatch.setenv("BES_DATA_DIR", str(demo_root))
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BES_WORKSPACE", str(tmp_path / "workspace"))
    return RunStore(tmp_path / "workspace")


def run_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    assert not at.exception, at.exception
    return at


def test_launch_one_run_then_cancel_it(env, demo_root):
    at = run_page()
    assert "No runs yet" in at.info[0].value
    assert at.selectbox(key="runs_model").value == "mobilenet_v2"
    assert at.selectbox(key="runs_weights_mobilenet_v2").value == "imagenet-offline"
    assert at.multiselect(key="runs_layers_mobilenet_v2").value == ["features.6"]
    assert "features.18" in at.multiselect(key="runs_layers_mobilenet_v2").options
    assert "classifier.1" not in at.multiselect(key="runs_layers_mobilenet_v2").options  # not in the offline weights
    # small defaults: a run on the demo finishes in seconds
    assert at.number_input(key="runs_resolution").value == 112
    assert at.number_input(key="runs_components").value == 100

    at.number_input(key="runs_resolution").set_value(64)
    at.number_input(key="runs_components").set_value(20)
    at.text_input(key="runs_label").set_value("from the page")
    at.button(key="runs_launch").click().run()
    assert not at.exception and not at.error
    [run] = env.list()
    assert "Launched 1 run: " + run.id in at.success[0].value
    assert run.kind == "fit" and run.label == "from the page" and run.pid
    assert {k: run.config[k] for k in ("subjects", "layers", "estimator", "resolution", "n_components", "weights")} == {
        "subjects": [1], "layers": ["features.6"], "estimator": "ridge", "resolution": 64, "n_components": 20,
        "weights": "imagenet-offline"}
    assert run.config["data"] == str(demo_root.resolve())
    assert run.config["response_ranks"] is None  # the default candidates (reduced-rank targets on)
    assert at.selectbox(key="runs_detail").value == run.id
    assert at.dataframe[0].value["run"].tolist() == [run.id]

    at.button(key="runs_cancel").click().run()
    assert not at.exception
    assert workers.get_run(env, run.id).status == "cancelled"
    assert any(m.value.startswith("**Status:** cancelled") for m in at.markdown)
    assert "cancelled" in at.code[0].value  # the log


def test_launch_a_grid_then_cancel_it(env):
    at = run_page()
    at.radio(key="runs_scope").set_value("grid").run()
    at.multiselect(key="runs_subjects").set_value([1, 2])
    at.multiselect(key="runs_layers_mobilenet_v2").set_value(["features.3", "features.6"])
    at.multiselect(key="runs_estimators").set_value(["ridge", "banded"]).run()
    assert "6 runs will be launched." in [c.value for c in at.caption]  # per subject: 2 ridge + 1 banded
    at.checkbox(key="runs_low_rank").uncheck()
    at.button(key="runs_launch").click().run()
    assert not at.exception and not at.error
    runs = env.list()
    assert all(r.config["response_ranks"] == [0] for r in runs)  # reduced-rank targets off
    assert len(runs) == 6 and len({r.group for r in runs}) == 1 and runs[0].group.startswith("grid-")
    assert sorted((r.config["subjects"][0], "+".join(r.config["layers"]), r.config["estimator"]) for r in runs) == [
        (s, layers, est) for s in (1, 2)
        for layers, est in (("features.3", "ridge"), ("features.3+features.6", "banded"), ("features.6", "ridge"))]
    at.button(key="runs_cancel_grid").click().run()
    assert not at.exception
    assert {workers.get_run(env, r.id).status for r in runs} == {"cancelled"}


def test_a_bad_setting_is_explained_and_nothing_queued(env):
    at = run_page()
    at.selectbox(key="runs_estimator").set_value("banded")
    at.button(key="runs_launch").click().run()
    assert not at.exception
    assert "banded estimator needs at least two layers" in at.error[0].value
    assert env.list() == []


def test_status_log_and_error_of_finished_runs(env):
    done = env.create(SLEEP, {"steps": 2})
    failed = env.create(SLEEP, {"steps": 1, "fail": True})
    for run in (done, failed):
        workers.execute(env, run.id)
    at = run_page()
    table = at.dataframe[0].value
    assert table["run"].tolist() == [failed.id, done.id]
    assert table["status"].tolist() == ["failed", "done"]
    assert table["message"].tolist()[0] == "the test task was asked to fail"

    assert at.selectbox(key="runs_detail").value == failed.id  # the newest
    assert at.error[0].value == "failed: the test task was asked to fail"
    assert "failed: the test task was asked to fail" in at.code[0].value
    assert "runs_cancel" not in [b.key for b in at.button]  # nothing to cancel

    at.selectbox(key="runs_detail").set_value(done.id).run()
    assert not at.error and "done" in at.code[0].value
    assert json.loads(at.json[1].value)["summary"] == {"steps": 2}  # the Results tab

    at.multiselect(key="runs_status_filter").set_value(["failed"]).run()
    assert at.dataframe[0].value["run"].tolist() == [failed.id]
    at.text_input(key="runs_search").set_value("no such run").run()
    assert at.info[0].value == "No run matches the filters."


def test_done_fits_show_their_accuracy(finished_env):
    at = run_page()
    table = at.dataframe[0].value
    runs = finished_env.list()
    assert table["run"].tolist() == [r.id for r in runs]
    assert table["lh median r"].tolist() == pytest.approx(
        [r.summary[f"subj{r.config['subjects'][0]:02d}"]["lh_median_r"] for r in runs])
    assert table["progress"].tolist() == [1.0] * len(runs)


def test_live_progress_of_a_running_run(env):
    run = workers.launch(env, SLEEP, {"steps": 100, "sleep": 1.0})  # 1% a step; cancelled below, long enough when busy
    try:
        wait_running(env, run.id)
        at = run_page()
        bars = at.get("progress")
        assert any(run.id in b.proto.text for b in bars), [b.proto.text for b in bars]
        assert 0 < bars[0].proto.value < 100
        assert at.button(key="runs_cancel")  # an active run can be cancelled
        [detail] = [b for b in bars if b.proto.text.startswith("running")]  # the details' bar: same read as the list's
        assert detail.proto.value == bars[0].proto.value
        assert at.dataframe[0].proto.placeholder == "—"  # no literal None in the median r of a running run
    finally:
        workers.cancel(env, run.id)
        wait_final(env, run.id)
