"""Array backends for the encoding engine: ``"numpy"``, ``"torch"`` (CPU) and ``"torch_cuda"``.

The names follow himalaya's backend switch. ``"auto"`` picks ``"torch_cuda"`` when torch sees a
CUDA device and ``"numpy"`` otherwise (on CPU numpy's OpenBLAS matmul was faster than torch's
here). Everything works on CPU; torch is imported only when used (or to look for CUDA when an
NVIDIA driver is present).

The engine only needs a handful of operations; each backend implements them on its own arrays
(float32 for the large ones, float64 for the small ``p x p`` linear algebra).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib
import os
from typing import Any

import numpy as np

from core.util.errors import UserError

BACKENDS = ("numpy", "torch", "torch_cuda")


def cuda_available() -> bool:
    """Whether torch sees a CUDA device (without importing torch when no NVIDIA driver exists)."""
    if not (os.path.exists("/proc/driver/nvidia") or glob.glob("/dev/nvidia[0-9]*")):
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return bool(torch.cuda.is_available())


def resolve_backend_name(name: str | None = "auto") -> str:
    """``"auto"``/``None`` -> ``"torch_cuda"`` if CUDA is present else ``"numpy"``; validates names."""
    if name in (None, "auto"):
        return "torch_cuda" if cuda_available() else "numpy"
    if name not in BACKENDS:
        raise UserError(f"unknown backend '{name}' (use one of: auto, {', '.join(BACKENDS)})")
    if name == "torch_cuda" and not cuda_available():
        raise UserError("backend 'torch_cuda' asked for, but torch sees no CUDA device")
    return name


@functools.lru_cache(maxsize=None)
def get_backend(name: str | None = "auto") -> "Backend":
    name = resolve_backend_name(name)
    return NumpyBackend() if name == "numpy" else TorchBackend(name)


class Backend:
    """Operations the engine needs; arrays are backend-native (numpy arrays or torch tensors)."""

    name: str = "?"
    on_gpu: bool = False

    def asarray(self, x: Any, dtype: str = "float32") -> Any:  # numpy/array -> backend array
        raise NotImplementedError

    def to_numpy(self, x: Any) -> np.ndarray:
        raise NotImplementedError

    def f64(self, x: Any) -> Any:
        raise NotImplementedError

    def f32(self, x: Any) -> Any:
        raise NotImplementedError

    def sqrt(self, x: Any) -> Any:
        raise NotImplementedError

    def eigh(self, a: Any) -> tuple[Any, Any]:
        """Eigenvalues (ascending) and eigenvectors of a symmetric matrix."""
        raise NotImplementedError

    def empty_cache(self) -> None:
        pass

    def compute_threads(self):
        """Context in which the heavy work runs (CPU backends: the BLAS thread policy)."""
        return contextlib.nullcontext()

    # elementwise helpers (same meaning as numpy's)
    def where(self, cond: Any, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def clip(self, x: Any, lo: float, hi: float) -> Any:
        raise NotImplementedError

    def clip_min(self, x: Any, lo: float) -> Any:
        raise NotImplementedError

    def nan_to_zero(self, x: Any) -> Any:
        """NaN and +-inf -> 0."""
        raise NotImplementedError

    def diag(self, x: Any) -> Any:
        raise NotImplementedError

    def max(self, x: Any) -> Any:
        raise NotImplementedError

    def ones_like(self, x: Any) -> Any:
        raise NotImplementedError

    def index(self, idx: np.ndarray) -> Any:
        """Integer indices usable on this backend's arrays."""
        return idx

    def rank1_sub_(self, a: Any, x: Any, y: Any) -> None:
        """In place: ``a -= outer(x, y)`` (``a`` 2-D, same float dtype as ``x`` and ``y``)."""
        raise NotImplementedError

    def col_sumsq(self, x: Any) -> Any:
        """Sum of squares of each column of a 2-D array."""
        return self.col_dot(x, x)

    def col_dot(self, x: Any, y: Any) -> Any:
        """Column-wise dot products of two 2-D arrays of the same shape."""
        raise NotImplementedError


@functools.lru_cache(maxsize=1)
def _controller():
    from threadpoolctl import ThreadpoolController  # a scikit-learn dependency

    importlib.import_module("scipy.linalg.blas")  # scipy ships its own OpenBLAS beside numpy's: load both first
    return ThreadpoolController()  # finds the loaded BLAS libraries once


def _limit_blas(n: int):
    return _controller().limit(limits=n, user_api="blas")


def _one_blas_thread():
    return _limit_blas(1)


def blas_threads() -> int:
    """Threads for the engine's BLAS work on CPU.

    ``$BES_BLAS_THREADS`` if set; otherwise every core, or 1 when the machine is already busy
    (1-minute load average >= 1.5 x cores). On an oversubscribed machine OpenBLAS's threads
    mostly wait for each other: the NSD-scale benchmark took 46 s on 1 thread and 76 s on 2
    (2 cores, load average ~4 from other processes).
    """
    env = os.environ.get("BES_BLAS_THREADS", "").strip()
    n_cpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise UserError(f"BES_BLAS_THREADS must be a whole number, got '{env}'") from None
    try:
        busy = os.getloadavg()[0] >= 1.5 * n_cpu
    except OSError:  # pragma: no cover - no load average on this platform
        busy = False
    return 1 if busy else n_cpu


class NumpyBackend(Backend):
    name = "numpy"

    def compute_threads(self):
        return _limit_blas(blas_threads())

    def asarray(self, x: Any, dtype: str = "float32") -> np.ndarray:
        return np.ascontiguousarray(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def f64(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.float64, copy=False)

    def f32(self, x: np.ndarray) -> np.ndarray:
        return x.astype(np.float32, copy=False)

    def sqrt(self, x: np.ndarray) -> np.ndarray:
        return np.sqrt(x)

    def eigh(self, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # LAPACK's eigensolver makes many small BLAS calls: with OpenBLAS threads on a busy
        # machine it runs several times slower than on one thread (measured 1.6 s vs 0.23 s, p=1000)
        with _one_blas_thread():
            return np.linalg.eigh(a)

    def where(self, cond, a, b):
        return np.where(cond, a, b)

    def rank1_sub_(self, a, x, y):
        from scipy.linalg import blas

        if a.dtype == np.float32 and a.flags.c_contiguous:
            # a (C order) is the Fortran-ordered a.T: a.T -= outer(y, x), in place with BLAS ger
            out = blas.sger(-1.0, np.asarray(y, np.float32), np.asarray(x, np.float32), a=a.T, overwrite_a=True)
            if not np.shares_memory(out, a):  # pragma: no cover - BLAS wrapper copied
                a[...] = out.T
        else:
            a -= np.outer(x, y).astype(a.dtype, copy=False)

    def col_dot(self, x, y):
        return np.einsum("ij,ij->j", x, y)

    def clip(self, x, lo, hi):
        return np.clip(x, lo, hi)

    def clip_min(self, x, lo):
        return np.maximum(x, lo)

    def nan_to_zero(self, x):
        return np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)

    def diag(self, x):
        return np.diag(x).copy()

    def max(self, x):
        return x.max()

    def ones_like(self, x):
        return np.ones_like(x)



class TorchBackend(Backend):
    def __init__(self, name: str):
        import torch

        self.torch = torch
        self.name = name
        self.on_gpu = name == "torch_cuda"
        self.device = torch.device("cuda" if self.on_gpu else "cpu")

    def _dtype(self, dtype: str):
        return {"float32": self.torch.float32, "float64": self.torch.float64}[str(np.dtype(dtype))]

    def asarray(self, x: Any, dtype: str = "float32"):
        torch = self.torch
        if isinstance(x, torch.Tensor):
            return x.to(device=self.device, dtype=self._dtype(dtype))
        arr = np.ascontiguousarray(x, dtype=dtype)
        return torch.from_numpy(arr).to(self.device, non_blocking=False)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    def f64(self, x):
        return x.to(self.torch.float64)

    def f32(self, x):
        return x.to(self.torch.float32)

    def sqrt(self, x):
        return self.torch.sqrt(x)

    def eigh(self, a):
        return self.torch.linalg.eigh(a)

    def empty_cache(self) -> None:
        if self.on_gpu:
            self.torch.cuda.empty_cache()

    def where(self, cond, a, b):
        torch = self.torch
        ref = a if isinstance(a, torch.Tensor) else b
        if not isinstance(a, torch.Tensor):
            a = torch.as_tensor(a, dtype=ref.dtype, device=ref.device)
        if not isinstance(b, torch.Tensor):
            b = torch.as_tensor(b, dtype=ref.dtype, device=ref.device)
        return torch.where(cond, a, b)

    def clip(self, x, lo, hi):
        return self.torch.clamp(x, lo, hi)

    def rank1_sub_(self, a, x, y):
        a.addr_(x.to(a.dtype), y.to(a.dtype), alpha=-1.0)

    def col_dot(self, x, y):
        return (x * y).sum(0)

    def clip_min(self, x, lo):
        return self.torch.clamp(x, min=lo)

    def nan_to_zero(self, x):
        return self.torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)

    def diag(self, x):
        return self.torch.diagonal(x).clone()

    def max(self, x):
        return x.max()

    def ones_like(self, x):
        return self.torch.ones_like(x)

    def index(self, idx):
        return self.torch.as_tensor(np.asarray(idx), dtype=self.torch.long, device=self.device)
