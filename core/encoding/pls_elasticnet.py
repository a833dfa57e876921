"""PLS regression and elastic net for every vertex at once (Lange 2021's encoding models).

Both z-score features and targets with the training rows' statistics, solve, and fold the
scaling back into ``coef_`` / ``intercept_`` on raw features (the scikit-learn API of
:mod:`core.encoding.estimators`: ``fit``, ``fit_holdout``, ``predict``, ``score``).

* :class:`PLS`: PLS2 by SIMPLS (de Jong 1993), one latent space shared by the vertices fitted
  together (a whole ROI or hemisphere, as Lange fitted one per ROI). With ``S = X'Y`` (``p x t``)
  deflated against the loadings so far, each component's weight is ``S``'s dominant left singular
  vector: from the eigenvectors of the smaller of ``S S'`` and ``S'S``, or by Lanczos (``svds``) when
  both sides are large; the weights are ``R R' S``. With more features than rows (pooled or
  un-reduced layers) it runs on ``X = U diag(s) W'`` in the ``n``-dimensional coordinates ``U diag(s)``
  (every PLS weight lies in ``X``'s row space) and maps the weights back by ``W``: exact, and the cost no
  longer grows with ``p``. For one target it equals scikit-learn's ``PLSRegression``.
* :class:`ElasticNet`: scikit-learn's ``ElasticNet`` objective
  ``1/(2n) |y - Xw|^2 + alpha l1_ratio |w|_1 + alpha (1 - l1_ratio) / 2 |w|^2`` per vertex, solved
  by covariance-form coordinate descent vectorised over vertices (one ``p x t`` update per
  feature and sweep); with z-scored targets ``alpha`` is in units of correlation.
"""

from __future__ import annotations

import numpy as np

from core.encoding.estimators import LinearModel
from core.encoding.solvers import FitResult, split_rows
from core.encoding.metrics import pearson_r
from core.util.errors import UserError
from core.util.progress import Progress, report


def _zscore(A: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    A = np.asarray(A, dtype=np.float64)
    m = A.mean(0)
    sd = A.std(0)
    sd = np.where(sd > 1e-12 * (np.abs(m) + 1), sd, 1.0)
    return (A - m) / sd, m, sd


class _Standardised(LinearModel):
    """Fit on z-scored ``X`` and ``Y`` (``_solve(Xz, Yz) -> coef``), validate on held-out rows, refit."""

    def _solve(self, Xz: np.ndarray, Yz: np.ndarray, progress: Progress | None) -> np.ndarray:
        raise NotImplementedError

    def _fit_rows(self, X: np.ndarray, Y: np.ndarray, rows: np.ndarray, progress) -> FitResult:
        Xz, mx, sx = _zscore(X[rows])
        Yz, my, sy = _zscore(Y[rows])
        B = self._solve(Xz, Yz, progress) * (sy[None, :] / sx[:, None])
        return FitResult(B.astype(np.float32), (my - mx @ B).astype(np.float32))

    def _fit(self, X, Y, bands, holdout, progress):
        fit_rows, hold = split_rows(X.shape[0], holdout)
        val_r = None
        if hold is not None:
            res = self._fit_rows(X, Y, fit_rows, None if progress is None else lambda f, m: report(progress, f / 2, m))
            val_r = pearson_r(np.asarray(Y[hold]), X[hold] @ res.coef + res.intercept)
        res = self._fit_rows(X, Y, np.arange(X.shape[0]), progress)
        res.val_r = val_r
        return res


class PLS(_Standardised):
    """PLS regression (SIMPLS) with ``n_components`` latent components shared by all vertices."""


    def __init__(self, n_components: int = 10):
        self.n_components = n_components

    def _solve(self, Xz, Yz, progress):
        n, p = Xz.shape
        k = int(self.n_components)
        if not 1 <= k <= min(n - 1, p):
            raise UserError(f"PLS: n_components must be between 1 and {min(n - 1, p)} (got {self.n_components})")
        if p > n:  # the same PLS in the row space's coordinates
            U, sv, Wt = np.linalg.svd(Xz, full_matrices=False)
            return Wt.T @ self._solve(U * sv, Yz, progress)
        S0 = Xz.T @ Yz  # (p, t)
        S = S0.copy()  # deflated: (I - V V') S0
        R = np.zeros((p, k))
        V = np.zeros((p, k))
        for a in range(k):
            r = dominant_direction(S)
            score = Xz @ r
            r = r / max(np.linalg.norm(score), 1e-300)
            load = Xz.T @ (Xz @ r)
            v = load - V[:, :a] @ (V[:, :a].T @ load)
            v /= max(np.linalg.norm(v), 1e-300)
            R[:, a], V[:, a] = r, v
            S -= np.outer(v, v @ S)
            report(progress, (a + 1) / (k + 1), f"PLS component {a + 1}/{k}")
        return R @ (R.T @ S0)


GRAM_MAX = 2048  # up to this min(p, t), an eigendecomposition of the smaller Gram matrix; beyond, Lanczos


def dominant_direction(S: np.ndarray) -> np.ndarray:
    """The unit left singular vector of ``S``'s largest singular value (its sign is arbitrary)."""
    p, t = S.shape
    if min(p, t) <= GRAM_MAX:
        if p <= t:
            return np.linalg.eigh(S @ S.T)[1][:, -1]
        u = S @ np.linalg.eigh(S.T @ S)[1][:, -1]
    else:
        from scipy.sparse.linalg import svds

        u = svds(S, k=1, v0=np.full(min(p, t), min(p, t) ** -0.5))[0][:, 0]  # fixed start: deterministic
    return u / max(np.linalg.norm(u), 1e-300)


class ElasticNet(_Standardised):
    """Elastic net per vertex (``alpha``, ``l1_ratio`` as scikit-learn), all vertices at once."""


    def __init__(self, alpha: float = 0.01, l1_ratio: float = 0.5, max_iter: int = 200, tol: float = 1e-4):
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.max_iter = max_iter
        self.tol = tol

    def _solve(self, Xz, Yz, progress):
        if not self.alpha > 0 or not 0.0 <= self.l1_ratio <= 1.0:
            raise UserError(f"ElasticNet: alpha must be > 0 and l1_ratio in [0, 1] (got {self.alpha}, {self.l1_ratio})")
        n, p = Xz.shape
        C = (Xz.T @ Xz) / n
        Rc = ((Xz.T @ Yz) / n).astype(np.float64)  # c - C W: the residual correlations
        W = np.zeros_like(Rc)
        l1, l2 = self.alpha * self.l1_ratio, self.alpha * (1.0 - self.l1_ratio)
        denom = np.diag(C) + l2
        for sweep in range(int(self.max_iter)):
            biggest = 0.0
            for j in range(p):
                rho = Rc[j] + C[j, j] * W[j]
                new = np.sign(rho) * np.maximum(np.abs(rho) - l1, 0.0) / denom[j]
                delta = new - W[j]
                if np.any(delta):
                    Rc -= np.outer(C[:, j], delta)
                    W[j] = new
                    biggest = max(biggest, float(np.abs(delta).max()))
            report(progress, min(0.99, (sweep + 1) / self.max_iter), f"coordinate descent sweep {sweep + 1}")
            if biggest <= self.tol * max(float(np.abs(W).max()), 1e-12):
                break
        return W
