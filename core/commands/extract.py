"""``python -m core extract``: extract (or reuse) backbone features of a subject's images.

Examples::

    python -m core extract --data DIR --subject 1 --model alexnet --weights DEFAULT --layers features.5 features.12
    python -m core extract --data DIR --subject 1 --model mobilenet_v2 --weights imagenet-offline \\
        --layers features.13 features.18 --reduction pca --n-components 500
    python -m core extract --train-dir imgs/train --test-dir imgs/test --model resnet50 --weights random --layers layer3
    python -m core extract --list-models
    python -m core extract --model resnet50 --list-layers

Prints one feature-entry folder per layer (stdout), for ``python -m core fit --features``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.util.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
WEIGHTS_HELP = ("default: the model's default weights (imagenet-offline for mobilenet_v2, works offline; DEFAULT, "
                "the official torchvision weights, for other models: downloaded once); or a torchvision enum name "
                "such as IMAGENET1K_V1, a .pt/.pth state-dict file, or random (explicitly untrained)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "extract", help="extract backbone features (cached) for a subject's images",
        description="Extract features of torchvision backbones for the training and test images, reduce them "
                    "(PCA fitted on training images, or pooling), and cache one entry per layer.",
    )
    src = p.add_argument_group("images")
    src.add_argument("--data", type=Path, help="dataset folder (Algonauts 2023 / NSD layout)")
    src.add_argument("--subject", type=int, help="subject number, with --data")
    src.add_argument("--train-dir", type=Path, help="folder of training images (instead of --data/--subject)")
    src.add_argument("--test-dir", type=Path, help="folder of test images (instead of --data/--subject)")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="mobilenet_v2", help="torchvision model name (default: mobilenet_v2)")
    m.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    m.add_argument("--layers", nargs="+", default=None, metavar="LAYER", help="layers to extract (see --list-layers)")
    m.add_argument("--resolution", type=int, default=224, help="image side in pixels (default 224)")
    r = p.add_argument_group("reduction")
    r.add_argument("--reduction", choices=("pca", "pool", "none"), default="pca")
    r.add_argument("--n-components", type=int, default=100, help="PCA components (default 100)")
    r.add_argument("--pool-size", type=int, default=2, help="pool conv maps to k x k (default 2)")
    r.add_argument("--pca-solver", choices=("auto", "randomized", "exact"), default="auto")
    r.add_argument("--power-iterations", type=int, default=1, help="randomized PCA power iterations (default 1)")
    r.add_argument("--memory-budget-mb", type=float, default=2048, help="PCA working memory budget (default 2048)")
    r.add_argument("--seed", type=int, default=0)
    x = p.add_argument_group("execution")
    x.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    x.add_argument("--batch-size", type=int, default=None, help="default: from free memory")
    x.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default: automatic)")
    x.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="auto: bf16/fp16 autocast on GPU, fp32 on CPU")
    x.add_argument("--cache-dir", type=Path, default=None, help="cache root (default: core.util.paths.cache_dir())")
    x.add_argument("--quiet", action="store_true", help="no progress bar")
    info = p.add_argument_group("information")
    info.add_argument("--list-models", action="store_true", help="list models and their weights, then exit")
    info.add_argument("--list-layers", action="store_true", help="list the layers of --model, then exit")
    p.set_defaults(func=run)
    return p


def _images_in(folder: Path) -> list[Path]:
    from core.util import fsaccess

    if not fsaccess.is_dir(folder):
        raise UserError(f"{folder}: not a folder")
    images = sorted(p for p in fsaccess.list_dir(folder) if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UserError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def _subject_images(args) -> tuple[list[Path], list[Path]]:
    if args.train_dir is not None:
        train = _images_in(args.train_dir)
        test = _images_in(args.test_dir) if args.test_dir is not None else []
        return train, test
    if args.data is None or args.subject is None:
        raise UserError("give --data DIR --subject N, or --train-dir DIR [--test-dir DIR]")
    from core.algonauts2023.dataset import open_dataset  # the lead's dataset module

    subj = open_dataset(args.data).subject(args.subject)
    return list(subj.train_images), list(subj.test_images)


def run(args) -> int:
    from core.features import backbones

    if args.list_models:
        for info in backbones.model_catalog(backbones.available_models()):
            opts = ", ".join(o.spec + ("" if o.available_offline else " (download)") for o in info.weights)
            print(f"{info.name}: weights {opts}; default {info.default_weights}")
        return 0
    if args.list_layers:
        weights = args.weights
        try:
            print("\n".join(backbones.list_layers(args.model, weights)))
        except BrokenPipeError:  # e.g. piped into head
            pass
        return 0
    if not args.layers:
        backbones.check_model(args.model)
        suggested = backbones.SUGGESTED_LAYERS.get(args.model, [])
        raise UserError(f"--layers is required (e.g. {' '.join(suggested[-2:]) or 'see --list-layers'})")

    from core.features.extraction import ExtractionConfig, extract_features
    from core.util.progress import TqdmProgress

    cfg = ExtractionConfig(
        model=args.model, weights=args.weights, layers=args.layers, resolution=args.resolution,
        reduction=args.reduction, n_components=args.n_components, pool_size=args.pool_size,
        batch_size=args.batch_size, memory_budget_mb=args.memory_budget_mb, seed=args.seed,
        pca_solver=args.pca_solver, power_iterations=args.power_iterations, precision=args.precision,
        num_workers=args.num_workers,
    ).validated()
    info = backbones.resolve_weights(cfg.model, cfg.weights)
    backbones.check_layers(cfg.model, cfg.layers, info)
    train, test = _subject_images(args)
    if info.is_random:
        print(f"note: {cfg.model} with RANDOM (untrained) weights, as asked", file=sys.stderr)
    bar = None if args.quiet else TqdmProgress(desc=f"extract {cfg.model}")
    try:
        entries = extract_features(train, test, cfg, cache_dir=args.cache_dir, device=args.device, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    for layer, entry in entries.items():
        ev = entry.meta.get("explained_variance_ratio_total")
        note = f" (PCA explains {ev:.1%} of the variance)" if ev is not None else ""
        print(f"{layer}: {entry.meta['n_train']}+{entry.meta['n_test']} images x {entry.meta['n_components']} "
              f"features{note}", file=sys.stderr)
        print(entry.path)
    return 0
