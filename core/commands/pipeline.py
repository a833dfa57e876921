"""``python -m core pipeline``: features, encoding with validation, refit, submission, in one command.

    python -m core pipeline --data DIR --subjects 1 [2 ...] --model NAME [--weights WEIGHTS] \\
        --layers L [L ...] --out OUT [--force] [--device cpu|cuda]
        [--estimator ridge|ols|banded|kernel_ridge|pls|elasticnet] [--reduction pca|pool|none]
        [--n-components K] [--pool-size S]

Writes ``OUT/submission.zip`` (Algonauts 2023 layout, validated) and ``OUT/metrics.json``
(``{"subjXX": {lh_median_r, rh_median_r, roi_median_r, noise_normalized}, "seconds": {...}}``;
``noise_normalized`` is the challenge score in percent over both hemispheres, null without noise
ceilings). An Algonauts 2021 (videos) dataset writes ``OUT/mini_track.zip`` and/or
``OUT/full_track.zip`` instead. Everything is checked before any work starts; on an error nothing
is written to OUT. OUT follows the rule of every command that writes a folder
(:mod:`core.util.outdir`): new or empty, or ``--force``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from core.commands.extract import WEIGHTS_HELP
from core.encoding.fitting import ESTIMATORS
from core.util import outdir
from core.util.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pipeline", help="extract, fit, validate, refit and write the submission zip + metrics",
                       description=__doc__.split("\n\n")[0])
    add_input_args(p)
    p.add_argument("--layers", required=True, nargs="+", metavar="L", help="layers (concatenated; banded: one band each)")
    p.add_argument("--out", required=True, type=Path,
                   help=f"output directory (submission.zip, metrics.json); {outdir.RULE}")
    p.add_argument("--force", action="store_true", help=outdir.FORCE_HELP)
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--estimator", choices=ESTIMATORS, default="ridge",
                   help="default: ridge (per-vertex CV alpha; solved in the dual when features outnumber images)")
    p.add_argument("--resolution", type=int, default=224, help="image side in pixels (default 224)")
    p.add_argument("--reduction", choices=("pca", "pool", "none"), default="pool",
                   help="per layer: PCA on the training images, spatial pooling (conv layers), or none (default pool)")
    p.add_argument("--n-components", type=int, default=100, help="PCA components per layer (--reduction pca; default 100)")
    p.add_argument("--pool-size", type=int, default=7, help="pool conv maps to k x k per channel (default 7)")
    p.add_argument("--pls-components", type=int, default=10, help="PLS latent components (default 10)")
    p.add_argument("--alpha", type=float, default=0.01, help="elastic net alpha (default 0.01)")
    p.add_argument("--l1-ratio", type=float, default=0.5, help="elastic net L1 ratio (default 0.5)")
    p.add_argument("--response-ranks", type=int, nargs="+", default=None, metavar="K",
                   help="ridge estimators: candidate ranks of the fitted responses, chosen per vertex with alpha "
                        "by CV (reduced-rank regression, solved in the dual; 0 = the responses themselves; "
                        "default 0 8 16 32 64 128 256, 0 alone turns it off); Algonauts 2023 layout only")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out validation fraction (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of PCA and the validation split (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    v = p.add_argument_group("Algonauts 2021 (videos) datasets")
    v.add_argument("--frames", type=int, default=8, help="frames sampled per video (default 8)")
    v.add_argument("--tracks", nargs="+", choices=("mini_track", "full_track"), default=["mini_track", "full_track"],
                   help="challenge tracks to fit and submit (default both)")
    v.add_argument("--motion-energy", action="store_true", help="add pymoten motion-energy features")
    p.set_defaults(func=run)
    p.error = one_line_error  # type: ignore[method-assign]


def add_input_args(p: argparse.ArgumentParser) -> None:
    """``--data``, ``--subjects``, ``--model``, ``--weights`` (shared with ``search``)."""
    p.add_argument("--data", required=True, help="data directory holding subj01 ... subj08")
    p.add_argument("--subjects", required=True, nargs="+", metavar="N", help="subject numbers (1 2 ...)")
    p.add_argument("--model", required=True, help="torchvision model name (e.g. mobilenet_v2, alexnet)")
    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)


def one_line_error(message: str) -> None:
    """argparse's error as one line and exit 2 (no usage block), like every other bad input."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run(args: argparse.Namespace) -> int:
    from core.algonauts2021.dataset import is_2021_layout

    args.out = outdir.prepare_out(args.out, args.force)  # first: a refusal costs nothing
    return (_run_2021 if is_2021_layout(args.data) else _run_2023)(args)


def _in_work_dir(args: argparse.Namespace, produce) -> dict:
    """Run ``produce(work) -> (metrics, names)`` in a work folder beside ``--out``; move only ``names`` into it."""
    with outdir.work_dir(args.out, "pipeline") as work:
        metrics, names = produce(work)
        outdir.publish(work, args.out, names)
    return metrics


def _progress(args: argparse.Namespace):
    from core.util.progress import TqdmProgress

    return contextlib.nullcontext() if args.quiet else TqdmProgress(desc="pipeline")


def _run_2023(args: argparse.Namespace) -> int:
    from core.algonauts2023.pipeline import EncodingConfig, encode
    from core.runs.artifacts import METRICS, SUBMISSION

    cfg = EncodingConfig(
        data=str(args.data), subjects=list(args.subjects), model=args.model, weights=args.weights,
        layers=list(args.layers), device=args.device, estimator=args.estimator, resolution=args.resolution,
        reduction=args.reduction, n_components=args.n_components, pool_size=args.pool_size,
        val_fraction=args.val_fraction, seed=args.seed, pls_components=args.pls_components, alpha=args.alpha,
        l1_ratio=args.l1_ratio, response_ranks=args.response_ranks,
    ).checked()
    with _progress(args) as bar:
        metrics = _in_work_dir(args, lambda work: (encode(cfg, work, submission=True, progress=bar),
                                                       (SUBMISSION, METRICS)))
    for name in (f"subj{s:02d}" for s in cfg.subjects):
        m = metrics[name]
        nn = "n/a" if m["noise_normalized"] is None else f"{m['noise_normalized']:.1f}%"
        print(f"{name}: median r lh {m['lh_median_r']:.3f}, rh {m['rh_median_r']:.3f}; noise-normalised {nn}")
    print(f"wrote {args.out / SUBMISSION} and {args.out / METRICS} in {metrics['seconds']['total']:.0f} s")
    return 0


def _run_2021(args: argparse.Namespace) -> int:
    from core.features.motion_energy import MotionEnergyConfig
    from core.algonauts2021.pipeline import run_pipeline_2021, summary_lines
    from core.runs.artifacts import METRICS

    if args.response_ranks:
        raise UserError("--response-ranks: the Algonauts 2021 pipeline does not take it (search does)")

    def produce(work: Path):
        metrics = run_pipeline_2021(
            args.data, args.subjects, args.model, args.weights, args.layers, work, device=args.device,
            estimator=args.estimator, progress=bar, n_frames=args.frames, resolution=args.resolution,
            n_components=args.n_components, val_fraction=args.val_fraction, seed=args.seed, tracks=args.tracks,
            motion_energy=MotionEnergyConfig() if args.motion_energy else None,
        )
        return metrics, (*metrics["submissions"].values(), METRICS)

    with _progress(args) as bar:
        metrics = _in_work_dir(args, produce)
    print("\n".join(summary_lines(metrics)))
    written = ", ".join(str(args.out / n) for n in (*metrics["submissions"].values(), METRICS))
    print(f"wrote {written} in {metrics['seconds']['total']:.0f} s")
    return 0
