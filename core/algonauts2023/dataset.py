"""Reader and validator for the Algonauts 2023 / NSD data layout, exactly as the organisers ship it.

::

    ROOT/subjXX/training_split/training_fmri/{lh,rh}_training_fmri.npy   float32 (images x vertices)
    ROOT/subjXX/training_split/training_images/train-0001_nsd-00013.png  sorted; index orders fMRI rows
    ROOT/subjXX/test_split/test_images/test-0001_nsd-00845.png
    ROOT/subjXX/roi_masks/{lh,rh}.all-vertices_fsaverage_space.npy       163,842 values, 1 = challenge vertex
    ROOT/subjXX/roi_masks/{lh,rh}.<class>_challenge_space.npy            one label per challenge vertex
    ROOT/subjXX/roi_masks/{lh,rh}.<class>_fsaverage_space.npy            one label per fsaverage vertex
    ROOT/subjXX/roi_masks/mapping_<class>.npy                            pickled dict {label: ROI name}
    ROOT/noise_ceiling/subjXX/{lh,rh}.npy    optional, percent 0-100 per challenge vertex

fMRI arrays are opened memory-mapped. Every problem raises ``DatasetError`` with one line that
names the file. ROI class files are optional: a class whose files are absent is simply not
offered, and not every ROI exists in every subject and hemisphere.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from core.util import fsaccess, safe_pickle
from core.util.errors import DatasetError
from core.util.lookup import SubjectLookup
from core.viz.surfaces import HEMI_NAMES, HEMIS, N_FSAVERAGE  # noqa: F401  (fsaverage's; HEMI_NAMES for the pages)

ROI_CLASSES: dict[str, tuple[str, ...]] = {
    "prf-visualrois": ("V1v", "V1d", "V2v", "V2d", "V3v", "V3d", "hV4"),
    "floc-bodies": ("EBA", "FBA-1", "FBA-2", "mTL-bodies"),
    "floc-faces": ("OFA", "FFA-1", "FFA-2", "mTL-faces", "aTL-faces"),
    "floc-places": ("OPA", "PPA", "RSC"),
    "floc-words": ("OWFA", "VWFA-1", "VWFA-2", "mfs-words", "mTL-words"),
    "streams": ("early", "midventral", "midlateral", "midparietal", "ventral", "lateral", "parietal"),
}
ALL_VERTICES = "all vertices"
_SUBJECT_DIR = re.compile(r"^subj(\d{2})$")
_TRAIN_NAME = re.compile(r"^train-(\d{4,})_nsd-(\d{5})\.png$")
_TEST_NAME = re.compile(r"^test-(\d{4,})_nsd-(\d{5})\.png$")
_NAN_SCAN_BYTES = 64 << 20


def roi_class_of(roi: str) -> str:
    """The ROI class a ROI name belongs to (``"FFA-1"`` -> ``"floc-faces"``)."""
    for cls, names in ROI_CLASSES.items():
        if roi in names:
            return cls
    known = ", ".join(n for names in ROI_CLASSES.values() for n in names)
    raise DatasetError(f"unknown ROI '{roi}' (known ROIs: {known})")


def _check_hemi(hemi: str) -> str:
    if hemi not in HEMIS:
        raise DatasetError(f"unknown hemisphere '{hemi}' (use 'lh' or 'rh')")
    return hemi


def load_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    """``np.load`` without pickles, turning every failure into a one-line ``DatasetError``."""
    if not fsaccess.is_file(path):
        raise DatasetError(f"{path}: missing file")
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except OSError as exc:
        if exc.errno is not None:  # permission, I/O error: the OS's reason; else numpy's (truncated...)
            raise fsaccess.fs_error(path, exc) from None
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetError(f"{path}: unreadable .npy file ({reason})") from None
    except Exception as exc:  # truncated, corrupt, pickled, not an npy at all
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetError(f"{path}: unreadable .npy file ({reason})") from None


def _check_finite(path: Path, array: np.ndarray) -> None:
    """Scan ``array`` for NaN/inf in chunks (it may be a large memmap)."""
    rows = max(1, _NAN_SCAN_BYTES // max(1, array.itemsize * int(np.prod(array.shape[1:]))))
    for start in range(0, array.shape[0], rows):
        chunk = np.asarray(array[start : start + rows])
        if not np.isfinite(chunk).all():
            bad = np.argwhere(~np.isfinite(chunk))[0]
            where = (start + int(bad[0]),) + tuple(int(b) for b in bad[1:])
            raise DatasetError(f"{path}: contains NaN or infinite values (first at index {where})")


def _file_key(path: Path) -> tuple[str, int, int]:
    try:
        st = path.stat()
    except OSError as exc:
        raise fsaccess.fs_error(path, exc) from None
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _validated_fmri(key: tuple[str, int, int], n_images: int) -> tuple[int, ...]:
    """Validate a training-fMRI file once per (path, size, mtime); returns its shape."""
    path = Path(key[0])
    arr = load_npy(path, mmap=True)
    if arr.ndim != 2:
        raise DatasetError(f"{path}: expected a 2-D array (images x vertices), found {arr.ndim}-D {arr.shape}")
    if arr.dtype not in (np.float32, np.float64):
        raise DatasetError(f"{path}: expected float32 values, found dtype {arr.dtype}")
    if arr.shape[0] != n_images:
        raise DatasetError(
            f"{path}: has {arr.shape[0]} rows but there are {n_images} training images (one row per image)"
        )
    if arr.shape[1] == 0:
        raise DatasetError(f"{path}: has no vertices")
    _check_finite(path, arr)
    return arr.shape


def _sorted_images(folder: Path, pattern: re.Pattern[str], kind: str) -> list[Path]:
    if not fsaccess.is_dir(folder):
        raise DatasetError(f"{folder}: missing {kind} image folder")
    names = sorted(p.name for p in fsaccess.list_dir(folder) if p.suffix.lower() == ".png")
    bad = [n for n in names if not pattern.match(n)]
    if bad:
        raise DatasetError(f"{folder / bad[0]}: unexpected {kind} image name (expected e.g. {pattern.pattern})")
    indices = [int(pattern.match(n).group(1)) for n in names]  # type: ignore[union-attr]
    if indices != list(range(1, len(names) + 1)):
        missing = sorted(set(range(1, len(names) + 1)) - set(indices))
        raise DatasetError(f"{folder}: {kind} images are not numbered 1..{len(names)} (gap at {missing[:3]})")
    return [folder / n for n in names]


@dataclass(eq=False)
class Subject:
    """One subject's data in the Algonauts 2023 layout. Create through ``open_dataset``."""

    root: Path
    number: int
    train_images: list[Path] = field(default_factory=list)
    test_images: list[Path] = field(default_factory=list)
    n_vertices: dict[str, int] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return f"subj{self.number:02d}"

    @property
    def dir(self) -> Path:
        return self.root / self.name

    @property
    def n_train(self) -> int:
        return len(self.train_images)

    @property
    def n_test(self) -> int:
        return len(self.test_images)

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts fitted one by one (``core.encoding.subjects.FitSubject``): the hemispheres."""
        return HEMIS

    # -- files ---------------------------------------------------------------------------
    def fmri_path(self, hemi: str) -> Path:
        return self.dir / "training_split" / "training_fmri" / f"{_check_hemi(hemi)}_training_fmri.npy"

    def _roi_path(self, name: str) -> Path:
        return self.dir / "roi_masks" / name

    def noise_ceiling_path(self, hemi: str) -> Path:
        return self.root / "noise_ceiling" / self.name / f"{_check_hemi(hemi)}.npy"

    # -- data ----------------------------------------------------------------------------
    def fmri(self, hemi: str) -> np.ndarray:
        """Training responses (images x challenge vertices), memory-mapped read-only."""
        return load_npy(self.fmri_path(hemi), mmap=True)

    def responses(self, part: str) -> np.ndarray:
        """``fmri(part)``: what fitting reads (``core.encoding.subjects.FitSubject``)."""
        return self.fmri(part)

    def fsaverage_mask(self, hemi: str) -> np.ndarray:
        """Boolean mask over the 163,842 fsaverage vertices: True where a challenge vertex is."""
        key = ("all-vertices", hemi)
        if key not in self._cache:
            path = self._roi_path(f"{_check_hemi(hemi)}.all-vertices_fsaverage_space.npy")
            mask = load_npy(path)
            if mask.ndim != 1 or mask.shape[0] != N_FSAVERAGE:
                raise DatasetError(f"{path}: expected {N_FSAVERAGE} values (fsaverage), found shape {mask.shape}")
            self._cache[key] = mask != 0
        return self._cache[key]

    def fsaverage_indices(self, hemi: str) -> np.ndarray:
        """fsaverage vertex index of each challenge vertex, in challenge order."""
        return np.flatnonzero(self.fsaverage_mask(hemi))

    def roi_classes(self) -> list[str]:
        """ROI classes whose mapping file is present."""
        return [c for c in ROI_CLASSES if fsaccess.is_file(self._roi_path(f"mapping_{c}.npy"))]

    def roi_mapping(self, roi_class: str) -> dict[int, str]:
        """``{label: ROI name}`` from ``mapping_<class>.npy``, read with the restricted unpickler."""
        key = ("mapping", roi_class)
        if key not in self._cache:
            if roi_class not in ROI_CLASSES:
                raise DatasetError(f"unknown ROI class '{roi_class}' (known: {', '.join(ROI_CLASSES)})")
            path = self._roi_path(f"mapping_{roi_class}.npy")
            if not fsaccess.is_file(path):
                raise DatasetError(f"{path}: missing file")
            obj = safe_pickle.load_object_npy(path)
            if not isinstance(obj, dict) or not obj:
                raise DatasetError(f"{path}: expected a dict {{label: ROI name}}, found {type(obj).__name__}")
            try:
                mapping = {int(k): str(v) for k, v in obj.items() if isinstance(v, str) and int(k) == k}
            except (TypeError, ValueError):
                mapping = {}
            if len(mapping) != len(obj):
                raise DatasetError(f"{path}: expected integer labels mapped to ROI names")
            self._cache[key] = mapping
        return self._cache[key]

    def roi_labels(self, hemi: str, roi_class: str, space: str = "challenge") -> np.ndarray | None:
        """Integer ROI label per vertex (0 = none), or ``None`` if the class file is absent."""
        if space not in ("challenge", "fsaverage"):
            raise DatasetError(f"unknown space '{space}' (use 'challenge' or 'fsaverage')")
        key = ("labels", hemi, roi_class, space)
        if key not in self._cache:
            path = self._roi_path(f"{_check_hemi(hemi)}.{roi_class}_{space}_space.npy")
            if not fsaccess.is_file(path):
                return None
            labels = load_npy(path)
            expected = self.n_vertices[hemi] if space == "challenge" else N_FSAVERAGE
            if labels.ndim != 1 or labels.shape[0] != expected:
                raise DatasetError(
                    f"{path}: expected {expected} values ({space} space, {hemi}), found shape {labels.shape}"
                )
            if not np.isfinite(labels).all():
                raise DatasetError(f"{path}: contains NaN or infinite values")
            self._cache[key] = np.rint(labels).astype(np.int32)
        return self._cache[key]

    def roi_mask(self, hemi: str, roi: str, space: str = "challenge") -> np.ndarray:
        """Boolean mask of one ROI (all False when it does not exist in this subject/hemisphere)."""
        cls = roi_class_of(roi)
        labels = self.roi_labels(hemi, cls, space)
        n = self.n_vertices[hemi] if space == "challenge" else N_FSAVERAGE
        if labels is None or cls not in self.roi_classes():
            return np.zeros(n, dtype=bool)
        ids = [k for k, v in self.roi_mapping(cls).items() if v == roi]
        return np.isin(labels, ids) if ids else np.zeros(n, dtype=bool)

    @staticmethod
    def ordered_rois(roi_class: str, names: Iterable[str]) -> list[str]:
        """``names`` in the canonical order of ``roi_class`` (:data:`ROI_CLASSES`), unknown names last, sorted."""
        known = ROI_CLASSES.get(roi_class, ())
        names = set(names)
        return [n for n in known if n in names] + sorted(names - set(known))

    def rois(self, hemi: str) -> dict[str, list[str]]:
        """ROIs present (at least one vertex) per class, in the canonical order."""
        out: dict[str, list[str]] = {}
        for cls in self.roi_classes():
            labels = self.roi_labels(hemi, cls)
            if labels is None:
                continue
            mapping = self.roi_mapping(cls)
            present = {mapping[int(v)] for v in np.unique(labels) if int(v) in mapping and v != 0}
            names = self.ordered_rois(cls, present)
            if names:
                out[cls] = names
        return out

    def roi_masks(self, hemi: str) -> dict[str, np.ndarray]:
        """Challenge-space masks of every ROI present, plus ``"all vertices"``."""
        masks = {ALL_VERTICES: np.ones(self.n_vertices[hemi], dtype=bool)}
        for names in self.rois(hemi).values():
            for roi in names:
                masks[roi] = self.roi_mask(hemi, roi)
        return masks

    def noise_ceiling(self, hemi: str) -> np.ndarray | None:
        """Per-vertex noise ceiling in percent (0-100), or ``None`` when no file is shipped."""
        path = self.noise_ceiling_path(hemi)
        if not fsaccess.is_file(path):
            return None
        nc = load_npy(path)
        if nc.ndim != 1 or nc.shape[0] != self.n_vertices[hemi]:
            raise DatasetError(f"{path}: expected {self.n_vertices[hemi]} values (one per {hemi} vertex), found {nc.shape}")
        if not np.isfinite(nc).all():
            raise DatasetError(f"{path}: contains NaN or infinite values")
        return nc.astype(np.float32, copy=False)

    def fingerprint(self) -> str:
        """A hash of everything that identifies this subject's data (names, sizes, times)."""
        h = hashlib.sha256(self.name.encode())
        for p in [*self.train_images, *self.test_images, self.fmri_path("lh"), self.fmri_path("rh")]:
            _path, size, mtime_ns = _file_key(p)
            h.update(f"{p.name}:{size}:{mtime_ns};".encode())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        """Image counts, vertex counts and ROIs present per hemisphere (what ``info`` prints)."""
        return {
            "subject": self.name,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "n_vertices": dict(self.n_vertices),
            "rois": {h: self.rois(h) for h in HEMIS},
            "noise_ceiling": all(fsaccess.is_file(self.noise_ceiling_path(h)) for h in HEMIS),
        }

    # -- validation ----------------------------------------------------------------------
    def validate(self) -> None:
        """Check every file of this subject; raise ``DatasetError`` on the first problem."""
        split = self.dir / "training_split"
        self.train_images = _sorted_images(split / "training_images", _TRAIN_NAME, "training")
        self.test_images = _sorted_images(self.dir / "test_split" / "test_images", _TEST_NAME, "test")
        if not self.train_images:
            raise DatasetError(f"{split / 'training_images'}: no training images")
        for hemi in HEMIS:
            shape = _validated_fmri(_file_key_or_missing(self.fmri_path(hemi)), self.n_train)
            self.n_vertices[hemi] = shape[1]
            n_mask = int(self.fsaverage_mask(hemi).sum())
            if n_mask != shape[1]:
                path = self._roi_path(f"{hemi}.all-vertices_fsaverage_space.npy")
                raise DatasetError(f"{path}: marks {n_mask} vertices but {self.fmri_path(hemi).name} has {shape[1]}")
            for cls in self.roi_classes():
                self.roi_mapping(cls)
                for space in ("challenge", "fsaverage"):
                    self.roi_labels(hemi, cls, space)
            self.noise_ceiling(hemi)


def _file_key_or_missing(path: Path) -> tuple[str, int, int]:
    if not fsaccess.is_file(path):
        raise DatasetError(f"{path}: missing file")
    return _file_key(path)


def parse_subject(value: int | str) -> int:
    """``1``, ``"1"``, ``"01"`` or ``"subj01"`` -> 1."""
    text = str(value).strip().lower().removeprefix("subj")
    if not text.isdigit() or not 1 <= int(text) <= 99:
        raise DatasetError(f"unknown subject '{value}' (use a number such as 1 or a name such as subj01)")
    return int(text)


@dataclass(eq=False)
class Dataset(SubjectLookup[Subject]):
    """A validated Algonauts 2023 dataset: the subjects found under ``root`` (``subject(1)``, ``subject("subj01")``)."""

    root: Path
    _subjects: dict[int, Subject]
    _parse_subject = staticmethod(parse_subject)


def open_dataset(root: str | Path, subjects: Iterable[int | str] | None = None) -> Dataset:
    """Find and validate the subjects under ``root`` (all of them, or only ``subjects``)."""
    root = Path(root).expanduser()
    if not fsaccess.is_dir(root):
        raise DatasetError(f"{root}: data directory not found")
    found = {int(m.group(1)): p for p in fsaccess.list_dir(root)
             if (m := _SUBJECT_DIR.match(p.name)) and fsaccess.is_dir(p)}
    if not found:
        raise DatasetError(f"{root}: no subject folders (expected subj01 ... subj08 in the Algonauts 2023 layout)")
    wanted = sorted(found) if subjects is None else [parse_subject(s) for s in subjects]
    result: dict[int, Subject] = {}
    for n in wanted:
        if n not in found:
            have = ", ".join(str(s) for s in sorted(found))
            raise DatasetError(f"{root}: unknown subject {n} (available: {have})")
        subj = Subject(root=root, number=n)
        subj.validate()
        result[n] = subj
    return Dataset(root=root, _subjects=result)
