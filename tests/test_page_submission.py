"""AppTest for the Submission page: the zip from chosen real runs, validated before it is offered."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.algonauts2023 import compare

from core.algonauts2023 import submission

from core.algonauts2023 import results
from core.runs.store import RunStore
from tests.conftest import page_file

PAGE = page_file("Submission")


@pytest.fixture
def runs(finished_env, demo_root):
    """``{subject: runs newest first}``; the page sees the workspace and the demo."""
    return {s: compare.finished_runs(finished_env, demo_root, s) for s in (1, 2)}


def run_page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=90).run()
    assert not at.exception, at.exception
    return at


def built_zip(at: AppTest) -> Path:
    return Path(at.session_state["submission_built"]["path"])


def test_build_validate_and_offer(runs):
    at = run_page()
    best = compare.best_run(runs[1], 1)
    assert at.selectbox(key="submission_run_1").value == best.id  # best validation r preselected
    assert at.selectbox(key="submission_run_2").value == runs[2][0].id
    assert at.selectbox(key="submission_run_1").options[0] == "(none)"
    assert not at.get("download_button")  # nothing offered before it is built and validated

    at.button(key="submission_build").click().run()
    assert not at.exception and not at.error
    assert at.success[0].value.startswith("Valid: 2 subjects x 2 hemispheres, float32")
    contents = at.dataframe[0].value
    assert contents["file"].tolist() == ["subj01/lh_pred_test.npy", "subj01/rh_pred_test.npy",
                                         "subj02/lh_pred_test.npy", "subj02/rh_pred_test.npy"]  # fmt: skip
    [button] = at.get("download_button")
    assert button.proto.label == "Download the submission zip"

    path = built_zip(at)
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == contents["file"].tolist()  # top level: no parent folder
        for name in zf.namelist():
            subject, hemi = int(name[4:6]), name[7:9]
            run = best if subject == 1 else runs[2][0]
            array = np.load(io.BytesIO(zf.read(name)), allow_pickle=False)
            assert array.dtype == np.float32
            assert np.array_equal(array, results.load_test_predictions(run, hemi, subject))

    # leaving a subject out: the old zip is no longer offered; a new build holds only subj01
    at.selectbox(key="submission_run_2").set_value("").run()
    assert not at.get("download_button") and "build again" in at.caption[-1].value
    at.selectbox(key="submission_run_1").set_value(runs[1][1].id if runs[1][0] == best else runs[1][0].id)
    at.button(key="submission_build").click().run()
    assert not at.exception and at.success[0].value.startswith("Valid: 1 subject x 2 hemispheres")
    assert not path.exists()  # the session's previous zip is replaced
    with zipfile.ZipFile(built_zip(at)) as zf:
        assert sorted(zf.namelist()) == ["subj01/lh_pred_test.npy", "subj01/rh_pred_test.npy"]


def test_an_invalid_zip_is_not_offered(runs, monkeypatch):
    monkeypatch.setattr(submission, "MAX_BYTES", 1000)  # every real zip is now too big
    zips = set((RunStore().workspace / "submissions").glob("*.zip"))
    at = run_page()
    at.button(key="submission_build").click().run()
    assert not at.exception
    assert "the challenge accepts less than" in at.error[0].value
    assert not at.get("download_button") and not at.success
    assert set((RunStore().workspace / "submissions").glob("*.zip")) == zips  # nothing left behind


def test_no_runs_yet(runs, monkeypatch, tmp_path):
    monkeypatch.setenv("BES_WORKSPACE", str(tmp_path / "empty"))
    at = run_page()
    assert "No finished fit or pipeline run" in at.info[0].value
