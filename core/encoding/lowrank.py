"""Reduced-rank targets: training responses projected onto their first principal components.

Responses to images are low-rank across vertices (a few category and retinotopic factors drive
most of them); a per-vertex fit spends its noise on the rest. Fitting any linear encoding model
on ``Y`` projected onto the first ``k`` principal components of the training rows
(reduced-rank regression; the frozen group-PCA output of seed 004's trained encoder does the same
for a network) shares those factors across vertices and denoises each vertex's target. The model
is then scored against the raw responses of rows it did not see.

Measured on the demo's 2,000-image subject (multiple-kernel ridge on MobileNetV2 ``features.6
features.10 features.17`` pooled 7 x 7, per-vertex CV alpha, held-out 10%): noise-normalised 70.6
on raw targets; 77.3 / 78.3 / 77.7 / 76.9 / 74.4 with the first 8 / 16 / 32 / 64 / 256 components.
Chosen per vertex among :data:`DEFAULT_RANKS` (the pipeline's default) it scores 78.6; the search,
choosing one rank per ROI class (2-14 won), 78.9.

The components come from the ``n x n`` Gram matrix of the centred rows (one eigendecomposition,
however many vertices); the projection of rows ``Y_c`` onto the first ``k`` is ``U_k U_k' Y_c``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from core.util.errors import UserError

# the pipeline's candidates for the ridge family, chosen per vertex with alpha (0: the responses themselves)
DEFAULT_RANKS: tuple[int, ...] = (0, 8, 16, 32, 64, 128, 256)


def response_basis(Y: np.ndarray, max_rank: int, rows: np.ndarray | None = None) -> np.ndarray:
    """The first ``max_rank`` left singular vectors of the centred ``Y[rows]`` (``(n, V)``, may be
    memory-mapped: read in chunks of vertices): ``(n, k)`` float32, orthonormal columns, strongest
    first (``k`` at most ``min(max_rank, n - 1, V)``)."""
    rows = np.arange(Y.shape[0]) if rows is None else np.asarray(rows)
    n, t = len(rows), Y.shape[1]
    if Y.ndim != 2 or n < 2:
        raise UserError(f"reduced-rank targets need at least 2 rows of responses (got {n})")
    G = np.zeros((n, n))
    step = max(256, (128 << 20) // (4 * n))
    for start in range(0, t, step):
        y = np.asarray(Y[rows, start:start + step], dtype=np.float32)
        y = y - y.mean(0, dtype=np.float64).astype(np.float32)
        G += y @ y.T
    k = int(min(max_rank, n - 1, t))
    _, U = scipy.linalg.eigh(G, subset_by_index=[n - k, n - 1], check_finite=False)  # the k largest only
    return np.ascontiguousarray(U[:, ::-1], dtype=np.float32)


def project(Y: np.ndarray, basis: np.ndarray, rank: int) -> np.ndarray:
    """``Y`` ``(n, V)`` with its centred part projected onto the first ``rank`` columns of ``basis``
    (from :func:`response_basis` of the same rows); the column means are kept. float32."""
    if not 1 <= rank <= basis.shape[1]:
        raise UserError(f"response rank {rank}: these responses have {basis.shape[1]} components")
    Y = np.asarray(Y, dtype=np.float32)
    mean = Y.mean(0, dtype=np.float64).astype(np.float32)
    B = basis[:, :rank]
    return B @ (B.T @ (Y - mean)) + mean

