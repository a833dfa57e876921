"""Reader and validator for the Algonauts 2021 (videos) layout, as the organisers ship it.

::

    ROOT/AlgonautsVideos268_All_30fpsmax/0001_xxxx.mp4 ...            the clips, sorted by name
    ROOT/participants_data_v2021/mini_track/subXX/<ROI>.pkl           {"train": (n_train, reps, voxels)}
    ROOT/participants_data_v2021/full_track/subXX/WB.pkl              {"train": ..., "voxel_mask": (78, 93, 71)}

ROIs of the mini track: LOC, FFA, STS, EBA, PPA, V1, V2, V3, V4 (a ROI whose file is absent is
simply not offered); the full track has the whole brain, ``WB``, whose ``voxel_mask`` marks its
voxels in the challenge's volume (voxel order = the mask's nonzero entries in C order).

**Split rule.** The ``train`` arrays have one row per training clip, the same number in every
file (1,000 in the real data); the first that many sorted clips are the training clips and the
remaining ones the test clips (102 in the real data). Pass ``n_test`` to ``open_dataset2021`` to
insist on a test count.

**Responses.** Repetitions are averaged; the per-voxel noise ceiling is the split-half
reliability across repetitions (:func:`split_half_noise_ceiling`), in percent of the
rep-averaged response's variance, the same unit as the 2023 noise ceilings (so
``core.encoding.metrics.noise_normalized_accuracy`` applies unchanged).

Pickles are read with the restricted unpickler (:mod:`core.util.safe_pickle`: arrays, dicts, strings
only). Reading a large pickle is slow, so each file's averaged responses, noise ceiling and mask
are kept as ``.npy`` files in ``cache_dir()/fmri2021/<key>/`` (key: the file's path, size and
modification time) and opened memory-mapped. Every problem raises ``DatasetError`` with one line
that names the file.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from core.util import paths

from core.util import fsaccess, safe_pickle
from core.util.atomicdir import clean_stale, set_aside, staging_dir
from core.util.npystream import npy_complete
from core.util.lookup import SubjectLookup
from core.util.errors import DatasetError
from core.util.fileio import save_npy, write_json
from core.encoding.metrics import pearson_r
from core.util.progress import Progress, report
from core.features.video import VIDEO_SUFFIXES
from core.viz.volumes import VOLUME_SHAPE

VIDEO_DIR = "AlgonautsVideos268_All_30fpsmax"
FMRI_DIR = "participants_data_v2021"
MINI_TRACK, FULL_TRACK = "mini_track", "full_track"
TRACKS: tuple[str, str] = (MINI_TRACK, FULL_TRACK)
MINI_ROIS: tuple[str, ...] = ("LOC", "FFA", "STS", "EBA", "PPA", "V1", "V2", "V3", "V4")
WB = "WB"
TRACK_ROIS: dict[str, tuple[str, ...]] = {MINI_TRACK: MINI_ROIS, FULL_TRACK: (WB,)}
MAX_SPLITS = 16  # split-half: at most this many splits of the repetitions are averaged
_CACHE_VERSION = 1


def parse_subject2021(value: int | str) -> int:
    """``1``, ``"1"``, ``"01"`` or ``"sub01"`` -> 1."""
    text = str(value).strip().lower().removeprefix("subj").removeprefix("sub")
    if not text.isdigit() or not 1 <= int(text) <= 99:
        raise DatasetError(f"unknown subject '{value}' (use a number such as 1 or a name such as sub01)")
    return int(text)


def subject_name(number: int) -> str:
    return f"sub{number:02d}"


def is_2021_layout(root: str | os.PathLike) -> bool:
    """True when ``root`` looks like an Algonauts 2021 dataset (for dispatching commands)."""
    root = Path(root).expanduser()
    return fsaccess.is_dir(root / FMRI_DIR) or fsaccess.is_dir(root / VIDEO_DIR)


# ---------------------------------------------------------------------------------------------
# Noise ceiling
# ---------------------------------------------------------------------------------------------
def _half_splits(n_reps: int) -> list[np.ndarray]:
    """Repetition subsets of size ``n_reps // 2`` (one per complementary pair when sizes are equal)."""
    k = n_reps // 2
    out, seen = [], set()
    for combo in itertools.combinations(range(n_reps), k):
        other = tuple(sorted(set(range(n_reps)) - set(combo)))
        if other in seen:
            continue
        seen.add(combo)
        out.append(np.array(combo))
        if len(out) == MAX_SPLITS:
            break
    return out


def split_half_noise_ceiling(train: np.ndarray) -> np.ndarray:
    """Per-voxel noise ceiling (percent) of the rep-averaged response from ``(n, reps, voxels)``.

    For each split of the ``R`` repetitions into halves of ``a = R // 2`` and ``b = R - a``, the
    Pearson r across clips between the two half-means is computed; r is averaged over splits
    (all of them, up to ``MAX_SPLITS``). With signal-to-noise variance ratio ``q``,
    ``r = q / sqrt((q + 1/a) (q + 1/b))``; solving for ``q`` and stepping up to all ``R``
    repetitions gives the reliability ``R q / (R q + 1)`` (Spearman-Brown; ``2r / (1 + r)`` when
    ``a = b``), the share of the averaged response's variance that is signal. ``r <= 0`` gives 0.
    """
    train = np.asarray(train)
    if train.ndim != 3 or train.shape[1] < 2:
        raise ValueError(f"need (clips, repetitions >= 2, voxels), got shape {train.shape}")
    n_reps = train.shape[1]
    total = train.sum(axis=1, dtype=np.float64)
    rs = []
    for half in _half_splits(n_reps):
        a = train[:, half, :].sum(axis=1, dtype=np.float64)
        rs.append(np.nan_to_num(pearson_r(a, total - a)))  # a constant voxel: r = 0
    r = np.clip(np.mean(rs, axis=0, dtype=np.float64), 0.0, 1.0 - 1e-9)
    a, b = n_reps // 2, n_reps - n_reps // 2
    s, p, r2 = 1.0 / a + 1.0 / b, 1.0 / (a * b), r**2
    q = (r2 * s + np.sqrt(r2**2 * s**2 + 4 * (1 - r2) * r2 * p)) / (2 * (1 - r2))
    return (100.0 * n_reps * q / (n_reps * q + 1)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# One ROI file
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoiFile:
    """A validated ROI pickle, its averaged arrays cached as ``.npy`` files in ``cached``."""

    path: Path
    cached: Path
    n_train: int
    n_reps: int
    n_voxels: int
    has_mask: bool

    def fmri(self) -> np.ndarray:
        """Rep-averaged responses (training clips x voxels), float32, memory-mapped read-only."""
        return np.load(self.cached / "train.npy", mmap_mode="r")

    def noise_ceiling(self) -> Optional[np.ndarray]:
        p = self.cached / "noise_ceiling.npy"
        return np.load(p) if fsaccess.is_file(p) else None

    def voxel_mask(self) -> Optional[np.ndarray]:
        p = self.cached / "voxel_mask.npy"
        return np.load(p) if fsaccess.is_file(p) else None


def _cache_key(path: Path) -> str:
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{_CACHE_VERSION}"
    tag = "-".join(path.resolve().parts[-3:]).removesuffix(".pkl")
    return f"{hashlib.sha256(ident.encode()).hexdigest()[:16]}-{tag}"


def _parse_roi_pickle(path: Path, require_mask: bool) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """``(train (n, reps, voxels) float32, voxel mask or None)``, validated."""
    obj = safe_pickle.load(path)
    if not isinstance(obj, dict) or "train" not in obj:
        keys = ", ".join(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise DatasetError(f"{path}: expected a dict with a 'train' array, found {keys or 'an empty dict'}")
    train = obj["train"]
    if not isinstance(train, np.ndarray) or not np.issubdtype(train.dtype, np.floating):
        what = train.dtype if isinstance(train, np.ndarray) else type(train).__name__
        raise DatasetError(f"{path}: 'train' must be a float array, found {what}")
    if train.ndim == 2:
        train = train[:, None, :]
    if train.ndim != 3:
        raise DatasetError(f"{path}: 'train' must be (clips x repetitions x voxels), found shape {train.shape}")
    if train.shape[0] < 2 or train.shape[2] < 1:
        raise DatasetError(f"{path}: 'train' has shape {train.shape}: need at least 2 clips and 1 voxel")
    if not np.isfinite(train).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(train))[0])
        raise DatasetError(f"{path}: 'train' contains NaN or infinite values (first at index {bad})")
    mask = obj.get("voxel_mask")
    if mask is None:
        if require_mask:
            raise DatasetError(f"{path}: missing 'voxel_mask' (the whole-brain file must say where its voxels are)")
        return train.astype(np.float32, copy=False), None
    if not isinstance(mask, np.ndarray) or mask.shape != VOLUME_SHAPE:
        shape = mask.shape if isinstance(mask, np.ndarray) else type(mask).__name__
        raise DatasetError(f"{path}: 'voxel_mask' must be a {VOLUME_SHAPE} array, found {shape}")
    mask = mask != 0
    if int(mask.sum()) != train.shape[2]:
        raise DatasetError(f"{path}: 'voxel_mask' marks {int(mask.sum())} voxels but 'train' has {train.shape[2]}")
    return train.astype(np.float32, copy=False), mask


def cached_meta(entry: Path) -> Optional[dict]:
    """The cache entry's ``meta.json`` if the entry is whole (its arrays complete), else ``None``."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        n, reps, v = meta["shape"]
        arrays = {"train.npy": (n, v)}
        if reps >= 2:
            arrays["noise_ceiling.npy"] = (v,)
        if meta["has_mask"]:
            arrays["voxel_mask.npy"] = VOLUME_SHAPE
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta if all(npy_complete(entry / name, shape) for name, shape in arrays.items()) else None


@functools.lru_cache(maxsize=256)
def _open_roi_file(path_str: str, size: int, mtime_ns: int, require_mask: bool, cache_root: str) -> RoiFile:
    path = Path(path_str)
    parent = Path(cache_root) / "fmri2021"
    entry = parent / _cache_key(path)
    meta = cached_meta(entry)
    if meta is None:
        if entry.exists():  # published entries are whole, so this one was damaged since: rebuild it
            set_aside(entry, "incomplete or unreadable arrays / meta.json")
        train, mask = _parse_roi_pickle(path, require_mask)
        clean_stale(parent)
        with staging_dir(entry, valid=lambda e: cached_meta(e) is not None) as tmp:
            save_npy(tmp / "train.npy", train.mean(axis=1, dtype=np.float64).astype(np.float32))
            if train.shape[1] >= 2:
                save_npy(tmp / "noise_ceiling.npy", split_half_noise_ceiling(train))
            if mask is not None:
                save_npy(tmp / "voxel_mask.npy", mask)
            write_json(tmp / "meta.json", {"source": str(path), "size": size, "mtime_ns": mtime_ns,
                                           "shape": list(train.shape), "has_mask": mask is not None,
                                           "version": _CACHE_VERSION})
        meta = cached_meta(entry)
        if meta is None:
            raise DatasetError(f"{entry}: the cache entry just written does not read back (disk failing?)")
    if require_mask and not meta["has_mask"]:
        raise DatasetError(f"{path}: missing 'voxel_mask' (the whole-brain file must say where its voxels are)")
    n, reps, v = meta["shape"]
    return RoiFile(path, entry, n, reps, v, meta["has_mask"])


def open_roi_file(path: str | os.PathLike, *, require_mask: bool = False,
                  cache_dir: str | os.PathLike | None = None) -> RoiFile:
    """Validate one ROI pickle (once per path, size and time) and return its cached arrays."""
    path = Path(path)
    if not fsaccess.is_file(path):
        raise DatasetError(f"{path}: missing file")
    st = path.stat()
    root = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    return _open_roi_file(str(path.resolve()), st.st_size, st.st_mtime_ns, require_mask, str(root.resolve()))


# ---------------------------------------------------------------------------------------------
# Subjects and the dataset
# ---------------------------------------------------------------------------------------------
@dataclass(eq=False)
class Subject2021:
    """One subject's responses in the Algonauts 2021 layout. Create through ``open_dataset2021``."""

    dataset: "Dataset2021"
    number: int
    files: dict[str, RoiFile] = field(default_factory=dict)  # ROI -> file, mini-track ROIs first

    @property
    def name(self) -> str:
        return subject_name(self.number)

    @property
    def n_train(self) -> int:
        return self.dataset.n_train

    @property
    def n_test(self) -> int:
        return self.dataset.n_test

    @property
    def train_videos(self) -> list[Path]:
        return self.dataset.train_videos

    @property
    def test_videos(self) -> list[Path]:
        return self.dataset.test_videos

    def rois(self, track: str | None = None) -> list[str]:
        """ROIs present (all tracks, or one track), mini-track ROIs in the canonical order, then WB."""
        if track is not None and track not in TRACKS:
            raise DatasetError(f"unknown track '{track}' (use {' or '.join(TRACKS)})")
        return [r for r in self.files if track is None or track_of(r) == track]

    def file(self, roi: str) -> RoiFile:
        if roi not in self.files:
            have = ", ".join(self.files) or "none"
            raise DatasetError(f"{self.name}: no {roi} data (ROIs present: {have})")
        return self.files[roi]

    def n_voxels(self, roi: str) -> int:
        return self.file(roi).n_voxels

    def n_reps(self, roi: str) -> int:
        return self.file(roi).n_reps

    def fmri(self, roi: str) -> np.ndarray:
        """Rep-averaged training responses (clips x voxels), float32, memory-mapped read-only."""
        return self.file(roi).fmri()

    def noise_ceiling(self, roi: str) -> Optional[np.ndarray]:
        """Split-half noise ceiling per voxel in percent, or ``None`` with a single repetition."""
        return self.file(roi).noise_ceiling()

    def voxel_mask(self, roi: str = WB) -> Optional[np.ndarray]:
        """Boolean (78, 93, 71) mask of the ROI's voxels (the whole-brain file has one)."""
        return self.file(roi).voxel_mask()

    def summary(self) -> dict:
        """Clip counts, and voxel and repetition counts per ROI (what ``info`` prints)."""
        return {
            "subject": self.name,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "tracks": {t: self.rois(t) for t in TRACKS if self.rois(t)},
            "n_voxels": {r: f.n_voxels for r, f in self.files.items()},
            "n_reps": {r: f.n_reps for r, f in self.files.items()},
        }


@dataclass(frozen=True)
class TrackSubject:
    """A 2021 subject as fitting sees it (``core.encoding.subjects.FitSubject``): one part per track.

    The mini track's ROIs are concatenated into one part (every voxel has its own model, so this
    equals one fit per ROI; ``bounds`` / ``split`` give each ROI's columns back); the full track
    is the whole brain. ``parts``: the tracks fitted, in :data:`TRACKS` order.
    """

    subject: Subject2021
    parts: tuple[str, ...] = TRACKS

    @property
    def name(self) -> str:
        return self.subject.name

    @property
    def root(self) -> Path:
        return self.subject.dataset.root

    @property
    def n_train(self) -> int:
        return self.subject.n_train

    @property
    def n_test(self) -> int:
        return self.subject.n_test

    def rois(self, track: str) -> list[str]:
        return [r for r in TRACK_ROIS[track] if r in self.subject.files]

    def bounds(self, track: str) -> dict[str, slice]:
        """Each ROI's columns in the track's concatenated voxels."""
        sizes = [self.subject.n_voxels(r) for r in self.rois(track)]
        ends = np.cumsum(sizes)
        return {r: slice(int(e - s), int(e)) for r, s, e in zip(self.rois(track), sizes, ends)}

    def responses(self, track: str) -> np.ndarray:
        if track == FULL_TRACK:
            return self.subject.fmri(WB)
        return np.concatenate([self.subject.fmri(r) for r in self.rois(track)], axis=1)

    def roi_masks(self, track: str) -> dict[str, np.ndarray]:
        if track == FULL_TRACK:
            return {}
        bounds = self.bounds(track)
        n = max(b.stop for b in bounds.values())
        masks = {}
        for roi, b in bounds.items():
            masks[roi] = np.zeros(n, dtype=bool)
            masks[roi][b] = True
        return masks

    def noise_ceiling(self, track: str) -> Optional[np.ndarray]:
        ceilings = [self.subject.noise_ceiling(r) for r in self.rois(track)]
        return None if any(c is None for c in ceilings) else np.concatenate(ceilings)

    def split(self, track: str, array: np.ndarray) -> dict[str, np.ndarray]:
        """Columns of a track-wide array per ROI."""
        return {roi: array[..., b] for roi, b in self.bounds(track).items()}


def track_of(roi: str) -> str:
    """``"WB"`` -> ``"full_track"``; any other ROI -> ``"mini_track"``."""
    return FULL_TRACK if roi == WB else MINI_TRACK


@dataclass(eq=False)
class Dataset2021(SubjectLookup[Subject2021]):
    """A validated Algonauts 2021 dataset: the clips and the subjects found under ``root`` (``subject("sub01")``)."""

    root: Path
    videos: list[Path]
    n_train: int
    _subjects: dict[int, Subject2021] = field(default_factory=dict)
    _parse_subject = staticmethod(parse_subject2021)

    @property
    def n_test(self) -> int:
        return len(self.videos) - self.n_train

    @property
    def train_videos(self) -> list[Path]:
        return self.videos[: self.n_train]

    @property
    def test_videos(self) -> list[Path]:
        return self.videos[self.n_train :]


def list_videos(root: str | os.PathLike) -> list[Path]:
    """The clips of a 2021 dataset, sorted by name (``DatasetError`` if there are none)."""
    folder = Path(root).expanduser() / VIDEO_DIR
    if not fsaccess.is_dir(folder):
        raise DatasetError(f"{folder}: missing video folder")
    videos = sorted(p for p in fsaccess.list_dir(folder)
                    if p.suffix.lower() in VIDEO_SUFFIXES and not p.name.startswith("."))
    if not videos:
        raise DatasetError(f"{folder}: no videos ({', '.join(VIDEO_SUFFIXES)})")
    empty = [p for p in videos if not fsaccess.is_file(p) or p.stat().st_size == 0]
    if empty:
        raise DatasetError(f"{empty[0]}: empty video file")
    return videos


def _subject_folders(root: Path) -> dict[int, dict[str, Path]]:
    """``{subject: {track: folder}}`` for the ``subXX`` folders of each track."""
    found: dict[int, dict[str, Path]] = {}
    for track in TRACKS:
        folder = root / FMRI_DIR / track
        if not fsaccess.is_dir(folder):
            continue
        for p in fsaccess.list_dir(folder):
            name = p.name.lower()
            if name.startswith("sub") and name[3:].isdigit() and len(name) == 5 and fsaccess.is_dir(p):
                found.setdefault(int(name[3:]), {})[track] = p
    return found


def _roi_paths(folders: dict[str, Path]) -> dict[str, Path]:
    """ROI -> pickle of one subject: the known ROIs of each track in order, then unknown names sorted."""
    out: dict[str, Path] = {}
    for track in TRACKS:
        folder = folders.get(track)
        if folder is None:
            continue
        names = {p.stem: p for p in fsaccess.list_dir(folder) if p.suffix == ".pkl" and not p.name.startswith(".")}
        known = [r for r in TRACK_ROIS[track] if r in names]
        if track == FULL_TRACK and set(names) - {WB}:
            extra = sorted(set(names) - {WB})[0]
            raise DatasetError(f"{names[extra]}: unexpected file in the full track (only {WB}.pkl belongs there)")
        if track == MINI_TRACK and WB in names:
            raise DatasetError(f"{names[WB]}: the whole-brain file belongs in {FMRI_DIR}/{FULL_TRACK}")
        for roi in known + sorted(set(names) - set(known)):
            out[roi] = names[roi]
    return out


def open_dataset2021(root: str | os.PathLike, subjects: Iterable[int | str] | None = None, *,
                     n_test: int | None = None, cache_dir: str | os.PathLike | None = None,
                     progress: Optional[Progress] = None) -> Dataset2021:
    """Find and validate the clips and the subjects under ``root`` (all of them, or ``subjects``)."""
    root = Path(root).expanduser()
    if not fsaccess.is_dir(root):
        raise DatasetError(f"{root}: data directory not found")
    videos = list_videos(root)
    found = _subject_folders(root)
    if not found:
        raise DatasetError(f"{root / FMRI_DIR}: no subject folders (expected {{mini_track,full_track}}/sub01 ...)")
    wanted = sorted(found) if subjects is None else sorted({parse_subject2021(s) for s in subjects})
    if not wanted:
        raise DatasetError(f"{root}: no subjects chosen")
    for n in wanted:
        if n not in found:
            have = ", ".join(str(s) for s in sorted(found))
            raise DatasetError(f"{root}: unknown subject {n} (available: {have})")
    roi_paths = {n: _roi_paths(found[n]) for n in wanted}
    total = sum(len(p) for p in roi_paths.values())
    dataset = Dataset2021(root=root, videos=videos, n_train=0)
    done, first = 0, None
    for n in wanted:
        if not roi_paths[n]:
            raise DatasetError(f"{root / FMRI_DIR}: {subject_name(n)} has no ROI files (<ROI>.pkl)")
        subj = Subject2021(dataset, n)
        for roi, path in roi_paths[n].items():
            report(progress, done / total, f"{subject_name(n)}: {roi}")
            f = open_roi_file(path, require_mask=roi == WB, cache_dir=cache_dir)
            if first is None:
                first = f
            elif f.n_train != first.n_train:
                raise DatasetError(f"{path}: has {f.n_train} training clips but {first.path} has {first.n_train}")
            subj.files[roi] = f
            done += 1
        dataset._subjects[n] = subj
    dataset.n_train = first.n_train
    if dataset.n_train >= len(videos):
        raise DatasetError(f"{root / VIDEO_DIR}: {len(videos)} videos, but the responses cover {dataset.n_train} "
                           "training clips; the test clips (the last ones, sorted by name) are missing")
    if n_test is not None and dataset.n_test != n_test:
        raise DatasetError(f"{root / VIDEO_DIR}: {len(videos)} videos and {dataset.n_train} training clips leave "
                           f"{dataset.n_test} test clips, not {n_test}")
    report(progress, 1.0, "dataset checked")
    return dataset
