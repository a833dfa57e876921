"""AppTest for the Videos page (Algonauts 2021) on the video demo, with a real finished 2021 run (and a real
finished 2021 search); and the run store's check of 2021 pipeline configs that the page's launch relies on."""

from __future__ import annotations

import json
import os
import shutil
import sys
import types

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.runs import workers

from core.util import paths

from core.runs import kinds
from core.algonauts2021.dataset import MINI_ROIS, WB, open_dataset2021, subject_name
from core.util.errors import UserError
from core.algonauts2021.pipeline import TASK_KIND, Pipeline2021Config, read_roi_table
from core.runs.store import RunStore
from core.search.study import SearchConfig
from tests.conftest import page_file
from tests.test_page_explore import _decode

PAGE = page_file("Videos")
FAST = dict(model="mobilenet_v2", weights="imagenet-offline", layers=["features.6"], device="cpu", n_frames=2,
            resolution=64, n_components=10, val_fraction=0.25)


@pytest.fixture(scope="module")
def finished(demo2021_root, tmp_path_factory):
    """A run store holding one done 2021 pipeline run (both subjects and tracks), executed in this process
    as a worker would; returns ``(workspace, run)``."""
    ws = tmp_path_factory.mktemp("video-runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BES_CACHE_DIR", str(ws / "cache"))
        store = RunStore(ws)
        config = Pipeline2021Config(data_dir=str(demo2021_root), cache_dir=str(ws / "cache"), **FAST).to_dict()
        run = store.create(TASK_KIND, kinds.check_config(TASK_KIND, config), label="from the test")
        assert workers.execute(store, run.id) == "done", store.read_log(run.id)
    return ws, store.get(run.id)


@pytest.fixture
def env(finished, demo2021_root, monkeypatch, tmp_path):
    monkeypatch.setenv("BES_DATA2021_DIR", str(demo2021_root))
    monkeypatch.setenv("BES_WORKSPACE", str(finished[0]))
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    return finished[1]


def run_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    assert not at.exception, at.exception
    return at


def chart(at: AppTest, key: str) -> dict:
    found = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert len(found) == 1, f"no chart {key}"
    return json.loads(found[0].proto.spec)


# -- the config check (core.algonauts2021.pipeline.Pipeline2021Config through core.runs.kinds) -------------------
def test_run_store_checks_2021_configs_before_queueing(demo2021_root, tmp_path, monkeypatch):
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    base = dict(data_dir=str(demo2021_root), **FAST)
    checked = kinds.check_config(TASK_KIND, {**base, "subjects": ["sub02"], "weights": None,
                                             "tracks": ["full_track", "mini_track"], "motion_energy": {}})
    assert checked["subjects"] == [2] and checked["weights"] == "imagenet-offline"
    assert checked["tracks"] == ["mini_track", "full_track"] and checked["data_dir"] == str(demo2021_root.resolve())
    assert checked["motion_energy"]["size"] == 64  # MotionEnergyConfig's defaults, spelled out
    assert kinds.check_config(TASK_KIND, base)["subjects"] == [1, 2]  # None: every subject
    cases = [
        (dict(layers=["features.66"]), "unknown layer 'features.66'"),
        (dict(n_components=40), "only 40 training clips"),
        (dict(subjects=[7]), r"unknown subject 7 \(available: 1, 2\)"),
        (dict(tracks=["half_track"]), "unknown track 'half_track'"),
        (dict(estimator="banded"), "banded estimator needs at least two feature sets"),
        (dict(device="tpu"), "unknown device 'tpu'"),
        (dict(n_frames=0), "frames per clip must be between 1 and 256"),
        (dict(motion_energy={"size": 8}), "motion energy: frame size"),
        (dict(motion_energy={"speed": 1}), "motion energy: .*speed"),
        (dict(colour="red"), "unknown 2021 pipeline setting 'colour'"),
        (dict(data_dir=str(tmp_path / "nowhere")), "data directory not found"),
    ]
    store = RunStore(tmp_path / "ws")
    for change, message in cases:
        with pytest.raises(UserError, match=message):
            workers.launch(store, TASK_KIND, {**base, **change})
    with pytest.raises(UserError, match="'data_dir' is required"):
        kinds.check_config(TASK_KIND, FAST)
    assert store.list() == []  # nothing was queued


# -- the page ----------------------------------------------------------------------------------
def test_dataset_clips_noise_ceiling_runs_and_results(env, demo2021_root):
    run = env
    at = run_page()
    assert at.title[0].value == "Videos"
    assert "brain responses to 1-second video clips" in at.markdown[0].value  # read from the clips themselves
    assert "its own data directory and subject" in " ".join(c.value for c in at.sidebar.caption)  # why a picker
    assert at.sidebar.text_input(key="_w_videos_data_dir").value == str(demo2021_root)
    assert at.sidebar.selectbox(key="_w_videos_subject").options == ["sub01", "sub02"]

    ds = open_dataset2021(demo2021_root)
    sub01 = ds.subject(1)
    assert [(m.label, m.value) for m in at.metric] == [
        ("Clips (training + test)", "40 + 8"), ("ROIs", "9 + WB"), ("Voxels", f"{sub01.n_voxels(WB):,}"),
        ("Repetitions", "3")]
    rois = at.dataframe[0].value
    assert rois["ROI"].tolist() == [*MINI_ROIS, WB] and rois["voxels"].tolist() == [sub01.n_voxels(r) for r in
                                                                                   [*MINI_ROIS, WB]]
    assert at.multiselect(key="videos_clips").value == [0, 1, 40]  # two training clips, the first test clip
    assert len(at.get("video")) == 3
    assert len(at.get("image")) == 4  # noise ceiling and accuracy: glass brain + slices each

    # launch form defaults: the Runs page's choices, every subject and track
    assert at.multiselect(key="videos_run_subjects").value == [1, 2]
    assert at.multiselect(key="videos_tracks").value == ["mini_track", "full_track"]
    assert at.multiselect(key="videos_layers_mobilenet_v2").value == ["features.6"]
    assert at.number_input(key="videos_frames").value == 8
    assert at.number_input(key="videos_components").value == 39  # at most training clips - 1

    table = at.dataframe[1].value  # the run list
    assert table["run"].tolist() == [run.id] and table["status"].tolist() == ["done"]
    assert table["tracks"].tolist() == ["mini_track, full_track"] and table["frames"].tolist() == ["2"]

    assert at.multiselect(key="videos_runs").value == [run.id]
    bars = [t for t in chart(at, "videos_bars")["data"] if t["type"] == "bar"]
    rows = read_roi_table(run.dir, 1)
    assert len(bars) == 1 and bars[0]["x"] == [*MINI_ROIS, WB]
    assert np.allclose(_decode(bars[0]["y"]), [r["median_r"] for r in rows])

    metrics = json.loads((run.dir / "metrics.json").read_text())["sub01"]
    scores = at.dataframe[2].value
    assert scores["mini_track score (%)"].tolist() == pytest.approx([metrics["noise_normalized"]["mini_track"]])
    assert scores["full_track score (%)"].tolist() == pytest.approx([metrics["noise_normalized"]["full_track"]])
    assert scores["WB median r"].tolist() == pytest.approx([metrics["wb_median_r"]])
    assert scores["mini_track 2021 score"].tolist() == pytest.approx([metrics["nnc_2021"]["mini_track"]])
    per_roi = at.dataframe[3].value
    assert per_roi.index.tolist() == [("mini_track", r) for r in MINI_ROIS] + [("full_track", WB)]

    valid = [s.value for s in at.success]
    assert len(valid) == 2 and valid[0].startswith("`mini_track.zip` is valid") and "sub01, sub02" in valid[0]
    assert valid[1].startswith("`full_track.zip` is valid")
    assert {b.proto.label for b in at.get("download_button")} == {
        "Download the per-ROI table (CSV)", "Download mini_track.zip", "Download full_track.zip"}
    assert not at.warning and not at.error


def test_controls_a_run_finishing_and_a_broken_zip(env, finished):
    run = env
    at = run_page()
    store = RunStore(finished[0])
    twin = store.create(TASK_KIND, run.config, label="twin")  # a run that finishes while the page is open
    try:
        shutil.copytree(run.dir, twin.dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("config.json", "log.txt"))
        assert store.claim(twin.id, os.getpid()) and store.finish(twin.id, "done", summary=run.summary)
        at.run()
        assert not at.exception
        assert at.multiselect(key="videos_runs").value == [twin.id, run.id]  # shown at once, with the others
        assert at.selectbox(key="videos_detail").value == twin.id
        assert len([t for t in chart(at, "videos_bars")["data"] if t["type"] == "bar"]) == 2
    finally:
        store.delete(twin.id)

    at.sidebar.selectbox(key="_w_videos_subject").select("sub02").run()
    assert not at.exception
    assert "Results for sub02" in [h.value for h in at.header]
    assert chart(at, "videos_bars")["layout"]["title"]["text"] == "sub02: median validation r per ROI"
    at.radio(key="videos_nc_slices").set_value("sagittal")
    at.slider(key="videos_acc_threshold").set_value(0.3).run()
    assert not at.exception and len(at.get("image")) == 4
    at.multiselect(key="videos_runs").set_value([]).run()
    assert not at.exception and not at.get("plotly_chart")  # no run chosen: no bars, the run detail stays

    path = run.dir / "mini_track.zip"
    good = path.read_bytes()
    try:
        path.write_bytes(b"not a zip")
        at = run_page()
        assert [e.value for e in at.error] == [f"{path}: not a valid zip file (File is not a zip file)"]
        assert {b.proto.label for b in at.get("download_button")} == {
            "Download the per-ROI table (CSV)", "Download full_track.zip"}  # never offered unchecked
    finally:
        path.write_bytes(good)


def test_launch_checks_then_queues_and_cancel(demo2021_root, monkeypatch, tmp_path):
    monkeypatch.setenv("BES_DATA2021_DIR", str(demo2021_root))
    monkeypatch.setenv("BES_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    store = RunStore(tmp_path / "workspace")
    at = run_page()
    assert "No 2021 run on this data directory yet" in at.info[0].value
    assert "No finished 2021 run" in at.info[1].value

    at.selectbox(key="videos_estimator").set_value("banded")
    at.button(key="videos_launch").click().run()
    assert "banded estimator needs at least two feature sets" in at.error[0].value
    assert store.list() == []

    at.selectbox(key="videos_estimator").set_value("ridge")
    at.multiselect(key="videos_tracks").set_value(["full_track"])
    at.number_input(key="videos_frames").set_value(2)
    at.number_input(key="videos_resolution").set_value(64)
    at.number_input(key="videos_components").set_value(10)
    at.text_input(key="videos_label").set_value("from the page")
    at.button(key="videos_launch").click().run()
    assert not at.exception and not at.error
    [run] = store.list()
    assert at.success[0].value.startswith(f"Launched 1 run: {run.id}")
    assert run.kind == TASK_KIND and run.label == "from the page" and run.pid
    assert {k: run.config[k] for k in ("data_dir", "subjects", "tracks", "layers", "n_frames", "resolution",
                                       "n_components", "weights", "motion_energy")} == {
        "data_dir": str(demo2021_root.resolve()), "subjects": [1, 2], "tracks": ["full_track"],
        "layers": ["features.6"], "n_frames": 2, "resolution": 64, "n_components": 10, "weights": "imagenet-offline",
        "motion_energy": None}
    assert at.dataframe[1].value["run"].tolist() == [run.id]

    at.button(key=f"videos_list_cancel_{run.id}").click().run()
    assert not at.exception
    assert workers.get_run(store, run.id).status == "cancelled"


def test_default_demo_and_bad_directories(demo2021_root, monkeypatch, tmp_path):
    monkeypatch.delenv("BES_DATA2021_DIR", raising=False)
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BES_WORKSPACE", str(tmp_path / "workspace"))
    demo = paths.demo2021_dir()
    demo.parent.mkdir(parents=True)
    demo.mkdir()
    (demo / "notes.txt").write_text("mine")
    at = run_page()
    assert at.sidebar.text_input(key="_w_videos_data_dir").value == str(demo)
    assert len(at.error) == 1 and at.error[0].value.startswith(f"{demo}: exists but is not a video demo")

    (demo / "notes.txt").unlink()
    demo.rmdir()
    demo.symlink_to(demo2021_root)  # the demo, as if generated on first use
    at = run_page()
    assert "embedded video demo" in at.sidebar.caption[0].value
    assert at.metric[0].value == "40 + 8"

    at.sidebar.text_input(key="_w_videos_data_dir").set_value(str(tmp_path / "nowhere")).run()
    assert not at.exception  # outside BES_DATA_ROOTS (default: the demos): refused without saying it is missing
    assert [e.value.split(";")[0] for e in at.error] == [
        f"{tmp_path / 'nowhere'}: outside the folders this dashboard may open ({os.pathsep.join(map(str, paths.allowed_data_roots()))})"]
    monkeypatch.setenv("BES_DATA_ROOTS", str(tmp_path))
    at.sidebar.text_input(key="_w_videos_data_dir").set_value(str(tmp_path / "nowhere")).run()
    assert [e.value for e in at.error] == [f"{tmp_path / 'nowhere'}: data directory not found"]


def test_compare_and_submission_show_video_runs(env, demo_root, monkeypatch):
    monkeypatch.setenv("BES_DATA_DIR", str(demo_root))
    other_pages_show(env, "video pipeline (2021)")


def other_pages_show(run, kind: str) -> None:
    """The Compare page draws the 2021 run's mini-track bars (no 2023 run here), the Submission page offers its
    validated zips, and the Runs page lists it (as ``kind``) with the 2021 columns."""
    subjects = [subject_name(s) for s in run.config["subjects"]]
    at = AppTest.from_file(page_file("Compare"), default_timeout=90).run()
    assert not at.exception, at.exception
    assert "No finished fit or pipeline run" in at.info[0].value
    assert at.selectbox(key="compare_video_subject").options == subjects
    bars = [t for t in chart(at, "compare_video_bars")["data"] if t["type"] == "bar"]
    rows = [r for r in read_roi_table(run.dir, 1) if r["track"] == "mini_track"]
    assert bars[0]["x"] == [r["roi"] for r in rows] == list(MINI_ROIS)
    assert np.allclose(_decode(bars[0]["y"]), [r["median_r"] for r in rows])

    at = AppTest.from_file(page_file("Submission"), default_timeout=90).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="submission_video_run").value == run.id
    assert [s.value.split(" is valid")[0] for s in at.success] == ["`mini_track.zip`", "`full_track.zip`"]
    assert {b.proto.label for b in at.get("download_button")} == {"Download mini_track.zip", "Download full_track.zip"}

    at = AppTest.from_file(page_file("Runs"), default_timeout=90).run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert table["run"].tolist() == [run.id] and table["kind"].tolist() == [kind]
    assert table["WB median r"].tolist() == pytest.approx([np.mean([run.summary[s]["wb_median_r"] for s in subjects])])
    assert table["tracks"].tolist() == ["mini_track, full_track"]


def test_the_runs_page_launches_the_video_kind_too(demo2021_root, demo_root, monkeypatch, tmp_path):
    """A registered run kind brings its own form to the Runs page: the 2021 pipeline on the Videos page's data."""
    monkeypatch.setenv("BES_DATA_DIR", str(demo_root))
    monkeypatch.setenv("BES_DATA2021_DIR", str(demo2021_root))
    monkeypatch.setenv("BES_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    at = AppTest.from_file(page_file("Runs"), default_timeout=90).run()
    options = at.selectbox(key="runs_kind").options
    assert options[:4] == ["fit", "pipeline", "extract", "video pipeline (2021)"]
    at.selectbox(key="runs_kind").select_index(3).run()
    assert not at.exception, at.exception
    assert at.multiselect(key="runs_tracks").value == ["mini_track", "full_track"]
    assert at.multiselect(key="runs_run_subjects").value == [1, 2]
    assert "runs_scope" not in [r.key for r in at.radio]  # grids are the fit kind's


# -- a search on the 2021 dataset (core.search; the Kind picker's second kind) ------------------------------------
def test_the_search_kind_launches_a_2021_search(demo2021_root, monkeypatch, tmp_path):
    """Its form: the video dataset's subjects, candidate frame counts, the search's settings without 2023 scopes;
    bad settings are one line; a launch queues a ``search`` run on the 2021 data directory."""
    monkeypatch.setenv("BES_DATA2021_DIR", str(demo2021_root))
    monkeypatch.setenv("BES_WORKSPACE", str(tmp_path / "workspace"))
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    store = RunStore(tmp_path / "workspace")
    at = run_page()
    kind = at.selectbox(key="videos_kind")
    assert kind.options == ["video pipeline (2021)", "search (2021)"] and kind.value == TASK_KIND
    kind.set_value("search").run()
    assert not at.exception, at.exception
    assert at.multiselect(key="videos_search_run_subjects").value == [1, 2]
    assert at.multiselect(key="videos_search_frames").value == [4, 8, 16]
    assert at.multiselect(key="videos_search_layers_mobilenet_v2").value == ["features.6"]
    assert at.number_input(key="videos_search_pca").value == 39  # at most training clips - 1
    assert "videos_search_scope" not in [s.key for s in at.selectbox]  # the 2021 scopes are fixed
    assert any(m.value.startswith("**Scopes:** each mini-track ROI and the whole brain") for m in at.markdown)
    n = 2 * (1 + len(open_dataset2021(demo2021_root).subject(1).rois("mini_track")))  # each subject's whole brain and ROIs
    assert any(f"{n} studies × 30 trials = {30 * n} trials" in c.value for c in at.caption)

    at.multiselect(key="videos_search_estimators").set_value(["banded"])
    at.button(key="videos_launch").click().run()
    assert [e.value for e in at.error] == ["the banded estimator needs at least two layers (one band each)"]
    assert store.list() == []
    at.multiselect(key="videos_search_frames").set_value([])
    at.run()
    assert at.button(key="videos_launch").disabled
    assert any(c.value.startswith("Choose at least one subject, layer, frame count") for c in at.caption)

    at.multiselect(key="videos_search_estimators").set_value(["ridge"])
    at.multiselect(key="videos_search_run_subjects").set_value([2])
    at.multiselect(key="videos_search_frames").set_value([8, 2])
    at.number_input(key="videos_search_resolution").set_value(64)
    at.number_input(key="videos_search_trials").set_value(1)
    at.number_input(key="videos_search_top").set_value(2)
    at.number_input(key="videos_search_pca").set_value(10).run()
    at.button(key="videos_launch").click().run()
    assert not at.exception and not at.error
    [run] = store.list()
    assert at.success[0].value.startswith(f"Launched 1 run: {run.id}")
    assert run.kind == "search" and run.pid
    assert {k: run.config[k] for k in ("data", "subjects", "frames", "resolution", "trials", "scope", "estimators",
                                       "n_components", "layers", "top_trials")} == {
        "data": str(demo2021_root.resolve()), "subjects": [2], "frames": [2, 8], "resolution": 64, "trials": 1,
        "scope": "roi", "estimators": ["ridge"], "n_components": 10, "layers": ["features.6"], "top_trials": 2}
    table = at.dataframe[1].value  # the run list: the search is a run of this data directory
    assert table["run"].tolist() == [run.id] and table["kind"].tolist() == ["search (2021)"]
    assert table["frames"].tolist() == ["2 8"] and table["tracks"].tolist() == ["mini_track, full_track"]

    at.button(key=f"videos_list_cancel_{run.id}").click().run()
    assert not at.exception
    assert workers.get_run(store, run.id).status == "cancelled"


@pytest.fixture(scope="module")
def finished_search(demo2021_root, tmp_path_factory):
    """A run store holding one done 2021 search (sub01, one trial per scope), executed in this process as a
    worker would; returns ``(workspace, run)``."""
    ws = tmp_path_factory.mktemp("video-search")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BES_CACHE_DIR", str(ws / "cache"))
        # AppTest leaves the last page it ran as __main__, which the search's spawned workers would run again
        mp.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
        store = RunStore(ws)
        config = SearchConfig(data=str(demo2021_root), subjects=[1], layers=["features.6"], device="cpu",
                              resolution=64, frames=[2], n_components=10, pool_size=0, trials=1, folds=2,
                              estimators=["ridge"], cache_dir=str(ws / "cache")).to_dict()
        run = store.create("search", kinds.check_config("search", config))
        assert workers.execute(store, run.id) == "done", store.read_log(run.id)
    return ws, store.get(run.id)


@pytest.mark.slow
def test_a_finished_search_shows_its_results_zips_and_live_view(finished_search, demo2021_root, demo_root,
                                                                 monkeypatch, tmp_path):
    """Its folder is a 2021 run's: per-ROI bars, scores, whole-brain map, validated zips on the Videos page, and
    the other pages take it as they take a 2021 pipeline run; its run detail is the search's view."""
    ws, run = finished_search
    monkeypatch.setenv("BES_DATA2021_DIR", str(demo2021_root))
    monkeypatch.setenv("BES_WORKSPACE", str(ws))
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    at = run_page()
    table = at.dataframe[1].value
    assert table["run"].tolist() == [run.id] and table["kind"].tolist() == ["search (2021)"]
    assert table["WB median r"].tolist() == pytest.approx([run.summary["sub01"]["wb_median_r"]])
    best = at.dataframe[2].value  # the run detail: the search's best configuration per scope
    assert best["scope"].tolist()[0] == "full_track" and set(best["scope"][1:]) == {f"mini_track/{r}" for r in MINI_ROIS}

    assert at.multiselect(key="videos_runs").value == [run.id]
    bars = [t for t in chart(at, "videos_bars")["data"] if t["type"] == "bar"]
    rows = read_roi_table(run.dir, 1)
    assert bars[0]["x"] == [*MINI_ROIS, WB] and np.allclose(_decode(bars[0]["y"]), [r["median_r"] for r in rows])
    assert len(at.get("image")) == 4  # noise ceiling and the search's whole-brain accuracy
    valid = [s.value for s in at.success]
    assert valid[0].startswith("`mini_track.zip` is valid") and valid[1].startswith("`full_track.zip` is valid")
    assert [w.value for w in at.warning] == ["Left out of this run: sub02. The challenge scores every subject of "
                                             "the dataset."]

    at.sidebar.selectbox(key="_w_videos_subject").select("sub02").run()
    assert "No finished 2021 run holds results for sub02" in at.info[-1].value

    monkeypatch.setenv("BES_DATA_DIR", str(demo_root))
    other_pages_show(run, "search")
