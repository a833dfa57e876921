"""``python -m core search``: per-scope hyper-parameter search (Optuna), refit of the winners, submission.

    python -m core search --data DIR --subjects 1 --model NAME --weights W --layers L [L ...] \\
        --trials N --out OUT [--scope roi|class|hemisphere] [--timeout S] [--jobs J] [--device cpu|cuda]
        [--frames 4 8 16]

One Optuna study per scope (each ROI, ROI class or hemisphere; the hemispheres always) over layer,
PCA components (slices of one large PCA per layer) or pooling, estimator (ridge with per-vertex
CV alpha, banded ridge, multiple-kernel ridge - with pooling, optionally with each layer's global
average as more bands, weighted as their layers -, PLS, elastic net) and the targets it fits (the
scope's responses, or their first k principal components: reduced-rank regression), scored by
K-fold CV on the training images against the responses themselves. Each vertex then takes, among
the ``--top-trials`` best trials of every scope holding it, the ``--average-trials`` with the best CV r
on it; those are refit on all training images and the vertex's predictions are their average. Writes
``OUT/submission.zip``, ``OUT/metrics.json`` (as ``pipeline``), ``OUT/trials.csv`` and the study
``OUT/study.db``: running the same command again resumes a stopped search. Trials run in ``--jobs``
local processes, or as Ray tasks on the cluster at ``$BES_RAY_ADDRESS``. Everything is checked
before any work starts; on an error nothing is written to OUT.

On an Algonauts 2021 (videos) dataset (detected from its folders) the scopes are the mini-track
ROIs (V1 ... STS) and the whole brain, ``--frames`` (frames per clip) is searched too, and it
writes ``OUT/mini_track.zip`` and ``OUT/full_track.zip`` as ``pipeline`` does.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from core.commands.pipeline import add_input_args, one_line_error
from core.util import outdir

ESTIMATOR_CHOICES = ("ridge", "banded", "kernel", "pls", "elasticnet")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="hyper-parameter search per ROI / class / hemisphere (Optuna), then submit",
                       description=__doc__.split("\n\n")[0])
    add_input_args(p)
    p.add_argument("--layers", required=True, nargs="+", metavar="L", help="candidate layers")
    p.add_argument("--trials", required=True, type=int, help="trials per scope")
    p.add_argument("--out", required=True, type=Path,
                   help=f"output directory; one holding a search resumes it, otherwise {outdir.RULE}")
    p.add_argument("--force", action="store_true", help=outdir.FORCE_HELP)
    p.add_argument("--scope", choices=("roi", "class", "hemisphere"), default="roi", help="one study per ... (default roi)")
    p.add_argument("--timeout", type=float, default=None,
                   help="stop starting trials after S seconds, shared evenly by the subjects (a hemisphere, or a "
                        "2021 scope, without a finished trial still gets one, so that the search assembles)")
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--estimators", nargs="+", choices=ESTIMATOR_CHOICES, default=list(ESTIMATOR_CHOICES),
                   help="candidate estimators (default all)")
    p.add_argument("--n-components", type=int, default=1000,
                   help="PCA components per layer; trials use its first k (default 1000, at most images - 1)")
    p.add_argument("--pool-size", type=int, default=7,
                   help="also try k x k pooling of each layer, and with k > 1 each layer's global average as "
                        "kernel bands (default 7, with the kernel estimator the best on the demo; 0: PCA only)")
    p.add_argument("--folds", type=int, default=5, help="CV folds of the objective (default 5)")
    p.add_argument("--sampler", choices=("tpe", "gp"), default="tpe", help="Optuna sampler (default tpe)")
    p.add_argument("--top-trials", type=int, default=5, metavar="K",
                   help="each vertex chooses among the K best trials of every scope holding it (its ROI's or "
                        "class's, its hemisphere's), by its CV r (default 5; rerun a finished search to reassemble)")
    p.add_argument("--average-trials", type=int, default=5, metavar="K",
                   help="each vertex averages the predictions of the K trials it chose (default 5, the best on "
                        "the demo; 1: the best one; rerun a finished search to reassemble)")
    p.add_argument("--resolution", type=int, default=224, help="image side in pixels (default 224)")
    p.add_argument("--seed", type=int, default=0, help="seed of PCA, folds and sampler (default 0)")
    p.add_argument("--frames", type=int, nargs="+", default=[4, 8, 16], metavar="F",
                   help="Algonauts 2021 videos: candidate frames per clip (default 4 8 16)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    p.error = one_line_error  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    from core.runs.artifacts import METRICS, STUDY, SUBMISSION, TRIALS
    from core.search.layouts import summary_line
    from core.search.study import SearchConfig, run_search
    from core.util.progress import TqdmProgress

    out = args.out.expanduser()
    if not (out / STUDY).is_file():  # a folder holding a search resumes it (one with other settings is refused)
        out = outdir.prepare_out(out, args.force)
    cfg = SearchConfig(
        data=str(args.data), subjects=list(args.subjects), model=args.model, weights=args.weights,
        layers=list(args.layers), device=args.device, resolution=args.resolution, n_components=args.n_components,
        pool_size=args.pool_size, seed=args.seed, trials=args.trials, scope=args.scope, timeout=args.timeout,
        jobs=args.jobs, estimators=list(args.estimators), folds=args.folds, sampler=args.sampler,
        frames=list(args.frames), top_trials=args.top_trials,
        average_trials=args.average_trials,
    ).checked()
    outdir.make_dir(out, out)
    with contextlib.nullcontext() if args.quiet else TqdmProgress(desc="search") as bar:
        metrics = run_search(cfg, out, progress=bar)
    for name, entry in metrics.items():
        if isinstance(entry, dict) and "scopes" in entry:
            print(summary_line(name, entry))
    zips = [out / z for z in metrics.get("submissions", {}).values()] or [out / SUBMISSION]
    print(f"wrote {', '.join(map(str, zips))}, {out / METRICS} and {out / TRIALS} in {metrics['seconds']['total']:.0f} s")
    return 0
