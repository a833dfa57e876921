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

``MultipleKernelRidgeCV`` is banded ridge in the same dual form: a weighted sum of one kernel per
feature space (layer), the weights fixed (one row: a search samples them per ROI) or chosen per
vertex among candidate rows; ``fold_scores`` / ``cv_scores`` are the one-eigendecomposition-per-fold
CV both estimators (and the search's trials) run; ``fold_predictions`` predicts other rows of the same kernels
with given alphas (a search's refits and out-of-fold predictions), without a feature-space model.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import scipy.linalg

from core.encoding.estimators import DEFAULT_ALPHAS, BandedRidgeCV, RidgeCV
from core.encoding.lowrank import response_basis
from core.encoding.solvers import FitResult, check_alphas, check_standardize, resolve_cv, space_labels, split_rows
from core.encoding.backends import get_backend
from core.util.errors import NotFittedError, UserError
from core.util.progress import Progress, report, scaled

_CHUNK_BYTES = 256 << 20
# the multiple kernel's bands have unit variance each (trace n): alphas on that scale
KERNEL_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-3, 4, 15))


class LinearKernels:
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

    def stats(self, tr: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Training mean (of the shifted features) and the divisor per feature (see :meth:`pair`)."""
        Xt = self.X[tr]  # one copy of the rows, one pass for each moment
        m = Xt.mean(0)
        Xt -= m
        var = np.einsum("ij,ij->j", Xt, Xt) / len(Xt)
        raw = var + m * m  # the raw second moment
        var = np.where(var <= 1e-10 * raw + 1e-300, 0.0, var)
        if self.mode == "feature":
            sd = np.where(var > 0, np.sqrt(var), 1.0)
        elif self.mode == "space":
            space_var = np.bincount(self.spaces, var) / self.sizes
            sd = np.where(space_var > 0, np.sqrt(space_var), 1.0)[self.spaces]
        else:
            sd = np.ones_like(m)
        if weights is not None:
            sd = sd * np.sqrt(self.sizes / np.asarray(weights, np.float64))[self.spaces]
        return m, sd

    def pair(self, tr: np.ndarray, va: np.ndarray | None,
             weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Centred, standardised kernels ``K(tr, tr)`` and ``K(va, tr)`` (float64).

        ``weights`` (one per space, > 0): a multiple kernel, each space's standardised kernel
        divided by its width (trace ``n_tr``, as if every space had one unit of variance) and
        multiplied by its weight.
        """
        if self.mode == "feature":
            m, sd = self.stats(tr, weights)
            Ztr = (self.X[tr] - m) / sd
            Kv = None if va is None else ((self.X[va] - m) / sd) @ Ztr.T
            return Ztr @ Ztr.T, Kv
        # one weighted kernel, centred once (centring is linear); each space's scale from its training block's
        # row sums and trace: the centred block's trace is the trace less n times the block's mean
        n = len(tr)
        sums = self.G @ np.bincount(tr, minlength=self.G.shape[1]).astype(np.float64)  # (spaces, rows)
        tot = sums[:, tr].sum(1) / n ** 2
        trace = np.einsum("sii->si", self.G)[:, tr].sum(1)
        w = np.ones(len(self.G))
        if self.mode == "space":
            var, raw = (trace - n * tot) / (n * self.sizes), trace / (n * self.sizes)
            w = np.where(var > 1e-10 * raw + 1e-300, 1.0 / np.where(var > 0, var, 1.0), 1.0)
        if weights is not None:
            w = w * np.asarray(weights, np.float64) / self.sizes
        G = np.tensordot(w, self.G, axes=1)
        row, tot_w = (w @ sums) / n, float(w @ tot)
        K = G[np.ix_(tr, tr)] - row[tr][:, None] - row[tr][None, :] + tot_w
        Kv = None if va is None else G[np.ix_(va, tr)] - row[va][:, None] - row[tr][None, :] + tot_w
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


def check_ranks(ranks: Sequence[int] | None) -> tuple[int, ...]:
    """Candidate ranks of the training targets: ``(0,)`` (the responses themselves) by default."""
    out = (0,) if ranks is None else tuple(ranks)
    if not out or any(isinstance(r, bool) or int(r) != r or r < 0 for r in out) or len(set(out)) != len(out):
        raise UserError(f"response ranks must be distinct integers >= 0, 0 meaning the responses themselves (got {ranks!r})")
    return tuple(int(r) for r in out)


def fold_scores(kern: LinearKernels, tr: np.ndarray, va: np.ndarray, Y: np.ndarray, alphas: np.ndarray,
                weights: np.ndarray | None = None, ranks: Sequence[int] = (0,),
                basis: np.ndarray | None = None) -> np.ndarray:
    """Validation r of every rank and alpha on one fold, ``(n_ranks, n_alphas, n_vertices)``: one
    eigendecomposition.

    ``tr``, ``va``: rows of ``kern`` and ``Y``; ``weights``: a multiple kernel (see ``LinearKernels.pair``);
    ``ranks``: the fitted targets, 0 the ``tr`` rows' responses, ``k`` their projection onto their first
    ``k`` principal components (:mod:`core.encoding.lowrank`; ``basis``: those components, from
    ``response_basis(Y, max(ranks), tr)``, computed here when not given). Validation is always
    against ``Y[va]``. A rank's prediction is formed through the ``k`` components, so ranks cost little.
    """
    K, Kv = kern.pair(tr, va, weights)
    s, U = np.linalg.eigh(K)
    s = np.clip(s, 0, None)
    U32, A = U.astype(np.float32), (Kv @ U).astype(np.float32)
    top = max(ranks)
    if top and basis is None:
        basis = response_basis(Y, top, tr)
    # per alpha, validation rows through the components: (A diag(1 / (s + alpha)) U') B
    UB = None if not top else U32.T @ basis[:, :top]
    through = [] if not top else [(A / (s + a).astype(np.float32)[None, :]) @ UB for a in alphas]
    t = Y.shape[1]
    out = np.zeros((len(ranks), len(alphas), t), np.float32)
    step = _chunk(len(tr))
    for start in range(0, t, step):
        sl = slice(start, min(t, start + step))
        ytr, _ = _centred(Y, tr, sl)
        yv, _ = _centred(Y, va, sl)
        E = U32.T @ ytr if 0 in ranks else None
        P = basis[:, :top].T @ ytr if top else None
        for j, k in enumerate(ranks):  # a rank above the components' count slices to all of them
            for i, a in enumerate(alphas):
                pred = through[i][:, :k] @ P[:k] if k else A @ (E / (s + a).astype(np.float32)[:, None])
                out[j, i, sl] = _val_r(pred, yv)
    return out


def cv_scores(kern: LinearKernels, folds: list[tuple[np.ndarray, np.ndarray]], Y: np.ndarray, alphas: np.ndarray,
              weights: np.ndarray | None = None, progress: Progress | None = None, ranks: Sequence[int] = (0,),
              bases: list[np.ndarray] | None = None) -> np.ndarray:
    """Mean validation r of every rank and alpha over ``folds``, ``(n_ranks, n_alphas, n_vertices)``
    (``bases``: each fold's response components, see :func:`fold_scores`)."""
    total = np.zeros((len(ranks), len(alphas), Y.shape[1]), np.float32)
    for k, (tr, va) in enumerate(folds):
        total += fold_scores(kern, tr, va, Y, alphas, weights, ranks, None if bases is None else bases[k])
        report(progress, (k + 1) / len(folds), f"fold {k + 1}/{len(folds)}")
    return total / len(folds)


def fold_bases(Y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], ranks: Sequence[int]) -> list | None:
    """Each fold's training response components for the largest of ``ranks`` (None without one)."""
    return [response_basis(Y, max(ranks), tr) for tr, _ in folds] if max(ranks) else None


def _dual(K: np.ndarray, Y: np.ndarray, y_rows: np.ndarray, alphas_t: np.ndarray, ranks_t: np.ndarray | None = None,
          basis: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dual coefficients ``(len(K), n_vertices)`` and intercepts of the kernel ``K`` of some rows (from
    :meth:`LinearKernels.pair`) whose targets are rows ``y_rows`` of ``Y``, each vertex with its alpha (float64
    solve) and, with ``ranks_t``, its targets' rank (projected onto the first columns of ``basis``, the rows'
    components)."""
    s, U = np.linalg.eigh(K)
    s = np.clip(s, 0, None)
    t = Y.shape[1]
    dual = np.empty((len(K), t), np.float32)
    intercept = np.empty(t, np.float32)
    step = _chunk(len(K))
    for start in range(0, t, step):  # float64: at large alphas the dual is tiny
        sl = slice(start, min(t, start + step))
        y, mu = _centred(Y, y_rows, sl)
        if ranks_t is not None:
            for k in np.unique(ranks_t[sl]):
                if k:
                    cols = np.flatnonzero(ranks_t[sl] == k)
                    B = basis[:, :k]
                    y[:, cols] = B @ (B.T @ y[:, cols])
        dual[:, sl] = U @ ((U.T @ y) / (s[:, None] + alphas_t[None, sl]))
        intercept[sl] = mu
    return dual, intercept


def fold_predictions(kern: LinearKernels, tr: np.ndarray, va: np.ndarray, Y_tr: np.ndarray, alphas_t: np.ndarray,
                     weights: np.ndarray | None = None, basis: np.ndarray | None = None) -> np.ndarray:
    """Predictions for rows ``va`` of the kernel ridge fitted on rows ``tr`` (``Y_tr``: their targets, in
    their order), each vertex with its alpha: through the kernels alone, no feature-space model. ``basis``:
    fit the targets' projection onto these orthonormal columns (reduced-rank targets, :mod:`core.encoding.lowrank`).

    One Cholesky factorisation of ``K_tr + alpha I`` per alpha the vertices use (a tenth of an eigendecomposition's
    cost, which pays when every alpha is needed, as in a CV): the prediction is ``K_va,tr (K_tr + alpha I)^-1 Y_tr``
    (centred, plus the training mean); through a basis ``B``, ``(K_va,tr (K_tr + alpha I)^-1 B)(B' Y_tr)``."""
    K, Kv = kern.pair(tr, va, weights)
    alphas_t = np.asarray(alphas_t, np.float64)
    out = np.empty((len(va), Y_tr.shape[1]), np.float32)
    step = _chunk(len(tr))
    for a in np.unique(alphas_t):
        cols = np.flatnonzero(alphas_t == a)
        M = K.copy()
        M.flat[:: len(tr) + 1] += a
        factor = scipy.linalg.cho_factor(M, overwrite_a=True, check_finite=False)
        W = None if basis is None else Kv @ scipy.linalg.cho_solve(factor, basis, check_finite=False)
        for start in range(0, len(cols), step):
            c = cols[start:start + step]
            y = np.asarray(Y_tr[:, c], dtype=np.float64)
            mu = y.mean(0)
            y -= mu
            out[:, c] = (Kv @ scipy.linalg.cho_solve(factor, y, check_finite=False) if W is None
                         else W @ (basis.T @ y)) + mu
    return out


class KernelRidgeCV(RidgeCV):
    """Ridge in the dual (linear kernel), alpha chosen per vertex by K-fold CV; see the module docstring.

    Parameters and fitted state as :class:`~core.encoding.estimators.RidgeCV` (``alphas``, ``cv``,
    ``seed``, ``standardize``, ``space_sizes``; ``best_alphas_``, ``cv_scores_``, ``cv_r_``), plus
    ``dual_coef_`` (n_train x n_vertices), ``X_fit_`` (standardised training features) and
    ``intercept_``. The numbers equal the primal ``RidgeCV``'s up to rounding.

    ``response_ranks``: candidate ranks of the fitted targets, chosen per vertex together with alpha
    (reduced-rank regression, :mod:`core.encoding.lowrank`; 0 = the responses themselves, the
    default only). Every candidate is scored against the raw responses; ``best_ranks_`` holds each
    vertex's, and ``cv_scores_`` is then ``(n_ranks, n_alphas, n_vertices)``.
    """

    def __init__(self, alphas: Sequence[float] = DEFAULT_ALPHAS, cv: Any = 5, seed: int | None = 0,
                 standardize: str | bool = "space", space_sizes: Sequence[int] | None = None,
                 backend: str = "auto", chunk_bytes: int | None = None, response_ranks: Sequence[int] | None = None):
        super().__init__(alphas=alphas, cv=cv, seed=seed, standardize=standardize, space_sizes=space_sizes,
                         backend=backend, chunk_bytes=chunk_bytes)
        self.response_ranks = response_ranks

    # -- fitting ---------------------------------------------------------------------------------
    def _fit(self, X: np.ndarray, Y: np.ndarray, bands, holdout: np.ndarray | None,
             progress: Progress | None) -> FitResult:
        with get_backend(self.backend).compute_threads():
            return self._fit_impl(X, Y, holdout, progress)

    def _kernels(self, X: np.ndarray) -> LinearKernels:
        return LinearKernels(X, space_labels(self.space_sizes, X.shape[1]), check_standardize(self.standardize))

    def _fit_impl(self, X, Y, holdout, progress):
        t = Y.shape[1]
        alphas = check_alphas(self.alphas)
        ranks = check_ranks(self.response_ranks)
        fit_rows, hold = split_rows(X.shape[0], holdout)
        folds = [(fit_rows[tr], fit_rows[va]) for tr, va in resolve_cv(self.cv, len(fit_rows), self.seed)]
        kern = self._kernels(X)
        scores = cv_scores(kern, folds, Y, alphas, progress=scaled(progress, 0.0, 0.9), ranks=ranks,
                           bases=fold_bases(Y, folds, ranks))
        flat = scores.reshape(-1, t)
        best = flat.argmax(0)
        self.alphas_ = alphas
        self.cv_scores_ = scores if len(ranks) > 1 else scores[0]
        self.best_alphas_ = alphas[best % len(alphas)].astype(np.float32)
        self.best_ranks_ = np.asarray(ranks)[best // len(alphas)]
        self.cv_r_ = flat[best, np.arange(t)]
        res = FitResult(None, None, best_alpha=self.best_alphas_, best_score=self.cv_r_, scores_by_alpha=self.cv_scores_)
        return self._validate_and_refit(kern, X, Y, fit_rows, hold, res, progress)

    def _rank_args(self, Y: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``_dual``'s reduced-rank arguments for a fit on ``rows``: each vertex's rank and the rows'
        response components (of all vertices); ``(None, None)`` when every vertex fits its own responses."""
        ranks = getattr(self, "best_ranks_", None)
        if ranks is None or not ranks.any():
            return None, None
        return ranks, response_basis(Y, int(ranks.max()), rows)

    def _solve(self, kern: LinearKernels, rows: np.ndarray, Y: np.ndarray) -> None:
        """Dual coefficients on ``rows`` with each vertex's alpha (and rank); keeps what ``predict`` needs."""
        m, sd = kern.stats(rows)
        self.dual_coef_, self.intercept_ = _dual(kern.pair(rows, None)[0], Y, rows,
                                                 self.best_alphas_.astype(np.float64), *self._rank_args(Y, rows))
        self._keep_rows(kern, rows, m, sd)

    def _keep_rows(self, kern: LinearKernels, rows: np.ndarray, m: np.ndarray, sd: np.ndarray) -> None:
        """The standardised training rows and their standardisation, for ``predict`` and ``coef_``."""
        self.X_fit_ = ((kern.X[rows] - m) / sd).astype(np.float32)
        self.x_offset_ = kern.shift + m
        self.x_scale_ = sd
        self.n_features_in_ = kern.X.shape[1]
        self.y_ndim_ = 2  # as fitted here; ``_finish`` records how Y was given

    def _validate_and_refit(self, kern: LinearKernels, X: np.ndarray, Y: np.ndarray, fit_rows: np.ndarray,
                            hold: np.ndarray | None, res: FitResult, progress: Progress | None) -> FitResult:
        """r on the held-out rows (of the model fitted without them), then the refit on every row."""
        if hold is not None:
            self._solve(kern, fit_rows, Y)
            res.val_r = self.score(X[hold], Y[hold]).astype(np.float32)
        self._solve(kern, np.arange(X.shape[0]), Y)
        report(progress, 1.0, "refit")
        return res

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

    def _standardised(self, X: Any) -> np.ndarray:
        self._check_fitted()
        X, _ = self._prepare_X(X, fitted=True)
        if X.shape[1] != self.n_features_in_:
            raise UserError(f"X has {X.shape[1]} features but the model was fitted on {self.n_features_in_}")
        return ((np.asarray(X, np.float64) - self.x_offset_) / self.x_scale_).astype(np.float32)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted responses, float32 ``(n_images, n_vertices)``: ``K(X, X_fit) dual_coef + intercept``."""
        out = (self._standardised(X) @ self.X_fit_.T) @ self.dual_coef_ + self.intercept_[None, :]
        return out[:, 0] if self.y_ndim_ == 1 else out

    def refit(self, X: Any, Y: Any, progress: Progress | None = None) -> "KernelRidgeCV":
        """Refit on new rows keeping each vertex's chosen alpha (no cross-validation)."""
        self._check_fitted()
        X, _ = self._prepare_X(X, fitted=True)
        Y = np.asarray(Y) if not isinstance(Y, np.ndarray) else Y
        self._solve(self._kernels(X), np.arange(X.shape[0]), Y if Y.ndim == 2 else Y[:, None])
        return self


class MultipleKernelRidgeCV(KernelRidgeCV):
    """Banded ridge in the dual: one linear kernel per feature space, weighted, alpha CV'd per vertex.

    Each space ("band": a layer) is standardised as one space and its kernel divided by the
    space's width, so every band starts with the same total variance whatever its width; the
    kernel is ``sum_b w_b K_b``. ``kernel_weights``: candidate weight rows (positive, one per
    band). One row fixes the mixing (a search samples it per ROI); several rows are searched per
    vertex together with ``alphas`` (as himalaya's ``MultipleKernelRidgeCV`` with random search);
    ``None`` takes :meth:`BandedRidgeCV.candidate_weights
    <core.encoding.estimators.BandedRidgeCV.candidate_weights>`' defaults (each band alone at a
    1e-3 floor, the centre, seeded Dirichlet samples). A fold costs one ``n_train x n_train``
    eigendecomposition per candidate row, whatever the bands' widths (pooled or un-reduced layers).

    After ``fit``: ``kernel_weights_`` (candidates), ``best_kernel_weights_`` (n_bands x n_vertices),
    ``best_alphas_``, ``cv_r_``, ``dual_coef_``, ``intercept_``, ``coef_`` on demand.
    """

    def __init__(self, space_sizes: Sequence[int] | None = None, kernel_weights: Any = None,
                 alphas: Sequence[float] = KERNEL_ALPHAS, n_random_weights: int = 10, cv: Any = 5,
                 seed: int | None = 0, backend: str = "auto", response_ranks: Sequence[int] | None = None):
        self.space_sizes = space_sizes
        self.kernel_weights = kernel_weights
        self.alphas = alphas
        self.n_random_weights = n_random_weights
        self.cv = cv
        self.seed = seed
        self.backend = backend
        self.response_ranks = response_ranks

    standardize = "space"

    def _prepare_X(self, X: Any, fitted: bool = False) -> tuple[np.ndarray, list[int] | None]:
        """A list of bands is concatenated (their widths become ``space_sizes``)."""
        return BandedRidgeCV._prepare_X(self, X, fitted)

    def candidate_weights(self, n_bands: int) -> np.ndarray:
        if self.kernel_weights is None:
            w = BandedRidgeCV(n_random_weights=self.n_random_weights, seed=self.seed).candidate_weights(n_bands)
            return np.maximum(w, 1e-3)
        w = np.atleast_2d(np.asarray(self.kernel_weights, dtype=np.float64))
        if w.shape[1] != n_bands or not np.all(w > 0) or not np.all(np.isfinite(w)):
            raise UserError(f"kernel_weights must be rows of {n_bands} positive weights (one per band)")
        return w

    def _fit(self, X, Y, bands, holdout, progress):
        sizes = [int(b) for b in (bands or self.space_sizes or [X.shape[1]])]
        if sum(sizes) != X.shape[1] or min(sizes) <= 0:
            raise UserError(f"band sizes {sizes} do not add up to the {X.shape[1]} features")
        self.sizes_ = sizes
        with get_backend(self.backend).compute_threads():
            return self._fit_bands(X, Y, sizes, holdout, progress)

    def _fit_bands(self, X, Y, sizes, holdout, progress):
        t = Y.shape[1]
        alphas = check_alphas(self.alphas)
        gammas = self.candidate_weights(len(sizes))
        fit_rows, hold = split_rows(X.shape[0], holdout)
        folds = [(fit_rows[tr], fit_rows[va]) for tr, va in resolve_cv(self.cv, len(fit_rows), self.seed)]
        kern = LinearKernels(X, space_labels(sizes, X.shape[1]), "space")
        ranks = check_ranks(self.response_ranks)
        bases = fold_bases(Y, folds, ranks)
        best_r = np.full(t, -np.inf, np.float32)
        best_a = np.zeros(t, np.float32)
        best_g = np.zeros(t, np.int64)
        best_k = np.zeros(t, np.int64)
        for g, w in enumerate(gammas):
            sc = cv_scores(kern, folds, Y, alphas, w, scaled(progress, 0.9 * g / len(gammas),
                                                             0.9 * (g + 1) / len(gammas)), ranks, bases).reshape(-1, t)
            ai = sc.argmax(0)
            r = sc[ai, np.arange(t)]
            better = r > best_r
            best_r[better], best_a[better], best_g[better] = r[better], alphas[ai[better] % len(alphas)], g
            best_k[better] = np.asarray(ranks)[ai[better] // len(alphas)]
        self.alphas_ = alphas
        self.kernel_weights_ = gammas
        self.best_weight_index_ = best_g
        self.best_kernel_weights_ = gammas[best_g].T.astype(np.float32)
        self.best_alphas_ = best_a
        self.best_ranks_ = best_k
        self.cv_r_ = best_r
        res = FitResult(None, None, best_alpha=best_a, best_score=best_r)
        return self._validate_and_refit(kern, X, Y, fit_rows, hold, res, progress)

    def _solve(self, kern: LinearKernels, rows: np.ndarray, Y: np.ndarray) -> None:
        """Per used candidate: dual coefficients of its vertices; ``X_fit_`` holds the unit-weight features."""
        ones = np.ones(len(self.sizes_))
        m, sd = kern.stats(rows, ones)
        t = Y.shape[1]
        self.dual_coef_ = np.zeros((len(rows), t), np.float32)
        self.intercept_ = np.zeros(t, np.float32)
        ranks, basis = self._rank_args(Y, rows)
        for g in np.unique(self.best_weight_index_):
            idx = np.flatnonzero(self.best_weight_index_ == g)
            d, b = _dual(kern.pair(rows, None, self.kernel_weights_[g])[0], Y[:, idx], rows,
                         self.best_alphas_[idx].astype(np.float64), None if ranks is None else ranks[idx], basis)
            self.dual_coef_[:, idx], self.intercept_[idx] = d, b
        self._keep_rows(kern, rows, m, sd)

    def _feature_weights(self, g: int) -> np.ndarray:
        return self.kernel_weights_[g][space_labels(self.sizes_, self.n_features_in_)].astype(np.float32)

    @property
    def coef_(self) -> np.ndarray:
        """Primal weights on raw features, ``(n_features, n_vertices)`` (computed on demand)."""
        self._check_fitted()
        out = np.empty((self.n_features_in_, self.dual_coef_.shape[1]), np.float32)
        for g in np.unique(self.best_weight_index_):
            idx = np.flatnonzero(self.best_weight_index_ == g)
            out[:, idx] = (self._feature_weights(g)[:, None] * (self.X_fit_.T @ self.dual_coef_[:, idx])
                           / self.x_scale_[:, None].astype(np.float32))
        return out

    def predict(self, X: Any) -> np.ndarray:
        """Predicted responses, float32 ``(n_images, n_vertices)``: each vertex with its kernel weights."""
        Z = self._standardised(X)
        out = np.empty((Z.shape[0], self.dual_coef_.shape[1]), np.float32)
        for g in np.unique(self.best_weight_index_):
            idx = np.flatnonzero(self.best_weight_index_ == g)
            out[:, idx] = ((Z * self._feature_weights(g)) @ self.X_fit_.T) @ self.dual_coef_[:, idx]
        out += self.intercept_[None, :]
        return out[:, 0] if self.y_ndim_ == 1 else out

    def refit(self, X: Any, Y: Any, progress: Progress | None = None) -> "MultipleKernelRidgeCV":
        """Refit on new rows keeping each vertex's kernel weights and alpha (no cross-validation)."""
        self._check_fitted()
        X, _ = self._prepare_X(X, fitted=True)
        Y = np.asarray(Y) if not isinstance(Y, np.ndarray) else Y
        kern = LinearKernels(X, space_labels(self.sizes_, X.shape[1]), "space")
        self._solve(kern, np.arange(X.shape[0]), Y if Y.ndim == 2 else Y[:, None])
        return self
