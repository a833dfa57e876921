"""Dimensionality reduction of layer activations: streaming PCA within a memory budget, and pooling.

PCA is fitted on the training images only. During the (single) forward pass the raw
training activations are spilled to disk in *column blocks* (:class:`ColumnSpill`:
one file per block of features, each block ``n_train x cols`` small enough for the
budget). The fit then streams those blocks:

* ``randomized`` (default for large problems): randomized block Krylov iteration on
  the ``n`` side with blocks of ``l = k + oversample`` columns. Each pass over the
  column blocks computes ``Y = Xc Xc^T Q`` block by block (``Xc_j (Xc_j^T Q)``), so
  nothing of size ``d x d`` or ``n x d`` is ever held; ``power_iterations`` extra
  passes grow the Krylov basis. A Rayleigh-Ritz step on the whole basis gives the
  components; the training projections come out of the passes for free
  (``Xc V = (Xc Xc^T K) U S^-1``). On network features (slowly decaying spectra) one
  power iteration already captures the exact PCA's explained variance to within
  ~0.5% (0.1% or better with two), where plain subspace iteration needs more passes.
* ``exact``: the ``min(n, d)``-sided Gram matrix, accumulated block by block, and its
  eigendecomposition (used automatically when it is cheaper, and as the reference).

Everything runs in torch on the chosen device (GPU when available). The reported
explained variance of each component is measured on the training data
(``|Xc v_i|^2 / (n-1)``), relative to the exact total variance.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from core.util.errors import UserError
from core.util.npystream import NpyReader, NpyWriter
from core.util.progress import Progress, report

MB = 1 << 20
DEFAULT_MEMORY_BUDGET_MB = 2048


def oversampling(n_components: int) -> int:
    return max(10, n_components // 10)


# --------------------------------------------------------------------------- pooling


def check_poolable(shape: tuple, layer: str = "layer") -> None:
    """``shape`` is one image's activation shape; pooling needs ``(C, H, W)``."""
    if len(shape) != 3:
        raise UserError(
            f"pooling needs a convolutional layer with (N, C, H, W) output; '{layer}' gives {tuple(shape)} per "
            "image: use --reduction pca or none"
        )


def pool_features(t, pool_size: int, layer: str = "layer"):
    """Average-pool a ``(N, C, H, W)`` activation to ``(N, C * k * k)``."""
    import torch.nn.functional as F

    check_poolable(tuple(t.shape[1:]), layer)
    return F.adaptive_avg_pool2d(t.float(), pool_size).flatten(1)


# --------------------------------------------------------------------------- spill


@dataclass
class BlockPlan:
    n: int
    dim: int
    cols: int  # columns per block

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.dim / self.cols)

    def bounds(self) -> list[tuple[int, int]]:
        return [(s, min(s + self.cols, self.dim)) for s in range(0, self.dim, self.cols)]


def pca_state_bytes(n: int, dim: int, n_components: int, power_iterations: int = 1) -> int:
    """Memory the PCA keeps besides the streamed blocks: components, Krylov basis and its image, Gram."""
    l = min(n_components + oversampling(n_components), n, dim)
    w = min((power_iterations + 1) * l, n, dim)
    return 4 * (dim * n_components + 2 * n * w + 2 * n * l + 2 * dim) + 8 * w * w * 4


def plan_blocks(n: int, dim: int, n_components: int, memory_budget_mb: float,
                power_iterations: int = 1) -> BlockPlan:
    """Column-block width so that one block (and its temporaries) fits the budget beside the PCA state."""
    budget = int(memory_budget_mb * MB)
    state = pca_state_bytes(n, dim, n_components, power_iterations)
    free = budget - state
    # a block is read into memory, copied to the device/centred (x2), plus Z_j (cols x l)
    l = min(n_components + oversampling(n_components), n, dim)
    per_col = 4 * (2 * n + l)
    if free < per_col * 16:
        need = (state + per_col * 256) / MB
        raise UserError(
            f"PCA to {n_components} components of {dim:,} features on {n:,} images needs a memory budget of at "
            f"least ~{need:,.0f} MB (the components alone take {4 * dim * n_components / MB:,.0f} MB; "
            f"budget is {memory_budget_mb:,.0f} MB): raise --memory-budget-mb, lower --n-components, or pool first"
        )
    cols = max(1, min(dim, free // per_col))
    plan = BlockPlan(n, dim, int(cols))
    if plan.n_blocks > 4096:
        raise UserError(f"memory budget too small for {dim:,} features of {n:,} images: raise --memory-budget-mb")
    return plan


class ColumnSpill:
    """Training activations ``(n, dim)`` on disk as column blocks ``block_0000.npy``...

    Rows are appended batch by batch during the forward pass; each block can then be
    read whole (``n x cols``) without touching the others.
    """

    def __init__(self, folder: str | os.PathLike, plan: BlockPlan):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.plan = plan
        self._writers = [
            NpyWriter(self.folder / f"block_{j:04d}.npy", (plan.n, stop - start), np.float32)
            for j, (start, stop) in enumerate(plan.bounds())
        ]
        self.rows_written = 0

    def write(self, rows: np.ndarray) -> None:
        if rows.ndim != 2 or rows.shape[1] != self.plan.dim:
            raise ValueError(f"spill expects rows of {self.plan.dim} features, got {rows.shape}")
        for w, (start, stop) in zip(self._writers, self.plan.bounds()):
            w.write(rows[:, start:stop])
        self.rows_written += rows.shape[0]

    def finish(self) -> None:
        for w in self._writers:
            w.close(fsync=False)

    def abort(self) -> None:
        for w in self._writers:
            w.abort()

    def read_block(self, j: int) -> np.ndarray:
        with NpyReader(self.folder / f"block_{j:04d}.npy") as r:
            return r.read(0, r.shape[0])

    def remove(self) -> None:
        self.abort()
        shutil.rmtree(self.folder, ignore_errors=True)


# --------------------------------------------------------------------------- PCA


@dataclass
class PCAModel:
    """A fitted PCA: ``transform(x) = (x - mean) @ components.T``."""

    mean: "object"  # torch tensor (d,) float32, on the fit device
    components_t: "object"  # torch tensor (d, k) float32: components as columns
    explained_variance: np.ndarray  # (k,) variance of each component on the training data
    explained_variance_ratio: np.ndarray  # (k,) relative to the total variance
    total_variance: float
    n_samples: int
    solver: str
    info: dict = field(default_factory=dict)

    @property
    def n_components(self) -> int:
        return int(self.components_t.shape[1])

    @property
    def components(self) -> np.ndarray:
        return self.components_t.T.cpu().numpy()

    def transform(self, x):
        """Project rows ``x`` (torch tensor or array, ``(b, d)``); returns the same kind."""
        import torch

        if isinstance(x, np.ndarray):
            return self.transform(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).cpu().numpy()
        x = x.to(self.components_t.device, torch.float32)
        return (x - self.mean) @ self.components_t

    def to(self, device) -> "PCAModel":
        self.mean = self.mean.to(device)
        self.components_t = self.components_t.to(device)
        return self


def _blocks_iter(spill: ColumnSpill, device, prefetch: bool = True):
    """Yield ``(j, start, stop, block tensor on device)``; reads the next block in a thread meanwhile."""
    import concurrent.futures as cf

    import torch

    bounds = spill.plan.bounds()
    if not prefetch or len(bounds) == 1:
        for j, (s, e) in enumerate(bounds):
            yield j, s, e, torch.from_numpy(spill.read_block(j)).to(device)
        return
    with cf.ThreadPoolExecutor(1) as ex:
        fut = ex.submit(spill.read_block, 0)
        for j, (s, e) in enumerate(bounds):
            arr = fut.result()
            if j + 1 < len(bounds):
                fut = ex.submit(spill.read_block, j + 1)
            yield j, s, e, torch.from_numpy(arr).to(device)
            del arr


def choose_solver(n: int, dim: int, n_components: int, power_iterations: int, memory_budget_mb: float) -> str:
    m = min(n, dim)
    l = min(n_components + oversampling(n_components), m)
    exact_fits = m * m * 8 * 3 <= memory_budget_mb * MB / 2
    cheaper = m <= 2 * (power_iterations + 2) * l
    return "exact" if exact_fits and cheaper else "randomized"


def check_n_components(n_components: int, n: int, dim: int, layer: str = "layer") -> None:
    limit = min(n - 1, dim)
    if n_components < 1 or n_components > limit:
        raise UserError(
            f"--n-components {n_components} is not possible for {layer}: PCA on {n} training images of {dim:,} "
            f"features gives at most {limit} components"
        )


def fit_pca(
    spill: ColumnSpill,
    n_components: int,
    *,
    solver: str = "auto",
    power_iterations: int = 1,
    oversample: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    progress: Optional[Progress] = None,
):
    """Fit PCA on the spilled training activations. Returns ``(PCAModel, train_projections (n, k) tensor)``."""
    n, dim = spill.plan.n, spill.plan.dim
    check_n_components(n_components, n, dim)
    if solver == "auto":
        solver = choose_solver(n, dim, n_components, power_iterations, memory_budget_mb)
    if solver == "exact":
        return _fit_exact(spill, n_components, device, progress)
    if solver != "randomized":
        raise UserError(f"unknown PCA solver '{solver}' (auto, randomized, exact)")
    return _fit_randomized(spill, n_components, power_iterations, oversample, seed, device,
                           memory_budget_mb, progress)


def _order_and_signs(T, n: int, *mats):
    """Sort components by the variance of their training projections ``T`` (descending) and make each
    one's largest-magnitude projection positive; applies the same to ``mats`` (small coefficient matrices
    whose columns are the components), so the big ``d x k`` components are built once, already in order.
    Returns ``(T, ev, *mats)``."""
    import torch

    ev = (T.double().square().sum(0) / max(n - 1, 1)).cpu().numpy()
    order = np.argsort(-ev, kind="stable")
    idx = torch.as_tensor(order, device=T.device)
    T, ev = T[:, idx], ev[order]
    mats = [m[:, idx] for m in mats]
    signs = torch.sign(T[T.abs().argmax(0), torch.arange(T.shape[1], device=T.device)])
    signs[signs == 0] = 1
    return (T * signs, ev, *[m * signs.to(m.dtype) for m in mats])


def _inv_sqrt(evals):
    """``1 / sqrt(eigenvalue)``, and 0 for directions with no variance (rank-deficient data: duplicate or
    constant images), so such components come out as zeros instead of amplified rounding noise."""
    import torch

    tol = float(evals[0].clamp_min(0)) * 1e-10 + 1e-30
    return torch.where(evals > tol, evals.clamp_min(tol).rsqrt(), torch.zeros_like(evals))


def _finish(mean, V, T, ev, total_var, n, solver, info) -> tuple[PCAModel, "object"]:
    ratio = ev / total_var if total_var > 0 else np.zeros_like(ev)
    model = PCAModel(mean, V, ev.astype(np.float64), ratio.astype(np.float64), float(total_var), n, solver, info)
    return model, T.contiguous()


def _orth_against(Y, basis, width_left: int):
    """Orthonormal columns spanning ``Y`` minus its part in ``basis`` (two rounds of block Gram-Schmidt)."""
    import torch

    Y = Y[:, :width_left]
    for _ in range(2):
        for B in basis:
            Y = Y - B @ (B.T @ Y)
        Y, _ = torch.linalg.qr(Y)
    return Y


def _fit_randomized(spill, k, q, oversample, seed, device, budget_mb, progress):
    """Randomized block Krylov PCA (Musco & Musco 2015) over column blocks.

    Pass 1 sketches ``Y = Xc Xc^T Omega``; each further pass applies ``Xc Xc^T`` to the
    newest basis block. The Rayleigh-Ritz step uses the whole Krylov basis
    ``[Q_0 .. Q_q]`` (width ``(q+1) l``), whose image under ``Xc Xc^T`` the passes have
    already produced, so ``q + 2`` passes give a far better subspace than as many
    plain power iterations on the slowly decaying spectra of network features.
    """
    import torch

    n, dim = spill.plan.n, spill.plan.dim
    m = min(n, dim)
    l = min(k + (oversampling(k) if oversample is None else int(oversample)), m)
    gen = torch.Generator().manual_seed(int(seed))
    omega = torch.randn(n, l, generator=gen, dtype=torch.float32).to(device)
    mean = torch.empty(dim, dtype=torch.float32, device=device)
    total_var = 0.0
    width = min((q + 1) * l, m)
    store_z = dim * width * 4 <= budget_mb * MB * 0.25
    n_passes = q + 2 + (0 if store_z else 1)
    z_store: list[list] = []  # per basis block: the column blocks of Xc^T Q_i

    def one_pass(Qm, p, first=False, keep_z=False):
        nonlocal total_var
        Y = torch.zeros(n, Qm.shape[1], dtype=torch.float32, device=device)
        zs = []
        for j, s, e, X in _blocks_iter(spill, device):
            if first:
                var_j, mean[s:e] = torch.var_mean(X, dim=0, correction=1)  # one accurate (Welford) pass
                total_var += float(var_j.double().sum())
            X -= mean[s:e]
            Z = X.T @ Qm  # (cols, width of Qm)
            Y.addmm_(X, Z)
            if keep_z and store_z:
                zs.append(Z.cpu())
            del X, Z
            report(progress, (p + (j + 1) / spill.plan.n_blocks) / n_passes, f"PCA pass {p + 1}/{n_passes}")
        if keep_z and store_z:
            z_store.append(zs)
        return Y

    Y = one_pass(omega, 0, first=True)  # Xc Xc^T Omega
    del omega
    basis = [_orth_against(Y, [], width)]
    images = []  # Xc Xc^T Q_i for each basis block
    p = 1
    while True:
        images.append(one_pass(basis[-1], p, keep_z=True))
        p += 1
        used = sum(B.shape[1] for B in basis)
        if len(basis) == q + 1 or used >= width:
            break
        basis.append(_orth_against(images[-1], basis, width - used))
    K, YK = torch.cat(basis, 1), torch.cat(images, 1)
    del basis, images
    G = K.T.double() @ YK.double()
    G = (G + G.T) / 2
    evals, U = torch.linalg.eigh(G)  # ascending
    evals, U = evals.flip(0)[:k], U.flip(1)[:, :k]
    M = (U * _inv_sqrt(evals)).float()  # (width, k)
    T = YK @ M  # (n, k) = Xc V exactly, with V = Xc^T K M
    del YK
    T, ev, M = _order_and_signs(T, n, M)
    V = torch.empty(dim, k, dtype=torch.float32, device=device)
    if store_z:
        for j, (s_, e_) in enumerate(spill.plan.bounds()):
            Zj = torch.cat([zs[j] for zs in z_store], 1).to(device)
            V[s_:e_] = Zj @ M
        z_store.clear()
    else:
        W = K @ M  # (n, k)
        for j, s_, e_, X in _blocks_iter(spill, device):
            X -= mean[s_:e_]
            V[s_:e_] = X.T @ W
            report(progress, (n_passes - 1 + (j + 1) / spill.plan.n_blocks) / n_passes, "PCA components")
    info = {"method": "block Krylov", "block_width": l, "krylov_width": int(K.shape[1]), "power_iterations": q,
            "oversample": l - k, "passes": n_passes, "seed": int(seed), "block_cols": spill.plan.cols,
            "n_blocks": spill.plan.n_blocks}
    report(progress, 1.0, "PCA done")
    return _finish(mean, V, T, ev, total_var, n, "randomized", info)


def _fit_exact(spill, k, device, progress):
    import torch

    n, dim = spill.plan.n, spill.plan.dim
    mean = torch.empty(dim, dtype=torch.float32, device=device)
    bounds = spill.plan.bounds()
    total_var = 0.0
    if n <= dim:  # Gram matrix Xc Xc^T (n x n)
        K = torch.zeros(n, n, dtype=torch.float64, device=device)
        for j, s, e, X in _blocks_iter(spill, device):
            var_j, mean[s:e] = torch.var_mean(X, dim=0, correction=1)
            total_var += float(var_j.double().sum())
            X -= mean[s:e]
            K += (X @ X.T).double()
            report(progress, 0.5 * (j + 1) / len(bounds), "exact PCA (Gram)")
        evals, U = torch.linalg.eigh(K)
        del K
        evals, U = evals.flip(0)[:k], U.flip(1)[:, :k]
        W = (U * _inv_sqrt(evals)).float()  # (n, k)
        T, ev, W = _order_and_signs((U * evals.clamp_min(0).sqrt()).float(), n, W)
        V = torch.empty(dim, k, dtype=torch.float32, device=device)
        for j, s_, e_, X in _blocks_iter(spill, device):
            X -= mean[s_:e_]
            V[s_:e_] = X.T @ W
            report(progress, 0.5 + 0.5 * (j + 1) / len(bounds), "exact PCA (components)")
    else:  # covariance Xc^T Xc (d x d), block pairs
        C = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        for i, (si, ei) in enumerate(bounds):
            Xi = torch.from_numpy(spill.read_block(i)).to(device)
            var_i, mean[si:ei] = torch.var_mean(Xi, dim=0, correction=1)
            total_var += float(var_i.double().sum())
            Xi -= mean[si:ei]
            C[si:ei, si:ei] = (Xi.T @ Xi).double()
            for jj in range(i + 1, len(bounds)):
                sj, ej = bounds[jj]
                Xj = torch.from_numpy(spill.read_block(jj)).to(device)
                Xj -= Xj.mean(0)
                C[si:ei, sj:ej] = (Xi.T @ Xj).double()
                C[sj:ej, si:ei] = C[si:ei, sj:ej].T
            report(progress, (i + 1) / len(bounds), "exact PCA (covariance)")
        evals, Vd = torch.linalg.eigh(C)
        del C
        V = Vd.flip(1)[:, :k].float().contiguous()
        T = torch.empty(n, k, dtype=torch.float32, device=device)
        T.zero_()
        for j, s_, e_, X in _blocks_iter(spill, device):
            X -= mean[s_:e_]
            T += X @ V[s_:e_]
        T, ev, V = _order_and_signs(T, n, V)  # d < n here: V is small
    report(progress, 1.0, "PCA done")
    return _finish(mean, V.contiguous(), T, ev, total_var, n, "exact",
                   {"block_cols": spill.plan.cols, "n_blocks": len(bounds)})


def exact_pca_reference(X: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, float]:
    """In-memory exact PCA (float64 SVD) for tests and benchmarks: ``(components, explained_variance, total)``."""
    Xc = np.asarray(X, dtype=np.float64)
    Xc = Xc - Xc.mean(0)
    n = Xc.shape[0]
    if Xc.shape[0] <= Xc.shape[1]:
        evals, U = np.linalg.eigh(Xc @ Xc.T)
        evals, U = evals[::-1][:n_components], U[:, ::-1][:, :n_components]
        comps = (Xc.T @ U / np.sqrt(np.maximum(evals, 1e-300))).T
    else:
        evals, Vd = np.linalg.eigh(Xc.T @ Xc)
        evals, comps = evals[::-1][:n_components], Vd[:, ::-1][:, :n_components].T
    total = float((Xc ** 2).sum() / (n - 1))
    return comps, evals / (n - 1), total
