"""What a trial is: the search space, the features and estimator it names, and its K-fold CV score.

A trial picks an estimator (ridge with per-vertex CV alpha, banded ridge over all layers, a
multiple-kernel ridge over all layers, PLS, elastic net), a layer, a reduction (the first ``k``
columns of the layer's one large PCA, or spatial pooling), the estimator's own settings, and
whether the estimator is fitted on the scope's responses or on their projection onto their first
``response_rank`` principal components (reduced-rank regression, :mod:`core.encoding.lowrank`;
scored against the raw responses all the same). Each fold's components are computed once per
worker and scope, for the largest rank; a trial slices them.

``kernel`` is banded ridge in the dual (:class:`~core.encoding.kernel.MultipleKernelRidgeCV`)
on every layer's whole feature set (the full PCA: on the training images the same linear
kernel as the un-reduced layer; or the pooled layer): the trial samples one weight per layer
(log scale), so each scope (ROI) gets its own layer mixing, while alpha stays CV'd per vertex.
When the layers are pooled, a kernel trial may add every layer's global average (one value per
channel: where in the image no longer matters, which suits category-selective cortex) as one
more band per layer, weighted as its layer (:data:`GLOBAL_SHARE` times the layer's weight): one
yes/no choice rather than more weights, so that the bands cost the search no trials. The averages are
the means of the pooled bins (:func:`global_average`), so they cost no extraction of their own.
Its CV costs one ``n x n`` eigendecomposition per fold whatever the layers' widths (the layers'
Gram matrices are computed once per worker); alpha is chosen per vertex and fold on the other
folds' scores (cross-fitting), so that the score is not biased by the choice. Features come from a :class:`Bank` of cached
entries loaded once per worker, so a trial costs its fits only. The objective is the K-fold CV
score on the training images of the scope's vertices: the noise-normalised score (percent) when
a noise ceiling is shipped, else the median r; it is reported after every fold so that a pruner
stops bad trials after their first folds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.encoding.fitting import make_estimator
from core.encoding.kernel import KERNEL_ALPHAS, LinearKernels, MultipleKernelRidgeCV, fold_predictions, fold_scores
from core.encoding.lowrank import project, response_basis
from core.encoding.metrics import noise_normalized_score, pearson_r
from core.encoding.solvers import space_labels
from core.features.extraction import FeatureEntry

ESTIMATORS = ("ridge", "banded", "kernel", "pls", "elasticnet")
MIN_COMPONENTS = 8
MAX_ENET_COMPONENTS = 128  # coordinate descent costs p^2 per vertex and sweep
MAX_BAND_COMPONENTS = 128  # banded ridge is solved in the primal, once per band weighting: bands stay small
PLS_RANGE = (2, 64)
ENET_ALPHA = (1e-4, 1.0)
KERNEL_WEIGHT = (1e-3, 1.0)  # per layer, log scale (relative: alpha absorbs the overall scale)
MAX_RANK = 256  # reduced-rank targets: at most this many response components (the demo's best: 12-24)
GLOBAL = "global"  # the bank source of the layers' global averages (from the pooled layers): extra kernel bands
# a global band's weight relative to its layer's (on the 2,000-image subject, the best trials' weights re-scored
# with the bands: 79.3 -> 79.8 held-out; a whole search with 3.0: CV 87.30 vs 87.22, held-out 79.91 vs 79.98)
GLOBAL_SHARE = 1.0


@dataclass
class Bank:
    """Training and test features per reduction (``"pca"``, ``"pool"``, ``"global"``) and layer, in memory."""

    layers: list[str]
    train: dict[tuple[str, str], np.ndarray]
    test: dict[tuple[str, str], np.ndarray]
    _kernels: dict[tuple[str, bool], LinearKernels] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, paths: dict[str, dict[str, str]]) -> "Bank":
        """``paths[reduction][layer]``: feature entry folders (from the feature cache). Layers pooled to
        k x k (k > 1) also give their global averages (source ``"global"``, ``"global@16"`` for ``"pool@16"``)."""
        train, test, layers = {}, {}, []
        for reduction, entries in paths.items():
            for layer, path in entries.items():
                entry = FeatureEntry.open(path)
                tr, te = entry.load()
                train[reduction, layer] = np.ascontiguousarray(tr, dtype=np.float32)
                test[reduction, layer] = np.ascontiguousarray(te, dtype=np.float32)
                layers += [layer] if layer not in layers else []
                k = _pooled(entry.meta)
                if k > 1:
                    source = _global_source(reduction)
                    train[source, layer] = global_average(train[reduction, layer], k)
                    test[source, layer] = global_average(test[reduction, layer], k)
        return cls(layers, train, test)

    @staticmethod
    def widths(paths: dict[str, dict[str, str]]) -> dict[tuple[str, str], int]:
        """The features per source and layer :meth:`open` would give, from the entries' metadata alone."""
        out = {}
        for reduction, entries in paths.items():
            for layer, path in entries.items():
                meta = FeatureEntry.open(path).meta
                out[reduction, layer] = int(meta["n_components"])
                if (k := _pooled(meta)) > 1:
                    out[_global_source(reduction), layer] = int(meta["n_components"]) // k ** 2
        return out

    @property
    def reductions(self) -> list[str]:
        """The reductions a trial chooses among (the global averages only join kernel trials)."""
        return sorted({r.split("@")[0] for r, _ in self.train} - {GLOBAL})

    @property
    def has_global(self) -> bool:
        return any(r.split("@")[0] == GLOBAL for r, _ in self.train)

    @property
    def frames(self) -> list[int]:
        """Candidate frames per clip (videos: sources are named ``"pca@16"``); empty for images."""
        return sorted({int(r.split("@")[1]) for r, _ in self.train if "@" in r})

    @staticmethod
    def source(params: dict, reduction: str) -> str:
        return f"{reduction}@{params['frames']}" if "frames" in params else reduction

    def max_components(self) -> int:
        return min(x.shape[1] for (r, _), x in self.train.items() if r.split("@")[0] == "pca")

    @property
    def n_train(self) -> int:
        return next(iter(self.train.values())).shape[0]

    @property
    def n_test(self) -> int:
        return next(iter(self.test.values())).shape[0] if self.test else 0

    def kernels(self, params: dict) -> LinearKernels:
        """A kernel trial's Gram matrices (one space per band), computed once per source and choice of global
        bands: rows ``0 .. n_train - 1`` are the training images, the test images follow (when the bank has
        them), so that a final fit predicts the test set through the kernels alone (:func:`final_predictions`)."""
        key = (self.source(params, params["reduction"]), bool(params.get("global_bands")))
        if key not in self._kernels:
            bands = self.design(params, "train")
            if all(k in self.test for k in self._keys(params)):
                bands = [np.concatenate([x, t]) for x, t in zip(bands, self.design(params, "test"))]
            sizes = [x.shape[1] for x in bands]
            X = np.concatenate(bands, axis=1)
            self._kernels[key] = LinearKernels(X, space_labels(sizes, X.shape[1]), "space")
        return self._kernels[key]

    def _keys(self, params: dict) -> list[tuple[str, str]]:
        """The entries (source, layer) a trial's features come from, in band order."""
        if params["estimator"] == "banded":
            return [(self.source(params, "pca"), layer) for layer in self.layers]
        if params["estimator"] == "kernel":
            extra = [GLOBAL] if params.get("global_bands") else []
            return [(self.source(params, red), layer) for red in [params["reduction"], *extra] for layer in self.layers]
        return [(self.source(params, params.get("reduction", "pca")), params["layer"])]

    def design(self, params: dict, split: str) -> np.ndarray | list[np.ndarray]:
        """The features a trial's parameters name (a list of bands for banded and kernel ridge)."""
        store = self.train if split == "train" else self.test
        X = [store[key] for key in self._keys(params)]
        if params["estimator"] == "banded":
            return [x[:, : params["n_components"]] for x in X]
        if params["estimator"] == "kernel":
            return X
        return X[0][:, : params["n_components"]] if params.get("reduction", "pca") == "pca" else X[0]


def _global_source(reduction: str) -> str:
    """The bank source of a pooled source's global averages (``pool@16`` -> ``global@16``)."""
    return GLOBAL + reduction.removeprefix("pool")


def _pooled(meta: dict) -> int:
    """An entry's pool size (1 unless it is a layer pooled to k x k)."""
    spec = meta.get("reduction") or {}
    return int(spec.get("pool_size", 1)) if spec.get("kind") == "pool" else 1


def global_average(pooled: np.ndarray, pool_size: int) -> np.ndarray:
    """Each channel's average from a layer pooled to ``pool_size`` x ``pool_size`` (channel-major rows, as
    :func:`~core.features.reduction.pool_features` writes them): the mean of its bins. That is the
    average over the whole map when the pool divides it (MobileNetV2 at 224 px: 28, 14 and 7 wide at 7 x 7),
    else a nearly uniform one (adaptive pooling's bins then overlap)."""
    n, dim = pooled.shape
    return pooled.reshape(n, dim // pool_size ** 2, pool_size ** 2).mean(2, dtype=np.float64).astype(np.float32)


def suggest(trial, bank: Bank, estimators: list[str], n_targets: int) -> dict:
    """Draw a trial's parameters (define-by-run; conditional on the estimator) for a scope of
    ``n_targets`` vertices."""
    est = trial.suggest_categorical("estimator", estimators)
    params: dict[str, Any] = {"estimator": est}
    if bank.frames:
        params["frames"] = trial.suggest_categorical("frames", bank.frames)
    top_rank = min(MAX_RANK, n_targets)
    if top_rank >= 2 and trial.suggest_categorical("reduced_rank", [True, False]):
        params["response_rank"] = trial.suggest_int("response_rank", 2, top_rank, log=True)
    if est == "kernel":
        params["reduction"] = trial.suggest_categorical("kernel_reduction", bank.reductions)
        params["kernel_weights"] = [trial.suggest_float(f"weight {layer}", *KERNEL_WEIGHT, log=True)
                                    for layer in bank.layers]
        if bank.has_global and trial.suggest_categorical("global_bands", [True, False]):
            params["global_bands"] = True
        params["layers"] = list(bank.layers)
        return params
    if est != "banded":
        params["layer"] = trial.suggest_categorical("layer", bank.layers)
    if est in ("ridge", "pls") and "pool" in bank.reductions:
        params["reduction"] = trial.suggest_categorical("reduction", ["pca", "pool"])
    if params.get("reduction", "pca") == "pca":  # PCA sizes: one parameter per range (TPE models each alone)
        name, cap = {"banded": ("band_components", MAX_BAND_COMPONENTS),
                     "elasticnet": ("enet_components", MAX_ENET_COMPONENTS)}.get(est, ("n_components", None))
        top = min(bank.max_components(), cap or bank.max_components())
        params["n_components"] = trial.suggest_int(name, min(MIN_COMPONENTS, top), top, log=True)
    if est == "pls":
        params["pls_components"] = trial.suggest_int("pls_components", *PLS_RANGE, log=True)
    if est == "elasticnet":
        params["alpha"] = trial.suggest_float("alpha", *ENET_ALPHA, log=True)
        params["l1_ratio"] = trial.suggest_float("l1_ratio", 0.05, 1.0)
    return params


def estimator(params: dict, X: Any, n_rows: int, backend: str, seed: int):
    """A fresh estimator for ``params`` on design ``X`` fitted on ``n_rows`` images."""
    sizes = [x.shape[1] for x in X] if isinstance(X, list) else [X.shape[1]]
    kind = params["estimator"]
    if kind == "kernel":
        return MultipleKernelRidgeCV(space_sizes=sizes, kernel_weights=[band_weights(params)], seed=seed,
                                     backend=backend)
    extra = {}
    if kind == "pls":
        extra = {"n_components": int(min(params["pls_components"], sizes[0], n_rows - 1))}
    elif kind == "elasticnet":
        extra = {"alpha": params["alpha"], "l1_ratio": params["l1_ratio"]}
    return make_estimator(kind, seed=seed, backend=backend, space_sizes=sizes, n_rows=n_rows, params=extra)


def band_weights(params: dict) -> list[float]:
    """A kernel trial's weight per band: the layers', then (if it has them) their global averages' (each
    :data:`GLOBAL_SHARE` times its layer's)."""
    weights = list(params["kernel_weights"])
    return weights + ([GLOBAL_SHARE * w for w in weights] if params.get("global_bands") else [])


def rows(X: np.ndarray | list[np.ndarray], idx: np.ndarray) -> np.ndarray | list[np.ndarray]:
    return [x[idx] for x in X] if isinstance(X, list) else X[idx]


def response_components(Y: np.ndarray, rows: np.ndarray, bases: dict | None = None) -> np.ndarray:
    """The principal components of ``Y[rows]`` for the largest rank; ``bases`` (one dict per ``Y``) keeps
    them per row set, so that a worker computes each fold's once."""
    key = np.asarray(rows).tobytes()
    basis = None if bases is None else bases.get(key)
    if basis is None:
        basis = response_basis(Y, MAX_RANK, rows)
        if bases is not None:
            bases[key] = basis
    return basis


def train_targets(params: dict, Y: np.ndarray, rows: np.ndarray, bases: dict | None = None) -> np.ndarray:
    """What ``params``' estimator is fitted on for the training rows ``rows`` of ``Y``: ``Y[rows]``, or
    with a ``response_rank`` their reduced-rank projection."""
    y = np.asarray(Y[rows], dtype=np.float32)
    rank = params.get("response_rank")
    if not rank:
        return y
    basis = response_components(Y, rows, bases)
    return project(y, basis, min(int(rank), basis.shape[1]))


def score(r: np.ndarray, noise_ceiling: np.ndarray | None) -> float:
    """The objective: noise-normalised score (percent) with a noise ceiling, else median r (NaN as 0)."""
    r = np.nan_to_num(np.asarray(r, dtype=np.float64))
    return float(noise_normalized_score(r, noise_ceiling)) if noise_ceiling is not None else float(np.median(r))


@dataclass
class CVResult:
    r: np.ndarray  # mean validation r per vertex over the folds run
    score: float
    folds: int
    fit_seconds: float
    alphas: np.ndarray | None = None  # kernel: each vertex's alpha, chosen on all folds (what a refit uses)


def cross_validate(params: dict, bank: Bank, Y: np.ndarray, splits: list, noise_ceiling: np.ndarray | None,
                   backend: str, seed: int, after_fold: Callable[[int, float], None] | None = None,
                   clock: dict | None = None, bases: dict | None = None) -> CVResult:
    """K-fold CV of one configuration; ``after_fold(k, score so far)`` may raise to stop (pruning).

    ``clock["fit"]`` accumulates the seconds spent fitting and predicting (what a trial costs);
    ``bases``: the response components of ``Y``'s folds kept between trials (:func:`train_targets`).
    """
    clock = {"fit": 0.0} if clock is None else clock
    if params["estimator"] == "kernel":
        return _kernel_cv(params, bank, Y, splits, noise_ceiling, after_fold, clock, bases)
    X = bank.design(params, "train")
    total = np.zeros(Y.shape[1])
    for k, (tr, va) in enumerate(splits):
        t0 = time.perf_counter()
        total += np.nan_to_num(pearson_r(Y[va], _fold_predict(params, X, Y, tr, va, backend, seed, bases)))
        clock["fit"] += time.perf_counter() - t0
        if after_fold is not None:
            after_fold(k, score(total / (k + 1), noise_ceiling))
    r = (total / len(splits)).astype(np.float32)
    return CVResult(r, score(r, noise_ceiling), len(splits), clock["fit"])


def _fold_predict(params: dict, X: Any, Y: np.ndarray, tr: np.ndarray, va: np.ndarray, backend: str, seed: int,
                  bases: dict | None) -> np.ndarray:
    """``params``' estimator fitted on rows ``tr`` of design ``X`` (targets from ``Y``), predicting rows ``va``."""
    est = estimator(params, X, len(tr), backend, seed).fit(rows(X, tr), train_targets(params, Y, tr, bases))
    return est.predict(rows(X, va))


def _kernel_cv(params: dict, bank: Bank, Y: np.ndarray, splits: list, noise_ceiling: np.ndarray | None,
               after_fold: Callable[[int, float], None] | None, clock: dict, bases: dict | None) -> CVResult:
    """K-fold CV of a multiple kernel: validation r of every alpha per fold (one eigendecomposition each).

    After fold ``k`` the reported score takes each vertex's best alpha so far (for the pruner);
    the result takes, for each fold, the alpha best on the other folds (no selection bias).
    """
    kern = bank.kernels(params)
    alphas = np.asarray(KERNEL_ALPHAS)
    weights = np.asarray(band_weights(params), np.float64)
    per_fold = []
    for k, (tr, va) in enumerate(splits):
        t0 = time.perf_counter()
        rank = int(params.get("response_rank", 0))
        per_fold.append(fold_scores(kern, tr, va, Y, alphas, weights, (rank,),
                                    response_components(Y, tr, bases) if rank else None)[0])
        clock["fit"] += time.perf_counter() - t0
        if after_fold is not None:
            after_fold(k, score(np.mean(per_fold, axis=0).max(0), noise_ceiling))
    scores = np.stack(per_fold)  # folds x alphas x vertices
    rest = (scores.sum(0, keepdims=True) - scores) / max(1, len(splits) - 1)
    pick = rest.argmax(1)  # folds x vertices
    r = np.take_along_axis(scores, pick[:, None, :], axis=1)[:, 0].mean(0).astype(np.float32)
    chosen = alphas[scores.mean(0).argmax(0)].astype(np.float32)
    return CVResult(r, score(r, noise_ceiling), len(splits), clock["fit"], chosen)


def final_predictions(params: dict, bank: Bank, Y: np.ndarray, alphas: np.ndarray | None, backend: str, seed: int,
                      bases: dict | None = None, cols: np.ndarray | None = None) -> np.ndarray:
    """The test images' predictions of columns ``cols`` of ``Y`` (default all) by ``params``' estimator fitted on
    every training image (on every column: PLS couples them). A kernel trial keeps the per-vertex ``alphas`` its
    CV chose and goes through the bank's kernels (test rows included): no CV, no feature-space model, no other
    columns. ``bases``: ``Y``'s response components kept between the fits of several trials on it
    (:func:`train_targets`)."""
    everything = np.arange(Y.shape[0])
    if params["estimator"] == "kernel" and alphas is not None:
        return _kernel_predict(params, bank, Y, everything, bank.n_train + np.arange(bank.n_test), alphas, bases, cols)
    X = bank.design(params, "train")
    targets = train_targets(params, Y, everything, bases)
    pred = estimator(params, X, Y.shape[0], backend, seed).fit(X, targets).predict(bank.design(params, "test"))
    return pred if cols is None else pred[:, cols]


def out_of_fold(params: dict, bank: Bank, Y: np.ndarray, splits: list, alphas: np.ndarray | None, backend: str,
                seed: int, bases: dict | None = None, cols: np.ndarray | None = None) -> np.ndarray:
    """Every training image's prediction of columns ``cols`` of ``Y`` (default all) by ``params``' estimator fitted
    on the other folds (a kernel trial with its chosen ``alphas``, as :func:`final_predictions`): what an average of
    trials is scored on."""
    X = bank.design(params, "train")
    out = np.zeros((Y.shape[0], Y.shape[1] if cols is None else len(cols)), np.float32)
    for tr, va in splits:
        if params["estimator"] == "kernel" and alphas is not None:  # through the bank's Gram matrices
            out[va] = _kernel_predict(params, bank, Y, tr, va, alphas, bases, cols)
        else:
            pred = _fold_predict(params, X, Y, tr, va, backend, seed, bases)
            out[va] = pred if cols is None else pred[:, cols]
    return out


def _kernel_predict(params: dict, bank: Bank, Y: np.ndarray, tr: np.ndarray, va: np.ndarray, alphas: np.ndarray,
                    bases: dict | None, cols: np.ndarray | None) -> np.ndarray:
    """A kernel trial fitted on training rows ``tr`` with its per-vertex ``alphas``, predicting columns ``cols``
    (default all) for rows ``va`` of its kernels (training rows, then the test images): as in its CV, on its
    reduced-rank targets when it has a rank (the components are the scope's, of every column)."""
    rank = int(params.get("response_rank", 0))
    basis = response_components(Y, tr, bases)[:, :rank] if rank else None
    cols = np.arange(Y.shape[1]) if cols is None else cols
    return fold_predictions(bank.kernels(params), tr, va, Y[np.ix_(tr, cols)], np.asarray(alphas)[cols],
                            np.asarray(band_weights(params), np.float64), basis)


def describe(params: dict) -> str:
    """A short label: ``ridge features.10 pca-112``, ``kernel pool weights 0.01:0.2:1 rank 16``,
    ``kernel pool + global weights 1:0.2:0.5`` (with the layers' global averages)."""
    parts = [params["estimator"], params.get("layer", "all layers")]
    tail = f" {params['frames']} frames" if "frames" in params else ""
    if "response_rank" in params:
        tail += f" rank {params['response_rank']}"
    if params["estimator"] == "kernel":
        weights = np.asarray(params["kernel_weights"])
        source = params["reduction"] + (" + global" if params.get("global_bands") else "")
        return f"kernel {source} weights " + ":".join(f"{w:.2g}" for w in weights / weights.max()) + tail
    if params.get("reduction", "pca") == "pca":
        parts.append(f"pca-{params['n_components']}")
    else:
        parts.append("pool")
    if "pls_components" in params:
        parts.append(f"{params['pls_components']} comp.")
    if "alpha" in params:
        parts.append(f"alpha {params['alpha']:.2g} l1 {params['l1_ratio']:.2f}")
    return " ".join(parts) + tail


def entry_paths(entries: dict[str, dict[str, FeatureEntry]]) -> dict[str, dict[str, str]]:
    return {red: {layer: str(Path(e.path)) for layer, e in layers.items()} for red, layers in entries.items()}
