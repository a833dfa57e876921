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

The numerical work is done by the solver functions of :mod:`core.encoding.solvers` (plain
functions of arrays); the classes here hold parameters and learned state.
"""

from __future__ import annotations

import inspect
from typing import Any, Self, Sequence

import numpy as np

from core.encoding.backends import get_backend
from core.encoding.metrics import pearson_r
from core.encoding.solvers import FitResult, check_alphas, solve_ridge, solve_ridge_cv, space_labels
from core.util.errors import NotFittedError, UserError
from core.util.progress import Progress, report

DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-1, 8, 10))  # 0.1 ... 1e8


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


# ---------------------------------------------------------------------------------------------
# estimators
# ---------------------------------------------------------------------------------------------
class LinearModel:
    """The base of every estimator: parameter handling, ``fit`` / ``fit_holdout`` / ``predict`` / ``score``.

    As in scikit-learn, the parameters are the arguments of ``__init__`` (stored unchanged) and
    everything learned ends with ``_``; a subclass implements ``_fit``.
    """

    coef_: np.ndarray
    intercept_: np.ndarray

    @classmethod
    def _param_names(cls) -> list[str]:
        """The parameters: the named arguments of ``__init__``, in order."""
        return [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params) -> Self:
        names = self._param_names()
        for k, v in params.items():
            if k not in names:
                raise ValueError(f"{type(self).__name__}: unknown parameter '{k}' (known: {', '.join(names)})")
            setattr(self, k, v)
        return self

    def clone(self) -> Self:
        """An unfitted copy with the same parameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _prepare_X(self, X: Any, fitted: bool = False) -> tuple[np.ndarray, list[int] | None]:
        """``X`` checked, and the widths of the feature arrays it was given as (``None``: one array)."""
        return _check_X(X), None

    def _solver_args(self, sizes: Sequence[int] | None, p: int) -> dict:
        """The solver arguments every fit shares: feature spaces, standardisation, backend, memory."""
        return {"spaces": space_labels(sizes, p), "standardize": self.standardize, "backend": self.backend,
                "chunk_bytes": self.chunk_bytes}

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit(X, Y) first")

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, X: Any, Y: Any, progress: Progress | None = None) -> Self:
        """Fit on all rows of ``X`` / ``Y`` (``Y`` may be memory-mapped; it is read in chunks)."""
        X, bands = self._prepare_X(X)
        Y, squeeze = _check_Y(Y, X.shape[0])
        self._finish(self._fit(X, Y, bands, None, progress), squeeze)
        return self

    def fit_holdout(self, X: Any, Y: Any, val_rows: Any, progress: Progress | None = None) -> np.ndarray:
        """Validate, then refit on everything, in one pass over ``Y``.

        Fits on the rows not in ``val_rows`` (any cross-validation happens inside them), returns
        the Pearson r of every vertex on ``val_rows``, and leaves the model refit on all rows with
        the hyperparameters chosen without ``val_rows``.
        """
        X, bands = self._prepare_X(X)
        Y, squeeze = _check_Y(Y, X.shape[0])
        res = self._fit(X, Y, bands, np.asarray(val_rows), progress)
        self._finish(res, squeeze)
        return res.val_r

    def _fit(self, X: np.ndarray, Y: np.ndarray, bands: list[int] | None, holdout: np.ndarray | None,
             progress: Progress | None) -> FitResult:
        raise NotImplementedError

    def _finish(self, res: FitResult, squeeze: bool) -> None:
        self.coef_ = res.coef
        self.intercept_ = res.intercept
        self.n_features_in_ = res.coef.shape[0]
        self.y_ndim_ = 1 if squeeze else 2

    # -- using a fitted model (changes nothing) --------------------------------------------------
    def predict(self, X: Any) -> np.ndarray:
        """Predicted responses, float32 ``(n_images, n_vertices)``."""
        self._check_fitted()
        X, _ = self._prepare_X(X, fitted=True)
        if X.shape[1] != self.coef_.shape[0]:
            raise UserError(f"X has {X.shape[1]} features but the model was fitted on {self.coef_.shape[0]}")
        bk = get_backend(getattr(self, "backend", "auto"))  # PLS / ElasticNet have no backend parameter
        t = self.coef_.shape[1]
        out = np.empty((X.shape[0], t), dtype=np.float32)
        Xd = bk.asarray(X)
        step = max(1024, (256 << 20) // (4 * max(1, X.shape[0] + X.shape[1])))
        with bk.compute_threads():
            for start in range(0, t, step):
                sl = slice(start, min(t, start + step))
                pred = Xd @ bk.asarray(self.coef_[:, sl]) + bk.asarray(self.intercept_[sl])[None, :]
                out[:, sl] = bk.to_numpy(pred)
        return out[:, 0] if self.y_ndim_ == 1 else out

    def score(self, X: Any, Y: Any) -> np.ndarray:
        """Pearson r per vertex between ``Y`` and the predictions for ``X`` (float32)."""
        return pearson_r(np.asarray(Y), self.predict(X))


class OLS(LinearModel):
    """Ordinary least squares with intercept (the devkits' ``LinearRegression``), all vertices at once.

    The minimum-norm solution when features are collinear (as ``numpy.linalg.lstsq``).
    """

    def __init__(self, standardize: str | bool = "space", space_sizes: Sequence[int] | None = None,
                 backend: str = "auto", chunk_bytes: int | None = None):
        self.standardize = standardize
        self.space_sizes = space_sizes
        self.backend = backend
        self.chunk_bytes = chunk_bytes

    def _fit(self, X, Y, bands, holdout, progress):
        return solve_ridge(X, Y, None, holdout=holdout, progress=progress,
                           **self._solver_args(self.space_sizes, X.shape[1]))

    def refit(self, X: Any, Y: Any, progress: Progress | None = None) -> Self:
        return self.fit(X, Y, progress)


class Ridge(LinearModel):
    """Ridge regression with a fixed alpha (a number, or one per vertex)."""

    def __init__(self, alpha: float | np.ndarray = 1.0, standardize: str | bool = "space",
                 space_sizes: Sequence[int] | None = None, backend: str = "auto", chunk_bytes: int | None = None):
        self.alpha = alpha
        self.standardize = standardize
        self.space_sizes = space_sizes
        self.backend = backend
        self.chunk_bytes = chunk_bytes

    def _fit(self, X, Y, bands, holdout, progress):
        alphas_t = np.ascontiguousarray(np.broadcast_to(np.asarray(self.alpha, dtype=np.float32), (Y.shape[1],)))
        check_alphas(np.unique(alphas_t))
        return solve_ridge(X, Y, alphas_t, holdout=holdout, progress=progress,
                           **self._solver_args(self.space_sizes, X.shape[1]))

    def refit(self, X: Any, Y: Any, progress: Progress | None = None) -> Self:
        return self.fit(X, Y, progress)


class _SearchCV(LinearModel):
    """What ``RidgeCV`` and ``BandedRidgeCV`` share: the per-vertex CV search, and ``refit``."""

    def _search_fit(self, X, Y, sizes: Sequence[int] | None, mults: list[np.ndarray], alphas: np.ndarray,
                    holdout, progress) -> FitResult:
        """Run the search over ``mults`` x ``alphas``; keep each vertex's best alpha and CV score."""
        res = solve_ridge_cv(X, Y, mults, alphas, cv=self.cv, seed=self.seed, holdout=holdout, progress=progress,
                             **self._solver_args(sizes, X.shape[1]))
        self.alphas_ = alphas
        self.best_alphas_ = res.best_alpha
        self.cv_r_ = res.best_score
        return res

    def refit(self, X: Any, Y: Any, progress: Progress | None = None) -> Self:
        """Refit on new rows keeping each vertex's chosen hyperparameters (no cross-validation)."""
        self._check_fitted()
        X, _ = self._prepare_X(X, fitted=True)
        Y, squeeze = _check_Y(Y, X.shape[0])
        self._finish(self._refit(X, Y, progress), squeeze)
        return self

    def _refit(self, X: np.ndarray, Y: np.ndarray, progress: Progress | None) -> FitResult:
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

    def _fit(self, X, Y, bands, holdout, progress):
        res = self._search_fit(X, Y, self.space_sizes, [np.ones(X.shape[1])], check_alphas(self.alphas), holdout,
                               progress)
        self.cv_scores_ = res.scores_by_alpha
        return res

    def _refit(self, X, Y, progress):
        return solve_ridge(X, Y, self.best_alphas_.astype(np.float32), progress=progress,
                           **self._solver_args(self.space_sizes, X.shape[1]))


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
    n_vertices), ``best_alphas_``, ``cv_r_`` (best CV score per vertex), ``sizes_`` (band
    widths), ``coef_`` (on the concatenated raw features), ``intercept_``.
    """

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

    def _prepare_X(self, X: Any, fitted: bool = False) -> tuple[np.ndarray, list[int] | None]:
        """A list of bands is concatenated (and, on a fitted model, checked against its band widths)."""
        if not isinstance(X, (list, tuple)):
            return _check_X(X), None
        bands = [_check_X(x, f"band {i}") for i, x in enumerate(X)]
        if len({b.shape[0] for b in bands}) != 1:
            raise UserError(f"bands have different numbers of rows: {[b.shape[0] for b in bands]}")
        sizes = [b.shape[1] for b in bands]
        if fitted and list(self.sizes_) != sizes:
            raise UserError(f"band widths {sizes} differ from the fitted ones {list(self.sizes_)}")
        dtype = np.result_type(*[b.dtype for b in bands])
        return np.concatenate(bands, axis=1).astype(dtype, copy=False), sizes

    def _sizes(self, X: np.ndarray, bands: list[int] | None) -> list[int]:
        sizes = bands or (list(self.band_sizes) if self.band_sizes is not None else None)
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

    @staticmethod
    def _multipliers(sizes: list[int], gammas: np.ndarray) -> list[np.ndarray]:
        band_of = np.repeat(np.arange(len(sizes)), sizes)
        width = np.asarray(sizes, dtype=np.float64)[band_of]
        return [np.sqrt(gm[band_of] / width) for gm in gammas]

    def _fit(self, X, Y, bands, holdout, progress):
        sizes = self._sizes(X, bands)
        alphas = check_alphas(self.alphas)
        gammas = self.candidate_weights(len(sizes))
        res = self._search_fit(X, Y, sizes, self._multipliers(sizes, gammas), alphas, holdout, progress)
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
            r = solve_ridge(X, Y, self.best_alphas_[targets].astype(np.float32), g=mults[gi], targets=targets,
                            progress=sub, **self._solver_args(self.sizes_, X.shape[1]))
            coef[:, targets], intercept[targets] = r.coef, r.intercept
        return FitResult(coef, intercept)
