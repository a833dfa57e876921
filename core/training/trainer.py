"""Training the multi-subject encoder: phase 1 on cached trunk activations, phase 2 partly fine-tuned.

``train(cfg, out)`` writes a result folder exactly like a ``pipeline`` run's (per subject: validation
r per vertex, test predictions, ``roi_r.csv``, ``metrics.json``; ``submission.zip``; the summary
``metrics.json`` with the same per-subject layout) plus the training curve, and a checkpoint after
every epoch. Started again on the same folder with the same settings it resumes from that
checkpoint; the result is the same as an uninterrupted run (every epoch's shuffling and dropout are
seeded from ``(seed, phase, epoch)``).

* Validation: a seeded held-out fraction of each subject's training images; the score that early
  stopping and the best-state choice watch is the mean over subjects of the noise-normalised score
  (percent, the challenge's) when every subject ships a noise ceiling, else of the mean r over vertices
  (:func:`val_metric` names which; the curve records it).
* Phase 1 (``epochs``): the trunk frozen; its activations read from the on-disk fp16 cache
  (:mod:`core.training.activations`), kept on the GPU when there is one.
* Phase 2 (``finetune_blocks`` > 0, ``finetune_epochs``): from the best phase-1 state, the last N
  trunk blocks are unfrozen and trained end to end from the decoded-image cache (the trunk in
  mixed precision on CUDA, the head in fp32; the trunk's normalisation statistics stay frozen).
* Test predictions come from the best state (by validation score) of either phase.
* Ridge head (``ridge_head``, on by default): after training, per subject, a :class:`RidgeCV` (alpha per
  vertex by 5-fold CV on the fit rows only; skipped when they are too few) maps the best state's latents to that subject's vertices;
  the validation r and the test predictions are its equal-weight blend with the network's
  (:func:`blend`). ``metrics.json``'s ``training.ridge_head`` records both scores.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Self

import numpy as np

from core.algonauts2023.dataset import HEMIS, open_dataset
from core.viz.surfaces import N_FSAVERAGE
from core.algonauts2023.pipeline import FeatureConfig, roi_rows, subject_summary
from core.algonauts2023.submission import build_submission
from core.encoding.fitting import PartResult, SubjectResult
from core.encoding.estimators import RidgeCV
from core.encoding.metrics import noise_normalized_score, part_metrics, pearson_r
from core.encoding.splits import holdout_split
from core.features.backbones import feature_extractor, load_backbone, resolve_weights, trunk_blocks
from core.features.extraction import autocast, is_convnet, Normalizer, pick_device, resolve_precision
from core.features.images import build_image_cache
from core.runs import artifacts
from core.training.activations import cached_activations, flatten_map
from core.training.model import Ensemble, GroupEncoder, group_pca
from core.util.errors import UserError
from core.util.progress import Progress, report, scaled

CHECKPOINT_VERSION = 2  # 2: the best state chosen by val_metric
RIDGE_FOLDS = 5  # the ridge head's CV folds (fewer when the fit rows are few)


@dataclass
class TrainConfig(FeatureConfig):
    """A train run: the trunk and its tapped layers (from :class:`FeatureConfig`), the head, the schedule.

    Defaults measured on cached activations of MobileNetV2 ``features.6 features.10 features.17`` (CPU,
    one thread; noise-normalised score on the held-out 10%). 3-subject demo, 1,000 images each: lr 6e-4
    over 10 epochs underfit (64.1); 2e-3 reached 72.5; lr 3e-3 with a 16-epoch cosine schedule, batch 64
    and a 512-component embedding 76.5 where per-subject ridge scores 65.7. One subject with 2,000
    images (banded ridge: 71.9): that recipe 77.4, its best epoch the last; 32 epochs 78.7 (64: 78.8);
    with lr 6e-3 79.1 (embedding 128 or 512 alike there; at 16 epochs 128 was 78.1, 256 77.6, 1024 77.0);
    batch 32, the defaults, 79.5 (batch 16: 79.5; 48 epochs: 79.6). No gain: concatenated (76.1) or
    softmax-weighted (77.3) layer latents instead of their mean, 128 (75.4) or 512 (77.1) latents,
    dropout 0.4 or 0.75, weight decay 0.1, 0.25 or 1.0, an EMA of the weights (decay 0.99: 77.0),
    ``features.6`` unpooled (-0.3), per-channel standardisation; averaging 3 models seeded apart 79.6
    (at 16 epochs, 4 models +0.5) and ``ensemble`` 2 79.6, so it stays 1. The defaults on the 3-subject
    demo (the real ``train`` command, fresh caches): 79.1 vs ridge's 65.7, in 685 s (1.3x ridge's 524 s),
    1.3 GB. ``ridge_head`` (the real command, 2,000 images): the network's 79.54 blended to 79.86, 2.5 s;
    3-subject demo 79.06 to 79.45, 5.2 s. ``embedding_dim`` with the ridge head (2,000 images): 16 79.77,
    32 80.04 (again: 79.99), 64 79.72, 128 79.86-79.91; 3-subject demo: 32 79.48, 128 79.45; so 32.
    """

    reduction: str = "none"  # activations are not reduced: the readout learns the spatial pooling
    epochs: int = 32
    finetune_blocks: int = 0
    finetune_epochs: int = 3
    batch_size: int = 32
    lr: float = 6e-3
    finetune_lr: float = 1e-5
    weight_decay: float = 0.5
    dropout: float = 0.6
    latents: int = 256
    max_positions: int = 196  # larger square maps are average-pooled before the readout
    embedding_dim: int = 32
    subject_rank: int = 16
    ensemble: int = 1  # encoders trained side by side from different initialisations; predictions averaged
    patience: int = 6
    val_fraction: float = 0.1
    ridge_head: bool = True  # blend a per-vertex RidgeCV on the trained latents into the predictions
    resume_from: str | None = None  # a run folder whose checkpoint to continue from (a relaunched run)

    def checked(self) -> Self:
        ints = {"epochs": (1, 10_000), "finetune_blocks": (0, 1000), "finetune_epochs": (0, 1000),
                "batch_size": (2, 65_536), "latents": (1, 65_536), "max_positions": (1, 1 << 20), "embedding_dim": (1, 65_536),
                "subject_rank": (0, 4096), "ensemble": (1, 64), "patience": (1, 10_000)}
        for name, (lo, hi) in ints.items():
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise UserError(f"--{name.replace('_', '-')} must be an integer from {lo} to {hi} (got {v!r})")
        if not isinstance(self.ridge_head, bool):
            raise UserError(f"ridge_head must be true or false (got {self.ridge_head!r})")
        for name, lo, hi in (("lr", 0.0, 1.0), ("finetune_lr", 0.0, 1.0), ("weight_decay", 0.0, 100.0),
                             ("dropout", 0.0, 0.99), ("val_fraction", 0.0, 0.9)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not lo <= float(v) <= hi or (name != "dropout" and float(v) == lo):
                raise UserError(f"--{name.replace('_', '-')} must be in {'[' if name == 'dropout' else '('}{lo:g}, {hi:g}] "
                                f"(got {v!r})")
        if self.resume_from is not None and not Path(self.resume_from).is_dir():
            raise UserError(f"{self.resume_from}: no run folder to resume from")
        if self.reduction != "none":
            raise UserError("training reads unreduced activations: reduction must be 'none'")
        cfg = super().checked()
        if cfg.finetune_blocks:
            net, _ = load_backbone(cfg.model, resolve_weights(cfg.model, "random"), resolution=cfg.resolution)
            blocks = trunk_blocks(net)
            if cfg.finetune_blocks > len(blocks):
                raise UserError(f"--finetune-blocks {cfg.finetune_blocks}: {cfg.model} has {len(blocks)} blocks")
        ds = open_dataset(cfg.data, cfg.subjects)
        for s in cfg.subjects:
            holdout_split(ds.subject(s).n_train, cfg.val_fraction, cfg.seed)  # enough images on both sides
        return cfg

    def digest(self) -> str:
        """What a checkpoint must match to be resumed (everything but the schedule's length and the
        ridge head, which runs after the epochs)."""
        d = {k: v for k, v in asdict(self).items()
             if k not in ("epochs", "finetune_epochs", "patience", "device", "resume_from", "ridge_head")}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# -- data ---------------------------------------------------------------------------------------
@dataclass
class Subject:
    number: int
    name: str
    responses: np.ndarray  # (n_train, V_lh + V_rh) float32, standardised on the fit rows
    mean: np.ndarray
    scale: np.ndarray
    n_lh: int
    fit_rows: np.ndarray
    val_rows: np.ndarray
    group_index: np.ndarray  # group-vertex index of each vertex
    noise_ceiling: np.ndarray | None  # (V_lh + V_rh) percent, None when the data ship none
    train_acts: object = None
    test_acts: object = None
    train_images: list = None
    test_images: list = None


def _load_subjects(cfg: TrainConfig) -> tuple[list[Subject], int, object]:
    ds = open_dataset(cfg.data, cfg.subjects)
    subjects, fs_indices = [], []
    for s in cfg.subjects:
        subj = ds.subject(s)
        fit, val = holdout_split(subj.n_train, cfg.val_fraction, cfg.seed)
        Y = np.concatenate([np.asarray(subj.fmri(h), dtype=np.float32) for h in HEMIS], axis=1)
        mean = Y[fit].mean(0)
        scale = Y[fit].std(0)
        scale = np.where(scale > 1e-8, scale, 1.0).astype(np.float32)
        Y = (Y - mean) / scale
        fs_indices.append(np.concatenate([subj.fsaverage_indices("lh"),
                                          subj.fsaverage_indices("rh") + N_FSAVERAGE]))
        ceilings = [subj.noise_ceiling(h) for h in HEMIS]
        nc = None if any(c is None for c in ceilings) else np.concatenate(ceilings)
        subjects.append(Subject(s, subj.name, Y, mean, scale, subj.n_vertices["lh"], fit, val, None, nc,
                                 train_images=list(subj.train_images), test_images=list(subj.test_images)))
    group = np.unique(np.concatenate(fs_indices))
    for sub, idx in zip(subjects, fs_indices):
        sub.group_index = np.searchsorted(group, idx)
    return subjects, len(group), ds


def on_device(arrays: list[list[np.ndarray]], device, share: float = 0.4) -> list[list | None]:
    """Each subject's ``arrays`` as tensors on ``device`` when that is a GPU and all of them fit in
    ``share`` of its free memory (one budget for all subjects, so the training keeps the rest); else
    ``None`` for each. Copied in chunks: a memory-mapped cache is never read into host memory whole.
    Batches gathered on the GPU cost a training step no host-to-device copy of its data."""
    import torch

    none = [None] * len(arrays)
    if device.type != "cuda":
        return none
    free = torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if sum(a.nbytes for group in arrays for a in group) >= share * free:
        return none
    out = []
    for group in arrays:
        tensors = []
        for a in group:
            t = torch.empty(a.shape, dtype=getattr(torch, a.dtype.name), device=device)
            step = max(1, (256 << 20) // max(1, a[:1].nbytes))
            for i in range(0, len(a), step):
                t[i:i + step].copy_(torch.from_numpy(np.array(a[i:i + step])))  # a writable copy of the chunk
            tensors.append(t)
        out.append(tensors)
    return out


def _rows_on(rows: np.ndarray, device):
    import torch

    return torch.from_numpy(rows).to(device, non_blocking=True)


class Source:
    """Batches of one subject's tapped-layer activations: from the fp16 cache (phase 1), or from their
    copies on the GPU (``resident``, from :func:`on_device`)."""

    def __init__(self, acts, device, resident: list | None = None):
        self.acts, self.device, self.resident = acts, device, resident

    def __call__(self, rows: np.ndarray):
        import torch

        if self.resident is not None:
            idx = _rows_on(rows, self.device)
            return [a.index_select(0, idx).float() for a in self.resident]
        return [torch.from_numpy(a).to(self.device) for a in self.acts.batch(rows)]


class TrunkSource:
    """Batches through the (partly trainable) trunk from the decoded-image cache (phase 2), or from its
    copy on the GPU (``resident``: ``[pixels]``, from :func:`on_device`)."""

    def __init__(self, extractor, layers, pixels, norm, device, precision, resident: list | None = None):
        self.extractor, self.layers, self.pixels = extractor, layers, pixels
        self.norm, self.device, self.precision, self.resident = norm, device, precision, resident

    def __call__(self, rows: np.ndarray):
        import torch

        if self.resident is not None:
            batch = self.resident[0].index_select(0, _rows_on(rows, self.device))
        else:
            batch = torch.from_numpy(np.ascontiguousarray(self.pixels[rows]))
        with autocast(self.device, self.precision):
            out = self.extractor(self.norm(batch))
        return [flatten_map(out[layer]).float() for layer in self.layers]


# -- training -----------------------------------------------------------------------------------
def epoch_batches(subjects: list[Subject], batch_size: int, seed: int, phase: int, epoch: int):
    rng = np.random.default_rng([seed, phase, epoch])
    chunks = []
    for s, sub in enumerate(subjects):
        perm = rng.permutation(sub.fit_rows)
        chunks += [(s, np.sort(perm[i:i + batch_size])) for i in range(0, len(perm), batch_size)
                   if len(perm[i:i + batch_size]) > 1]  # BatchNorm needs two rows
    order = rng.permutation(len(chunks))
    return [chunks[i] for i in order]


def run_epoch(model, opt, scaler, sources, targets, batches, device,
              step_done: Callable[[int, float], None] | None = None) -> list[float]:
    """One pass over ``batches`` (``(subject, rows)``): MSE on the standardised responses (the mean of an
    ensemble's members' own), one optimiser step per batch. The head runs in fp32 (a fine-tuned trunk in
    its source's mixed precision): under autocast it cast its weights and inputs to and fro in every step,
    kernels that cost more than its own arithmetic. Returns the batch losses. ``step_done(b, loss)`` hears
    of batch ``b`` once batch ``b + 1`` is queued, so reading the loss never leaves a GPU idle."""
    import torch

    model.train()
    losses = []
    for b, (s, rows) in enumerate(batches):
        x = sources[s](rows)
        y = targets[s].index_select(0, _rows_on(rows, targets[s].device)).to(device, non_blocking=True)
        pred = model(x, s)
        loss = torch.nn.functional.mse_loss(pred, y.expand_as(pred))  # an ensemble: (members, B, V)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.detach())
        if step_done is not None and b:
            step_done(b - 1, float(losses[-2]))
    if step_done is not None and losses:
        step_done(len(losses) - 1, float(losses[-1]))
    return [float(v) for v in losses]


def _predict(model, source, rows: np.ndarray, subject: int, batch_size: int,
             latents: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Predictions of ``rows`` (eval mode, batches) and, with ``latents``, from the same pass over the source
    (a fine-tuned trunk runs once), the latents the ridge head reads (an ensemble: its members' side by side)."""
    import torch

    members = model.members if isinstance(model, Ensemble) else [model]
    model.eval()
    preds, lats = [], []
    with torch.no_grad():
        for i in range(0, len(rows), batch_size):
            x = source(rows[i:i + batch_size])
            preds.append(model(x, subject).float().cpu().numpy())
            if latents:
                lats.append(torch.cat([m.latent(x) for m in members], 1).float().cpu().numpy())
    return np.concatenate(preds), (np.concatenate(lats) if latents else None)


def val_metric(subjects: list[Subject]) -> str:
    """The validation score's kind: ``"noise-normalised"`` when every subject has a noise ceiling, else ``"mean r"``."""
    return "noise-normalised" if all(sub.noise_ceiling is not None for sub in subjects) else "mean r"


def validate(model, sources, subjects, batch_size, device) -> tuple[float, dict, list[np.ndarray]]:
    """(validation score, per-subject median r, per-subject r per vertex): the score as :func:`val_metric` says."""
    rs = []
    for s, sub in enumerate(subjects):
        pred, _ = _predict(model, sources[s], sub.val_rows, s, batch_size)
        rs.append(pearson_r(sub.responses[sub.val_rows], pred))
    per_subject = {sub.name: float(np.nanmedian(r)) for sub, r in zip(subjects, rs)}
    return _score(subjects, rs), per_subject, rs


def blend(net: np.ndarray, ridge: np.ndarray) -> np.ndarray:
    """The equal-weight blend of two predictions of the same rows, each vertex's ridge prediction first
    scaled to the network's standard deviation over those rows (ridge's shrinkage would otherwise set the
    weight). The weight is fixed at 0.5, not fitted: the network's predictions of its own training rows
    are fitted, so a CV of the weight on those rows would favour it, and the validation rows stay unseen.
    Measured (one subject, 2,000 images): 0.5 lifted the network's 79.5 to 79.9-80.0 noise-normalised."""
    sn, sr = net.std(0), ridge.std(0)
    ratio = np.where(sr > 1e-12, sn / np.where(sr > 1e-12, sr, 1.0), 0.0)
    return (0.5 * (net + ridge * ratio)).astype(np.float32)


def _score(subjects: list[Subject], rs: list[np.ndarray]) -> float:
    if val_metric(subjects) == "mean r":
        return float(np.mean([np.nanmean(r) for r in rs]))
    return float(np.mean([noise_normalized_score(r, sub.noise_ceiling) for sub, r in zip(subjects, rs)]))


def _state(module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def train(cfg: TrainConfig, out: Path, *, progress: Progress | None = None,
          log: Callable[[str], None] | None = None, timings: dict[str, float] | None = None) -> dict:
    """Train, validate and predict; write the result folder ``out`` (see the module docstring)."""
    import torch

    log = log or (lambda _m: None)
    timings = {} if timings is None else timings
    start = time.perf_counter()
    out = Path(out)
    device = pick_device(cfg.device)
    precision = resolve_precision("auto", device)
    info = resolve_weights(cfg.model, cfg.weights)
    subjects, n_group, ds = _load_subjects(cfg)
    metric = val_metric(subjects)

    # the trunk: built once, only when something needs it
    trunk: dict = {}

    def extractor():
        if "x" not in trunk:
            net, _ = load_backbone(cfg.model, info, resolution=cfg.resolution, seed=cfg.seed)
            ex = feature_extractor(net, cfg.model, list(cfg.layers)).eval().to(device)
            if is_convnet(cfg.model):
                ex = ex.to(memory_format=torch.channels_last)
            trunk["x"], trunk["blocks"] = ex, trunk_blocks(net)
        return trunk["x"]

    # 1. cached activations (one forward pass over each image list, ever)
    t0 = time.perf_counter()
    n_sub = len(subjects)
    for i, sub in enumerate(subjects):
        step = scaled(progress, 0.25 * i / n_sub, 0.25 * (i + 1) / n_sub)
        kw = dict(resolution=cfg.resolution, device=device, seed=cfg.seed, cache_dir=cfg.cache_dir)
        sub.train_acts = cached_activations(sub.train_images, extractor, info, cfg.layers,
                                            progress=scaled(step, 0.0, 0.9), **kw)
        sub.test_acts = cached_activations(sub.test_images, extractor, info, cfg.layers,
                                           progress=scaled(step, 0.9, 1.0), **kw)
    timings["activations"] = round(time.perf_counter() - t0, 3)
    log(f"trunk activations ready in {timings['activations']:.1f} s")

    # 2. the head, with its frozen group-PCA embedding
    t0 = time.perf_counter()
    embedding = group_pca([sub.responses[sub.fit_rows] for sub in subjects], [sub.group_index for sub in subjects],
                          n_group, cfg.embedding_dim, seed=cfg.seed)
    timings["group_pca"] = round(time.perf_counter() - t0, 3)
    shapes = [tuple(a.shape[1:]) for a in subjects[0].train_acts.arrays]
    torch.manual_seed(cfg.seed)
    members = [GroupEncoder(shapes, embedding, [sub.group_index for sub in subjects], latents=cfg.latents,
                            subject_rank=cfg.subject_rank, dropout=cfg.dropout, max_positions=cfg.max_positions)
               for _ in range(cfg.ensemble)]
    model = (members[0] if cfg.ensemble == 1 else Ensemble(members)).to(device)
    targets = [torch.from_numpy(sub.responses).to(device) for sub in subjects]  # on the GPU when there is one
    sources = [Source(sub.train_acts, device, resident)
               for sub, resident in zip(subjects, on_device([sub.train_acts.arrays for sub in subjects], device))]

    # 3. resume
    ckpt = None
    for folder in [out] + ([Path(cfg.resume_from)] if cfg.resume_from else []):
        try:
            ckpt = artifacts.read_checkpoint(folder)
        except UserError as exc:
            log(f"{exc}: not resuming from it")
        if ckpt is not None:
            log(f"checkpoint found in {folder}")
            break
    if ckpt is not None and (ckpt.get("digest"), ckpt.get("version")) != (cfg.digest(), CHECKPOINT_VERSION):
        log("checkpoint in the run folder is for other settings: starting afresh")
        ckpt = None
    curve: list[dict] = [] if ckpt is None else list(ckpt["curve"])
    best = None if ckpt is None else ckpt["best"]
    phases = [(1, cfg.epochs)] + ([(2, cfg.finetune_epochs)] if cfg.finetune_blocks and cfg.finetune_epochs else [])
    total_epochs = sum(n for _, n in phases)
    t_train = time.perf_counter()
    for phase, n_epochs in phases:
        if ckpt is not None and ckpt["phase"] > phase:
            continue
        trainable: list[str] = []
        if phase == 2:
            ex = extractor()
            if best is not None:
                model.load_state_dict(best["head"])
            blocks = trunk["blocks"][-cfg.finetune_blocks:]
            for name, p in ex.named_parameters():
                bare = name.removeprefix("net.")
                p.requires_grad_(any(bare.startswith(b + ".") for b in blocks))
                if p.requires_grad:
                    trainable.append(name)
            pixels = [build_image_cache(sub.train_images, cfg.resolution, cache_dir=cfg.cache_dir).array()
                      for sub in subjects]
            norm = Normalizer(info.mean, info.std, device, is_convnet(cfg.model))
            sources = None  # phase 1's copies on the GPU make way for the pixels
            sources = [TrunkSource(ex, cfg.layers, px, norm, device, precision, resident)
                       for px, resident in zip(pixels, on_device([[px] for px in pixels], device))]
            groups = [{"params": list(model.parameters()), "weight_decay": cfg.weight_decay},
                      {"params": [p for n, p in ex.named_parameters() if n in trainable], "weight_decay": 0.01}]
            opt = torch.optim.AdamW(groups, lr=cfg.finetune_lr)
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, n_epochs))
        first, bad = 1, 0
        if ckpt is not None and ckpt["phase"] == phase:
            model.load_state_dict(ckpt["head"])
            if phase == 2:
                extractor().load_state_dict(ckpt["trunk"], strict=False)
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            first, bad = ckpt["epoch"] + 1, ckpt["bad_epochs"]
            if ckpt["stopped"]:
                first = n_epochs + 1
            log(f"resumed phase {phase} after epoch {ckpt['epoch']}")
        ckpt = None
        scaler = torch.amp.GradScaler("cuda", enabled=phase == 2 and precision == "fp16")
        stopped = False
        for epoch in range(first, n_epochs + 1):
            te = time.perf_counter()
            torch.manual_seed(cfg.seed * 1_000_003 + phase * 10_007 + epoch)  # dropout: the same after a resume
            batches = epoch_batches(subjects, cfg.batch_size, cfg.seed, phase, epoch)
            before = sum(n for p, n in phases if p < phase) + epoch - 1

            def step_done(b: int, loss: float) -> None:
                report(scaled(progress, 0.25, 0.9), (before + (b + 1) / len(batches)) / total_epochs,
                       f"phase {phase} epoch {epoch}/{n_epochs}: loss {loss:.3f}")

            losses = run_epoch(model, opt, scaler, sources, targets, batches, device, step_done)
            sched.step()
            score, per_subject, _ = validate(model, sources, subjects, cfg.batch_size, device)
            improved = best is None or score > best["score"]
            if improved:
                best = {"score": score, "phase": phase, "epoch": epoch, "head": _state(model),
                        "trunk": {n: p.detach().clone() for n, p in extractor().named_parameters() if n in trainable}
                        if phase == 2 else None}
                bad = 0
            else:
                bad += 1
            stopped = bad >= cfg.patience
            curve.append({"phase": phase, "epoch": epoch, "train_loss": float(np.mean(losses)),
                          "val_score": score, "val_metric": metric, "val_median_r": per_subject, "best": improved,
                          "seconds": round(time.perf_counter() - te, 3)})
            artifacts.write_checkpoint(out, {
                "version": CHECKPOINT_VERSION, "digest": cfg.digest(), "phase": phase, "epoch": epoch,
                "head": _state(model), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "trunk": {n: p.detach().clone() for n, p in extractor().named_parameters() if n in trainable}
                if phase == 2 else None,
                "best": best, "bad_epochs": bad, "stopped": stopped, "curve": curve})
            artifacts.write_training_curve(out, curve)
            log(f"phase {phase} epoch {epoch}: train loss {curve[-1]['train_loss']:.4f}, val {metric} {score:.4f}"
                + (" (best)" if improved else ""))
            if stopped:
                log(f"early stop in phase {phase} after epoch {epoch} (no improvement in {cfg.patience} epochs)")
                break
    timings["train"] = round(time.perf_counter() - t_train, 3)

    # 4. the best state: validation r and test predictions per subject
    t0 = time.perf_counter()
    model.load_state_dict(best["head"])
    if best["trunk"] is not None:
        ex = extractor()
        ex.load_state_dict(best["trunk"], strict=False)
        norm = Normalizer(info.mean, info.std, device, is_convnet(cfg.model))

        def source(images):
            return TrunkSource(ex, cfg.layers, build_image_cache(images, cfg.resolution, cache_dir=cfg.cache_dir)
                                .array(), norm, device, precision)
        val_sources = [source(sub.train_images) for sub in subjects]
        test_sources = [source(sub.test_images) for sub in subjects]
    else:  # without a phase 2, phase 1's sources (their copies on the GPU) serve again
        val_sources = sources if len(phases) == 1 else [Source(sub.train_acts, device) for sub in subjects]
        test_sources = [Source(sub.test_acts, device) for sub in subjects]
    metrics: dict = {}
    predictions: dict = {}
    rs, net_rs, tests, alphas = [], [], [], []
    folds = min(RIDGE_FOLDS, min(len(sub.fit_rows) for sub in subjects) // 2)  # two rows a fold at least
    use_head = cfg.ridge_head and folds >= 2
    if cfg.ridge_head and not use_head:
        log("ridge head skipped: too few fit rows for its cross-validation")
    for s, sub in enumerate(subjects):
        n_test = ds.subject(sub.number).n_test
        val, val_latents = _predict(model, val_sources[s], sub.val_rows, s, cfg.batch_size, use_head)
        test, test_latents = _predict(model, test_sources[s], np.arange(n_test), s, cfg.batch_size, use_head)
        net_rs.append(pearson_r(sub.responses[sub.val_rows], val))
        if use_head:  # fitted on the fit rows' latents and responses only
            tr = time.perf_counter()
            _, fit_latents = _predict(model, val_sources[s], sub.fit_rows, s, cfg.batch_size, latents=True)
            est = RidgeCV(cv=folds, seed=cfg.seed).fit(fit_latents, sub.responses[sub.fit_rows])
            val, test = blend(val, est.predict(val_latents)), blend(test, est.predict(test_latents))
            alphas.append(float(np.median(est.best_alphas_)))
            timings["ridge_head"] = round(timings.get("ridge_head", 0.0) + time.perf_counter() - tr, 3)
        rs.append(pearson_r(sub.responses[sub.val_rows], val))
        tests.append(test * sub.scale + sub.mean)
    net_score = _score(subjects, net_rs)
    head = {"network": net_score, "metric": metric}
    if use_head:
        head.update(blend=_score(subjects, rs), weight=0.5, median_alpha=dict(zip([s.name for s in subjects], alphas)))
        log(f"ridge head: val {metric} {net_score:.4f} (network) -> {head['blend']:.4f} (blend) "
            f"in {timings['ridge_head']:.1f} s")
    for s, sub in enumerate(subjects):
        subj = ds.subject(sub.number)
        test = tests[s]
        parts = {"lh": slice(0, sub.n_lh), "rh": slice(sub.n_lh, None)}
        hemis = {h: PartResult(h, rs[s][sl].astype(np.float32), test[:, sl].astype(np.float32),
                               part_metrics(rs[s][sl], subj.roi_masks(h), subj.noise_ceiling(h)))
                 for h, sl in parts.items()}
        result = SubjectResult(sub.name, hemis, {
            "subject": sub.name, "data": str(subj.root), "estimator": {"kind": "group-encoder"},
            "training": {"best_phase": best["phase"], "best_epoch": best["epoch"], "val_score": best["score"],
                         "ridge_head": use_head},
            "validation": {"kind": "holdout", "val_fraction": cfg.val_fraction, "seed": cfg.seed,
                           "n_fit": int(len(sub.fit_rows)), "n_val": int(len(sub.val_rows))},
            "hemispheres": {h: r.metrics for h, r in hemis.items()}, "n_test": int(subj.n_test)})
        artifacts.write_subject(out / sub.name, result.arrays(), result.info)
        artifacts.write_roi_table(out / sub.name, roi_rows(result))
        metrics[sub.name] = subject_summary(result, subj)
        predictions[sub.number] = {h: r.test_pred for h, r in hemis.items()}
        log(f"{sub.name}: median r lh {metrics[sub.name]['lh_median_r']}, rh {metrics[sub.name]['rh_median_r']}, "
            f"noise-normalised {metrics[sub.name]['noise_normalized']}")
    build_submission(artifacts.submission_file(out), predictions, ds)
    timings["predict"] = round(time.perf_counter() - t0, 3)
    best_of = {**{k: best[k] for k in ("score", "phase", "epoch")}, "metric": metric}
    metrics["training"] = {"curve": curve, "best": best_of, "ridge_head": head, "config": cfg.to_dict()}
    metrics["seconds"] = {**timings, "total": round(time.perf_counter() - start, 3)}
    artifacts.write_summary(out, metrics)
    report(progress, 1.0, "done")
    return metrics


def train_task(ctx) -> dict:
    """The ``train`` run kind: train into the run folder (a relaunch resumes from its checkpoint)."""
    metrics = train(TrainConfig.from_dict(ctx.config), ctx.dir, progress=ctx.progress, log=ctx.log,
                    timings=ctx.timings)
    return {k: v for k, v in metrics.items() if k != "training"}


train_task.config = TrainConfig
