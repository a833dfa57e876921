"""``python -m core train``: train a multi-subject encoder on a trunk's layers; write the submission + metrics.

    python -m core train --data DIR --subjects 1 2 3 --model NAME --weights W --layers L [L ...] \\
        --out OUT [--device cpu|cuda] [--epochs N] [--finetune-blocks N]

Models: torchvision names (``mobilenet_v2``), ``timm:<name>`` (``timm:eva02_base_patch14_224.mim_in22k``)
or ``open_clip:<name>`` (``open_clip:ViT-B-16``). Phase 1 trains the head on cached trunk activations;
``--finetune-blocks N`` adds phase 2 (the last N trunk blocks trained end to end). Writes
``OUT/submission.zip`` (every subject) and ``OUT/metrics.json`` (per subject as ``pipeline`` writes
it, plus ``training``: the curve and the best epoch). The work happens in ``.OUT.train`` beside OUT,
checkpointed every epoch: the same command run again after a kill resumes there. Everything is
checked before any work starts; on an error nothing is written to OUT.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
from pathlib import Path

from core.commands.pipeline import one_line_error
from core.util import outdir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a multi-subject encoder (phase 1 frozen trunk, phase 2 fine-tuning)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="data directory holding subj01 ... subj08")
    p.add_argument("--subjects", required=True, nargs="+", metavar="N", help="subject numbers (1 2 ...)")
    p.add_argument("--model", required=True,
                   help="torchvision name, timm:<name> or open_clip:<name> (e.g. mobilenet_v2, timm:vit_base_patch14_dinov2)")
    p.add_argument("--weights", default=None,
                   help="default: imagenet-offline for mobilenet_v2, DEFAULT otherwise; a pretrained tag (open_clip), "
                        "a local file, or random")
    p.add_argument("--layers", required=True, nargs="+", metavar="L", help="tapped layers (readouts averaged)")
    p.add_argument("--out", required=True, type=Path,
                   help=f"output directory (submission.zip, metrics.json); {outdir.RULE}; a killed run resumes "
                        "from its checkpoint when the same command is run again")
    p.add_argument("--force", action="store_true", help=outdir.FORCE_HELP)
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--epochs", type=int, default=32,
                   help="phase-1 epochs at most: the cosine schedule's length (early stopping; default 32)")
    p.add_argument("--finetune-blocks", type=int, default=0, help="phase 2: unfreeze the last N trunk blocks (default 0: no phase 2)")
    p.add_argument("--finetune-epochs", type=int, default=3, help="phase-2 epochs at most (default 3)")
    p.add_argument("--resolution", type=int, default=224, help="image side in pixels (default 224)")
    p.add_argument("--batch-size", type=int, default=32, help="default 32")
    p.add_argument("--lr", type=float, default=6e-3, help="phase-1 learning rate (default 6e-3)")
    p.add_argument("--finetune-lr", type=float, default=1e-5, help="phase-2 learning rate (default 1e-5)")
    p.add_argument("--weight-decay", type=float, default=0.5, help="AdamW weight decay of the head (default 0.5)")
    p.add_argument("--dropout", type=float, default=0.6, help="dropout on the latents (default 0.6)")
    p.add_argument("--latents", type=int, default=256, help="readout latents per layer (default 256)")
    p.add_argument("--max-positions", type=int, default=196,
                   help="square maps with more positions are average-pooled to at most this many (default 196)")
    p.add_argument("--embedding-dim", type=int, default=32, help="group-PCA components of the output (default 32)")
    p.add_argument("--subject-rank", type=int, default=16, help="rank of each subject's own map (default 16)")
    p.add_argument("--ensemble", type=int, default=1,
                   help="encoders trained side by side from different initialisations, predictions averaged "
                        "(each costs about one more model's epochs; default 1)")
    p.add_argument("--patience", type=int, default=6, help="early stopping patience in epochs (default 6)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="held-out validation fraction (default 0.1)")
    p.add_argument("--no-ridge-head", dest="ridge_head", action="store_false",
                   help="skip the ridge head (a per-vertex RidgeCV on the trained latents blended into the predictions)")
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    p.error = one_line_error  # type: ignore[method-assign]


def run(args: argparse.Namespace) -> int:
    from core.runs.artifacts import METRICS, SUBMISSION, TRAINING_CURVE
    from core.training.trainer import TrainConfig, train
    from core.util.progress import TqdmProgress

    cfg = TrainConfig(
        data=str(args.data), subjects=list(args.subjects), model=args.model, weights=args.weights,
        layers=list(args.layers), device=args.device, resolution=args.resolution, seed=args.seed,
        epochs=args.epochs, finetune_blocks=args.finetune_blocks, finetune_epochs=args.finetune_epochs,
        batch_size=args.batch_size, lr=args.lr, finetune_lr=args.finetune_lr, weight_decay=args.weight_decay,
        dropout=args.dropout, latents=args.latents, max_positions=args.max_positions,
        embedding_dim=args.embedding_dim, subject_rank=args.subject_rank, ensemble=args.ensemble,
        patience=args.patience, val_fraction=args.val_fraction, ridge_head=args.ridge_head,
    ).checked()
    out = outdir.prepare_out(args.out, args.force)  # the work folder beside it resumes a killed run
    work = outdir.make_dir(out.parent / f".{out.name}.train", out)
    with contextlib.nullcontext() if args.quiet else TqdmProgress(desc="train") as bar:
        metrics = train(cfg, work, progress=bar)
    outdir.publish(work, out, (SUBMISSION, TRAINING_CURVE, METRICS))
    shutil.rmtree(work, ignore_errors=True)
    for name in (f"subj{s:02d}" for s in cfg.subjects):
        m = metrics[name]
        nn = "n/a" if m["noise_normalized"] is None else f"{m['noise_normalized']:.1f}%"
        print(f"{name}: median r lh {m['lh_median_r']:.3f}, rh {m['rh_median_r']:.3f}; noise-normalised {nn}")
    best = metrics["training"]["best"]
    print(f"best: phase {best['phase']} epoch {best['epoch']} (val {best['metric']} {best['score']:.4f})")
    head = metrics["training"]["ridge_head"]
    if "blend" in head:
        print(f"ridge head: val {head['metric']} {head['network']:.4f} (network) -> {head['blend']:.4f} (blend)")
    print(f"wrote {out / SUBMISSION} and {out / METRICS} in {metrics['seconds']['total']:.0f} s")
    return 0
