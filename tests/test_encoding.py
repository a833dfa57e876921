"""Encoding models (OLS, Ridge, RidgeCV, BandedRidgeCV), splits, and the ``fit`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.encoding.estimators import OLS, BandedRidgeCV, Ridge, RidgeCV
from core.util.errors import UserError
from core.encoding.metrics import pearson_r
from core.encoding.splits import Validation, holdout_split, kfold_splits

ROOT = Path(__file__).resolve().parents[1]


def _data(n=200, p=20, t=30, seed=0, noise=1.0, scale=True):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    if scale:
        X = X * rng.uniform(0.1, 10, p) + rng.uniform(-5, 5, p)
    W = rng.standard_normal((p, t)) / np.sqrt(p)
    Y = X @ W + noise * rng.standard_normal((n, t)) + 3.0
    return X.astype(np.float32), Y.astype(np.float32)


def _train_scale(Xtr: np.ndarray, mode: str) -> np.ndarray:
    """Reference standardisation from training rows: per feature, or one number for the space."""
    sd = Xtr.std(0)  # population std (ddof 0)
    return sd if mode == "feature" else np.full_like(sd, np.sqrt(np.mean(sd ** 2)))


def _brute_force_cv(X, Y, alphas, splits, mode="space"):
    """Mean validation r per alpha, fold by fold: standardise with the fold's training rows, solve."""
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    out = np.zeros((len(alphas), Y.shape[1]))
    for tr, va in splits:
        mu, sd = X[tr].mean(0), _train_scale(X[tr], mode)
        Z, Zv, ym = (X[tr] - mu) / sd, (X[va] - mu) / sd, Y[tr].mean(0)
        for i, a in enumerate(alphas):
            W = np.linalg.solve(Z.T @ Z + a * np.eye(X.shape[1]), Z.T @ (Y[tr] - ym))
            out[i] += pearson_r(Y[va], Zv @ W + ym)
    return out / len(splits)


# ---------------------------------------------------------------------------------------------
# OLS and fixed ridge
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ols_equals_lstsq(dtype):
    X, Y = _data(n=150, p=12, t=9)
    X, Y = X.astype(dtype), Y.astype(dtype)
    m = OLS().fit(X, Y)
    A = np.c_[X.astype(np.float64), np.ones(len(X))]
    sol = np.linalg.lstsq(A, Y.astype(np.float64), rcond=None)[0]
    np.testing.assert_allclose(m.coef_, sol[:-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m.intercept_, sol[-1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(m.predict(X), A @ sol, rtol=1e-4, atol=1e-4)
    assert m.predict(X).dtype == np.float32


def test_ols_collinear_min_norm_like_lstsq():
    X, Y = _data(n=80, p=6, t=4, scale=False)
    X = np.c_[X, X[:, :2]]  # duplicated columns: rank-deficient
    A = np.c_[X.astype(np.float64) - X.mean(0), np.ones(len(X))]
    sol = np.linalg.lstsq(A, Y.astype(np.float64), rcond=None)[0]
    m = OLS(standardize=False).fit(X, Y)
    np.testing.assert_allclose(m.coef_, sol[:-1], atol=1e-4)
    np.testing.assert_allclose(m.predict(X), A @ sol, atol=1e-4)


@pytest.mark.parametrize("mode", ["space", "feature"])
def test_ridge_fixed_alpha_standardises_with_training_statistics(mode):
    X, Y = _data(n=120, p=10, t=5)
    alpha = 7.0
    m = Ridge(alpha=alpha, standardize=mode).fit(X, Y)
    Xd = X.astype(np.float64)
    mu, sd = Xd.mean(0), _train_scale(Xd, mode)  # training rows only
    Z = (Xd - mu) / sd
    W = np.linalg.solve(Z.T @ Z + alpha * np.eye(10), Z.T @ (Y - Y.mean(0)))
    X_new = np.random.default_rng(5).standard_normal((7, 10)).astype(np.float32) * 100  # unlike training rows
    np.testing.assert_allclose(m.predict(X_new), ((X_new - mu) / sd) @ W + Y.mean(0), rtol=1e-4, atol=1e-3)
    # one alpha per vertex
    alphas = np.array([0.1, 1, 10, 100, 1000], np.float32)
    m2 = Ridge(alpha=alphas, standardize=mode).fit(X, Y)
    for v, a in enumerate(alphas):
        Wv = np.linalg.solve(Z.T @ Z + a * np.eye(10), Z.T @ (Y[:, v] - Y[:, v].mean()))
        np.testing.assert_allclose(m2.predict(X)[:, v], Z @ Wv + Y[:, v].mean(), rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# RidgeCV
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,p,dup,mode", [(200, 30, 0, "feature"), (200, 30, 0, "space"), (60, 100, 0, "feature"),
                                         (150, 20, 8, "space")])
def test_ridgecv_scores_equal_brute_force(n, p, dup, mode):
    """Exact per-fold, per-alpha validation r (p > n and duplicated features included)."""
    X, Y = _data(n=n, p=p, t=25, seed=n + p, noise=3.0)
    if dup:
        X = np.c_[X, X[:, :dup]]
    alphas = np.logspace(-1, 6, 8)
    splits = kfold_splits(n, 4, seed=3)
    m = RidgeCV(alphas=alphas, cv=4, seed=3, standardize=mode).fit(X, Y)
    ref = _brute_force_cv(X, Y, alphas, splits, mode)
    np.testing.assert_allclose(m.cv_scores_, ref, atol=2e-4 if p > n or dup else 2e-5)
    np.testing.assert_array_equal(m.best_alphas_, alphas[ref.argmax(0)].astype(np.float32))


def test_feature_spaces_are_scaled_separately():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((100, 4)) * 50, rng.standard_normal((100, 6)) * 0.1
    X = np.c_[a, b].astype(np.float32)
    Y = (X[:, [0]] / 50 + X[:, [5]] / 0.1 + rng.standard_normal((100, 1))).astype(np.float32)
    m = Ridge(alpha=3.0, space_sizes=[4, 6]).fit(X, Y)
    sd = np.r_[np.full(4, np.sqrt(np.mean(a.std(0) ** 2))), np.full(6, np.sqrt(np.mean(b.std(0) ** 2)))]
    Z = (X - X.mean(0)) / sd
    W = np.linalg.solve(Z.T @ Z + 3.0 * np.eye(10), Z.T @ (Y - Y.mean(0)))
    np.testing.assert_allclose(m.predict(X), Z @ W + Y.mean(0), rtol=1e-4, atol=1e-3)
    with pytest.raises(UserError):
        Ridge(space_sizes=[4, 5]).fit(X, Y)
    with pytest.raises(UserError):
        Ridge(standardize="zscore").fit(X, Y)


def test_ridgecv_picks_alpha_by_snr():
    """High-SNR vertices get a small alpha, noisy ones a large one (optimum ~ noise / weight
    variance: ~0.003 and ~130 here)."""
    rng = np.random.default_rng(0)
    n, p = 300, 40
    X = rng.standard_normal((n, p)).astype(np.float32)
    high = X @ rng.standard_normal((p, 10)) + 0.05 * rng.standard_normal((n, 10))
    noisy = X @ (rng.standard_normal((p, 10)) * np.sqrt(0.3 / p)) + rng.standard_normal((n, 10))
    m = RidgeCV(alphas=np.logspace(-2, 6, 9), cv=5).fit(X, np.c_[high, noisy].astype(np.float32))
    assert np.all(m.best_alphas_[:10] <= 1.0), m.best_alphas_[:10]
    assert np.median(m.best_alphas_[10:]) >= 50.0, m.best_alphas_[10:]


def test_ridgecv_refit_uses_chosen_alphas_and_backends_agree():
    X, Y = _data(n=160, p=15, t=12, noise=2.0)
    m = RidgeCV(alphas=np.logspace(-1, 5, 7), cv=4, backend="numpy").fit(X, Y)
    ref = Ridge(alpha=m.best_alphas_).fit(X, Y)
    np.testing.assert_allclose(m.coef_, ref.coef_, rtol=1e-4, atol=1e-6)
    mt = RidgeCV(alphas=np.logspace(-1, 5, 7), cv=4, backend="torch").fit(X, Y)
    np.testing.assert_allclose(mt.cv_scores_, m.cv_scores_, atol=1e-5)
    np.testing.assert_allclose(mt.predict(X), m.predict(X), rtol=1e-4, atol=1e-4)
    r = m.score(X, Y)
    assert r.shape == (12,) and np.all(r > 0)


def test_memmap_targets_and_chunking_give_the_same_model(tmp_path):
    X, Y = _data(n=100, p=8, t=300, noise=2.0)
    np.save(tmp_path / "Y.npy", Y)
    Ym = np.load(tmp_path / "Y.npy", mmap_mode="r")
    a = RidgeCV(cv=3).fit(X, Y)
    b = RidgeCV(cv=3, chunk_bytes=1).fit(X, Ym)  # smallest chunks (256 vertices)
    np.testing.assert_array_equal(a.best_alphas_, b.best_alphas_)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-5, atol=1e-6)
    assert np.array_equal(Ym, Y)  # the input was not modified


def test_fit_holdout_is_fit_score_refit():
    """Held-out r comes from a model that never saw the held-out rows (their features, extreme
    here, do not enter the standardisation either); the model then refits on all rows."""
    X, Y = _data(n=240, p=25, t=30)
    fit, val = holdout_split(len(X), 0.2, seed=1)
    X = X.copy()
    X[val, 0] += 1e4
    for make in (lambda: RidgeCV(cv=4, seed=2), lambda: OLS(), lambda: Ridge(alpha=10.0),
                 lambda: BandedRidgeCV(band_sizes=[10, 15], cv=4, seed=2)):
        a, b = make(), make()
        r = a.fit_holdout(X, Y, val)
        b.fit(X[fit], Y[fit])
        np.testing.assert_allclose(r, b.score(X[val], Y[val]), atol=1e-5)
        b.refit(X, Y)
        np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-4, atol=1e-3)


def test_input_errors():
    X, Y = _data(n=40, p=5, t=3)
    with pytest.raises(UserError):
        RidgeCV().fit(X, Y[:30])
    with pytest.raises(UserError):
        RidgeCV(alphas=[0.0, 1.0]).fit(X, Y)
    with pytest.raises(UserError):
        RidgeCV().predict(X)
    m = OLS().fit(X, Y)
    with pytest.raises(UserError):
        m.predict(X[:, :3])
    with pytest.raises(UserError):
        BandedRidgeCV().fit(X, Y)  # no band sizes


def test_estimator_api_like_scikit_learn():
    """Parameters are the ``__init__`` arguments; errors are ValueErrors; predict changes nothing."""
    import inspect

    from core.util.errors import NotFittedError

    for cls in (OLS, Ridge, RidgeCV, BandedRidgeCV):
        names = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        assert list(cls().get_params()) == names
        with pytest.raises(ValueError):
            cls().set_params(not_a_parameter=1)
        with pytest.raises(NotFittedError) as err:
            cls().predict(np.zeros((3, 4), np.float32))
        assert isinstance(err.value, ValueError) and isinstance(err.value, AttributeError)
    m = RidgeCV(alphas=[1.0, 10.0], cv=3).set_params(seed=4)
    assert m.clone().get_params() == m.get_params() and m.clone() is not m
    X, Y = _data(n=60, p=6, t=4)
    with pytest.raises(ValueError):
        Ridge().fit(X, Y[:50])
    banded = BandedRidgeCV(alphas=[1.0, 100.0], cv=3).fit([X[:, :2], X[:, 2:]], Y)
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(banded).items()}
    banded.predict([X[:, :2], X[:, 2:]])
    banded.predict(X)
    with pytest.raises(UserError):
        banded.predict([X[:, :3], X[:, 3:]])  # other band widths than fitted
    assert vars(banded).keys() == before.keys()
    for k, v in vars(banded).items():
        assert np.array_equal(v, before[k]) if isinstance(v, np.ndarray) else v == before[k], k


def test_subjects_of_both_challenges_are_fit_subjects(tiny_dataset, demo2021_root):
    from core.algonauts2021.dataset import TrackSubject, open_dataset2021
    from core.algonauts2023.dataset import open_dataset
    from core.encoding.subjects import FitSubject

    subj = open_dataset(tiny_dataset).subject(1)
    tracks = TrackSubject(open_dataset2021(demo2021_root).subject(1))
    for s in (subj, tracks):
        assert isinstance(s, FitSubject)
        for part in s.parts:
            Y = s.responses(part)
            assert Y.shape[0] == s.n_train and Y.ndim == 2
            assert all(m.shape == (Y.shape[1],) and m.dtype == bool for m in s.roi_masks(part).values())
    assert subj.parts == ("lh", "rh") and tracks.parts == ("mini_track", "full_track")


# ---------------------------------------------------------------------------------------------
# banded ridge
# ---------------------------------------------------------------------------------------------
def test_banded_beats_single_ridge_when_one_band_is_noise():
    rng = np.random.default_rng(0)
    n, t = 400, 40
    good = rng.standard_normal((n, 10)).astype(np.float32)
    noise_band = rng.standard_normal((n, 300)).astype(np.float32)
    Y = (good @ rng.standard_normal((10, t)) + 2.0 * rng.standard_normal((n, t))).astype(np.float32)
    tr, te = np.arange(300), np.arange(300, n)
    banded = BandedRidgeCV(cv=5).fit([good[tr], noise_band[tr]], Y[tr])
    single = RidgeCV(cv=5).fit(np.c_[good, noise_band][tr], Y[tr])
    r_banded = banded.score([good[te], noise_band[te]], Y[te])
    r_single = single.score(np.c_[good, noise_band][te], Y[te])
    assert np.median(r_banded) > np.median(r_single) + 0.02, (np.median(r_banded), np.median(r_single))
    assert np.mean(banded.best_band_weights_[0]) > 0.8  # weight on the informative band
    # banded with only the informative band's weight matches a ridge on that band alone
    only = RidgeCV(cv=5).fit(good[tr], Y[tr])
    assert np.median(r_banded) >= np.median(only.score(good[te], Y[te])) - 0.02


def test_banded_array_input_and_weights():
    X, Y = _data(n=120, p=12, t=6)
    m = BandedRidgeCV(band_sizes=[5, 7], band_weights=[[1, 0], [0.5, 0.5]], cv=3).fit(X, Y)
    assert m.best_band_weights_.shape == (2, 6)
    assert set(np.unique(m.best_band_weights_[0])) <= {1.0, 0.5}
    assert m.predict(X).shape == (120, 6)
    with pytest.raises(UserError):
        BandedRidgeCV(band_sizes=[5, 6]).fit(X, Y)


# ---------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------
def test_splits_are_seeded_partitions():
    tr, va = holdout_split(100, 0.1, seed=4)
    assert len(va) == 10 and len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == 100
    assert np.array_equal(va, holdout_split(100, 0.1, seed=4)[1])
    assert not np.array_equal(va, holdout_split(100, 0.1, seed=5)[1])
    folds = kfold_splits(103, 5, seed=0)
    allval = np.sort(np.concatenate([v for _, v in folds]))
    assert np.array_equal(allval, np.arange(103))
    assert {len(v) for _, v in folds} <= {20, 21}
    assert Validation("kfold", n_folds=3, seed=2).to_dict() == {"kind": "kfold", "n_folds": 3, "seed": 2}
    with pytest.raises(UserError):
        holdout_split(10, 1.5)
    with pytest.raises(UserError):
        kfold_splits(5, 5)


# ---------------------------------------------------------------------------------------------
# the fit command, end to end on a hand-built dataset
# ---------------------------------------------------------------------------------------------
def _feature_dir(path: Path, train: np.ndarray, test: np.ndarray) -> Path:
    path.mkdir(parents=True)
    np.save(path / "train.npy", train.astype(np.float32))
    np.save(path / "test.npy", test.astype(np.float32))
    (path / "meta.json").write_text(json.dumps({"model": "synthetic", "layer": path.name}))
    return path


def _run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", "fit", *args, "--no-progress"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_fit_command_end_to_end(tmp_path):
    from conftest import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "data", n_train=60, n_test=4)
    # responses that the first feature entry predicts
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((64, 6)).astype(np.float32)
    fmri_dir = data / "subj01" / "training_split" / "training_fmri"
    for hemi, nv in (("lh", 30), ("rh", 40)):
        Y = feats[:60] @ rng.standard_normal((6, nv)) + 0.5 * rng.standard_normal((60, nv))
        np.save(fmri_dir / f"{hemi}_training_fmri.npy", Y.astype(np.float32))
    a = _feature_dir(tmp_path / "featA", feats[:60], feats[60:])
    b = _feature_dir(tmp_path / "featB", rng.standard_normal((60, 3)), rng.standard_normal((4, 3)))
    out = tmp_path / "out"
    proc = _run_cli("--data", str(data), "--subject", "1", "--features", str(a), str(b), "--estimator", "ridge",
                    "--val-fraction", "0.2", "--seed", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "lh: median r" in proc.stdout and "V1v" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["validation"] == {"kind": "holdout", "val_fraction": 0.2, "seed": 3, "n_train": 60,
                                     "n_fit": 48, "n_val": 12}
    assert metrics["hemispheres"]["lh"]["median_r"] > 0.5
    assert metrics["hemispheres"]["lh"]["roi_r"]["V1v"]["n_vertices"] == 5
    assert metrics["hemispheres"]["lh"]["noise_normalized"] is None  # the tiny dataset ships no NC
    for hemi, nv in (("lh", 30), ("rh", 40)):
        pred = np.load(out / f"{hemi}_pred_test.npy")
        assert pred.shape == (4, nv) and pred.dtype == np.float32
        r = np.load(out / f"{hemi}_val_r.npy")
        assert r.shape == (nv,) and r.dtype == np.float32
        assert np.load(out / f"{hemi}_alphas.npy").shape == (nv,)
    assert not list(out.glob(".tmp-*"))

    # banded and ols, K-fold validation
    proc = _run_cli("--data", str(data), "--subject", "subj01", "--features", str(a), str(b), "--estimator", "banded",
                    "--folds", "3", "--cv", "3", "--out", str(tmp_path / "banded"))
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "banded" / "metrics.json").read_text())
    assert m["validation"]["kind"] == "kfold" and m["validation"]["fold_sizes"] == [20, 20, 20]
    assert all(len(m["hemispheres"][h]["fold_median_r"]) == 3 for h in ("lh", "rh"))
    assert np.load(tmp_path / "banded" / "rh_band_weights.npy").shape == (2, 40)
    proc = _run_cli("--data", str(data), "--subject", "1", "--features", str(a), "--estimator", "ols",
                    "--out", str(tmp_path / "ols"))
    assert proc.returncode == 0, proc.stderr

    # features that do not belong to this subject: one-line error, exit 2
    c = _feature_dir(tmp_path / "featC", rng.standard_normal((59, 3)), rng.standard_normal((4, 3)))
    proc = _run_cli("--data", str(data), "--subject", "1", "--features", str(c), "--out", str(tmp_path / "bad"))
    assert proc.returncode == 2 and "59 rows" in proc.stderr and "Traceback" not in proc.stderr
    proc = _run_cli("--data", str(data), "--subject", "1", "--features", str(a), "--estimator", "banded",
                    "--out", str(tmp_path / "bad"))
    assert proc.returncode == 2 and "at least two" in proc.stderr
