"""Solvers of the linear encoding models: plain functions of arrays (the estimators are thin).

``solve_ridge`` fits with a fixed alpha per target (or least squares), ``solve_ridge_cv`` chooses,
per target, the best (feature weights, alpha) pair by K-fold cross-validation and refits. Both
can hold out rows (validate on them, then refit on every row in the same pass) and return a
:class:`FitResult`. Standardisation (``standardize``: ``"space"``, ``"feature"``, ``"none"``) is
described in :mod:`core.encoding.estimators`.

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
from typing import Any, Sequence

import numpy as np

from core.encoding.backends import Backend, get_backend
from core.encoding.splits import kfold_splits
from core.util.errors import UserError
from core.util.progress import Progress, report

DEFAULT_CHUNK_BYTES_CPU = 512 << 20
DEFAULT_CHUNK_BYTES_GPU = 4 << 30


# ---------------------------------------------------------------------------------------------
# checks of solver arguments
# ---------------------------------------------------------------------------------------------
def check_alphas(alphas: Any) -> np.ndarray:
    a = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise UserError(f"alphas must be positive finite numbers, got {alphas!r}")
    return np.sort(a)


STANDARDIZE_MODES = ("space", "feature", "none")


def check_standardize(mode: Any) -> str:
    """``"space"``, ``"feature"`` or ``"none"`` (``True`` -> ``"feature"``, ``False`` -> ``"none"``)."""
    if mode is True:
        return "feature"
    if mode is False or mode is None:
        return "none"
    if mode not in STANDARDIZE_MODES:
        raise UserError(f"standardize must be one of {', '.join(STANDARDIZE_MODES)} (got {mode!r})")
    return mode


def space_labels(sizes: Sequence[int] | None, p: int) -> np.ndarray:
    """Feature-space index of every feature (one space when ``sizes`` is None)."""
    if sizes is None:
        return np.zeros(p, dtype=np.int64)
    sizes = [int(x) for x in sizes]
    if sum(sizes) != p or any(x <= 0 for x in sizes):
        raise UserError(f"feature-space sizes {sizes} do not add up to the {p} features")
    return np.repeat(np.arange(len(sizes)), sizes)


def resolve_cv(cv: Any, n: int, seed: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
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
        self.standardize = check_standardize(standardize)
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
class FitResult:
    """What a solver returns: weights and intercepts (standardisation folded in) and the search's choices."""

    coef: np.ndarray  # refit on every row passed (fitting + held-out)
    intercept: np.ndarray
    val_r: np.ndarray | None = None  # held-out r of the model fitted without the held-out rows
    best_alpha: np.ndarray | None = None
    best_g: np.ndarray | None = None
    best_score: np.ndarray | None = None
    scores_by_alpha: np.ndarray | None = None


def split_rows(n: int, holdout: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows to fit on and the held-out rows (checked), from ``n`` rows and held-out indices."""
    if holdout is None:
        return np.arange(n), None
    holdout = np.unique(np.asarray(holdout, dtype=np.int64))
    if holdout.size < 2 or holdout[0] < 0 or holdout[-1] >= n or n - holdout.size < 2:
        raise UserError(f"held-out rows must be at least 2 valid row indices out of {n}, leaving 2 to fit")
    keep = np.ones(n, dtype=bool)
    keep[holdout] = False
    return np.flatnonzero(keep), holdout


def solve_ridge(X: np.ndarray, Y: np.ndarray, alphas_t: np.ndarray | None, *, spaces: np.ndarray | None = None,
                standardize: str | bool = "space", backend: str = "auto", g: np.ndarray | None = None,
                targets: np.ndarray | None = None, holdout: np.ndarray | None = None, chunk_bytes: int | None = None,
                progress: Progress | None = None) -> FitResult:
    """Ridge with a fixed alpha per target (``alphas_t``, float32 per target in ``targets``; ``None``:
    least squares, minimum norm), features weighted by ``g``, standardised per ``spaces`` (feature-space
    label per feature). With ``holdout`` (row indices) also the held-out r, and the refit on all rows."""
    bk = get_backend(backend)
    with bk.compute_threads():
        return _solve_ridge(bk, X, Y, alphas_t, spaces, standardize, g, targets, holdout, chunk_bytes, progress)


def _solve_ridge(bk: Backend, X, Y, alphas_t, spaces, standardize, g, targets, holdout, chunk_bytes,
                 progress) -> FitResult:
    n, p = X.shape
    t = Y.shape[1] if targets is None else len(targets)
    fit_rows, hold = split_rows(n, holdout)
    eng = _Engine(bk, X, [fit_rows], hold, standardize, spaces)
    g_dev = bk.asarray(np.ones(p) if g is None else g, dtype="float64")
    fac_fit = eng.factor(g_dev, None)
    fac_all = eng.factor(g_dev, "all") if hold is not None else fac_fit
    cut = None
    if alphas_t is None:
        cut = (max(n, p) * np.finfo(np.float32).eps) ** 2
    res = FitResult(np.empty((p, t), np.float32), np.empty(t, np.float32),
                    np.empty(t, np.float32) if hold is not None else None)
    step = _chunk_size(eng.n_all, p, 1, bk, chunk_bytes)
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


def solve_ridge_cv(X: np.ndarray, Y: np.ndarray, mults: list[np.ndarray], alphas: np.ndarray, *, cv: Any = 5,
                   seed: int | None = 0, spaces: np.ndarray | None = None, standardize: str | bool = "space",
                   backend: str = "auto", holdout: np.ndarray | None = None, chunk_bytes: int | None = None,
                   progress: Progress | None = None) -> FitResult:
    """Per target, the best (feature weights ``mults[i]``, alpha) by K-fold CV over the fitting rows
    (``cv`` folds shuffled with ``seed``, or explicit ``(train, val)`` pairs); refit with it."""
    bk = get_backend(backend)
    with bk.compute_threads():
        return _solve_ridge_cv(bk, X, Y, mults, alphas, cv, seed, spaces, standardize, holdout, chunk_bytes, progress)


def _solve_ridge_cv(bk: Backend, X, Y, mults, alphas, cv, seed, spaces, standardize, holdout, chunk_bytes,
                    progress) -> FitResult:
    n, p = X.shape
    t = Y.shape[1]
    fit_rows, hold = split_rows(n, holdout)
    splits = resolve_cv(cv, len(fit_rows), seed)
    eng = _Engine(bk, X, [fit_rows[va] for _, va in splits], hold, standardize, spaces)
    alphas_dev = bk.asarray(alphas, dtype="float64")
    step = _chunk_size(eng.n_all, p, len(splits), bk, chunk_bytes)
    n_chunks = math.ceil(t / step)
    res = FitResult(np.zeros((p, t), np.float32), np.zeros(t, np.float32),
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
