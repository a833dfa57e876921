"""The Algonauts 2021 pipeline: video features -> encoding per track -> metrics -> submission zips.

``run_pipeline_2021(data_dir, subjects, model, weights, layers, out, ...)`` extracts the clips'
features once (shared by all subjects, :mod:`core.features.clips`), then for every subject fits,
validates (seeded held-out clips) and refits the encoding model of each track with
:func:`core.encoding.fitting.fit_subject`, each track one part of a
:class:`core.algonauts2021.dataset.TrackSubject` (as each hemisphere is in 2023): the mini track's ROIs are fitted together (every voxel has its own model, so this equals one fit per
ROI) and summarised per ROI; the full track is the whole brain. It writes::

    OUT/subXX/{mini_track,full_track}_val_r.npy     validation Pearson r per voxel (mini: ROIs concatenated)
    OUT/subXX/{mini_track,full_track}_pred_test.npy test predictions (test clips x voxels)
    OUT/subXX/metrics.json                          details (core.runs.artifacts)
    OUT/subXX/roi_r.csv                             track, roi, n_voxels, median_r, mean_r, median_noise_normalized,
                                                    mean_nnc (the 2021 leaderboard's r / sqrt(reliability))
    OUT/mini_track.zip, OUT/full_track.zip          validated submissions (core.algonauts2021.submission)
    OUT/metrics.json                                written last (see ``summarise``)

In the run store, a run of kind :data:`TASK_KIND` (``"pipeline2021"``) executes
:func:`run_task`; its config (:class:`Pipeline2021Config`) is checked before the run is queued.
``read_roi_table``, ``wb_accuracy_image`` and ``list_runs_2021`` (searches on a 2021 dataset too) read results
back for the pages.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Optional, Self, Sequence

import numpy as np

from core.runs import workers
from core.features.backbones import check_layers, resolve_weights
from core.algonauts2021.dataset import (
    FULL_TRACK, MINI_TRACK, TRACK_ROIS, TRACKS, WB, Dataset2021, Subject2021, TrackSubject, open_dataset2021,
    track_of,
)
from core.util.errors import UserError
from core.encoding.fitting import ESTIMATORS, SubjectResult, fit_subject
from core.runs import artifacts
from core.features.extraction import ExtractionConfig, pick_device
from core.encoding.metrics import ALL_VERTICES, noise_normalized_correlation, roi_summary
from core.features.motion_energy import MotionEnergyConfig, extract_motion_energy
from core.util.progress import Progress, report, scaled
from core.runs.store import Run, RunStore
from core.encoding.splits import Validation
from core.algonauts2021.submission import build_submission2021, zip_name
from core.runs.kinds import ALIASES, timed
from core.features.clips import DEFAULT_N_FRAMES, extract_video_features



def check_request(dataset: Dataset2021, tracks: Sequence[str], estimator: str, extraction: ExtractionConfig,
                  n_frames: int, val_fraction: float,
                  motion_energy: MotionEnergyConfig | None = None) -> ExtractionConfig:
    """Everything checked before any work starts (``UserError`` with one line on the first problem)."""
    for track in tracks:
        if track not in TRACKS:
            raise UserError(f"unknown track '{track}' (use {' or '.join(TRACKS)})")
    if not tracks:
        raise UserError("no track chosen (mini_track, full_track or both)")
    for subj in dataset:
        for track in tracks:
            absent = [r for r in TRACK_ROIS[track] if r not in subj.files]
            if absent:
                raise UserError(f"{subj.name} has no {absent[0]} data: the {track} submission needs "
                                f"{', '.join(TRACK_ROIS[track])}")
    if estimator not in ESTIMATORS:
        raise UserError(f"unknown estimator '{estimator}' (use one of: {', '.join(ESTIMATORS)})")
    cfg = extraction.validated()
    if estimator == "banded" and len(cfg.layers) + (motion_energy is not None) < 2:
        raise UserError("the banded estimator needs at least two feature sets (layers or motion energy; one band each)")
    if motion_energy is not None:
        motion_energy.checked()
    check_layers(cfg.model, cfg.layers, resolve_weights(cfg.model, cfg.weights))
    if cfg.reduction == "pca" and cfg.n_components > dataset.n_train - 1:
        raise UserError(f"{cfg.n_components} PCA components asked for, but there are only {dataset.n_train} "
                        "training clips (choose fewer components)")
    if not 1 <= n_frames <= 256:
        raise UserError(f"frames per clip must be between 1 and 256 (got {n_frames})")
    Validation("holdout", val_fraction=val_fraction).splits(dataset.n_train)  # checks the fraction
    return cfg


def run_pipeline_2021(
    data_dir: str | os.PathLike,
    subjects: Sequence[int | str] | None,
    model: str,
    weights: str | None,
    layers: Sequence[str],
    out: str | os.PathLike,
    device: str | None = None,
    estimator: str = "ridge",
    progress: Optional[Progress] = None,
    *,
    tracks: Sequence[str] = TRACKS,
    n_frames: int = DEFAULT_N_FRAMES,
    resolution: int = 224,
    n_components: int = 100,
    val_fraction: float = 0.1,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    motion_energy: MotionEnergyConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Extract, fit with validation and refit every subject and track; write results and zips to ``out``.

    ``subjects=None`` takes every subject. ``motion_energy`` adds pymoten motion-energy features
    (:mod:`core.features.motion_energy`) to the layers' (one more band for ``banded``). Returns the summary
    also written to ``out/metrics.json``.
    """
    start = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(out).expanduser()
    tracks = [tracks] if isinstance(tracks, str) else list(tracks)
    dataset = open_dataset2021(data_dir, subjects, cache_dir=cache_dir)
    cfg = check_request(dataset, tracks, estimator,
                        ExtractionConfig(model=model, weights=weights, layers=list(layers), resolution=resolution,
                                         n_components=n_components, seed=seed), n_frames, val_fraction, motion_energy)
    tracks = [t for t in TRACKS if t in tracks]
    with timed(timings, "extract", log):
        entries = extract_video_features(dataset.train_videos, dataset.test_videos, cfg, n_frames=n_frames,
                                         cache_dir=cache_dir, device=device, progress=scaled(progress, 0.0, 0.4))
        feature_dirs = [entries[layer].path for layer in cfg.layers]
        if motion_energy is not None:
            me = extract_motion_energy(dataset.train_videos, dataset.test_videos, motion_energy, cache_dir=cache_dir,
                                       progress=scaled(progress, 0.4, 0.5))
            feature_dirs.append(me.path)
    validation = Validation("holdout", val_fraction=val_fraction, seed=seed)
    backend = {None: "auto", "cpu": "numpy", "cuda": "torch_cuda"}.get(device, "auto")
    predictions: Predictions = {}
    per_subject: dict[str, dict] = {}
    for i, subj in enumerate(dataset):
        view = TrackSubject(subj, tuple(tracks))
        step = scaled(progress, 0.5 + 0.45 * i / len(dataset.subjects), 0.5 + 0.45 * (i + 1) / len(dataset.subjects))
        with timed(timings, "encode", log):
            result = fit_subject(view, feature_dirs, estimator,
                                 validation=validation, backend=backend, progress=step)
        per_subject[subj.name] = write_subject_result(out, view, result, predictions)
    with timed(timings, "submission", log):
        write_submissions(out, predictions, dataset)
    metrics = {
        "dataset": dataset_summary(dataset),
        **per_subject,
        "submissions": {t: zip_name(t) for t in tracks},
        "features": [str(p) for p in feature_dirs],
        "seconds": {**timings, "total": round(time.perf_counter() - start, 3)},
    }
    artifacts.write_summary(out, metrics)
    report(progress, 1.0, "done")
    return metrics


Predictions = dict[str, dict[str, dict[int, np.ndarray]]]  # track -> ROI -> subject number -> test predictions


def write_subject_result(out: Path, view: TrackSubject, result: SubjectResult, predictions: Predictions) -> dict:
    """One subject's result folder (arrays, details, ``roi_r.csv``), its test predictions added to
    ``predictions`` for the submissions; returns its ``metrics.json`` entry (:func:`summarise`)."""
    add_leaderboard_scores(result, view)
    artifacts.write_subject(out / view.name, result.arrays(), result.info)
    artifacts.write_roi_table(out / view.name, _roi_rows(result))
    for track in result.parts:
        for roi, pred in view.split(track, result.parts[track].test_pred).items():
            predictions.setdefault(track, {}).setdefault(roi, {})[view.subject.number] = pred
    return summarise(result)


def write_submissions(out: Path, predictions: Predictions, dataset: Dataset2021) -> None:
    """One validated zip per track in ``predictions`` (``mini_track.zip``, ``full_track.zip``)."""
    for track in TRACKS:
        if track in predictions:
            build_submission2021(artifacts.submission_file(out, zip_name(track)), track, predictions[track], dataset)


def dataset_summary(dataset: Dataset2021) -> dict:
    return {"kind": "algonauts2021", "root": str(dataset.root), "n_train": dataset.n_train,
            "n_test": dataset.n_test, "subjects": [s.name for s in dataset]}


def run_task(ctx) -> dict:
    """Run-store task (kind ``"pipeline2021"``): ``ctx.config`` holds ``run_pipeline_2021``'s
    keyword arguments except ``out`` and ``progress`` (``data_dir``, ``subjects``, ``model``, ...;
    ``motion_energy`` as a dict of :class:`MotionEnergyConfig` fields or ``None``)."""
    config = dict(ctx.config)
    me = config.pop("motion_energy", None)
    return run_pipeline_2021(out=ctx.dir, progress=ctx.progress, log=ctx.log,
                             motion_energy=None if me is None else MotionEnergyConfig(**me), **config)


@dataclass
class Pipeline2021Config:
    """A run-store 2021 pipeline run: :func:`run_pipeline_2021`'s arguments but ``out`` and ``progress``.

    ``motion_energy`` is a dict of :class:`MotionEnergyConfig` fields (``{}``: its defaults) or ``None``.
    """

    data_dir: str
    subjects: Optional[list[int | str]] = None  # None: every subject
    model: str = "mobilenet_v2"
    weights: Optional[str] = None  # None: the model's default
    layers: list[str] = field(default_factory=list)
    device: Optional[str] = None  # None: cuda when available
    estimator: str = "ridge"
    tracks: list[str] = field(default_factory=lambda: list(TRACKS))
    n_frames: int = DEFAULT_N_FRAMES
    resolution: int = 224
    n_components: int = 100
    val_fraction: float = 0.1
    seed: int = 0
    cache_dir: Optional[str] = None
    motion_energy: Optional[dict] = None

    @classmethod
    def from_dict(cls, config: dict) -> Self:
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(config) - set(names))
        if unknown:
            raise UserError(f"unknown 2021 pipeline setting '{unknown[0]}' (known: {', '.join(sorted(names))})")
        if "data_dir" not in config:
            raise UserError("2021 pipeline: 'data_dir' is required")
        return cls(**config)

    def to_dict(self) -> dict:
        return asdict(self)

    def checked(self) -> Self:
        """This config validated as :func:`run_pipeline_2021` would, normalised (absolute data directory,
        subject numbers, resolved weights, tracks in order); ``UserError`` on the first problem."""
        if self.device not in (None, "cpu", "cuda"):
            raise UserError(f"unknown device '{self.device}' (use cpu or cuda)")
        tracks = [self.tracks] if isinstance(self.tracks, str) else list(self.tracks)
        try:
            me = None if self.motion_energy is None else MotionEnergyConfig(**self.motion_energy)
        except TypeError as exc:
            raise UserError(f"motion energy: {exc}") from None
        dataset = open_dataset2021(self.data_dir, self.subjects, cache_dir=self.cache_dir)
        cfg = check_request(dataset, tracks, self.estimator,
                            ExtractionConfig(model=self.model, weights=self.weights, layers=list(self.layers),
                                             resolution=self.resolution, n_components=self.n_components,
                                             seed=self.seed), self.n_frames, self.val_fraction, me)
        if self.device == "cuda":
            pick_device("cuda")
        return replace(self, data_dir=str(dataset.root.resolve()), subjects=dataset.subjects, model=cfg.model,
                       weights=resolve_weights(cfg.model, cfg.weights).spec, layers=cfg.layers,
                       tracks=[t for t in TRACKS if t in tracks], resolution=cfg.resolution,
                       motion_energy=None if me is None else asdict(me))


run_task.config = Pipeline2021Config  # core.runs.kinds checks configs of this kind before queueing
TASK_KIND = "pipeline2021"  # core.runs.kinds.KINDS


def summary_lines(metrics: dict) -> list[str]:
    """One line per subject of a ``run_pipeline_2021`` summary (what the CLI prints)."""
    lines = []
    for name in metrics["dataset"]["subjects"]:
        m = metrics[name]
        parts = []
        if "roi_median_r" in m:
            rois = [r for r in TRACK_ROIS[MINI_TRACK] if r in m["roi_median_r"]]  # metrics.json sorts keys
            parts.append("median r " + ", ".join(f"{roi} {_fmt(m['roi_median_r'][roi])}" for roi in rois))
        if "wb_median_r" in m:
            parts.append(f"WB {_fmt(m['wb_median_r'])}")
        nn, nnc = m["noise_normalized"], m.get("nnc_2021") or {}
        scores = ", ".join(f"{t} {_fmt(nn[t], '.1f')}%" for t in TRACKS if t in nn)
        board = ", ".join(f"{t} {_fmt(nnc[t])}" for t in TRACKS if t in nnc)
        lines.append(f"{name}: {'; '.join(parts)}; noise-normalised {scores}; 2021 leaderboard score {board}")
    return lines


def _fmt(x, spec: str = ".3f") -> str:
    return "n/a" if x is None or not np.isfinite(x) else format(x, spec)


def add_leaderboard_scores(result: SubjectResult, view: TrackSubject) -> None:
    """Add each track's Algonauts 2021 leaderboard score to its metrics, as ``"nnc_2021"``.

    Per voxel ``r / sqrt(reliability)`` (:func:`core.encoding.metrics.noise_normalized_correlation`), averaged
    over each ROI's voxels; the mini track's score is the mean over its ROIs, the full track's the mean
    over the whole brain's voxels. Voxels with zero reliability are left out (and counted).
    """
    for track, h in result.parts.items():
        nc = view.noise_ceiling(track)
        if nc is None:
            h.metrics["nnc_2021"] = None
            continue
        nnc = noise_normalized_correlation(h.val_r, nc)
        rois = roi_summary(nnc, view.roi_masks(track))
        per_roi = [v["mean"] for roi, v in rois.items() if roi != ALL_VERTICES]
        score = float(np.nanmean(per_roi)) if track == MINI_TRACK else rois[ALL_VERTICES]["mean"]
        h.metrics["nnc_2021"] = {"score": score, "roi": rois, "n_zero_reliability": int(np.sum(np.isnan(nnc)))}


def summarise(result: SubjectResult) -> dict:
    """One subject's entry of ``metrics.json``: median r per ROI, whole-brain median r, challenge-style scores."""
    out: dict = {}
    mini = result.parts.get(MINI_TRACK)
    if mini is not None:
        out["roi_median_r"] = {roi: s["median"] for roi, s in mini.metrics["roi_r"].items() if roi != ALL_VERTICES}
    full = result.parts.get(FULL_TRACK)
    if full is not None:
        out["wb_median_r"] = full.metrics["median_r"]
    out["noise_normalized"] = {t: (h.metrics["noise_normalized"] or {}).get("score") for t, h in result.parts.items()}
    out["nnc_2021"] = {t: (h.metrics.get("nnc_2021") or {}).get("score") for t, h in result.parts.items()}
    return out


def _roi_rows(result: SubjectResult) -> list[dict]:
    rows = []
    for track, h in result.parts.items():
        nn = (h.metrics["noise_normalized"] or {}).get("roi", {})
        nnc = (h.metrics.get("nnc_2021") or {}).get("roi", {})
        for roi, s in h.metrics["roi_r"].items():
            if track == MINI_TRACK and roi == ALL_VERTICES:
                continue
            name = WB if roi == ALL_VERTICES else roi
            rows.append({"track": track, "roi": name, "n_voxels": s["n_vertices"], "median_r": s["median"],
                         "mean_r": s["mean"], "median_noise_normalized": nn.get(roi, {}).get("median"),
                         "mean_nnc": nnc.get(roi, {}).get("mean")})
    return rows


# ---------------------------------------------------------------------------------------------
# Reading results back (for the pages)
# ---------------------------------------------------------------------------------------------
def read_roi_table(out: str | os.PathLike, subject: int | str) -> list[dict]:
    """Rows ``{track, roi, n_voxels, median_r, mean_r, median_noise_normalized, mean_nnc}`` (None where
    undefined, or for ``mean_nnc`` in a run written before it existed)."""
    from core.algonauts2021.dataset import parse_subject2021, subject_name

    rows = artifacts.read_roi_table(Path(out) / subject_name(parse_subject2021(subject)))
    return artifacts.with_columns(rows, ("median_r", "mean_r", "median_noise_normalized", "mean_nnc"))


def roi_val_r(out: str | os.PathLike, subject: Subject2021, roi: str) -> np.ndarray:
    """Validation r per voxel of one ROI (or ``"WB"``) of a finished run."""
    track = track_of(roi)
    r = artifacts.read_part(Path(out) / subject.name, track, "val_r")
    return r if track == FULL_TRACK else TrackSubject(subject).split(track, r)[roi]


def run_data_2021(run: Run) -> str | None:
    """The data directory of a 2021 pipeline run (:data:`TASK_KIND`, its config's ``data_dir``) or of a search
    (``"search"``, ``data``; on either challenge's layout), whose result folders are alike
    (``core.search.layouts.Layout2021`` writes them with this module's writers); None for other kinds."""
    kind = ALIASES.get(run.kind, run.kind)
    key = {TASK_KIND: "data_dir", "search": "data"}.get(kind)
    return None if key is None else run.config.get(key)


def list_runs_2021(store: RunStore, data_root: str | os.PathLike, *, status: str | Sequence[str] | None = None,
                   subject: int | None = None) -> list[Run]:
    """Runs on the data directory ``data_root`` (:func:`run_data_2021`; optionally with ``status``, and holding
    ``subject``), newest first."""
    root = str(Path(data_root).expanduser().resolve())
    return [r for r in workers.list_runs(store, status=status)
            if run_data_2021(r) == root and (subject is None or subject in (r.config.get("subjects") or []))]


def wb_accuracy_image(out: str | os.PathLike, subject: Subject2021):
    """The whole-brain validation r of a finished run as a Nifti image in MNI space (``core.viz.volumes``)."""
    from core.viz.volumes import to_nifti

    return to_nifti(roi_val_r(out, subject, WB), subject.voxel_mask(WB))
