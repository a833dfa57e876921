"""NSD-scale ridge benchmark: per-vertex alpha by 5-fold CV, refit, validation correlations.

    python benchmarks/bench_ridge.py            # 9,841 images x 39,548 vertices x 1,000 features
    python benchmarks/bench_ridge.py --quick    # 2,000 x 5,000 x 200 (a few seconds)
    python benchmarks/bench_ridge.py --backend torch_cuda   # on a GPU

Synthetic data with subj01's shape: features with a decaying spectrum (like PCA'd network
activations), responses = low-rank linear signal + Gaussian noise with a per-vertex SNR spread
(validation r from ~0 to ~0.8, like NSD). Responses are written to a ``.npy`` file and
memory-mapped, as the dataset reader does. The timed part runs in a fresh process (so its peak
RSS is the fit's own) and is exactly what ``python -m core fit`` does per hemisphere:
``RidgeCV.fit_holdout`` (10% held out; 5-fold CV over 10 alphas on the rest, per-vertex alpha,
refit, held-out r for every vertex, refit on all rows) plus test-set predictions.

``--himalaya N`` also times himalaya's ``RidgeCV`` (same alphas, folds, correlation scoring)
on the first N vertices, and ours on the same N, for a like-for-like comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FULL = dict(n_images=9841, n_vertices=39548, n_features=1000, n_test=159)
QUICK = dict(n_images=2000, n_vertices=5000, n_features=200, n_test=100)


def generate(out: Path, n_images: int, n_vertices: int, n_features: int, n_test: int, seed: int = 0) -> None:
    """Write X_train.npy, X_test.npy and Y.npy (float32) into ``out``."""
    rng = np.random.default_rng(seed)
    n_all = n_images + n_test
    spectrum = (np.arange(1, n_features + 1) ** -0.5).astype(np.float32)
    X = rng.standard_normal((n_all, n_features), dtype=np.float32) * spectrum
    X += rng.standard_normal(n_features, dtype=np.float32)  # feature offsets (removed by standardising)
    k = 30
    B = rng.standard_normal((n_features, k), dtype=np.float32) / np.sqrt(n_features)
    latent = X[:n_images] @ B
    latent /= latent.std(0)
    np.save(out / "X_train.npy", X[:n_images])
    np.save(out / "X_test.npy", X[n_images:])
    Y = np.lib.format.open_memmap(out / "Y.npy", mode="w+", dtype=np.float32, shape=(n_images, n_vertices))
    step = 4096
    for start in range(0, n_vertices, step):
        t = min(step, n_vertices - start)
        C = rng.standard_normal((k, t), dtype=np.float32) / np.sqrt(k)
        snr = np.exp(rng.normal(-1.2, 1.0, t)).astype(np.float32)  # signal sd / noise sd per vertex
        sig = latent @ C
        sig *= snr / sig.std(0)
        sig += rng.standard_normal((n_images, t), dtype=np.float32)
        Y[:, start:start + t] = sig
    Y.flush()
    del Y


def peak_rss_gb() -> float:
    """Peak resident set size of this process (GB), from /proc (VmHWM) or getrusage."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def child(data: Path, backend: str, folds: int, n_alphas: int, himalaya: int) -> dict:
    from core.encoding.backends import blas_threads, resolve_backend_name
    from core.encoding.estimators import RidgeCV
    from core.encoding.splits import holdout_split

    X = np.load(data / "X_train.npy")
    X_test = np.load(data / "X_test.npy")
    Y = np.load(data / "Y.npy", mmap_mode="r")
    n, t = Y.shape
    alphas = np.logspace(-1, 8, n_alphas)
    fit_rows, val_rows = holdout_split(n, 0.1, seed=0)
    out: dict = {"shape": {"n_images": n, "n_vertices": t, "n_features": X.shape[1], "n_test": X_test.shape[0]},
                 "backend": resolve_backend_name(backend), "folds": folds, "n_alphas": n_alphas,
                 "cpu_count": os.cpu_count(), "loadavg_before": os.getloadavg(), "blas_threads": blas_threads()}
    model = RidgeCV(alphas=alphas, cv=folds, seed=0, backend=backend)
    if out["backend"] == "torch_cuda":  # warm up CUDA/cuBLAS so the timing is the fit's
        RidgeCV(alphas=alphas, cv=folds, backend=backend).fit(X[:200], np.asarray(Y[:200, :256]))
    w0, c0 = time.perf_counter(), time.process_time()
    val_r = model.fit_holdout(X, Y, val_rows)
    pred = model.predict(X_test)
    out["seconds"] = time.perf_counter() - w0
    out["cpu_seconds"] = time.process_time() - c0
    out["loadavg_after"] = os.getloadavg()
    out["peak_rss_gb"] = peak_rss_gb()
    out["median_val_r"] = float(np.median(val_r))
    out["test_pred_shape"] = list(pred.shape)
    out["alpha_counts"] = {f"{a:g}": int(c) for a, c in zip(*np.unique(model.best_alphas_, return_counts=True))}
    if himalaya:
        out["himalaya"] = compare_himalaya(X, Y, alphas, folds, himalaya, backend)
    return out


def compare_himalaya(X, Y, alphas, folds, n_targets, backend) -> dict:
    """himalaya's RidgeCV vs ours on the same vertices, alphas, folds and (correlation) scoring."""
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV as HRidgeCV
    from himalaya.scoring import correlation_score

    from core.encoding.estimators import RidgeCV
    from core.encoding.splits import kfold_splits

    # identical problem for both: same folds, features standardised once (himalaya has no
    # per-fold standardisation), intercept fitted, correlation scoring
    Ys = np.ascontiguousarray(Y[:, :n_targets])
    Xz = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    splits = kfold_splits(X.shape[0], folds, seed=0)
    name = "torch_cuda" if backend == "torch_cuda" else "numpy"
    set_backend(name)
    h = HRidgeCV(alphas=alphas, fit_intercept=True, cv=splits,
                 solver_params=dict(score_func=correlation_score, n_targets_batch=2000))
    w0 = time.perf_counter()
    h.fit(Xz, Ys)
    t_h = time.perf_counter() - w0
    w0 = time.perf_counter()
    ours = RidgeCV(alphas=alphas, cv=splits, standardize=False, backend=backend).fit(Xz, Ys)
    t_o = time.perf_counter() - w0
    ha = np.asarray(h.best_alphas_.cpu() if hasattr(h.best_alphas_, "cpu") else h.best_alphas_)
    return {"n_vertices": n_targets, "himalaya_seconds": t_h, "ours_seconds": t_o,
            "speedup": t_h / t_o, "same_alpha_fraction": float(np.mean(np.isclose(ha, ours.best_alphas_)))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small problem (smoke test)")
    ap.add_argument("--backend", default="auto", help="auto | numpy | torch | torch_cuda")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--alphas", type=int, default=10, help="number of alphas (log-spaced 0.1 ... 1e8)")
    ap.add_argument("--himalaya", type=int, default=0, metavar="N",
                    help="also time himalaya's RidgeCV on N vertices")
    ap.add_argument("--data-dir", type=Path, help="keep / reuse the generated data here")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print(json.dumps(child(args.child, args.backend, args.folds, args.alphas, args.himalaya)))
        return 0

    shape = QUICK if args.quick else FULL
    tmp = None
    data = args.data_dir
    if data is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_ridge_")
        data = Path(tmp.name)
    data.mkdir(parents=True, exist_ok=True)
    try:
        ok = (data / "Y.npy").is_file() and np.load(data / "Y.npy", mmap_mode="r").shape == (
            shape["n_images"], shape["n_vertices"]) and np.load(data / "X_train.npy", mmap_mode="r").shape[1] == \
            shape["n_features"]
        if not ok:
            w0 = time.perf_counter()
            generate(data, **shape)
            print(f"generated {shape} in {time.perf_counter() - w0:.1f} s", flush=True)
        cmd = [sys.executable, __file__, "--child", str(data), "--backend", args.backend, "--folds", str(args.folds),
               "--alphas", str(args.alphas), "--himalaya", str(args.himalaya)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, file=sys.stderr)
            return proc.returncode
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        if tmp is not None:
            tmp.cleanup()
    s = res["shape"]
    print(f"RidgeCV fit_holdout + test predictions: {s['n_images']} images x {s['n_vertices']} vertices x "
          f"{s['n_features']} features, {res['n_alphas']} alphas, {res['folds']} folds, backend {res['backend']}")
    print(f"  wall time      {res['seconds']:.1f} s   (process CPU time {res['cpu_seconds']:.1f} s on "
          f"{res['cpu_count']} cores; {res['blas_threads']} BLAS thread(s), see core.encoding.backends.blas_threads)")
    print(f"  peak RSS       {res['peak_rss_gb']:.2f} GB (fit process; includes the memory-mapped responses)")
    print(f"  load average   {res['loadavg_before'][0]:.2f} before, {res['loadavg_after'][0]:.2f} after")
    print(f"  median val r   {res['median_val_r']:.3f}")
    print(f"  alphas chosen  {res['alpha_counts']}")
    if "himalaya" in res:
        h = res["himalaya"]
        print(f"  himalaya RidgeCV on {h['n_vertices']} vertices: {h['himalaya_seconds']:.1f} s; ours "
              f"{h['ours_seconds']:.1f} s ({h['speedup']:.1f}x); same alpha for {100 * h['same_alpha_fraction']:.0f}%")
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
