"""Algonauts 2021 submissions: one pickle per track, zipped, as the devkit's ``prepare_submission.py``.

::

    mini_track.zip  ->  mini_track.pkl = {ROI: {"sub01": (n_test, n_voxels), ...} for LOC, FFA, STS, EBA, PPA, V1..V4}
    full_track.zip  ->  full_track.pkl = {"WB": {"sub01": (n_test, n_voxels), ...}}

Arrays are float32 test-clip predictions of that subject's ROI voxels (in the order of its
``train`` array). The pickle is written with protocol 4 (numpy arrays then pickle through
numpy's ``_reconstruct``, which the restricted unpickler reads); the zip is built in a temporary
file, read back with :mod:`core.util.safe_pickle` and checked value for value against the dataset
(every ROI of the track for every chosen subject, shapes, finite values) before it is renamed
into place, so a zip at the destination is always a valid one.
"""

from __future__ import annotations

import os
import pickle
import time
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from core.util import safe_pickle
from core.algonauts2021.dataset import TRACK_ROIS, TRACKS, Dataset2021, parse_subject2021, subject_name
from core.util.errors import UserError
from core.util.fileio import atomic_path
from core.util.fsaccess import human_bytes
from core.algonauts2023.submission import ZIP_ERRORS

PICKLE_PROTOCOL = 4
MAX_PICKLE_BYTES = 2 << 30  # a generous bound, for reading without a dataset to size it by
Predictions2021 = Mapping[str, Mapping[int | str, np.ndarray]]  # ROI -> subject -> (n_test, n_voxels)


def pickle_name(track: str) -> str:
    return f"{_check_track(track)}.pkl"


def zip_name(track: str) -> str:
    return f"{_check_track(track)}.zip"


def _check_track(track: str) -> str:
    if track not in TRACKS:
        raise UserError(f"unknown track '{track}' (use {' or '.join(TRACKS)})")
    return track


def _check_array(where: str, array, expected: tuple[int, int]) -> np.ndarray:
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
        what = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise UserError(f"{where}: expected a float array of predictions, found {what}")
    if array.shape != expected:
        raise UserError(f"{where}: expected shape {expected} (test clips x voxels), found {array.shape}")
    if not np.isfinite(array).all():
        raise UserError(f"{where}: contains NaN or infinite values")
    return array


def check_predictions(track: str, predictions: Predictions2021, dataset: Dataset2021,
                      subjects: Iterable[int | str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The submission dict ``{ROI: {"subXX": float32 array}}`` for ``track``, checked against ``dataset``.

    ``subjects`` defaults to the subjects of the predictions; every ROI of the track is needed
    for each of them (``UserError`` with one line naming what is missing or wrong).
    """
    rois = TRACK_ROIS[_check_track(track)]
    if not isinstance(predictions, Mapping):
        raise UserError(f"{track}: expected {{ROI: {{subject: predictions}}}}, found {type(predictions).__name__}")
    extra = sorted(str(r) for r in predictions if r not in rois)
    if extra:
        raise UserError(f"{track}: unexpected ROI '{extra[0]}' (the {track} has {', '.join(rois)})")
    if subjects is None:
        subjects = {parse_subject2021(s) for per in predictions.values() for s in per}
    numbers = sorted({parse_subject2021(s) for s in subjects})
    if not numbers:
        raise UserError(f"{track}: no predictions to submit: choose at least one subject")
    out: dict[str, dict[str, np.ndarray]] = {}
    for roi in rois:
        if roi not in predictions:
            raise UserError(f"{track}: no {roi} predictions (the {track} needs {', '.join(rois)})")
        per = {parse_subject2021(s): a for s, a in predictions[roi].items()}
        unknown = sorted(set(per) - set(numbers))
        if unknown:
            raise UserError(f"{track}: {roi} has predictions for {subject_name(unknown[0])}, which was not chosen")
        out[roi] = {}
        for n in numbers:
            name = subject_name(n)
            if n not in per:
                raise UserError(f"{track}: no {roi} predictions for {name}")
            subj = dataset.subject(n)
            if roi not in subj.files:
                raise UserError(f"{track}: {name} has no {roi} data in {dataset.root}, so it cannot be submitted")
            array = _check_array(f"{track} {roi} {name}", np.asarray(per[n]), (subj.n_test, subj.n_voxels(roi)))
            out[roi][name] = np.ascontiguousarray(array, dtype=np.float32)
    return out


def max_pickle_bytes(dataset: Dataset2021, subjects: Iterable[int | str] | None = None) -> int:
    """The most a valid submission's pickle can hold for ``subjects`` (default: all) of ``dataset``:
    float64 predictions of every ROI, plus room for the pickle's own structure."""
    numbers = dataset.subjects if subjects is None else sorted({parse_subject2021(s) for s in subjects})
    total = 0
    for n in numbers:
        subj = dataset.subject(n)
        total += sum(subj.n_test * subj.n_voxels(roi) * 8 for roi in subj.rois())
    return total + (1 << 20)


def read_submission2021(path: str | os.PathLike, max_bytes: int = MAX_PICKLE_BYTES) -> tuple[str, dict]:
    """``(track, {ROI: {"subXX": array}})`` of a submission zip, through the restricted unpickler.

    A pickle that would inflate beyond ``max_bytes`` (a zip bomb, or not a submission) is refused
    from the zip's declared size before anything is read."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            if len(names) != 1 or names[0] not in {pickle_name(t) for t in TRACKS}:
                found = ", ".join(names[:5]) or "nothing"
                raise UserError(f"{path}: expected exactly one entry, mini_track.pkl or full_track.pkl (found {found})")
            info = zf.getinfo(names[0])
            if info.file_size > max_bytes:
                raise UserError(f"{path}: {names[0]} would inflate to {human_bytes(info.file_size)}, more than a "
                                f"submission for this dataset can hold ({human_bytes(max_bytes)}); refusing to read it")
            with zf.open(info) as fh:
                data = fh.read(max_bytes + 1)
    except ZIP_ERRORS as exc:
        raise UserError(f"{path}: not a valid zip file ({str(exc)[:160] or type(exc).__name__})") from None
    obj = safe_pickle.loads(data, f"{path}:{names[0]}")
    if not isinstance(obj, dict) or not all(isinstance(v, dict) for v in obj.values()):
        raise UserError(f"{path}: {names[0]} must hold {{ROI: {{subject: predictions}}}}")
    return names[0].removesuffix(".pkl"), obj


def validate_submission2021(path: str | os.PathLike, dataset: Dataset2021,
                            subjects: Iterable[int | str] | None = None) -> str:
    """Raise ``UserError`` (one line) unless ``path`` is a valid submission; returns its track."""
    track, obj = read_submission2021(path, max_pickle_bytes(dataset, subjects))
    try:
        check_predictions(track, obj, dataset, subjects)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    return track


def build_submission2021(out: str | os.PathLike, track: str, predictions: Predictions2021, dataset: Dataset2021,
                         subjects: Iterable[int | str] | None = None) -> Path:
    """Write ``<track>.pkl`` zipped at ``out`` (atomically), validated and read back value for value."""
    out = Path(out)
    results = check_predictions(track, predictions, dataset, subjects)
    payload = pickle.dumps(results, protocol=PICKLE_PROTOCOL)
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            info = zipfile.ZipInfo(pickle_name(track), date_time=time.localtime()[:6])
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as fh:
                fh.write(payload)
        read_track, back = read_submission2021(tmp)
        check_predictions(read_track, back, dataset, [parse_subject2021(s) for s in results[TRACK_ROIS[track][0]]])
        for roi, per in results.items():
            for name, array in per.items():
                if not np.array_equal(back[roi][name], array):
                    raise UserError(f"{out}: {roi} {name} did not read back identically")
    return out
