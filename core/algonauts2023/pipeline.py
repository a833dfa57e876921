"""The Algonauts 2023 pipeline: features -> encoding model per subject and hemisphere -> results.

``extract`` fills the feature cache; ``encode`` extracts, fits with validation and refits each
subject (``core.encoding.fitting``), then writes the result folder (``core.runs.artifacts``) and,
for pipeline runs, the submission zip. ``extract_task``, ``fit_task`` and ``pipeline_task`` are the
run kinds ``extract``, ``fit`` and ``pipeline`` (``core.runs.kinds``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Self, Sequence

import numpy as np

from core.algonauts2023.dataset import HEMIS, Subject, open_dataset, parse_subject
from core.algonauts2023.submission import build_submission
from core.encoding.fitting import ESTIMATORS, RIDGE_FAMILY, SubjectResult, fit_subject
from core.encoding.kernel import check_ranks
from core.encoding.lowrank import DEFAULT_RANKS
from core.encoding.metrics import ALL_VERTICES, noise_normalized_score
from core.encoding.splits import Validation
from core.features.backbones import check_layers, resolve_weights
from core.features.extraction import ExtractionConfig, FeatureEntry, extract_features, pick_device
from core.runs import artifacts
from core.runs.kinds import TaskContext, timed
from core.util.errors import UserError
from core.util.progress import Progress, report, scaled


# -- configs ------------------------------------------------------------------------------------
@dataclass
class FeatureConfig:
    """An extraction run: one backbone's layers for the images of one or more subjects."""

    data: str
    subjects: list[int]
    model: str = "mobilenet_v2"
    weights: str | None = None  # None: the model's default (the offline bundle for mobilenet_v2)
    layers: list[str] = field(default_factory=list)
    device: str | None = None  # None: cuda when available
    resolution: int = 224
    reduction: str = "pca"  # "pca" | "pool" | "none"
    n_components: int = 100  # pca
    pool_size: int = 2  # pool: k x k per channel
    seed: int = 0
    cache_dir: str | None = None  # feature cache root (default: the product's cache)

    @classmethod
    def from_dict(cls, config: dict) -> Self:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(config) - names)
        if unknown:
            raise UserError(f"unknown {cls.__name__} setting '{unknown[0]}' (known: {', '.join(sorted(names))})")
        missing = [f.name for f in fields(cls) if f.name in ("data", "subjects") and f.name not in config]
        if missing:
            raise UserError(f"{cls.__name__}: '{missing[0]}' is required")
        return cls(**config)

    def to_dict(self) -> dict:
        return asdict(self)

    def extraction(self) -> ExtractionConfig:
        return ExtractionConfig(model=self.model, weights=self.weights, layers=list(self.layers),
                                resolution=self.resolution, reduction=self.reduction,
                                n_components=self.n_components, pool_size=self.pool_size, seed=self.seed)

    def checked(self) -> Self:
        """This config with every setting validated and normalised; ``UserError`` on the first problem."""
        if not self.subjects:
            raise UserError("no subjects chosen")
        if self.reduction == "pool" and not 1 <= int(self.pool_size) <= 64:
            raise UserError(f"pool size must be between 1 and 64, got {self.pool_size}")
        if self.device not in (None, "cpu", "cuda"):
            raise UserError(f"unknown device '{self.device}' (use cpu or cuda)")
        ds = open_dataset(self.data, self.subjects)
        extraction = self.extraction().validated()
        info = resolve_weights(extraction.model, extraction.weights)
        check_layers(extraction.model, extraction.layers, info)
        if self.device == "cuda":
            pick_device("cuda")
        if extraction.reduction == "pca":
            n_train = min(ds.subject(s).n_train for s in self.subjects)
            if self.n_components > n_train - 1:
                raise UserError(f"{self.n_components} PCA components asked for, but a subject has only {n_train} "
                                "training images (choose fewer components)")
        return replace(self, data=str(ds.root.resolve()), subjects=[parse_subject(s) for s in self.subjects],
                       model=extraction.model, weights=info.spec, layers=extraction.layers,
                       resolution=extraction.resolution)


@dataclass
class EncodingConfig(FeatureConfig):
    """A fit or pipeline run: features, then an encoding model per subject and hemisphere.

    Default recipe: 7 x 7 average pooling of each layer, ridge with per-vertex CV alpha (solved in
    the dual when the pooled features outnumber the images). On the demo (MobileNetV2
    ``features.10``, 1,000 training images, held-out 10%) it scored 62.9% noise-normalised vs 59.1%
    for PCA-100, 61.1% for PCA-999 and 61.2% un-reduced, and fits faster than PCA-999 in the primal.
    The ridge estimators also choose, per vertex with alpha, the rank of their targets among
    ``response_ranks`` (:data:`~core.encoding.lowrank.DEFAULT_RANKS` by default): on the demo's
    2,000-image subject, ``features.6 features.10 features.17`` pooled, 69.1% -> 77.3% (142 s -> 207 s).
    """

    reduction: str = "pool"
    pool_size: int = 7
    estimator: str = "ridge"
    val_fraction: float = 0.1
    pls_components: int = 10  # pls
    alpha: float = 0.01  # elasticnet
    l1_ratio: float = 0.5  # elasticnet
    response_ranks: list[int] | None = None  # ridge family: candidate target ranks (None: DEFAULT_RANKS; [0]: off)

    def estimator_params(self) -> dict:
        """Settings of the estimators that take any (``pls``, ``elasticnet``; the ridge family's ranks)."""
        if self.estimator in RIDGE_FAMILY:
            return {"response_ranks": list(DEFAULT_RANKS if self.response_ranks is None else self.response_ranks)}
        return {"pls": {"n_components": int(self.pls_components)},
                "elasticnet": {"alpha": float(self.alpha), "l1_ratio": float(self.l1_ratio)}}.get(self.estimator, {})

    def checked(self) -> Self:
        if self.estimator == "pls" and self.pls_components < 1:
            raise UserError(f"PLS needs at least 1 component, got {self.pls_components}")
        if self.estimator == "elasticnet" and not (self.alpha > 0 and 0 <= self.l1_ratio <= 1):
            raise UserError(f"elastic net needs alpha > 0 and l1_ratio in [0, 1], got {self.alpha}, {self.l1_ratio}")
        if self.estimator not in ESTIMATORS:
            raise UserError(f"unknown estimator '{self.estimator}' (use one of: {', '.join(ESTIMATORS)})")
        if self.response_ranks is not None:
            check_ranks(self.response_ranks)
            if any(self.response_ranks) and self.estimator not in RIDGE_FAMILY:
                raise UserError(f"--response-ranks is for the ridge estimators ({', '.join(RIDGE_FAMILY)}), "
                                f"not {self.estimator}")
        if self.estimator == "banded" and len(self.layers) < 2:
            raise UserError("the banded estimator needs at least two layers (one band each)")
        if not 0.0 < self.val_fraction < 1.0:
            raise UserError(f"the validation fraction must be between 0 and 1, got {self.val_fraction}")
        return super().checked()

    @property
    def backend(self) -> str:
        return {None: "auto", "cpu": "numpy", "cuda": "torch_cuda"}[self.device]


def grid_configs(base: EncodingConfig, subjects: Sequence[int], models: Sequence[tuple[str, str | None, Sequence[str]]],
                 estimators: Sequence[str]) -> list[dict]:
    """One fit config per subject x (model, weights, layer) x estimator.

    ``models`` holds ``(model, weights, layers)``. The banded estimator takes all the layers of a
    model at once (one band each) instead of one layer at a time.
    """
    out = []
    for s in subjects:
        for model, weights, layers in models:
            for est in estimators:
                per_cell = [list(layers)] if est == "banded" else [[layer] for layer in layers]
                out += [replace(base, subjects=[s], model=model, weights=weights, layers=cell, estimator=est).to_dict()
                        for cell in per_cell]
    return out


# -- what runs do -------------------------------------------------------------------------------
def subject_summary(result: SubjectResult, subject: Subject) -> dict:
    """The per-subject entry of ``metrics.json``: median r per hemisphere and ROI, challenge score."""
    out: dict = {}
    for hemi in HEMIS:
        out[f"{hemi}_median_r"] = _number(result.parts[hemi].metrics["median_r"])
    out["roi_median_r"] = {
        hemi: {roi: _number(s["median"]) for roi, s in result.parts[hemi].metrics["roi_r"].items()
               if roi != ALL_VERTICES and s["n_vertices"]}
        for hemi in HEMIS
    }
    ceilings = [subject.noise_ceiling(h) for h in HEMIS]
    out["noise_normalized"] = None if any(c is None for c in ceilings) else _number(noise_normalized_score(
        np.concatenate([result.parts[h].val_r for h in HEMIS]), np.concatenate(ceilings)))
    return out


def _number(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def roi_rows(result: SubjectResult) -> list[dict]:
    rows = []
    for hemi in HEMIS:
        m = result.parts[hemi].metrics
        nn = (m["noise_normalized"] or {}).get("roi", {})
        for roi, s in m["roi_r"].items():
            rows.append({"hemi": hemi, "roi": roi, "n_vertices": s["n_vertices"], "median_r": _number(s["median"]),
                         "mean_r": _number(s["mean"]), "median_noise_normalized": _number(nn.get(roi, {}).get("median"))})
    return rows


def extract_subject(cfg: FeatureConfig, subj: Subject, progress: Progress | None,
                     log: Callable[[str], None] | None, timings: dict[str, float]) -> dict[str, FeatureEntry]:
    with timed(timings, "extract", log):
        return extract_features(subj.train_images, subj.test_images, cfg.extraction(), cache_dir=cfg.cache_dir,
                                device=cfg.device, progress=progress)


def extract(cfg: FeatureConfig, *, progress: Progress | None = None, log: Callable[[str], None] | None = None,
            timings: dict[str, float] | None = None) -> dict[str, dict[str, FeatureEntry]]:
    """Feature entries (cached) per subject name and layer."""
    timings = {} if timings is None else timings
    ds = open_dataset(cfg.data, cfg.subjects)
    n = len(cfg.subjects)
    return {ds.subject(s).name: extract_subject(cfg, ds.subject(s), scaled(progress, i / n, (i + 1) / n), log, timings)
            for i, s in enumerate(cfg.subjects)}


def write_result(out: Path, result: SubjectResult, subject: Subject) -> dict:
    """One subject's result folder (arrays, details, per-ROI table); returns its summary entry."""
    artifacts.write_subject(out / subject.name, result.arrays(), result.info)
    artifacts.write_roi_table(out / subject.name, roi_rows(result))
    return subject_summary(result, subject)


def write_summary(out: Path, metrics: dict, timings: dict, start: float, progress: Progress | None) -> dict:
    """``metrics`` plus the step timings, written last as the folder's ``metrics.json``."""
    metrics["seconds"] = {**timings, "total": round(time.perf_counter() - start, 3)}
    artifacts.write_summary(out, metrics)
    report(progress, 1.0, "done")
    return metrics


def write_submission(out: Path, subjects: Sequence[int], ds) -> None:
    """The submission zip of a result folder, from its subjects' test predictions."""
    predictions = {s: {h: artifacts.read_part(out / f"subj{s:02d}", h, "pred_test", mmap=True) for h in HEMIS}
                   for s in subjects}
    build_submission(artifacts.submission_file(out), predictions, ds)


def encode(cfg: EncodingConfig, out: Path, *, submission: bool, progress: Progress | None = None,
           log: Callable[[str], None] | None = None, timings: dict[str, float] | None = None) -> dict:
    """Extract, fit with validation and refit every subject; write results (and the submission) to ``out``.

    Writes ``out/subjXX/`` (per-vertex validation r, test predictions, per-ROI table ``roi_r.csv``,
    detailed ``metrics.json``), then ``out/submission.zip`` if asked, then ``out/metrics.json``
    (``{"subjXX": {lh_median_r, rh_median_r, roi_median_r, noise_normalized}, "seconds": {...}}``).
    """
    timings = {} if timings is None else timings
    start = time.perf_counter()
    ds = open_dataset(cfg.data, cfg.subjects)
    validation = Validation("holdout", val_fraction=cfg.val_fraction, seed=cfg.seed)
    metrics: dict = {}
    n = len(cfg.subjects)
    for i, s in enumerate(cfg.subjects):
        subj = ds.subject(s)
        step = scaled(progress, i / n, (i + 1) / n)
        entries = extract_subject(cfg, subj, scaled(step, 0.0, 0.6), log, timings)
        with timed(timings, "encode", log):
            result = fit_subject(subj, [entries[layer].path for layer in cfg.layers], cfg.estimator,
                                 validation=validation, backend=cfg.backend, params=cfg.estimator_params(),
                                 progress=scaled(step, 0.6, 1.0))
        metrics[subj.name] = write_result(out, result, subj)
        if log is not None:
            log(f"{subj.name}: median r " + ", ".join(f"{h} {v:.3f}" if (v := metrics[subj.name][f"{h}_median_r"]) is not None else f"{h} n/a" for h in HEMIS))
    if submission:
        with timed(timings, "submission", log):
            write_submission(out, cfg.subjects, ds)
    return write_summary(out, metrics, timings, start, progress)


def extract_task(ctx: TaskContext) -> dict:
    cfg = FeatureConfig.from_dict(ctx.config)
    entries = extract(cfg, progress=ctx.progress, log=ctx.log, timings=ctx.timings)
    listing = {name: {layer: str(e.path) for layer, e in layers.items()} for name, layers in entries.items()}
    artifacts.write_features(ctx.dir, listing)
    return {"features": listing}


def _encode_task(ctx: TaskContext, *, submission: bool) -> dict:
    return encode(EncodingConfig.from_dict(ctx.config), ctx.dir, submission=submission, progress=ctx.progress,
                  log=ctx.log, timings=ctx.timings)




def fit_task(ctx: TaskContext) -> dict:
    return _encode_task(ctx, submission=False)


def pipeline_task(ctx: TaskContext) -> dict:
    return _encode_task(ctx, submission=True)


extract_task.config = FeatureConfig
fit_task.config = EncodingConfig
pipeline_task.config = EncodingConfig
