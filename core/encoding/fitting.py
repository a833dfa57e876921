"""Fit one subject end to end: features -> encoding model per part -> validation -> results.

``fit_subject(subject, features, ...)`` is what ``python -m core fit`` runs and what the run
store's tasks call. ``subject`` is any :class:`core.encoding.subjects.FitSubject`; its parts are
hemispheres (2023) or tracks (2021). Per part it validates (a seeded held-out split, or K folds over the
training images), refits on all training images, predicts the test images, and summarises
accuracy (median r, per-ROI median/mean r, noise-normalised score when a noise ceiling is
shipped). ``core.runs.artifacts.write_subject`` writes a result to disk.

Feature input contract (written by the extraction engine): a feature entry is a directory with
``train.npy`` (n_train, d) float32, ``test.npy`` (n_test, d) float32 and ``meta.json``.
Several entries are concatenated for ``ridge``/``ols`` and form one band each for ``banded``.
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core import __version__
from core.encoding.backends import resolve_backend_name
from core.encoding.estimators import DEFAULT_ALPHAS, OLS, BandedRidgeCV, RidgeCV
from core.encoding.kernel import KERNEL_ALPHAS, KernelRidgeCV, MultipleKernelRidgeCV
from core.encoding.pls_elasticnet import PLS, ElasticNet
from core.util.errors import UserError
from core.encoding.metrics import part_metrics
from core.util.progress import Progress, report, scaled
from core.encoding.splits import Validation
from core.encoding.subjects import FitSubject

ESTIMATORS = ("ridge", "ols", "banded", "multiple_kernel", "kernel_ridge", "pls", "elasticnet")
RIDGE_FAMILY = ("ridge", "banded", "multiple_kernel", "kernel_ridge")  # the ones that take response ranks


# ---------------------------------------------------------------------------------------------
# feature entries
# ---------------------------------------------------------------------------------------------
@dataclass
class FeatureInput:
    """One feature entry: memory-mapped ``train`` / ``test`` arrays and its ``meta``."""

    path: Path
    train: np.ndarray
    test: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        parts = [str(self.meta[k]) for k in ("model", "layer") if self.meta.get(k)]
        return ":".join(parts) or self.path.name

    @property
    def width(self) -> int:
        return int(self.train.shape[1])

    def describe(self) -> dict:
        return {"path": str(self.path), "name": self.name, "n_features": self.width}


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"{path.parent}: not a feature entry ({path.name} missing)")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise UserError(f"{path}: not a readable .npy array ({exc})") from None
    if arr.ndim != 2:
        raise UserError(f"{path}: expected a 2-D array (images x features), found shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise UserError(f"{path}: expected float features, found dtype {arr.dtype}")
    return arr


def load_features(dirs: Sequence[str | os.PathLike], n_train: int | None = None,
                  n_test: int | None = None) -> list[FeatureInput]:
    """Open feature entries and check them against each other and the subject's image counts."""
    if not dirs:
        raise UserError("no feature directories given")
    out = []
    for d in dirs:
        path = Path(d).expanduser()
        if not path.is_dir():
            raise UserError(f"{path}: feature directory not found")
        meta: dict = {}
        meta_path = path / "meta.json"
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise UserError(f"{meta_path}: unreadable ({exc})") from None
        else:
            raise UserError(f"{path}: not a feature entry (meta.json missing)")
        train, test = _load_npy(path / "train.npy"), _load_npy(path / "test.npy")
        if train.shape[1] != test.shape[1]:
            raise UserError(f"{path}: train.npy has {train.shape[1]} features but test.npy has {test.shape[1]}")
        if n_train is not None and train.shape[0] != n_train:
            raise UserError(f"{path / 'train.npy'}: {train.shape[0]} rows but the subject has {n_train} training "
                            "images (features extracted for another subject or dataset?)")
        if n_test is not None and test.shape[0] != n_test:
            raise UserError(f"{path / 'test.npy'}: {test.shape[0]} rows but the subject has {n_test} test images")
        out.append(FeatureInput(path, train, test, meta if isinstance(meta, dict) else {}))
    if len({f.train.shape[0] for f in out}) != 1:
        raise UserError("feature entries have different numbers of training images: "
                        + ", ".join(f"{f.path} ({f.train.shape[0]})" for f in out))
    return out


def _finite(name: str, X: np.ndarray) -> np.ndarray:
    if not np.all(np.isfinite(X)):
        raise UserError(f"{name}: contains NaN or infinite values")
    return X


# ---------------------------------------------------------------------------------------------
# estimators
# ---------------------------------------------------------------------------------------------
def make_estimator(kind: str, *, alphas: Sequence[float] | None = None, cv: int = 5, seed: int = 0,
                   backend: str = "auto", space_sizes: Sequence[int] | None = None, standardize: str = "space",
                   n_rows: int | None = None, params: dict | None = None):
    """``"ridge"`` (RidgeCV, per-vertex alpha), ``"ols"``, ``"banded"`` (BandedRidgeCV),
    ``"multiple_kernel"`` (MultipleKernelRidgeCV: banded ridge in the dual, any band width),
    ``"kernel_ridge"`` (KernelRidgeCV), ``"pls"`` or ``"elasticnet"`` (``params``: their settings;
    ``response_ranks`` for the ridge family: reduced-rank targets, chosen per vertex, in the dual).

    ``space_sizes``: widths of the feature entries that were concatenated (each is standardised
    as one space; for ``banded`` each is a band). ``ridge`` solves in the dual (KernelRidgeCV, the
    same numbers) when the features outnumber the ``n_rows`` training images, and so does ``banded``
    (MultipleKernelRidgeCV, the same model: the primal would hold a features x features system per
    weight candidate, which for pooled layers does not fit in memory).
    """
    params = dict(params or {})
    ranks = params.pop("response_ranks", None)
    reduced = bool(ranks) and any(ranks)
    if reduced and kind not in RIDGE_FAMILY:
        raise UserError(f"response ranks are for the ridge estimators ({', '.join(RIDGE_FAMILY)}), not {kind}")
    sizes = None if space_sizes is None else [int(x) for x in space_sizes]
    # the dual when features outnumber the training images, or with reduced-rank targets (the dual's own)
    dual = bool(n_rows and sizes and sum(sizes) > n_rows) or reduced
    if kind == "multiple_kernel" or (kind == "banded" and dual):
        return MultipleKernelRidgeCV(space_sizes=space_sizes, alphas=KERNEL_ALPHAS if alphas is None else alphas,
                                     cv=cv, seed=seed, backend=backend, response_ranks=ranks)
    alphas = DEFAULT_ALPHAS if alphas is None else tuple(float(a) for a in alphas)
    if kind == "kernel_ridge" or (kind == "ridge" and dual):
        return KernelRidgeCV(alphas=alphas, cv=cv, seed=seed, backend=backend, standardize=standardize,
                             space_sizes=sizes, response_ranks=ranks)
    if kind == "pls":
        return PLS(**params)
    if kind == "elasticnet":
        return ElasticNet(**params)
    if kind == "ridge":
        return RidgeCV(alphas=alphas, cv=cv, seed=seed, backend=backend, standardize=standardize, space_sizes=sizes)
    if kind == "ols":
        return OLS(backend=backend, standardize=standardize, space_sizes=sizes)
    if kind == "banded":
        return BandedRidgeCV(band_sizes=sizes, alphas=alphas, cv=cv, seed=seed, backend=backend,
                             standardize=standardize)
    raise UserError(f"unknown estimator '{kind}' (use one of: {', '.join(ESTIMATORS)})")


def estimator_config(est) -> dict:
    params = est.get_params()
    out = {"class": type(est).__name__}
    for k, v in params.items():
        if isinstance(v, (tuple, list, np.ndarray)):
            v = [float(x) for x in np.asarray(v).ravel()]
        out[k] = v
    return out


# ---------------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------------
@dataclass
class PartResult:
    """One part's (hemisphere's, track's) validation r, test predictions, metrics and chosen hyperparameters."""

    part: str
    val_r: np.ndarray  # float32 (n_vertices,)
    test_pred: np.ndarray  # float32 (n_test, n_vertices)
    metrics: dict
    alphas: np.ndarray | None = None
    band_weights: np.ndarray | None = None
    seconds: float = 0.0


@dataclass
class SubjectResult:
    subject: str
    parts: dict[str, PartResult]
    info: dict  # everything the subject's metrics.json holds

    def arrays(self) -> dict[str, dict[str, np.ndarray | None]]:
        """Per part, the arrays a result folder keeps (``core.runs.artifacts.write_subject``)."""
        return {part: {"val_r": r.val_r, "pred_test": r.test_pred, "alphas": r.alphas, "band_weights": r.band_weights}
                for part, r in self.parts.items()}


def fit_part(estimator, X: Any, X_test: Any, Y: np.ndarray, validation: Validation,
                   progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray, Any, dict]:
    """Validate ``estimator`` on ``(X, Y)``, refit on all rows, predict ``X_test``.

    Returns ``(val_r, test_pred, fitted estimator, validation details)``. Held-out validation
    runs in one pass over ``Y`` (``fit_holdout``); K-fold validation fits once per fold (r per
    vertex averaged over folds), then once more on all rows for the test predictions.
    """
    n = Y.shape[0]
    splits = validation.splits(n)
    details: dict = {**validation.to_dict(), "n_train": int(n)}
    if validation.kind == "holdout":
        fit_rows, val_rows = splits[0]
        val_r = estimator.fit_holdout(X, Y, val_rows, progress=progress)
        details.update(n_fit=int(len(fit_rows)), n_val=int(len(val_rows)))
    else:
        rs = []
        k = len(splits)
        for i, (_, val_rows) in enumerate(splits):
            est_k = estimator.clone()
            rs.append(est_k.fit_holdout(X, Y, val_rows, progress=scaled(progress, i / (k + 1), (i + 1) / (k + 1))))
            del est_k
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a vertex constant in every fold: NaN
            val_r = np.nanmean(np.stack(rs), axis=0).astype(np.float32)
        details["fold_median_r"] = [float(np.nanmedian(r)) for r in rs]
        details["fold_sizes"] = [int(len(v)) for _, v in splits]
        estimator.fit(X, Y, progress=scaled(progress, k / (k + 1), 1.0))
    test_pred = estimator.predict(X_test)
    return val_r.astype(np.float32), test_pred.astype(np.float32), estimator, details


def fit_subject(subject: FitSubject, features: Sequence[str | os.PathLike], estimator: str = "ridge", *,
                validation: Validation | None = None, alphas: Sequence[float] | None = None, cv: int = 5,
                backend: str = "auto", standardize: str = "space", parts: Sequence[str] | None = None,
                params: dict | None = None, progress: Progress | None = None) -> SubjectResult:
    """Fit, validate and predict every part of ``subject`` (``parts``; default ``subject.parts``).

    ``params``: the estimator's own settings (PLS ``n_components``, ElasticNet ``alpha`` / ``l1_ratio``)."""
    parts = tuple(subject.parts if parts is None else parts)
    validation = validation or Validation()
    backend_name = resolve_backend_name(backend)
    feats = load_features(features, subject.n_train, subject.n_test)
    if estimator == "banded" and len(feats) < 2:
        raise UserError("the banded estimator needs at least two feature directories (one band each)")
    w0 = time.perf_counter()
    report(progress, 0.0, "loading features")
    if estimator == "banded":
        X = [_finite(str(f.path / "train.npy"), np.asarray(f.train, dtype=np.float32)) for f in feats]
        X_test = [_finite(str(f.path / "test.npy"), np.asarray(f.test, dtype=np.float32)) for f in feats]
    else:
        X = _finite("training features", np.concatenate([np.asarray(f.train, dtype=np.float32) for f in feats], 1))
        X_test = _finite("test features", np.concatenate([np.asarray(f.test, dtype=np.float32) for f in feats], 1))
    est = make_estimator(estimator, alphas=alphas, cv=cv, seed=validation.seed, backend=backend_name,
                         space_sizes=[f.width for f in feats], standardize=standardize, n_rows=subject.n_train,
                         params=params)
    results: dict[str, PartResult] = {}
    details = {}
    for i, part in enumerate(parts):
        sub = scaled(progress, i / len(parts), (i + 1) / len(parts))
        report(sub, 0.0, f"{part}: fitting")
        t0 = time.perf_counter()
        Y = subject.responses(part)
        val_r, pred, fitted, details = fit_part(est.clone(), X, X_test, Y, validation, sub)
        masks = subject.roi_masks(part)
        nc = subject.noise_ceiling(part)
        metrics = part_metrics(val_r, masks, nc)
        band_weights = getattr(fitted, "best_band_weights_", getattr(fitted, "best_kernel_weights_", None))
        results[part] = PartResult(
            part, val_r, pred, metrics,
            alphas=getattr(fitted, "best_alphas_", None),
            band_weights=band_weights,
            seconds=time.perf_counter() - t0,
        )
        if getattr(fitted, "best_alphas_", None) is not None:
            metrics["alphas"] = _alpha_summary(fitted.best_alphas_)
        if band_weights is not None:
            metrics["band_weights_mean"] = [float(x) for x in band_weights.mean(1)]
        if "fold_median_r" in details:
            metrics["fold_median_r"] = details["fold_median_r"]
        metrics["seconds"] = round(results[part].seconds, 3)
        del Y
    info = {
        "subject": subject.name,
        "data": str(subject.root),
        "estimator": estimator_config(est) | {"kind": estimator},
        "features": [f.describe() for f in feats],
        "validation": {k: v for k, v in details.items() if k not in ("fold_median_r",)},
        "hemispheres": {h: r.metrics for h, r in results.items()},
        "n_test": int(subject.n_test),
        "backend": backend_name,
        "seconds": round(time.perf_counter() - w0, 3),
        "versions": {"brain_encoding_studio": __version__, "numpy": np.__version__, "python": platform.python_version()},
    }
    report(progress, 1.0, "done")
    return SubjectResult(subject.name, results, info)


def _alpha_summary(alphas: np.ndarray) -> dict:
    values, counts = np.unique(alphas, return_counts=True)
    return {"median": float(np.median(alphas)), "counts": {f"{v:g}": int(c) for v, c in zip(values, counts)}}
