"""Streaming PCA (randomized and exact) against an in-memory exact PCA; pooling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.util.errors import UserError
from core.features.reduction import ColumnSpill, exact_pca_reference, fit_pca, plan_blocks, pool_features


def _data(n=300, d=1500, rank=200, seed=0):
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((n, rank)))[0]
    V = np.linalg.qr(rng.standard_normal((d, rank)))[0]
    s = 50 * np.arange(1, rank + 1) ** -0.6  # slowly decaying, like network features
    X = (U * s) @ V.T + 0.02 * rng.standard_normal((n, d)) + rng.uniform(0, 2, d)
    return X.astype(np.float32)


def _spill(tmp_path, X, k, budget_mb, name="s"):
    plan = plan_blocks(X.shape[0], X.shape[1], k, budget_mb)
    spill = ColumnSpill(tmp_path / name, plan)
    for i in range(0, X.shape[0], 37):
        spill.write(X[i:i + 37])
    spill.finish()
    return spill


@pytest.mark.parametrize("solver", ["randomized", "exact"])
def test_pca_matches_exact_reference(tmp_path, solver):
    X = _data()
    k = 30
    spill = _spill(tmp_path, X, k, budget_mb=2)  # tiny budget: several column blocks
    assert spill.plan.n_blocks > 1
    model, T = fit_pca(spill, k, solver=solver, power_iterations=1)
    comps, ev, total = exact_pca_reference(X, k)
    ours, ref = model.explained_variance_ratio.sum(), ev.sum() / total
    assert abs(ours - ref) / ref < 0.01
    assert abs(model.total_variance - total) / total < 1e-4
    C = model.components
    assert np.allclose(C @ C.T, np.eye(k), atol=1e-4)
    # training projections returned by the fit are the transform of the training data
    assert np.allclose(T.numpy(), model.transform(X), atol=1e-3 * np.abs(T.numpy()).max())
    # leading components agree with the exact ones up to sign
    cos = np.abs((C[:5] * comps[:5]).sum(1))
    assert (cos > 0.99).all(), cos
    assert (np.diff(model.explained_variance) <= 1e-9).all()


def test_budget_changes_blocks_not_results(tmp_path):
    X = _data(n=200, d=800)
    a, Ta = fit_pca(_spill(tmp_path, X, 20, 1, "a"), 20, solver="randomized", seed=1)
    b, Tb = fit_pca(_spill(tmp_path, X, 20, 512, "b"), 20, solver="randomized", seed=1)
    assert np.allclose(a.explained_variance_ratio, b.explained_variance_ratio, rtol=1e-4)
    assert np.allclose(np.abs(Ta.numpy()), np.abs(Tb.numpy()), atol=1e-3 * np.abs(Ta.numpy()).max())


def test_exact_covariance_branch_when_few_features(tmp_path):
    X = _data(n=300, d=60, rank=40)
    model, T = fit_pca(_spill(tmp_path, X, 10, 64), 10, solver="exact")
    comps, ev, total = exact_pca_reference(X, 10)
    assert np.allclose(model.explained_variance, ev, rtol=1e-4)
    assert np.allclose(np.abs(model.components), np.abs(comps), atol=1e-3)


def test_too_many_components_and_too_small_budget(tmp_path):
    X = _data(n=50, d=100, rank=20)
    with pytest.raises(UserError, match="at most 49 components"):
        fit_pca(_spill(tmp_path, X, 10, 64), 60)
    with pytest.raises(UserError, match="needs a memory budget"):
        plan_blocks(10_000, 200_704, 1000, 512)


def test_pooling():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    out = pool_features(x, 2)
    assert out.shape == (2, 12)
    assert torch.allclose(out[0, 0], x[0, 0, :4, :4].mean())
    with pytest.raises(UserError, match="pooling needs a convolutional layer"):
        pool_features(torch.zeros(2, 197, 768), 2, "encoder.ln")


def test_rank_deficient_data_gives_zero_components_not_noise(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((4, 300)).astype(np.float32)
    X = np.repeat(base, 10, axis=0)  # 40 images, only 4 distinct: rank 3 after centring
    for solver in ("exact", "randomized"):
        model, T = fit_pca(_spill(tmp_path, X, 8, 64, solver), 8, solver=solver)
        Tn = T.numpy()
        assert np.isfinite(Tn).all() and np.abs(Tn[:, 3:]).max() < 1e-3 * np.abs(Tn[:, :3]).max()
        assert model.explained_variance_ratio[:3].sum() > 0.999
        assert np.abs(model.transform(X)).max() < 10 * np.abs(Tn).max()
