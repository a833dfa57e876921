"""Linear encoding models (scikit-learn style): ``OLS``, ``Ridge``, ``RidgeCV``, ``BandedRidgeCV``.

``fit(X, Y)`` takes features ``X`` (n_images x n_features) and responses ``Y`` (n_images x
n_vertices, may be memory-mapped); ``predict(X)`` returns float32 responses; ``score(X, Y)``
returns the Pearson r of every vertex (not sklearn's R^2).

Features are standardised with the statistics of the rows a model is trained on (never the
validation or test rows); targets are centred the same way. ``standardize``:

* ``"space"`` (default): centre every feature, then divide each feature *space* (all features,
  or each block of ``space_sizes`` / each band) by one number, its root-mean-square training
  standard deviation. Relative variances inside a space are kept: for PCA-reduced network
  features this keeps ridge's stronger shrinkage of the weak, noisy components. On the demo
  dataset (MobileNetV2 ``features.13``, 900 training images) the median validation r was 0.50
  with ``"space"`` vs 0.47 with ``"feature"`` at 100 PCA components, and 0.50 vs 0.32 at 500.
* ``"feature"`` (or ``True``): z-score every feature (unit variance each).
* ``"none"`` (or ``False``): centre only.

Every model ends with a refit on all rows passed to ``fit``; ``coef_`` / ``intercept_`` apply to
raw features.

How the cross-validated ridge is solved
---------------------------------------
For every CV fold the standardised training Gram matrix ``Z'Z = V diag(s2) V'`` is diagonalised
once (``p x p``, float64) and shared by all vertices and all alphas. With ``E = V' Z' Y_train``
(``p x t``) and ``d = 1 / (s2 + alpha)``, the ridge prediction of the validation rows is
``A diag(d) E`` with ``A = Z_val V``. Its Pearson r with ``Y_val`` needs, per vertex, only

* the covariance ``sum_k d_k E_k C_k`` with ``C = A' Y_val``: one small matmul for all alphas;
* the prediction variance ``e' D M D e`` with ``M = A'A``: by partial fractions (see ``_Engine``)
  one float64 ``p x p`` matmul per fold for all alphas,

so validation predictions are never formed: per fold the cost is about ``8 p^2 t`` flops for all
alphas, where himalaya's ``solve_ridge_cv_svd`` spends ``2 n_val n_train t`` per alpha. The
cross-products ``X_b' Y_b`` are computed once per block of rows and combined (training part of a
fold = total minus its block), so ``Y`` is read once (per band weighting, for banded ridge), in
chunks of vertices (bounded memory). ``fit_holdout`` validates on held-out rows and refits on all
rows in that same pass. Heavy products run on the chosen backend (numpy, torch, torch_cuda).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Self, Sequence

import numpy as np

from core.encoding.backends import Backend, get_backend
from core.util.errors import UserError
from core.encoding.metrics import pearson_r
from core.util.progress import Progress, report
from core.encoding.splits import kfold_splits

DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-1, 8, 10))  # 0.1 ... 1e8
DEFAULT_CHUNK_BYTES_CPU = 512 << 20
DEFAULT_CHUNK_BYTES_GPU = 4 << 30


# ---------------------------------------------------------------------------------------------
# input checks
# ---------------------------------------------------------------------------------------------
def _check_X(X: Any, name: str = "X") -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise UserError(f"{name}: expected a 2-D array (images x features), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float32)
    return X


def _check_Y(Y: Any, n: int) -> tuple[np.ndarray, bool]:
    Y = Y if isinstance(Y, np.ndarray) else np.asarray(Y)
    squeeze = Y.ndim == 1
    if squeeze:
        Y = Y[:, None]
    if Y.ndim != 2:
        raise UserError(f"Y: expected a 2-D array (images x vertices), got shape {Y.shape}")
    if Y.shape[0] != n:
        raise UserError(f"X has {n} rows but Y has {Y.shape[0]}")
    return Y, squeeze


def _check_alphas(alphas: Any) -> np.ndarray:
    a = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise UserError(f"alphas must be positive finite numbers, got {alphas!r}")
    return np.sort(a)


STANDARDIZE_MODES = ("space", "feature", "none")


def _check_standardize(mode: Any) -> str:
    """``"space"``, ``"feature"`` or ``"none"`` (``True`` -> ``"feature"``, ``False`` -> ``"none"``)."""
    if mode is True:
        return "feature"
    if mode is False or mode is None:
        return "none"
    if mode not in STANDARDIZE_MODES:
        raise UserError(f"standardize must be one of {', '.join(STANDARDIZE_MODES)} (got {mode!r})")
    return mode


def _space_labels(sizes: Sequence[int] | None, p: int) -> np.ndarray:
    """Feature-space index of every feature (one space when ``sizes`` is None)."""
    if sizes is None:
        return np.zeros(p, dtype=np.int64)
    sizes = [int(x) for x in sizes]
    if sum(sizes) != p or any(x <= 0 for x in sizes):
        raise UserError(f"feature-space sizes {sizes} do not add up to the {p} features")
    return np.repeat(np.arange(len(sizes)), sizes)


def _resolve_cv(cv: Any, n: int, seed: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    if isinstance(cv, (int, np.integer)):
        return kfold_splits(n, int(cv), seed)
    splits = [(np.asarray(tr, dtype=np.int64), np.asarray(va, dtype=np.int64)) for tr, va in cv]
    val = np.sort(np.concatenate([va for _, va in splits]))
    if val.shape[0] != n or not np.array_equal(val, np.arange(n)):
        raise UserError("cv: the validation parts must partition the rows (each row in exactly one fold)")
    for tr, va in splits:
        if tr.size + va.size != n or np.intersect1d(tr, va).size:
            raise UserError("cv: each training part must be the complement of its validation part")
    return splits


def _chunk_size(n_rows: int, n_features: int, n_folds: int, bk: Backend, chunk_bytes: int | None) -> int:
    budget = chunk_bytes or (DEFAULT_CHUNK_BYTES_GPU if bk.on_gpu else DEFAULT_CHUNK_BYTES_CPU)
    per_target = 4 * (2 * n_rows + (n_folds + 10) * n_features)
    return max(256, int(budget // per_target))


# ---------------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------------
@dataclass
class _Factor:
    """One training set's standardisation and eigendecomposition (and its fold's validation terms)."""

    w: Any  # (p,) float32 multiplier on shifted features: band weight / training std
    m: Any  # (p,) float32 training mean of the shifted features
    Vw: Any  # (p, p) float32: V' diag(w), V the eigenvectors of the standardised training Gram
    s2: Any  # (p,) float64 eigenvalues (>= 0), ascending
    n_train: int
    # CV folds only (M = validation Gram of the centred, standardised features in the V basis)
    vw_xbar: Any = None  # (p,) float32: Vw @ validation mean of the shifted features
    N: Any = None  # (p, p) float64: M_kl / (s2_l - s2_k) between different eigenvalue clusters, else 0
    m_diag: Any = None  # (p,) float64: diag(M)
    clusters: list = field(default_factory=list)  # [(indices, M block)] of clusters of equal eigenvalues


def _eigen_clusters(s2: np.ndarray) -> np.ndarray:
    """Cluster label per (ascending) eigenvalue: neighbours closer than 1e-10 * max join a cluster."""
    tol = 1e-10 * max(float(s2[-1]), 1e-300)
    return np.concatenate([[0], np.cumsum(np.diff(s2) > tol)])


class _Engine:
    """Features on the backend, rows grouped in blocks, with the Gram matrices every fit needs.

    Blocks: the CV folds of the fitting rows (or one block holding all of them), then
    optionally a held-out block. ``factor(g, k)`` decomposes the training rows of fold ``k``;
    ``factor(g, None)`` all fitting rows; ``factor(g, "all")`` fitting plus held-out rows.

    Validation variance of the ridge prediction, per vertex and alpha, without a loop over
    alphas: with ``d_k = 1/(s2_k + alpha)`` and ``M`` the validation Gram matrix in the training
    eigenbasis, ``var = sum_kl e_k e_l M_kl d_k d_l``. The partial fractions
    ``d_k d_l = (d_k - d_l) / (s2_l - s2_k)`` turn the off-diagonal part into
    ``2 sum_k d_k e_k (N e)_k`` with ``N_kl = M_kl / (s2_l - s2_k)`` independent of alpha: one
    float64 matmul per fold instead of one per alpha (float64 because the terms cancel).
    Numerically equal eigenvalues are kept together as blocks ``d_c^2 e_c' M_cc e_c``.
    """

    def __init__(self, bk: Backend, X: np.ndarray, fit_blocks: list[np.ndarray], holdout: np.ndarray | None,
                 standardize: Any, spaces: np.ndarray | None = None):
        self.bk = bk
        self.standardize = _check_standardize(standardize)
        self.p = X.shape[1]
        labels = np.zeros(self.p, dtype=np.int64) if spaces is None else np.asarray(spaces)
        onehot = np.zeros((int(labels.max()) + 1, self.p))
        onehot[labels, np.arange(self.p)] = 1.0
        self.space_onehot = bk.asarray(onehot, dtype="float64")  # (n_spaces, p)
        blocks = list(fit_blocks) + ([holdout] if holdout is not None else [])
        order = np.concatenate(blocks)
        self.order = None if np.array_equal(order, np.arange(X.shape[0])) else order
        self.bounds = []
        start = 0
        for b in blocks:
            self.bounds.append((start, start + len(b)))
            start += len(b)
        self.n_blocks_fit = len(fit_blocks)
        self.has_holdout = holdout is not None
        self.n_fit = sum(len(b) for b in fit_blocks)
        self.n_all = start
        Xo = X[order] if self.order is not None else X[:start]
        self.shift = np.asarray(Xo, dtype=np.float64).mean(axis=0)  # numerical centring only
        self.Xs = bk.asarray((np.asarray(Xo, dtype=np.float64) - self.shift).astype(np.float32))
        # Gram matrices and sums per block (float64), combined for any training set
        self.gram_parts, self.sum_parts = [], []
        for a, b in self.bounds:
            xf = bk.f64(self.Xs[a:b])
            self.gram_parts.append(xf.T @ xf)
            self.sum_parts.append(xf.sum(0))
            del xf
        k = self.n_blocks_fit
        self.gram_fit = sum(self.gram_parts[1:k], self.gram_parts[0])
        self.sum_fit = sum(self.sum_parts[1:k], self.sum_parts[0])

    def block_size(self, i: int) -> int:
        return self.bounds[i][1] - self.bounds[i][0]

    # -- decompositions ------------------------------------------------------------------------
    def factor(self, g: Any, fold: int | str | None) -> _Factor:
        """Decompose a training set with per-feature weights ``g`` (see the class docstring)."""
        bk = self.bk
        if fold is None:
            gram, total, n_tr = self.gram_fit, self.sum_fit, self.n_fit
        elif fold == "all":
            gram = self.gram_fit + self.gram_parts[-1]
            total = self.sum_fit + self.sum_parts[-1]
            n_tr = self.n_all
        else:
            gram = self.gram_fit - self.gram_parts[fold]
            total = self.sum_fit - self.sum_parts[fold]
            n_tr = self.n_fit - self.block_size(fold)
        m = total / n_tr
        gc = gram - n_tr * (m[:, None] * m[None, :])
        var = bk.clip_min(bk.diag(gc) / n_tr, 0.0)
        # a feature constant over these rows (up to rounding) counts as variance 0
        var = bk.where(var <= 1e-10 * (bk.diag(gram) / n_tr) + 1e-300, 0.0, var)
        if self.standardize == "feature":  # every feature to unit variance
            sd = bk.where(var > 0, bk.sqrt(var), 1.0)
        elif self.standardize == "space":  # every feature space to unit mean variance
            oh = self.space_onehot
            space_var = (oh @ var) / oh.sum(1)
            space_sd = bk.where(space_var > 0, bk.sqrt(space_var), 1.0)
            sd = oh.T @ space_sd
        else:
            sd = bk.ones_like(m)
        w = g / sd
        gs = gc * w[:, None] * w[None, :]
        del gc
        s2, V = bk.eigh(gs)
        del gs
        s2 = bk.clip_min(s2, 0.0)
        Vw = V.T * w[None, :]
        fac = _Factor(w=bk.f32(w), m=bk.f32(m), Vw=bk.f32(Vw), s2=s2, n_train=n_tr)
        if isinstance(fold, int):
            n_v = self.block_size(fold)
            xbar = self.sum_parts[fold] / n_v
            gv = self.gram_parts[fold] - n_v * (xbar[:, None] * xbar[None, :])
            M = Vw @ gv @ Vw.T  # = V' W Gval W V
            del gv
            labels = _eigen_clusters(bk.to_numpy(s2))
            same = bk.asarray(labels[:, None] == labels[None, :], dtype="bool")
            gap = s2[None, :] - s2[:, None]
            fac.N = bk.where(same, 0.0, M / bk.where(same, 1.0, gap))
            del same, gap
            fac.m_diag = bk.diag(M)
            counts = np.bincount(labels)
            for c in np.flatnonzero(counts > 1):
                ii = bk.index(np.flatnonzero(labels == c))
                fac.clusters.append((ii, M[ii][:, ii]))
            fac.vw_xbar = bk.f32(Vw @ xbar)
        return fac

    # -- per chunk of targets -------------------------------------------------------------------
    def read_chunk(self, Y: np.ndarray, cols: slice | np.ndarray) -> tuple[Any, np.ndarray]:
        """Targets ``cols`` with rows in block order, centred (float32 on the backend), and their means."""
        if self.order is None:
            block = np.array(Y[: self.n_all, cols], dtype=np.float32)  # a private copy
        elif isinstance(cols, slice):
            block = np.asarray(Y[self.order, cols], dtype=np.float32)
        else:
            block = np.asarray(Y[:, cols], dtype=np.float32)[self.order]  # columns first: chunk-sized
        if not block.flags.c_contiguous or not block.flags.writeable or np.shares_memory(block, Y):
            block = np.array(block, dtype=np.float32, order="C")
        mu = (np.ones(block.shape[0], dtype=np.float32) @ block).astype(np.float64) / block.shape[0]
        block -= mu.astype(np.float32)
        return self.bk.asarray(block), mu

    def products(self, Yc: Any, with_var: bool) -> tuple[list, Any, Any, tuple | None]:
        """Per fitting block ``(X_b' Y_b, sum Y_b, centred sum Y_b^2)``, their totals over the
        fitting rows, and for the held-out block ``(X_h' Y_h, sum Y_h, Y_h)``."""
        bk = self.bk
        parts = []
        for i in range(self.n_blocks_fit):
            a, b = self.bounds[i]
            yv = Yc[a:b]
            P = self.Xs[a:b].T @ yv
            sv = yv.sum(0)
            vy = bk.f64(bk.col_sumsq(yv)) - bk.f64(sv) ** 2 / (b - a) if with_var else None
            parts.append((P, sv, vy))
        P_fit = sum((q[0] for q in parts[1:]), parts[0][0]) if len(parts) > 1 else parts[0][0]
        S_fit = sum((q[1] for q in parts[1:]), parts[0][1]) if len(parts) > 1 else parts[0][1]
        hold = None
        if self.has_holdout:
            a, b = self.bounds[-1]
            yh = Yc[a:b]
            hold = (self.Xs[a:b].T @ yh, yh.sum(0), yh)
        return parts, P_fit, S_fit, hold

    def cv_scores(self, factors: list[_Factor], parts: list, P_fit: Any, S_fit: Any, alphas: Any) -> Any:
        """Mean over folds of the validation Pearson r: ``(n_alphas, n_targets)`` on the backend."""
        bk = self.bk
        total = None
        for fac, (P_f, sv, vy) in zip(factors, parts):
            # E = V' Z_train' Y_train ; Cv = V' Z_val' Y_val (centred with train / val means)
            E = fac.Vw @ (P_fit - P_f)
            bk.rank1_sub_(E, fac.Vw @ fac.m, S_fit - sv)
            Cv = fac.Vw @ P_f
            bk.rank1_sub_(Cv, fac.vw_xbar, sv)
            D = 1.0 / (fac.s2[None, :] + alphas[:, None])  # (n_alphas, p) float64
            Cv *= E
            cov = bk.f64(bk.f32(D) @ Cv)
            del Cv
            E64 = bk.f64(E)
            del E
            var = None
            for ii, block in fac.clusters:  # within clusters: d_c^2 * off-diagonal quadratic form
                Ec = E64[ii]
                off = bk.col_dot(Ec, block @ Ec) - bk.col_dot(Ec * bk.diag(block)[:, None], Ec)
                dc = D[:, ii].mean(1)
                term = (dc * dc)[:, None] * off[None, :]
                var = term if var is None else var + term
            U = fac.N @ E64
            U *= E64
            term = 2.0 * (D @ U)
            var = term if var is None else var + term
            del U
            E64 *= E64
            E64 *= fac.m_diag[:, None]  # diagonal terms M_kk e_k^2
            var = var + (D * D) @ E64
            del E64
            r = bk.nan_to_zero(cov / bk.sqrt(bk.clip_min(var, 0.0) * vy[None, :]))
            r = bk.f32(bk.clip(r, -1.0, 1.0))
            total = r if total is None else total + r
        return total / len(factors)

    def coefs(self, fac: _Factor, P: Any, S: Any, alpha_t: Any, pinv_cut: float | None = None) -> Any:
        """Weights (standardisation folded in) for a chunk of targets, on the backend: per-target
        alphas ``alpha_t``, or the least-squares pseudo-inverse if ``pinv_cut`` is given."""
        bk = self.bk
        E = fac.Vw @ P
        bk.rank1_sub_(E, fac.Vw @ fac.m, S)
        if pinv_cut is not None:
            s2 = fac.s2
            inv = bk.where(s2 > pinv_cut * bk.max(s2), 1.0 / bk.where(s2 > 0, s2, 1.0), 0.0)
            E *= bk.f32(inv)[:, None]
        else:
            E /= bk.f32(fac.s2)[:, None] + alpha_t[None, :]
        return fac.Vw.T @ E

    def intercept(self, fac: _Factor, coef: np.ndarray, S: Any, mu: np.ndarray) -> np.ndarray:
        offset = self.shift + self.bk.to_numpy(fac.m).astype(np.float64)
        mean_y = mu + self.bk.to_numpy(S).astype(np.float64) / fac.n_train
        return (mean_y - offset @ coef.astype(np.float64)).astype(np.float32)

    def holdout_r(self, coef_fit: Any, hold: tuple) -> np.ndarray:
        """Pearson r on the held-out rows of the model ``coef_fit`` (fitted without them)."""
        bk = self.bk
        a, b = self.bounds[-1]
        pred = bk.f64(self.Xs[a:b] @ coef_fit)
        y = bk.f64(hold[2])
        pred -= pred.mean(0)
        y = y - y.mean(0)
        den = bk.sqrt(bk.col_sumsq(pred) * bk.col_sumsq(y))
        r = bk.where(den > 0, bk.col_dot(pred, y) / bk.where(den > 0, den, 1.0), float("nan"))
        return bk.to_numpy(bk.f32(bk.clip(r, -1.0, 1.0)))


# ---------------------------------------------------------------------------------------------
# drivers: fixed hyperparameters, and the search over (feature weights x alphas)
# ---------------------------------------------------------------------------------------------
@dataclass
class _FitResult:
    coef: np.ndarray  # refit on every row passed (fitting + held-out)
    intercept: np.ndarray
    val_r: np.ndarray | None = None  # held-out r of the model fitted without the held-out rows
    best_alpha: np.ndarray | None = None
    best_g: np.ndarray | None = None
    best_score: np.ndarray | None = None
    scores_by_alpha: np.ndarray | None = None


def _rows(n: int, holdout: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    if holdout is None:
        return np.arange(n), None
    holdout = np.unique(np.asarray(holdout, dtype=np.int64))
    if holdout.size < 2 or holdout[0] < 0 or holdout[-1] >= n or n - holdout.size < 2:
        raise UserError(f"held-out rows must be at least 2 valid row indices out of {n}, leaving 2 to fit")
    keep = np.ones(n, dtype=bool)
    keep[holdout] = False
    return np.flatnonzero(keep), holdout


def _fit_fixed(est: "_LinearModel", X: np.ndarray, Y: np.ndarray, alphas_t: np.ndarray | None,
               g: np.ndarray | None = None, targets: np.ndarray | None = None, holdout: np.ndarray | None = None,
               progress: Progress | None = None) -> _FitResult:
    """Fit with a fixed alpha per target (``alphas_t``; ``None``: least squares)."""
    with est._bk().compute_threads():
        return _fit_fixed_impl(est, X, Y, alphas_t, g, targets, holdout, progress)


def _fit_fixed_impl(est, X, Y, alphas_t, g, targets, holdout, progress) -> _FitResult:
    bk = est._bk()
    n, p = X.shape
    t = Y.shape[1] if targets is None else len(targets)
    fit_rows, hold = _rows(n, holdout)
    eng = _Engine(bk, X, [fit_rows], hold, est.standardize, est._spaces(p))
    g_dev = bk.asarray(np.ones(p) if g is None else g, dtype="float64")
    fac_fit = eng.factor(g_dev, None)
    fac_all = eng.factor(g_dev, "all") if hold is not None else fac_fit
    cut = None
    if alphas_t is None:
        cut = (max(n, p) * np.finfo(np.float32).eps) ** 2
    res = _FitResult(np.empty((p, t), np.float32), np.empty(t, np.float32),
                     np.empty(t, np.float32) if hold is not None else None)
    step = _chunk_size(eng.n_all, p, 1, bk, getattr(est, "chunk_bytes", None))
    for start in range(0, t, step):
        sl = slice(start, min(t, start + step))
        cols = sl if targets is None else targets[sl]
        Yc, mu = eng.read_chunk(Y, cols)
        _, P, S, h = eng.products(Yc, with_var=False)
        del Yc
        a_dev = None if alphas_t is None else bk.asarray(alphas_t[sl])
        c = eng.coefs(fac_fit, P, S, a_dev, pinv_cut=cut)
        if h is not None:
            res.val_r[sl] = eng.holdout_r(c, h)
            P, S = P + h[0], S + h[1]
            c = eng.coefs(fac_all, P, S, a_dev, pinv_cut=cut)
        res.coef[:, sl] = bk.to_numpy(c)
        res.intercept[sl] = eng.intercept(fac_all, res.coef[:, sl], S, mu)
        report(progress, sl.stop / t, f"fit {sl.stop}/{t} vertices")
    return res


def _search(est: "_LinearModel", X: np.ndarray, Y: np.ndarray, mults: list[np.ndarray], alphas: np.ndarray,
            holdout: np.ndarray | None, progress: Progress | None) -> _FitResult:
    """Per target, the best (feature weights, alpha) by K-fold CV over the fitting rows; refit."""
    with est._bk().compute_threads():
        return _search_impl(est, X, Y, mults, alphas, holdout, progress)


def _search_impl(est, X, Y, mults, alphas, holdout, progress) -> _FitResult:
    bk = est._bk()
    n, p = X.shape
    t = Y.shape[1]
    fit_rows, hold = _rows(n, holdout)
    splits = _resolve_cv(est.cv, len(fit_rows), est.seed)
    eng = _Engine(bk, X, [fit_rows[va] for _, va in splits], hold, est.standardize, est._spaces(p))
    alphas_dev = bk.asarray(alphas, dtype="float64")
    step = _chunk_size(eng.n_all, p, len(splits), bk, est.chunk_bytes)
    n_chunks = math.ceil(t / step)
    res = _FitResult(np.zeros((p, t), np.float32), np.zeros(t, np.float32),
                     np.full(t, np.nan, np.float32) if hold is not None else None,
                     np.full(t, alphas[-1], np.float32), np.zeros(t, np.int64), np.full(t, -np.inf, np.float32),
                     np.empty((len(alphas), t), np.float32) if len(mults) == 1 else None)
    n_steps = len(mults) * (len(splits) + 2 + n_chunks)
    done = 0
    label = ""
    for gi, g in enumerate(mults):
        if len(mults) > 1:
            label = f" (band weights {gi + 1}/{len(mults)})"
        g_dev = bk.asarray(g, dtype="float64")
        factors = []
        for f in range(len(splits)):
            factors.append(eng.factor(g_dev, f))
            done += 1
            report(progress, done / n_steps, f"decomposition {f + 1}/{len(splits)}{label}")
        fac_fit = eng.factor(g_dev, None)
        fac_all = eng.factor(g_dev, "all") if hold is not None else fac_fit
        done += 2
        for start in range(0, t, step):
            sl = slice(start, min(t, start + step))
            Yc, mu = eng.read_chunk(Y, sl)
            parts, P, S, h = eng.products(Yc, with_var=True)
            del Yc
            scores = bk.to_numpy(eng.cv_scores(factors, parts, P, S, alphas_dev))
            del parts
            if res.scores_by_alpha is not None:
                res.scores_by_alpha[:, sl] = scores
            ia = scores.argmax(axis=0)
            sc = scores[ia, np.arange(scores.shape[1])]
            improved = sc > res.best_score[sl] + 1e-6 if gi else np.ones(sc.shape, dtype=bool)
            if improved.any():
                idx = np.flatnonzero(improved)
                a_t = alphas[ia[idx]].astype(np.float32)
                a_dev = bk.asarray(a_t)
                if idx.size < sc.size:
                    ii = bk.index(idx)
                    P, S = P[:, ii], S[ii]
                    if h is not None:
                        h = (h[0][:, ii], h[1][ii], h[2][:, ii])
                cols = start + idx
                c = eng.coefs(fac_fit, P, S, a_dev)
                if h is not None:
                    res.val_r[cols] = eng.holdout_r(c, h)
                    P, S = P + h[0], S + h[1]
                    c = eng.coefs(fac_all, P, S, a_dev)
                res.coef[:, cols] = bk.to_numpy(c)
                res.intercept[cols] = eng.intercept(fac_all, res.coef[:, cols], S, mu[idx])
                res.best_score[cols] = sc[idx]
                res.best_alpha[cols] = a_t
                res.best_g[cols] = gi
            del P, S, h
            done += 1
            report(progress, done / n_steps, f"cross-validation {sl.stop}/{t} vertices{label}")
        del factors, fac_fit, fac_all
        bk.empty_cache()
    return res


# ---------------------------------------------------------------------------------------------
# estimators
# ---------------------------------------------------------------------------------------------
class _LinearModel:
    """Shared ``predict`` / ``score`` / ``fit_holdout`` / parameter handling of the linear models."""

    _param_names: tuple[str, ...] = ()
    coef_: np.ndarray
    intercept_: np.ndarray

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._param_names}

    def set_params(self, **params) -> "_LinearModel":
        for k, v in params.items():
            if k not in self._param_names:
                raise ValueError(f"{type(self).__name__}: unknown parameter '{k}'")
            setattr(self, k, v)
        return self

    def clone(self) -> "_LinearModel":
        """An unfitted copy with the same parameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _bk(self) -> Backend:
        return get_backend(getattr(self, "backend", "auto"))

    def _prepare_X(self, X: Any) -> np.ndarray:
        return _check_X(X)

    def _spaces(self, p: int) -> np.ndarray:
        """Feature-space label of every feature (for ``standardize="space"``)."""
        return _space_labels(getattr(self, "space_sizes", None), p)

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise UserError(f"{type(self).__name__} is not fitted yet: call fit(X, Y) first")

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, X: Any, Y: Any, progress: Progress | None = None) -> "_LinearModel":
        """Fit on all rows of ``X`` / ``Y`` (``Y`` may be memory-mapped; it is read in chunks)."""
        X = self._prepare_X(X)
        Y, squeeze = _check_Y(Y, X.shape[0])
        self._fit(X, Y, None, progress)
        self._squeeze = squeeze
        return self

    def fit_holdout(self, X: Any, Y: Any, val_rows: Any, progress: Progress | None = None) -> np.ndarray:
        """Validate, then refit on everything, in one pass over ``Y``.

        Fits on the rows not in ``val_rows`` (any cross-validation happens inside them), returns
        the Pearson r of every vertex on ``val_rows``, and leaves the model refit on all rows with
        the hyperparameters chosen without ``val_rows``.
        """
        X = self._prepare_X(X)
        Y, squeeze = _check_Y(Y, X.shape[0])
        res = self._fit(X, Y, np.asarray(val_rows), progress)
        self._squeeze = squeeze
        return res.val_r

    def _fit(self, X: np.ndarray, Y: np.ndarray, holdout: np.ndarray | None, progress: Progress | None) -> _FitResult:
        raise NotImplementedError

    def _finish(self, res: _FitResult) -> _FitResult:
        self.coef_ = res.coef
        self.intercept_ = res.intercept
        self.n_features_in_ = res.coef.shape[0]
        return res

    # -- using a fitted model ----------------------------------------------------------------------
    def predict(self, X: Any) -> np.ndarray:
        """Predicted responses, float32 ``(n_images, n_vertices)``."""
        self._check_fitted()
        X = self._prepare_X(X)
        if X.shape[1] != self.coef_.shape[0]:
            raise UserError(f"X has {X.shape[1]} features but the model was fitted on {self.coef_.shape[0]}")
        bk = self._bk()
        t = self.coef_.shape[1]
        out = np.empty((X.shape[0], t), dtype=np.float32)
        Xd = bk.asarray(X)
        step = max(1024, (256 << 20) // (4 * max(1, X.shape[0] + X.shape[1])))
        with bk.compute_threads():
            for start in range(0, t, step):
                sl = slice(start, min(t, start + step))
                pred = Xd @ bk.asarray(self.coef_[:, sl]) + bk.asarray(self.intercept_[sl])[None, :]
                out[:, sl] = bk.to_numpy(pred)
        return out[:, 0] if getattr(self, "_squeeze", False) else out

    def score(self, X: Any, Y: Any) -> np.ndarray:
        """Pearson r per vertex between ``Y`` and the predictions for ``X`` (float32)."""
        return pearson_r(np.asarray(Y), self.predict(X))


class OLS(_LinearModel):
    """Ordinary least squares with intercept (the devkits' ``LinearRegression``), all vertices at once.

    The minimum-norm solution when features are collinear (as ``numpy.linalg.lstsq``).
    """

    _param_names = ("standardize", "space_sizes", "backend", "chunk_bytes")

    def __init__(self, standardize: str | bool = "space", space_sizes: Sequence[int] | None = None,
                 backend: str = "auto", chunk_bytes: int | None = None):
        self.standardize = standardize
        self.space_sizes = space_sizes
        self.backend = backend
        self.chunk_bytes = chunk_bytes

    def _fit(self, X, Y, holdout, progress):
        return self._finish(_fit_fixed(self, X, Y, None, holdout=holdout, progress=progress))

    def refit(self, X: Any, Y: Any, progress: Progress | None = None) -> "OLS":
        return self.fit(X, Y, progress)


class Ridge(_LinearModel):
    """Ridge regression with a fixed alpha (a number, or one per vertex)."""

    _param_names = ("alpha", "standardize", "space_sizes", "backend", "chunk_bytes")

    def __init__(self, alpha: float | np.ndarray = 1.0, standardize: str | bool = "space",
                 space_sizes: Sequence[int] | None = None, backend: str = "auto", chunk_bytes: int | None = None):
        self.alpha = alpha
        self.standardize = standardize
        self.space_sizes = space_sizes
        self.backend = backend
        self.chunk_bytes = chunk_bytes

    def _fit(self, X, Y, holdout, progress):
        alphas_t = np.ascontiguousarray(np.broadcast_to(np.asarray(self.alpha, dtype=np.float32), (Y.shape[1],)))
        _check_alphas(np.unique(alphas_t))
        return self._finish(_fit_fixed(self, X, Y, alphas_t, holdout=holdout, progress=progress))

    def refit(self, X: Any, Y: Any, progress: Progress | None = None) -> "Ridge":
        return self.fit(X, Y, progress)


class _SearchCV(_LinearModel):
    """What ``RidgeCV`` and ``BandedRidgeCV`` share: the per-vertex CV search, and ``refit``."""

    def _search_fit(self, X, Y, mults: list[np.ndarray], alphas: np.ndarray, holdout, progress) -> _FitResult:
        """Run the search over ``mults`` x ``alphas``; keep each vertex's best alpha and CV score, and the refit."""
        res = _search(self, X, Y, mults, alphas, holdout, progress)
        self.alphas_ = alphas
        self.best_alphas_ = res.best_alpha
        self.cv_r_ = res.best_score
        return self._finish(res)

    def refit(self, X: Any, Y: Any, progress: Progress | None = None) -> Self:
        """Refit on new rows keeping each vertex's chosen hyperparameters (no cross-validation)."""
        self._check_fitted()
        X = self._prepare_X(X)
        Y, squeeze = _check_Y(Y, X.shape[0])
        self._finish(self._refit(X, Y, progress))
        self._squeeze = squeeze
        return self

    def _refit(self, X: np.ndarray, Y: np.ndarray, progress: Progress | None) -> _FitResult:
        raise NotImplementedError


class RidgeCV(_SearchCV):
    """Ridge regression with alpha chosen per vertex by K-fold cross-validation.

    Parameters: ``alphas`` (grid), ``cv`` (number of folds, or explicit ``(train, val)`` index
    pairs whose validation parts partition the rows; with ``fit_holdout`` they index the rows
    that are not held out, in order), ``seed`` (fold shuffling; ``None``:
    contiguous folds), ``standardize`` and ``space_sizes`` (see the module docstring),
    ``backend`` ("auto", "numpy", "torch", "torch_cuda"), ``chunk_bytes`` (memory per chunk of
    vertices).

    The CV score is the validation Pearson r averaged over folds. After ``fit``:
    ``best_alphas_`` (per vertex), ``cv_scores_`` (n_alphas x n_vertices), ``cv_r_`` (the best
    CV score per vertex: optimistic, it chose the alpha), ``coef_``, ``intercept_`` (refit on
    all rows with each vertex's alpha).
    """

    _param_names = ("alphas", "cv", "seed", "standardize", "space_sizes", "backend", "chunk_bytes")

    def __init__(self, alphas: Sequence[float] = DEFAULT_ALPHAS, cv: Any = 5, seed: int | None = 0,
                 standardize: str | bool = "space", space_sizes: Sequence[int] | None = None,
                 backend: str = "auto", chunk_bytes: int | None = None):
        self.alphas = alphas
        self.cv = cv
        self.seed = seed
        self.standardize = standardize
        self.space_sizes = space_sizes
        self.backend = backend
        self.chunk_bytes = chunk_bytes

    def _fit(self, X, Y, holdout, progress):
        res = self._search_fit(X, Y, [np.ones(X.shape[1])], _check_alphas(self.alphas), holdout, progress)
        self.cv_scores_ = res.scores_by_alpha
        return res

    def _refit(self, X, Y, progress):
        return _fit_fixed(self, X, Y, self.best_alphas_.astype(np.float32), progress=progress)


class BandedRidgeCV(_SearchCV):
    """Banded (group) ridge: one regularisation per feature space, chosen per vertex by K-fold CV.

    The feature spaces ("bands", e.g. two layers or two models) are passed to ``fit`` as a list
    of arrays, or as one array with ``band_sizes``. Each band is standardised (by default as one
    feature space), divided by the square root of its width (so every band starts with the same
    total variance), and weighted
    by ``sqrt(gamma_b)`` where ``gamma`` lies on the simplex; the search runs over
    ``band_weights`` x ``alphas`` and keeps the best pair per vertex (as himalaya's
    random-search banded ridge). The default weights are a grid for two bands (including each
    band alone), or the corners, the centre and seeded Dirichlet samples for more bands. A band
    that only adds noise can thus be switched off for the vertices it does not help.

    After ``fit``: ``band_weights_`` (the candidates), ``best_band_weights_`` (n_bands x
    n_vertices), ``best_alphas_``, ``cv_r_`` (best CV score per vertex), ``coef_`` (on the
    concatenated raw features), ``intercept_``.
    """

    _param_names = ("band_sizes", "alphas", "band_weights", "n_random_weights", "cv", "seed", "standardize",
                    "backend", "chunk_bytes")

    def __init__(self, band_sizes: Sequence[int] | None = None, alphas: Sequence[float] = DEFAULT_ALPHAS,
                 band_weights: np.ndarray | None = None, n_random_weights: int = 10, cv: Any = 5,
                 seed: int | None = 0, standardize: str | bool = "space", backend: str = "auto",
                 chunk_bytes: int | None = None):
        self.band_sizes = band_sizes
        self.alphas = alphas
        self.band_weights = band_weights
        self.n_random_weights = n_random_weights
        self.cv = cv
        self.seed = seed
        self.standardize = standardize
        self.backend = backend
        self.chunk_bytes = chunk_bytes

    def _prepare_X(self, X: Any) -> np.ndarray:
        if isinstance(X, (list, tuple)):
            bands = [_check_X(x, f"band {i}") for i, x in enumerate(X)]
            if len({b.shape[0] for b in bands}) != 1:
                raise UserError(f"bands have different numbers of rows: {[b.shape[0] for b in bands]}")
            sizes = [b.shape[1] for b in bands]
            fitted = getattr(self, "sizes_", None)
            if fitted is not None and list(fitted) != sizes:
                raise UserError(f"band widths {sizes} differ from the fitted ones {list(fitted)}")
            self._sizes_seen = sizes
            dtype = np.result_type(*[b.dtype for b in bands])
            return np.concatenate(bands, axis=1).astype(dtype, copy=False)
        self._sizes_seen = None
        return _check_X(X)

    def _sizes(self, X: np.ndarray) -> list[int]:
        sizes = self._sizes_seen or (list(self.band_sizes) if self.band_sizes is not None else None)
        if sizes is None:
            raise UserError("BandedRidgeCV: pass a list of feature arrays, or set band_sizes")
        if sum(sizes) != X.shape[1] or any(s <= 0 for s in sizes):
            raise UserError(f"band sizes {sizes} do not add up to the {X.shape[1]} features")
        return [int(s) for s in sizes]

    def candidate_weights(self, n_bands: int) -> np.ndarray:
        """The gamma candidates (rows on the simplex) searched for ``n_bands`` bands."""
        if self.band_weights is not None:
            w = np.atleast_2d(np.asarray(self.band_weights, dtype=np.float64))
            if w.shape[1] != n_bands or np.any(w < 0) or np.any(w.sum(1) <= 0):
                raise UserError(f"band_weights must be non-negative rows of {n_bands} weights")
            return w / w.sum(1, keepdims=True)
        if n_bands == 1:
            return np.ones((1, 1))
        if n_bands == 2:
            g = np.array([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
            return np.stack([g, 1 - g], axis=1)
        rows = [np.eye(n_bands), np.full((1, n_bands), 1.0 / n_bands)]
        if self.n_random_weights:
            rng = np.random.default_rng(self.seed)
            rows.append(rng.dirichlet(np.ones(n_bands), size=self.n_random_weights))
        return np.concatenate(rows)

    def _spaces(self, p: int) -> np.ndarray:
        sizes = getattr(self, "sizes_", None) or self._sizes_seen or self.band_sizes
        return _space_labels(sizes, p)

    def _multipliers(self, sizes: list[int], gammas: np.ndarray) -> list[np.ndarray]:
        band_of = np.repeat(np.arange(len(sizes)), sizes)
        width = np.asarray(sizes, dtype=np.float64)[band_of]
        return [np.sqrt(gm[band_of] / width) for gm in gammas]

    def _fit(self, X, Y, holdout, progress):
        self.__dict__.pop("sizes_", None)
        sizes = self._sizes(X)
        alphas = _check_alphas(self.alphas)
        gammas = self.candidate_weights(len(sizes))
        res = self._search_fit(X, Y, self._multipliers(sizes, gammas), alphas, holdout, progress)
        self.sizes_ = sizes
        self.band_weights_ = gammas
        self.best_band_weights_ = gammas[res.best_g].T.astype(np.float32)
        self.best_weight_index_ = res.best_g
        return res

    def _refit(self, X, Y, progress):
        t = Y.shape[1]
        coef = np.empty((X.shape[1], t), dtype=np.float32)
        intercept = np.empty(t, dtype=np.float32)
        mults = self._multipliers(self.sizes_, self.band_weights_)
        used = np.unique(self.best_weight_index_)
        for i, gi in enumerate(used):
            targets = np.flatnonzero(self.best_weight_index_ == gi)
            sub = None if progress is None else (lambda f, m, i=i: report(progress, (i + f) / len(used), m))
            r = _fit_fixed(self, X, Y, self.best_alphas_[targets].astype(np.float32), g=mults[gi],
                           targets=targets, progress=sub)
            coef[:, targets], intercept[targets] = r.coef, r.intercept
        return _FitResult(coef, intercept)
