"""Kernel (dual) ridge with per-vertex CV alpha: for features that outnumber the training images.

``KernelRidgeCV`` solves the same problem as :class:`core.encoding.estimators.RidgeCV` (same
standardisation, folds, alpha grid, per-vertex choice by mean validation r, refit on all rows)
in the dual, as himalaya's ``KernelRidgeCV``: the linear kernel ``K = Z Z'`` of the standardised
features is ``n x n``, so a fold costs one ``n_train x n_train`` eigendecomposition shared by all
vertices and alphas, whatever the number of features (pooled or un-reduced layers).

The Gram matrices ``X_s X_s'`` of every feature space ``s`` are computed once (float64); every
training set's centring and ``"space"`` scaling is derived from them algebraically:
``(x_i - m)(x_j - m)' = G_ij - mean_k G_ik - mean_k G_kj + mean_kl G_kl`` over training rows
``k, l``, and the space's mean feature variance is ``trace(centred G_s) / (n_train p_s)``.
``standardize="feature"`` (per-feature z-scores) builds the standardised features per fold.

With ``K_tr = U diag(s) U'``, ``E = U' Y_tr`` and ``A = K_val,tr U``, the validation prediction
for alpha is ``A diag(1 / (s + alpha)) E``: per alpha one ``n_val x n_train`` matmul per chunk of
vertices. The fitted model keeps the dual coefficients and the standardised training features;
``coef_`` (primal weights on raw features) is computed on demand.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.encoding.estimators import RidgeCV
from core.encoding.solvers import FitResult, check_alphas, check_standardize, resolve_cv, space_labels, split_rows
from core.encoding.backends import get_backend
from core.util.errors import NotFittedError, UserError
from core.util.progress import Progress, report

_CHUNK_BYTES = 256 << 20


class _Kernels:
    """Per-space Gram matrices of the (shifted) rows, and the centred, scaled kernels of any split."""

    def __init__(self, X: np.ndarray, spaces: np.ndarray, standardize: str):
        self.mode = standardize
        self.X = np.asarray(X, dtype=np.float64)
        self.shift = self.X.mean(0)
        self.X -= self.shift
        self.spaces = spaces
        n_spaces = int(spaces.max()) + 1
        self.sizes = np.bincount(spaces, minlength=n_spaces)
        self.G = None
        if self.mode != "feature":
            self.G = np.stack([self.X[:, spaces == s] @ self.X[:, spaces == s].T for s in range(n_spaces)])

    def stats(self, tr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Training mean (of the shifted features) and standard deviation per feature."""
        m = self.X[tr].mean(0)
        var = self.X[tr].var(0)
        raw = (self.X[tr] ** 2).mean(0)
        var = np.where(var <= 1e-10 * raw + 1e-300, 0.0, var)
        if self.mode == "feature":
            sd = np.where(var > 0, np.sqrt(var), 1.0)
        elif self.mode == "space":
            space_var = np.bincount(self.spaces, var) / self.sizes
            sd = np.where(space_var > 0, np.sqrt(space_var), 1.0)[self.spaces]
        else:
            sd = np.ones_like(m)
        return m, sd

    def pair(self, tr: np.ndarray, va: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Centred, standardised kernels ``K(tr, tr)`` and ``K(va, tr)`` (float64)."""
        if self.mode == "feature":
            m, sd = self.stats(tr)
            Ztr = (self.X[tr] - m) / sd
            Kv = None if va is None else ((self.X[va] - m) / sd) @ Ztr.T
            return Ztr @ Ztr.T, Kv
        K = np.zeros((len(tr), len(tr)))
        Kv = None if va is None else np.zeros((len(va), len(tr)))
        for s, G in enumerate(self.G):
            Gt = G[np.ix_(tr, tr)]
            col = Gt.mean(0)
            tot = col.mean()
            Kc = Gt - col[:, None] - col[None, :] + tot
            w = 1.0
            if self.mode == "space":
                var = np.trace(Kc) / (len(tr) * self.sizes[s])
                raw = np.trace(Gt) / (len(tr) * self.sizes[s])
                w = 1.0 / var if var > 1e-10 * raw + 1e-300 else 1.0
            K += w * Kc
            if va is not None:
                Gv = G[np.ix_(va, tr)]
                Kv += w * (Gv - Gv.mean(1)[:, None] - col[None, :] + tot)
        return K, Kv


def _chunk(n_rows: int) -> int:
    return max(64, _CHUNK_BYTES // (4 * 4 * max(1, n_rows)))


def _centred(Y: np.ndarray, rows: np.ndarray, cols: slice) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(Y[rows, cols], dtype=np.float64)
    mu = y.mean(0)
    return (y - mu).astype(np.float32), mu


def _val_r(pred: np.ndarray, yv: np.ndarray) -> np.ndarray:
    """Pearson r per column (``yv`` centred); 0 where a side is constant."""
    pred = pred - pred.mean(0)
    den = np.sqrt((pred * pred).sum(0, dtype=np.float64) * (yv * yv).sum(0, dtype=np.float64))
    num = (pred * yv).sum(0, dtype=np.float64)
    return np.clip(np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0), -1.0, 1.0)


class KernelRidgeCV(RidgeCV):
    """Ridge in the dual (linear kernel), alpha chosen per vertex by K-fold CV; see the module docstring.

    Parameters and fitted state as :class:`~core.encoding.estimators.RidgeCV` (``alphas``, ``cv``,
    ``seed``, ``standardize``, ``space_sizes``; ``best_alphas_``, ``cv_scores_``, ``cv_r_``), plus
    ``dual_coef_`` (n_train x n_vertices), ``X_fit_`` (standardised training features) and
    ``intercept_``. The numbers equal the primal ``RidgeCV``'s up to rounding.
    """

    # -- fitting ---------------------------------------------------------------------------------
    def _fit(self, X: np.ndarray, Y: np.ndarray, bands, holdout: np.ndarray | None,
             progress: Progress | None) -> FitResult:
        with get_backend(self.backend).compute_threads():
            return self._fit_impl(X, Y, holdout, progress)

    def _fit_impl(self, X, Y, holdout, progress):
        n, p = X.shape
        t = Y.shape[1]
        alphas = check_alphas(self.alphas)
        fit_rows, hold = split_rows(n, holdout)
        splits = resolve_cv(self.cv, len(fit_rows), self.seed)
        kern = _Kernels(X, space_labels(self.space_sizes, p), check_standardize(self.standardize))
        folds = []
        for k, (tr, va) in enumerate(splits):
            K, Kv = kern.pair(fit_rows[tr], fit_rows[va])
            s, U = np.linalg.eigh(K)
            folds.append((fit_rows[tr], fit_rows[va], U.astype(np.float32), np.clip(s, 0, None),
                          (Kv @ U).astype(np.float32)))
            report(progress, 0.5 * (k + 1) / (len(splits) + 1), f"decomposition {k + 1}/{len(splits)}")
        scores = np.zeros((len(alphas), t), np.float32)
        step = _chunk(n)
        for start in range(0, t, step):
            sl = slice(start, min(t, start + step))
            for tr, va, U, s, A in folds:
                ytr, _ = _centred(Y, tr, sl)
                yv, _ = _centred(Y, va, sl)
                E = U.T @ ytr
                for i, a in enumerate(alphas):
                    scores[i, sl] += _val_r(A @ (E / (s + a).astype(np.float32)[:, None]), yv) / len(folds)
            report(progress, 0.5 + 0.4 * sl.stop / t, f"cross-validation {sl.stop}/{t} vertices")
        best = scores.argmax(0)
        self.alphas_ = alphas
        self.cv_scores_ = scores
        self.best_alphas_ = alphas[best].astype(np.float32)
        self.cv_r_ = scores[best, np.arange(t)]
        res = FitResult(None, None, best_alpha=self.best_alphas_, best_score=self.cv_r_, scores_by_alpha=scores)
        if hold is not None:
            self._solve(kern, fit_rows, Y)
            res.val_r = self.score(X[hold], Y[hold]).astype(np.float32)
        self._solve(kern, np.arange(n), Y)
        report(progress, 1.0, "refit")
        return res

    def _solve(self, kern: _Kernels, rows: np.ndarray, Y: np.ndarray) -> None:
        """Dual coefficients on ``rows`` with each vertex's alpha; keeps what ``predict`` needs."""
        m, sd = kern.stats(rows)
        K, _ = kern.pair(rows, None)
        s, U = np.linalg.eigh(K)
        s = np.clip(s, 0, None)
        t = Y.shape[1]
        dual = np.empty((len(rows), t), np.float32)
        intercept = np.empty(t, np.float32)
        for start in range(0, t, _chunk(len(rows))):  # float64: at large alphas the dual is tiny
            sl = slice(start, min(t, start + _chunk(len(rows))))
            y, mu = _centred(Y, rows, sl)
            E = (U.T @ y) / (s[:, None] + self.best_alphas_[None, sl])
            dual[:, sl] = U @ E
            intercept[sl] = mu
        self.dual_coef_ = dual
        self.intercept_ = intercept
        self.X_fit_ = ((kern.X[rows] - m) / sd).astype(np.float32)
        self.x_offset_ = kern.shift + m
        self.x_scale_ = sd
        self.n_features_in_ = kern.X.shape[1]
        self.y_ndim_ = 2  # as fitted here; ``_finish`` records how Y was given

    # -- using a fitted model ------------------------------------------------------------------------
    def _finish(self, res: FitResult, squeeze: bool) -> None:
        self.y_ndim_ = 1 if squeeze else 2  # the weights were kept by _solve

    def _check_fitted(self) -> None:
        if not hasattr(self, "dual_coef_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, Y) first")

    @property
    def coef_(self) -> np.ndarray:
        """Primal weights on raw features, ``(n_features, n_vertices)`` (computed on demand)."""
        self._check_fitted()
        return ((self.X_fit_.T @ self.dual_coef_) / self.x_scale_[:, None].astype(np.float32)).astype(np.float32)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted responses, float32 ``(n_images, n_vertices)``: ``K(X, X_fit) dual_coef + intercept``."""
        self._check_fitted()
        X, _ = self._prepare_X(X, fitted=True)
        if X.shape[1] != self.n_features_in_:
            raise UserError(f"X has {X.shape[1]} features but the model was fitted on {self.n_features_in_}")
        Z = ((np.asarray(X, np.float64) - self.x_offset_) / self.x_scale_).astype(np.float32)
        out = (Z @ self.X_fit_.T) @ self.dual_coef_ + self.intercept_[None, :]
        return out[:, 0] if self.y_ndim_ == 1 else out

    def refit(self, X: Any, Y: Any, progress: Progress | None = None) -> "KernelRidgeCV":
        """Refit on new rows keeping each vertex's chosen alpha (no cross-validation)."""
        self._check_fitted()
        X, _ = self._prepare_X(X, fitted=True)
        Y = np.asarray(Y) if not isinstance(Y, np.ndarray) else Y
        kern = _Kernels(X, space_labels(self.space_sizes, X.shape[1]), check_standardize(self.standardize))
        self._solve(kern, np.arange(X.shape[0]), Y if Y.ndim == 2 else Y[:, None])
        return self
