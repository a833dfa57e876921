"""Seeded splits of training images: a held-out validation set, or K folds.

Indices within each part are sorted (memory-mapped fMRI rows are then read in file order).
The same ``(n, seed, ...)`` always gives the same split; ``Validation.to_dict()`` records it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from core.util.errors import UserError

Split = tuple[np.ndarray, np.ndarray]  # (train indices, validation indices)


def holdout_split(n: int, val_fraction: float = 0.1, seed: int = 0) -> Split:
    """Random ``(train, val)`` index split with ``round(n * val_fraction)`` validation images."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"validation fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    if n_val < 2 or n - n_val < 2:
        raise UserError(f"cannot hold out {val_fraction:g} of {n} images: need at least 2 images on each side")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def kfold_splits(n: int, n_folds: int = 5, seed: int | None = 0) -> list[Split]:
    """K ``(train, val)`` splits whose validation parts partition ``range(n)``.

    ``seed=None`` gives contiguous folds (no shuffling). Fold sizes differ by at most one.
    """
    if n_folds < 2:
        raise UserError(f"need at least 2 folds, got {n_folds}")
    if n < 2 * n_folds:
        raise UserError(f"cannot split {n} images into {n_folds} folds (need at least 2 per fold)")
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, n_folds)
    splits = []
    for k in range(n_folds):
        val = np.sort(parts[k])
        train = np.sort(np.concatenate([parts[j] for j in range(n_folds) if j != k]))
        splits.append((train, val))
    return splits


@dataclass(frozen=True)
class Validation:
    """How validation accuracy is measured: ``holdout`` (one split) or ``kfold`` (K splits)."""

    kind: Literal["holdout", "kfold"] = "holdout"
    val_fraction: float = 0.1
    n_folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("holdout", "kfold"):
            raise UserError(f"unknown validation kind '{self.kind}' (use 'holdout' or 'kfold')")

    def splits(self, n: int) -> list[Split]:
        if self.kind == "holdout":
            return [holdout_split(n, self.val_fraction, self.seed)]
        return kfold_splits(n, self.n_folds, self.seed)

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.kind == "holdout":
            d.pop("n_folds")
        else:
            d.pop("val_fraction")
        return d
