"""Our encoding engine side by side with the Algonauts 2023 devkit recipe, on the demo dataset.

    python benchmarks/bench_vs_devkit.py                 # demo subj01, 1,000 training images
    python benchmarks/bench_vs_devkit.py --quick         # 300 training images
    python benchmarks/bench_vs_devkit.py --data DIR --features FEAT_DIR   # your own data / features

Data: the product's demo dataset (``core.algonauts2023.demo``: NSD-like responses with per-vertex noise
ceilings), generated once into ``--work``. Features: the extraction engine's MobileNetV2
(ImageNet weights bundled offline) layer ``features.13`` reduced to 100 PCA components fitted
on the training images (the devkit tutorial's choice of 100 components) -- the same features
for both recipes. Validation: the same seeded 10% of training images for both.

* devkit: ``sklearn.linear_model.LinearRegression`` per hemisphere, predict the validation
  images, then ``scipy.stats.pearsonr`` in a Python loop over vertices.
* ours: ``RidgeCV.fit_holdout`` (5-fold CV over 10 alphas on the other 90%, per-vertex alpha,
  refit, vectorised validation r, and the refit on all images that test predictions need).

Timed: fit + validation predictions + correlations, both hemispheres, in this process.
``--n-components 500`` repeats the comparison with richer features (where least squares overfits).
Also checks that our ``OLS`` reproduces the devkit's correlations (parity).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LAYER = "features.13"


def get_data(work: Path, n_train: int, n_test: int) -> Path:
    from core.algonauts2023.demo import generate_demo

    data = work / f"demo_{n_train}"
    if not (data / "subj01").is_dir():
        w0 = time.perf_counter()
        generate_demo(data, subjects=(1,), n_train=n_train, n_test=n_test, seed=0)
        print(f"generated the demo dataset ({n_train} training images) in {time.perf_counter() - w0:.0f} s", flush=True)
    return data


def get_features(subject, work: Path, n_components: int) -> Path:
    from core.features.extraction import ExtractionConfig, extract_features

    w0 = time.perf_counter()
    cfg = ExtractionConfig(model="mobilenet_v2", layers=[LAYER], reduction="pca", n_components=n_components)
    entries = extract_features(subject.train_images, subject.test_images, cfg, cache_dir=work / "cache")
    print(f"features: mobilenet_v2 {LAYER}, PCA-{n_components} ({time.perf_counter() - w0:.0f} s, cached)",
          flush=True)
    return entries[LAYER].path


def devkit(X_tr, X_val, Y_tr, Y_val) -> tuple[np.ndarray, float]:
    """The 2023 devkit tutorial's section 2.3-2.4.1, verbatim in substance."""
    from scipy.stats import pearsonr as corr
    from sklearn.linear_model import LinearRegression

    w0 = time.perf_counter()
    reg = LinearRegression().fit(X_tr, Y_tr)
    pred = reg.predict(X_val)
    correlation = np.zeros(pred.shape[1])
    for v in range(pred.shape[1]):
        correlation[v] = corr(pred[:, v], Y_val[:, v])[0]
    return correlation, time.perf_counter() - w0


def ours(X, Y, val_rows, backend: str) -> tuple[np.ndarray, float, object]:
    from core.encoding.estimators import RidgeCV

    w0 = time.perf_counter()
    model = RidgeCV(cv=5, seed=0, backend=backend)
    r = model.fit_holdout(X, Y, val_rows)
    return r, time.perf_counter() - w0, model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="300 training images")
    ap.add_argument("--n-train", type=int, default=None)
    ap.add_argument("--data", type=Path, help="an Algonauts-layout dataset (default: generate the demo)")
    ap.add_argument("--subject", default="1")
    ap.add_argument("--features", type=Path, help="a feature entry directory (default: extract)")
    ap.add_argument("--n-components", type=int, default=100,
                    help="PCA components of the extracted features (default 100, the devkit's choice)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bes_bench_devkit",
                    help="where the generated demo and features are kept between runs")
    ap.add_argument("--backend", default="numpy")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from core.algonauts2023.dataset import open_dataset
    from core.encoding.estimators import OLS
    from core.encoding.fitting import load_features
    from core.encoding.metrics import noise_normalized_score, pearson_r
    from core.encoding.splits import holdout_split

    n_train = args.n_train or (300 if args.quick else 1000)
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.data or get_data(args.work, n_train, 100)
    subject = open_dataset(data, [args.subject]).subject(args.subject)
    feat_dir = args.features or get_features(subject, args.work, args.n_components)
    feat = load_features([feat_dir], subject.n_train, subject.n_test)[0]
    X = np.asarray(feat.train, dtype=np.float32)
    fit_rows, val_rows = holdout_split(subject.n_train, 0.1, args.seed)

    rows = []
    for hemi in ("lh", "rh"):
        Y = np.asarray(subject.fmri(hemi), dtype=np.float32)
        r_dev, t_dev = devkit(X[fit_rows], X[val_rows], Y[fit_rows], Y[val_rows])
        r_ours, t_ours, model = ours(X, Y, val_rows, args.backend)
        r_ols = OLS().fit(X[fit_rows], Y[fit_rows]).score(X[val_rows], Y[val_rows])
        w0 = time.perf_counter()
        pearson_r(Y[val_rows], model.predict(X[val_rows]))
        t_corr = time.perf_counter() - w0
        nc = subject.noise_ceiling(hemi)
        rows.append({
            "hemi": hemi, "n_vertices": int(Y.shape[1]), "devkit_s": t_dev, "ours_s": t_ours,
            "speedup": t_dev / t_ours,
            "median_r_devkit": float(np.median(r_dev)), "median_r_ours": float(np.median(r_ours)),
            "mean_r_devkit": float(np.mean(r_dev)), "mean_r_ours": float(np.mean(r_ours)),
            "fraction_vertices_improved": float(np.mean(r_ours > r_dev)),
            "nc_score_devkit": None if nc is None else noise_normalized_score(r_dev, nc),
            "nc_score_ours": None if nc is None else noise_normalized_score(r_ours, nc),
            "ols_parity_max_abs_diff": float(np.nanmax(np.abs(r_ols - r_dev))),
            "our_vectorised_r_seconds": t_corr,
        })
    t_dev = sum(r["devkit_s"] for r in rows)
    t_ours = sum(r["ours_s"] for r in rows)
    print(f"{subject.name}: {subject.n_train} training images ({len(val_rows)} held out), "
          f"{X.shape[1]} features, {sum(r['n_vertices'] for r in rows)} vertices; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    for r in rows:
        nc = "" if r["nc_score_devkit"] is None else (
            f"; NC-normalised {r['nc_score_devkit']:.1f}% -> {r['nc_score_ours']:.1f}%")
        print(f"  {r['hemi']}: devkit {r['devkit_s']:.2f} s, ours {r['ours_s']:.2f} s ({r['speedup']:.1f}x); "
              f"median val r devkit {r['median_r_devkit']:.3f} -> ours {r['median_r_ours']:.3f} (higher for "
              f"{100 * r['fraction_vertices_improved']:.0f}% of vertices){nc}; "
              f"our OLS vs devkit r: max |diff| {r['ols_parity_max_abs_diff']:.1e}")
    print(f"  both hemispheres: devkit {t_dev:.2f} s, ours {t_ours:.2f} s -> {t_dev / t_ours:.1f}x faster")
    print(json.dumps({"rows": rows, "devkit_s": t_dev, "ours_s": t_ours, "speedup": t_dev / t_ours,
                      "features": str(feat_dir), "data": str(data)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
