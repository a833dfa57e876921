"""``python -m core fit``: fit an encoding model for one subject, validate it, predict the test images.

    python -m core fit --data DIR --subject 1 --features FEAT_DIR [FEAT_DIR ...] \\
        --estimator ridge|ols|banded [--val-fraction 0.1 | --folds K] [--seed 0] --out OUT_DIR

Prints per-hemisphere median r, per-ROI median r and the noise-normalised score; writes
per-vertex r, test predictions and metrics.json into OUT_DIR (see ``core.runs.artifacts``).
"""

from __future__ import annotations

import argparse
import math

from core.util import outdir
from core.util.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit an encoding model (ridge, ols, banded) for one subject",
                       description="Fit an encoding model for one subject, validate it (held-out split or "
                                   "K folds over training images), refit on all training images and predict "
                                   "the test images. Writes per-vertex r, test predictions and metrics.json "
                                   "into --out.")
    p.add_argument("--data", required=True, help="data directory holding subj01 ... subj08")
    p.add_argument("--subject", required=True, help="subject number or name (1, 01, subj01)")
    p.add_argument("--features", required=True, nargs="+", metavar="DIR",
                   help="feature entries (train.npy, test.npy, meta.json); several are concatenated "
                        "(ridge, ols) or form one band each (banded)")
    p.add_argument("--estimator", choices=("ridge", "ols", "banded"), default="ridge",
                   help="ridge: per-vertex alpha by CV (default); ols: least squares; banded: one "
                        "regularisation per feature directory")
    val = p.add_mutually_exclusive_group()
    val.add_argument("--val-fraction", type=float, default=None,
                     help="hold out this fraction of training images for validation (default 0.1)")
    val.add_argument("--folds", type=int, default=None, help="validate by K-fold over training images instead")
    p.add_argument("--seed", type=int, default=0, help="seed of the validation split and CV folds (default 0)")
    p.add_argument("--cv", type=int, default=5, help="inner CV folds that choose alpha (default 5)")
    p.add_argument("--alphas", type=float, nargs="+", default=None,
                   help="alpha grid (default 10 values, 0.1 ... 1e8)")
    p.add_argument("--standardize", choices=("space", "feature", "none"), default="space",
                   help="space (default): centre features, scale each feature directory by one training "
                        "std (keeps PCA spectra); feature: z-score every feature; none: centre only")
    p.add_argument("--backend", default="auto", help="auto (torch_cuda if a GPU is present, else numpy), "
                                                    "numpy, torch, torch_cuda")
    p.add_argument("--out", required=True, help=f"results directory; {outdir.RULE}")
    p.add_argument("--force", action="store_true", help=outdir.FORCE_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def run(args: argparse.Namespace) -> int:
    from core.algonauts2023.dataset import open_dataset
    from core.encoding.fitting import fit_subject
    from core.runs import artifacts
    from core.encoding.splits import Validation

    if args.folds is not None:
        validation = Validation("kfold", n_folds=args.folds, seed=args.seed)
    else:
        validation = Validation("holdout", val_fraction=0.1 if args.val_fraction is None else args.val_fraction,
                                seed=args.seed)
    if args.cv < 2:
        raise UserError(f"--cv must be at least 2, got {args.cv}")
    out = outdir.prepare_out(args.out, args.force)
    ds = open_dataset(args.data, [args.subject])
    subject = ds.subject(args.subject)
    bar = None
    if not args.no_progress:
        from core.util.progress import TqdmProgress

        bar = TqdmProgress(desc=f"fit {subject.name}")
    try:
        result = fit_subject(subject, args.features, args.estimator, validation=validation, alphas=args.alphas,
                             cv=args.cv, backend=args.backend, standardize=args.standardize, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    out = artifacts.write_subject(out, result.arrays(), result.info)
    info = result.info
    v = info["validation"]
    split = (f"held-out {v['n_val']} of {v['n_train']} images" if v["kind"] == "holdout"
             else f"{v['n_folds']}-fold over {v['n_train']} images")
    print(f"{subject.name}: {info['estimator']['kind']} on {sum(f['n_features'] for f in info['features'])} features "
          f"({len(info['features'])} entr{'y' if len(info['features']) == 1 else 'ies'}), validation {split}, "
          f"seed {v['seed']}, backend {info['backend']}, {info['seconds']:.1f} s")
    for hemi, r in result.parts.items():
        m = r.metrics
        nn = m["noise_normalized"]
        line = f"  {hemi}: median r {_fmt(m['median_r'])}, mean r {_fmt(m['mean_r'])} over {m['n_vertices']} vertices"
        if nn is not None:
            line += f"; noise-normalised score {_fmt(nn['score'])}%"
        print(line)
        rois = [(name, s) for name, s in m["roi_r"].items() if name != "all vertices" and s["n_vertices"]]
        if rois:
            print("     " + ", ".join(f"{name} {_fmt(s['median'])}" for name, s in rois))
    print(f"results: {out}")
    return 0
