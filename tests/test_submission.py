"""The Algonauts 2023 submission zip: layout, validation, atomic build, from runs."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from core.algonauts2023 import submission
from core.algonauts2023.dataset import open_dataset
from core.util.errors import UserError
from core.util.fileio import save_npy
from core.runs.store import RunStore
from tests.conftest import make_tiny_dataset


@pytest.fixture
def data(tmp_path):
    return make_tiny_dataset(tmp_path / "data", subjects=(1, 2))


def preds(seed: int = 0, n_test: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"lh": rng.standard_normal((n_test, 30)).astype(np.float32),
            "rh": rng.standard_normal((n_test, 40)).astype(np.float32)}


def test_build_writes_exact_top_level_layout(tmp_path, data):
    p = {1: preds(1), 2: preds(2)}
    out = submission.build_submission(tmp_path / "sub.zip", p, open_dataset(data))
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["subj01/lh_pred_test.npy", "subj01/rh_pred_test.npy",
                                         "subj02/lh_pred_test.npy", "subj02/rh_pred_test.npy"]
        with zf.open("subj02/rh_pred_test.npy") as fh:
            np.testing.assert_array_equal(np.load(fh), p[2]["rh"])
    assert [f.name for f in tmp_path.iterdir() if f.name.startswith(".tmp")] == []


@pytest.mark.parametrize("bad, message", [
    (lambda a: a.astype(np.float64), "expected float32 predictions, found float64"),
    (lambda a: a[:, :-1], r"expected shape \(2, 30\)"),
    (lambda a: np.where(np.arange(30) == 3, np.nan, a).astype(np.float32), "NaN or infinite"),
])
def test_bad_predictions_are_refused_and_nothing_is_written(tmp_path, data, bad, message):
    p = {1: preds()}
    p[1]["lh"] = bad(p[1]["lh"])
    with pytest.raises(UserError, match=message):
        submission.build_submission(tmp_path / "sub.zip", p, open_dataset(data))
    assert list(tmp_path.glob("*.zip")) == [] and list(tmp_path.glob(".tmp*")) == []


def test_missing_hemisphere_and_unknown_subject(tmp_path, data):
    ds = open_dataset(data)
    with pytest.raises(UserError, match="subj01: no rh test predictions"):
        submission.build_submission(tmp_path / "s.zip", {1: {"lh": preds()["lh"]}}, ds)
    with pytest.raises(UserError, match="unknown subject 3"):
        submission.build_submission(tmp_path / "s.zip", {3: preds()}, ds)


def test_size_limit(tmp_path, data, monkeypatch):
    monkeypatch.setattr(submission, "MAX_BYTES", 100)
    with pytest.raises(UserError, match="the challenge accepts less than"):
        submission.build_submission(tmp_path / "sub.zip", {1: preds()}, open_dataset(data))
    assert not (tmp_path / "sub.zip").exists()


def _zip(path, entries: dict[str, np.ndarray]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, arr in entries.items():
            with zf.open(name, "w") as fh:
                np.lib.format.write_array(fh, arr)
    return path


def test_validate_rejects_parent_folder_and_missing_subject(tmp_path, data):
    ds = open_dataset(data)
    p = preds()
    nested = _zip(tmp_path / "a.zip", {f"submission/subj01/{h}_pred_test.npy": a for h, a in p.items()})
    with pytest.raises(UserError, match="unexpected entry 'submission/subj01/lh_pred_test.npy'"):
        submission.validate_submission(nested, ds, [1])
    only_one = _zip(tmp_path / "b.zip", {f"subj01/{h}_pred_test.npy": a for h, a in p.items()})
    submission.validate_submission(only_one, ds, [1])
    with pytest.raises(UserError, match="missing subj02/lh_pred_test.npy"):
        submission.validate_submission(only_one, ds, [1, 2])
    (tmp_path / "c.zip").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a valid zip file"):
        submission.validate_submission(tmp_path / "c.zip", ds, [1])


def _done_run(store: RunStore, data, subject: int, seed: int):
    run = store.create("fit", {"data": str(data), "subjects": [subject]})
    for hemi, arr in preds(seed).items():
        save_npy(submission.prediction_path(run.dir, subject, hemi), arr)
    store.claim(run.id, 1)
    store.finish(run.id, "done")
    return store.get(run.id)


def test_build_from_runs(tmp_path, data):
    store = RunStore(tmp_path / "ws")
    r1, r2, r2b = _done_run(store, data, 1, 1), _done_run(store, data, 2, 2), _done_run(store, data, 2, 3)
    out = submission.build_from_runs(tmp_path / "sub.zip", [r1, r2b])
    with zipfile.ZipFile(out) as zf, zf.open("subj02/lh_pred_test.npy") as fh:
        np.testing.assert_array_equal(np.load(fh), preds(3)["lh"])
    with pytest.raises(UserError, match="two runs for subj02"):
        submission.build_from_runs(tmp_path / "x.zip", [r1, r2, r2b])
    queued = store.create("fit", {"data": str(data), "subjects": [1]})
    with pytest.raises(UserError, match=f"run {queued.id} is queued, not done"):
        submission.build_from_runs(tmp_path / "x.zip", [queued])
    assert not (tmp_path / "x.zip").exists()
