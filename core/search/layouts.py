"""What a search needs from a challenge layout: subjects, scopes, features per trial source, writers.

Algonauts 2023 (images): parts are the hemispheres; the scopes are each hemisphere and its ROIs
or ROI classes. Algonauts 2021 (videos, Lange 2021's setting): parts are the tracks; the scopes
are the mini-track ROIs (V1 ... STS) and the whole brain (the full track), and the number of
frames sampled per clip is a search parameter: each candidate count is extracted once
(:mod:`core.features.clips`), and a bank source is named ``"pca@16"`` (reduction @ frames).
Both extract the same sources (:func:`sources`): the one large PCA per layer, and with pooling the
pooled layers (whose global averages the bank derives from them).
The writers are each challenge's own (``core.algonauts2023.pipeline``, ``core.algonauts2021.pipeline``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
import numpy as np

from core.algonauts2021.dataset import FULL_TRACK, TRACKS, TrackSubject, is_2021_layout, open_dataset2021
from core.algonauts2023.dataset import HEMIS, open_dataset
from core.encoding.fitting import SubjectResult
from core.util.progress import Progress, scaled


@dataclass
class Scope:
    name: str  # "lh", "lh/V1v" (roi), "lh/prf-visualrois" (class); "full_track", "mini_track/V1" (2021)
    part: str  # the hemisphere or track whose responses it holds
    mask: np.ndarray


def sources(cfg) -> list[tuple[str, object]]:
    """The bank's sources and the feature settings of each: the one large PCA per layer; with a pool size
    the pooled layers."""
    out = [("pca", replace(cfg, reduction="pca"))]
    if cfg.pool_size:
        out.append(("pool", replace(cfg, reduction="pool")))
    return out


class Layout2023:
    """Images, hemispheres, one ``submission.zip``."""

    name = "algonauts2023"
    scope_kinds = ("roi", "class", "hemisphere")

    def __init__(self, data: str, subjects: list):
        self.dataset = open_dataset(data, subjects)

    def subject(self, number: int):
        return self.dataset.subject(number)

    def n_train(self, number: int) -> int:
        return self.dataset.subject(number).n_train

    @staticmethod
    def scopes(subject, kind: str) -> list[Scope]:
        """Each hemisphere, then its ROIs or ROI classes (those with at least one vertex)."""
        out = []
        for hemi in HEMIS:
            out.append(Scope(hemi, hemi, np.ones(subject.n_vertices[hemi], dtype=bool)))
            for cls, names in subject.rois(hemi).items() if kind != "hemisphere" else ():
                masks = {roi: subject.roi_mask(hemi, roi) for roi in names}
                if kind == "class":
                    out.append(Scope(f"{hemi}/{cls}", hemi, np.any(list(masks.values()), axis=0)))
                else:
                    out += [Scope(f"{hemi}/{roi}", hemi, m) for roi, m in masks.items() if m.any()]
        return out

    def extract(self, cfg, subject, progress: Progress | None, log, timings) -> dict[str, dict[str, str]]:
        """Feature entry folders per source (``"pca"``, ``"pool"``) and layer."""
        from core.algonauts2023.pipeline import extract_subject

        plans = sources(cfg)
        out = {}
        for i, (name, c) in enumerate(plans):
            entries = extract_subject(c, subject, scaled(progress, i / len(plans), (i + 1) / len(plans)), log,
                                      timings)
            out[name] = {layer: str(e.path) for layer, e in entries.items()}
        return out

    def begin(self) -> dict:
        return {}

    def write_subject(self, out: Path, result: SubjectResult, subject, state: dict) -> dict:
        from core.algonauts2023.pipeline import write_result

        return write_result(out, result, subject)

    def write_submissions(self, out: Path, cfg, state: dict) -> dict:
        from core.algonauts2023.pipeline import write_submission

        write_submission(out, cfg.subjects, self.dataset)
        return {}


class Layout2021:
    """Videos, tracks (mini-track ROIs and the whole brain), ``mini_track.zip`` and ``full_track.zip``."""

    name = "algonauts2021"
    scope_kinds = ("roi",)

    def __init__(self, data: str, subjects: list):
        self.dataset = open_dataset2021(data, subjects)

    def subject(self, number: int) -> TrackSubject:
        return TrackSubject(self.dataset.subject(number), TRACKS)

    def n_train(self, number: int) -> int:
        return self.dataset.n_train

    @staticmethod
    def scopes(subject: TrackSubject, kind: str) -> list[Scope]:
        """The whole brain (full track), then every mini-track ROI."""
        out = []
        for track in subject.parts:
            if track == FULL_TRACK:
                out.append(Scope(track, track, np.ones(subject.subject.n_voxels("WB"), dtype=bool)))
            else:
                out += [Scope(f"{track}/{roi}", track, m) for roi, m in subject.roi_masks(track).items()]
        return out

    def extract(self, cfg, subject, progress: Progress | None, log, timings) -> dict[str, dict[str, str]]:
        """Feature entry folders per source (``"pca@8"``: reduction @ frames per clip) and layer."""
        from core.features.clips import extract_video_features
        from core.runs.kinds import timed

        plans = [(red, frames, c) for frames in cfg.frames for red, c in sources(cfg)]
        out = {}
        with timed(timings, "extract", log):
            for i, (red, frames, c) in enumerate(plans):
                c = c.extraction()
                entries = extract_video_features(self.dataset.train_videos, self.dataset.test_videos, c,
                                                 n_frames=frames, cache_dir=cfg.cache_dir, device=cfg.device,
                                                 progress=scaled(progress, i / len(plans), (i + 1) / len(plans)))
                out[f"{red}@{frames}"] = {layer: str(e.path) for layer, e in entries.items()}
        return out

    def begin(self) -> dict:
        return {"predictions": {}}

    def write_subject(self, out: Path, result: SubjectResult, subject: TrackSubject, state: dict) -> dict:
        from core.algonauts2021.pipeline import write_subject_result

        return write_subject_result(out, subject, result, state["predictions"])

    def write_submissions(self, out: Path, cfg, state: dict) -> dict:
        from core.algonauts2021.pipeline import dataset_summary, write_submissions
        from core.algonauts2021.submission import zip_name

        write_submissions(out, state["predictions"], self.dataset)
        return {"dataset": dataset_summary(self.dataset), "submissions": {t: zip_name(t) for t in TRACKS}}


Layout = Layout2023 | Layout2021


def layout_of(data: str, subjects: list) -> Layout:
    """The layout of the dataset at ``data`` (the 2021 one when it has the 2021 folders)."""
    return (Layout2021 if is_2021_layout(data) else Layout2023)(data, subjects)


def summary_line(name: str, entry: dict) -> str:
    """One subject's line for the CLI, in either layout."""
    if "lh_median_r" in entry:
        nn = "n/a" if entry["noise_normalized"] is None else f"{entry['noise_normalized']:.1f}%"
        return f"{name}: median r lh {entry['lh_median_r']:.3f}, rh {entry['rh_median_r']:.3f}; noise-normalised {nn}"
    from core.algonauts2021.pipeline import summary_lines

    return summary_lines({"dataset": {"subjects": [name]}, name: entry})[0]

