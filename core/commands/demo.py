"""``python -m core demo``: generate the synthetic demo dataset (Algonauts 2023 layout)."""

from __future__ import annotations

import argparse
from pathlib import Path

from core.util import outdir


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="generate the synthetic demo dataset",
        description=(
            "Generate the demo dataset: procedural images and simulated fMRI responses of visual cortex "
            "in the Algonauts 2023 layout (subjXX/training_split, test_split, roi_masks), with noise "
            "ceilings in noise_ceiling/subjXX and the simulation's ground truth in demo_metadata/. "
            "Deterministic: the same seed gives identical files."
        ),
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help=f"directory to write; {outdir.RULE}")
    p.add_argument("--force", action="store_true", help=outdir.FORCE_HELP)
    p.add_argument("--subjects", type=int, nargs="+", default=[1, 2], metavar="N", help="subject numbers (default: 1 2)")
    p.add_argument("--n-train", type=int, default=1000, metavar="N", help="training images per subject (default: 1000)")
    p.add_argument("--n-test", type=int, default=100, metavar="N", help="test images per subject (default: 100)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from core.algonauts2023.demo import check_params, generate_demo
    from core.util.progress import TqdmProgress

    check_params(args.subjects, args.n_train, args.n_test, args.seed)
    out = outdir.prepare_out(args.out, args.force)
    with TqdmProgress(desc="demo") as bar:
        outdir.generate_into(out, lambda d: generate_demo(d, subjects=args.subjects, n_train=args.n_train,
                                                          n_test=args.n_test, seed=args.seed, progress=bar))
    print(f"demo dataset written to {out}")
    return 0
