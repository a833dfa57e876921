"""Kernel (dual) ridge equals the primal RidgeCV; PLS and elastic net match scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest

from core.encoding.estimators import RidgeCV
from core.encoding.fitting import make_estimator
from core.encoding.kernel import KernelRidgeCV, MultipleKernelRidgeCV
from core.encoding import pls_elasticnet
from core.encoding.pls_elasticnet import PLS, ElasticNet
from core.util.errors import UserError


def _data(n=80, p=200, t=12, seed=0):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, p)) * np.linspace(0.5, 3, p) + 1).astype(np.float32)
    Y = (X[:, :10] @ rng.standard_normal((10, t)) + 4 * rng.standard_normal((n, t))).astype(np.float32)
    return X, Y


@pytest.mark.parametrize("sizes", [None, [50, 150]])
def test_dual_equals_primal(sizes):
    X, Y = _data()
    primal = RidgeCV(space_sizes=sizes, backend="numpy").fit(X, Y)
    dual = KernelRidgeCV(space_sizes=sizes, backend="numpy").fit(X, Y)
    np.testing.assert_allclose(dual.cv_scores_, primal.cv_scores_, atol=1e-3)
    # the same alpha, or one whose primal CV score ties with the best (noise vertices, huge alphas)
    pick = np.searchsorted(primal.alphas_, dual.best_alphas_)
    assert np.all(primal.cv_scores_[pick, np.arange(Y.shape[1])] >= primal.cv_r_ - 1e-3)
    same = dual.best_alphas_ == primal.best_alphas_
    assert same.mean() >= 0.75
    np.testing.assert_allclose(dual.predict(X[:7])[:, same], primal.predict(X[:7])[:, same], atol=1e-3, rtol=1e-3)
    np.testing.assert_allclose(dual.coef_[:, same], primal.coef_[:, same], atol=1e-3 * np.abs(primal.coef_).max())


def test_dual_holdout_and_auto_choice():
    X, Y = _data(seed=1)
    val = np.arange(0, 80, 5)
    primal, dual = RidgeCV(backend="numpy"), KernelRidgeCV(backend="numpy")
    r_p, r_d = primal.fit_holdout(X, Y, val), dual.fit_holdout(X, Y, val)
    keep = (primal.best_alphas_ == dual.best_alphas_) & (primal.best_alphas_ < 1e6)
    assert keep.sum() >= 4
    np.testing.assert_allclose(r_d[keep], r_p[keep], atol=1e-3)
    # ridge picks the dual when the features outnumber the training rows, the primal otherwise
    assert isinstance(make_estimator("ridge", space_sizes=[200], n_rows=80), KernelRidgeCV)
    assert isinstance(make_estimator("ridge", space_sizes=[50], n_rows=80), RidgeCV)
    with pytest.raises(UserError):
        KernelRidgeCV().predict(X)


def test_pls_and_elasticnet_match_sklearn(monkeypatch):
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.linear_model import ElasticNet as SkElasticNet

    X, Y = _data(n=120, p=20, t=3)
    X, Y = X.astype(np.float64), Y.astype(np.float64)
    ours = PLS(3).fit(X, Y[:, 0]).predict(X)
    np.testing.assert_allclose(ours, PLSRegression(3).fit(X, Y[:, 0]).predict(X).ravel(), atol=1e-4)
    Xz = (X - X.mean(0)) / X.std(0)
    Yz = (Y - Y.mean(0)) / Y.std(0)
    sk = SkElasticNet(alpha=0.05, l1_ratio=0.5, tol=1e-10, max_iter=10000).fit(Xz, Yz).predict(Xz)
    ours = ElasticNet(0.05, 0.5, max_iter=2000, tol=1e-9).fit(X, Y).predict(X)
    np.testing.assert_allclose(ours, sk * Y.std(0) + Y.mean(0), atol=1e-3)
    # more features than rows (pooled layers): solved in the row space, still scikit-learn's PLS
    wide = np.random.default_rng(1).standard_normal((40, 300))
    y = wide[:, :4].sum(1) + np.random.default_rng(2).standard_normal(40)
    np.testing.assert_allclose(PLS(5).fit(wide, y).predict(wide), PLSRegression(5).fit(wide, y).predict(wide).ravel(),
                               atol=1e-4)
    # each component's direction: Lanczos when both sides are large gives the Gram matrices' answer
    S = np.random.default_rng(3).standard_normal((70, 90))
    small = pls_elasticnet.dominant_direction(S)
    monkeypatch.setattr(pls_elasticnet, "GRAM_MAX", 10)
    assert abs(small @ pls_elasticnet.dominant_direction(S)) > 1 - 1e-9
    r = PLS(2).fit_holdout(X, Y, np.arange(0, 120, 4))
    assert r.shape == (3,) and np.all(np.isfinite(r))
    with pytest.raises(UserError):
        PLS(500).fit(X, Y)


def _bands(n=90, t=16, seed=0):
    """Two bands: the first half of the vertices is driven by band 1, the second by band 2."""
    rng = np.random.default_rng(seed)
    X1 = (rng.standard_normal((n, 30)) * 3 + 1).astype(np.float32)
    X2 = rng.standard_normal((n, 150)).astype(np.float32)
    Y = np.concatenate([X1[:, :4] @ rng.standard_normal((4, t // 2)), X2[:, :4] @ rng.standard_normal((4, t // 2))], 1)
    return X1, X2, (Y + 2 * rng.standard_normal(Y.shape)).astype(np.float32)


def test_multiple_kernel_fixed_weights_is_ridge_on_weighted_bands():
    X1, X2, Y = _bands()
    w = np.array([2.0, 0.5])
    m = MultipleKernelRidgeCV(kernel_weights=[w], backend="numpy").fit([X1, X2], Y)

    def band(X, weight):  # standardised as one space, unit total variance, times the weight
        Xc = X - X.mean(0)
        return Xc / np.sqrt(Xc.var(0).mean() * X.shape[1]) * np.sqrt(weight)

    Z = np.concatenate([band(X1, w[0]), band(X2, w[1])], 1).astype(np.float64)
    Yc = Y - Y.mean(0)
    explicit = np.stack([Z @ np.linalg.solve(Z.T @ Z + a * np.eye(Z.shape[1]), Z.T @ Yc[:, j])
                         for j, a in enumerate(m.best_alphas_)], 1) + Y.mean(0)
    np.testing.assert_allclose(m.predict([X1, X2]), explicit, atol=1e-3 * np.abs(explicit).max())
    X = np.concatenate([X1, X2], 1)
    np.testing.assert_allclose((X - m.x_offset_) @ m.coef_ + m.intercept_, m.predict(X), atol=1e-3)
    with pytest.raises(UserError):
        MultipleKernelRidgeCV(kernel_weights=[[1.0, 0.0]]).fit([X1, X2], Y)


def test_multiple_kernel_picks_each_vertex_its_band():
    X1, X2, Y = _bands(seed=2)
    m = make_estimator("multiple_kernel", space_sizes=[30, 150], backend="numpy")
    assert isinstance(m, MultipleKernelRidgeCV)
    r = m.fit_holdout(np.concatenate([X1, X2], 1), Y, np.arange(0, 90, 6))
    w = m.best_kernel_weights_  # bands x vertices
    assert (w[0, :8] > w[1, :8]).mean() >= 0.75 and (w[1, 8:] > w[0, 8:]).mean() >= 0.75
    assert np.median(r) > 0.5 and m.predict([X1[:3], X2[:3]]).shape == (3, 16)
    # banded ridge goes to this dual form when its bands outnumber the training rows (the primal would not
    # fit in memory for pooled layers), and stays primal otherwise
    from core.encoding.estimators import BandedRidgeCV

    assert isinstance(make_estimator("banded", space_sizes=[30, 150], n_rows=90), MultipleKernelRidgeCV)
    assert isinstance(make_estimator("banded", space_sizes=[30, 50], n_rows=90), BandedRidgeCV)
    dual = make_estimator("banded", space_sizes=[30, 150], n_rows=90, backend="numpy")
    np.testing.assert_allclose(dual.fit_holdout([X1, X2], Y, np.arange(0, 90, 6)), r, atol=1e-6)


def test_response_ranks_are_chosen_per_vertex_with_alpha():
    """Responses from 2 factors plus noise: ranks are scored through the components (as a fit on the
    projected training rows would score), chosen per vertex, and the reduced-rank fit predicts better."""
    from core.encoding.kernel import LinearKernels, fold_scores
    from core.encoding.lowrank import project, response_basis
    from core.encoding.solvers import space_labels

    rng = np.random.default_rng(3)
    X = rng.standard_normal((120, 60)).astype(np.float32)
    Y = (X[:, :2] @ rng.standard_normal((2, 300)) + 2.5 * rng.standard_normal((120, 300))).astype(np.float32)
    kern = LinearKernels(X, space_labels(None, 60), "space")
    tr, va = np.arange(30, 120), np.arange(30)
    alphas = np.array([1.0, 30.0, 1000.0])
    def reduced(y, k):  # y projected onto its own first k components
        return project(y, response_basis(y, k), k)

    projected = Y.copy()
    projected[tr] = project(Y[tr], response_basis(Y, 3, tr), 3)
    np.testing.assert_allclose(fold_scores(kern, tr, va, Y, alphas, ranks=(0, 3))[1],
                               fold_scores(kern, tr, va, projected, alphas)[0], atol=2e-5)
    with pytest.raises(UserError, match="response ranks"):
        KernelRidgeCV(response_ranks=(2, 2)).fit(X, Y)
    fit, val = np.arange(30, 120), np.arange(30)
    plain = KernelRidgeCV(backend="numpy").fit_holdout(X, Y, val)
    low = KernelRidgeCV(backend="numpy", response_ranks=(0, 2, 8))
    r_low = low.fit_holdout(X, Y, val)
    assert low.cv_scores_.shape == (3, len(low.alphas_), 300) and set(np.unique(low.best_ranks_)) <= {0, 2, 8}
    assert (low.best_ranks_ > 0).mean() > 0.8 and np.median(r_low) > np.median(plain) + 0.05
    # the refit projects every row onto their own components: a fixed rank and alpha is ridge on reduced(Y)
    one = KernelRidgeCV(alphas=(30.0,), response_ranks=(2,), backend="numpy").fit(X[fit], Y[fit])
    ref = KernelRidgeCV(alphas=(30.0,), backend="numpy").fit(X[fit], reduced(Y[fit], 2))
    np.testing.assert_allclose(one.predict(X[val]), ref.predict(X[val]), rtol=1e-3, atol=1e-4)
    mk = MultipleKernelRidgeCV(space_sizes=[30, 30], alphas=(30.0,), kernel_weights=[[1.0, 1.0]],
                               response_ranks=(2,), backend="numpy").fit(X[fit], Y[fit])
    np.testing.assert_allclose(mk.predict(X[val]), MultipleKernelRidgeCV(
        space_sizes=[30, 30], alphas=(30.0,), kernel_weights=[[1.0, 1.0]], backend="numpy").fit(
        X[fit], reduced(Y[fit], 2)).predict(X[val]), rtol=1e-3, atol=1e-4)
