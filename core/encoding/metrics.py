"""Encoding accuracy metrics: per-vertex Pearson r, per-ROI summaries, noise-normalised accuracy.

All functions are vectorised over vertices (columns) and accumulate in float64.

Noise-normalised accuracy follows the Algonauts 2023 challenge scoring exactly (checked against
published per-vertex values in ``tests/test_metrics.py``): per vertex, r is clipped at 0, squared,
divided by the noise ceiling as a fraction (NC / 100, with NC == 0 replaced by 1e-14), capped at 1,
and reported in percent. A consequence of the official rule: a vertex with NC == 0 scores 100 when
its r is positive and 0 otherwise. The challenge score is the mean over vertices.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

ALL_VERTICES = "all vertices"
NC_ZERO_FLOOR = 1e-14  # the official scoring's replacement for NC == 0 (NC as a fraction)
_CHUNK_ELEMENTS = 1 << 22  # columns are processed in chunks of about this many float64 values


def pearson_r(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Pearson correlation of each column of ``y_true`` with the same column of ``y_pred``.

    Arrays are ``(n_samples, n_targets)`` (or 1-D: one target). Returns float32 ``(n_targets,)``;
    a column that is constant in either array gives NaN (as ``scipy.stats.pearsonr`` does).
    Means and sums of squares use the same normalisation, so there is no n/(n-1) inflation.
    """
    a = np.asarray(y_true)
    b = np.asarray(y_pred)
    if a.shape != b.shape:
        raise ValueError(f"pearson_r: shapes differ: {a.shape} vs {b.shape}")
    squeeze = a.ndim == 1
    if squeeze:
        a, b = a[:, None], b[:, None]
    if a.ndim != 2:
        raise ValueError(f"pearson_r: expected 1-D or 2-D arrays, got shape {a.shape}")
    n, t = a.shape
    if n < 2:
        raise ValueError(f"pearson_r: need at least 2 samples, got {n}")
    out = np.empty(t, dtype=np.float32)
    step = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, t, step):
        sl = slice(start, min(t, start + step))
        x = a[:, sl].astype(np.float64)
        y = b[:, sl].astype(np.float64)
        x -= x.mean(axis=0)
        y -= y.mean(axis=0)
        num = np.einsum("ij,ij->j", x, y)
        den = np.sqrt(np.einsum("ij,ij->j", x, x) * np.einsum("ij,ij->j", y, y))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        out[sl] = np.clip(r, -1.0, 1.0)
    return out[0] if squeeze else out


def noise_normalized_accuracy(r: np.ndarray, noise_ceiling: np.ndarray) -> np.ndarray:
    """Per-vertex noise-normalised encoding accuracy in percent (0-100), the official 2023 way.

    ``noise_ceiling`` is in percent (0-100) as the challenge ships it. NaN r stays NaN.
    """
    r = np.asarray(r, dtype=np.float64)
    nc = np.asarray(noise_ceiling, dtype=np.float64)
    if r.shape != nc.shape:
        raise ValueError(f"noise_normalized_accuracy: {r.shape[0] if r.ndim else r.shape} correlations "
                         f"but {nc.shape[0] if nc.ndim else nc.shape} noise-ceiling values")
    nc = nc / 100.0
    nc = np.where(nc == 0, NC_ZERO_FLOOR, nc)
    r2 = np.clip(r, 0.0, None) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.minimum(r2 / nc, 1.0) * 100.0
    return acc


def noise_normalized_score(r: np.ndarray, noise_ceiling: np.ndarray) -> float:
    """The challenge score: mean noise-normalised accuracy (percent) over vertices (NaN r ignored)."""
    acc = noise_normalized_accuracy(r, noise_ceiling)
    finite = acc[np.isfinite(acc)]
    return float(finite.mean()) if finite.size else float("nan")


def noise_normalized_correlation(r: np.ndarray, noise_ceiling: np.ndarray) -> np.ndarray:
    """Per-voxel ``r / sqrt(reliability)``, the Algonauts 2021 leaderboard's noise-normalised correlation.

    ``noise_ceiling`` is the split-half (Spearman-Brown) reliability in percent, as
    :func:`core.algonauts2021.dataset.split_half_noise_ceiling` gives it. Not squared, not capped, negative r
    kept; NaN where the reliability is 0 (or r is NaN).
    """
    r = np.asarray(r, dtype=np.float64)
    rel = np.asarray(noise_ceiling, dtype=np.float64) / 100.0
    if r.shape != rel.shape:
        raise ValueError(f"noise_normalized_correlation: {r.shape} correlations but {rel.shape} reliabilities")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rel > 0, r / np.sqrt(np.where(rel > 0, rel, 1.0)), np.nan)


def roi_summary(values: np.ndarray, roi_masks: Mapping[str, np.ndarray]) -> dict[str, dict]:
    """Median, mean and vertex count of ``values`` (e.g. per-vertex r) in every ROI.

    ``roi_masks`` maps ROI names to boolean masks over the same vertices (the caller builds them,
    e.g. ``Subject.roi_masks(hemi)``). ``"all vertices"`` is added when absent. An empty ROI gives
    NaN statistics and ``n_vertices`` 0; NaN values (constant predictions) are left out.
    Returns ``{roi: {"median": float, "mean": float, "n_vertices": int}}`` in the masks' order.
    """
    values = np.asarray(values)
    masks = dict(roi_masks)
    out: dict[str, dict] = {}
    if ALL_VERTICES not in masks:
        masks = {ALL_VERTICES: np.ones(values.shape[0], dtype=bool), **masks}
    for name, mask in masks.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != values.shape:
            raise ValueError(f"roi_summary: mask '{name}' has shape {mask.shape}, values have {values.shape}")
        sel = values[mask].astype(np.float64)
        sel = sel[np.isfinite(sel)]
        out[name] = {
            "median": float(np.median(sel)) if sel.size else float("nan"),
            "mean": float(np.mean(sel)) if sel.size else float("nan"),
            "n_vertices": int(mask.sum()),
        }
    return out


def part_metrics(r: np.ndarray, roi_masks: Mapping[str, np.ndarray] | None = None,
                 noise_ceiling: np.ndarray | None = None) -> dict:
    """Everything reported for one part (hemisphere, track): r summary, per-ROI r, and NC-normalised scores."""
    r = np.asarray(r)
    finite = r[np.isfinite(r)].astype(np.float64)
    out: dict = {
        "n_vertices": int(r.shape[0]),
        "median_r": float(np.median(finite)) if finite.size else float("nan"),
        "mean_r": float(np.mean(finite)) if finite.size else float("nan"),
        "roi_r": roi_summary(r, roi_masks or {}),
        "noise_normalized": None,
    }
    if noise_ceiling is not None:
        acc = noise_normalized_accuracy(r, noise_ceiling)
        out["noise_normalized"] = {
            "score": noise_normalized_score(r, noise_ceiling),
            "roi": roi_summary(acc, roi_masks or {}),
            "n_zero_noise_ceiling": int(np.sum(np.asarray(noise_ceiling) == 0)),
        }
    return out
