"""The Algonauts 2023 submission: a zip of ``subjXX/{lh,rh}_pred_test.npy`` at its top level.

Each file is float32, (test images x challenge vertices) of that subject and hemisphere. The zip
is built in a temporary file, validated against the dataset (names, shapes, dtype, finite values,
every chosen subject present, under ``MAX_BYTES``) and only then renamed into place, so a zip at
the destination is always a valid one.
"""

from __future__ import annotations

import os
import re
import time
import zipfile
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np

from core.algonauts2023.dataset import HEMIS, Dataset, open_dataset
from core.util.errors import UserError
from core.util.fileio import atomic_path
from core.util.fsaccess import describe, human_bytes
from core.runs.store import Run

MAX_BYTES = 300 * 1024 * 1024
# what a damaged or hostile zip raises while read: bad structure or CRC, a broken deflate stream, an
# encrypted or unsupported entry
ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError)
NPY_HEADER_MAX = 1 << 16  # bytes: a .npy header is ~128 bytes; numpy refuses those over 10,000 by default
_ENTRY = re.compile(r"^subj(\d{2})/(lh|rh)_pred_test\.npy$")

Predictions = Mapping[int, Mapping[str, np.ndarray]]  # subject -> hemisphere -> (n_test, n_vertices)


def entry_name(subject: int, hemi: str) -> str:
    return f"subj{subject:02d}/{hemi}_pred_test.npy"


def _check_array(where: str, array: np.ndarray, expected: tuple[int, int]) -> None:
    if array.dtype != np.float32:
        raise UserError(f"{where}: expected float32 predictions, found {array.dtype}")
    if array.shape != expected:
        raise UserError(f"{where}: expected shape {expected} (test images x vertices), found {array.shape}")
    if not np.isfinite(array).all():
        raise UserError(f"{where}: contains NaN or infinite values")


def read_npy_entry(zf: zipfile.ZipFile, name: str, shape: tuple[int, ...], dtype, *, where: str) -> np.ndarray:
    """The ``.npy`` array ``name`` of an open zip, read only once its header says ``shape`` and ``dtype``
    and the zip's declared size fits them: a header claiming petabytes, or an entry that would inflate
    beyond its array (a zip bomb), is refused in one line before anything is allocated."""
    dtype = np.dtype(dtype)
    expected_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    info = zf.getinfo(name)
    limit = expected_bytes + NPY_HEADER_MAX
    if info.file_size > limit:
        raise UserError(f"{where}: {name} would inflate to {human_bytes(info.file_size)}, more than its "
                        f"{shape} {dtype} array needs ({human_bytes(expected_bytes)}); refusing to read it")
    with zf.open(info) as fh:
        try:
            version = np.lib.format.read_magic(fh)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy version {version}")
            found_shape, fortran, found_dtype = read_header(fh, max_header_size=NPY_HEADER_MAX)
        except Exception as exc:  # ValueError, SyntaxError from the header's literal, EOF...
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{where}: {name} is not a readable .npy array ({reason[:160]})") from None
        if found_dtype != dtype:
            raise UserError(f"{where}: {name}: expected {dtype} predictions, found {found_dtype}")
        if tuple(found_shape) != tuple(shape):
            raise UserError(f"{where}: {name}: expected shape {tuple(shape)} (test images x vertices), the header "
                            f"declares {tuple(found_shape)}")
        if fortran:
            raise UserError(f"{where}: {name}: Fortran-order arrays are not accepted (save a C-order array)")
        data = fh.read(expected_bytes + 1)
    if len(data) != expected_bytes:
        raise UserError(f"{where}: {name} holds {len(data)} bytes of data, its header needs {expected_bytes} "
                        "(truncated or padded)")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def validate_submission(path: str | os.PathLike, dataset: Dataset, subjects: list[int]) -> None:
    """Raise ``UserError`` (one line) unless ``path`` is a valid submission for ``subjects``."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UserError(describe(path, exc)) from None
    if size >= MAX_BYTES:
        raise UserError(f"{path}: {size / 2**20:.0f} MB, the challenge accepts less than {MAX_BYTES // 2**20} MB")
    expected = {entry_name(s, h) for s in subjects for h in HEMIS}
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            extra = sorted(n for n in names if n not in expected)
            if extra:
                raise UserError(f"{path}: unexpected entry '{extra[0]}' (only subjXX/{{lh,rh}}_pred_test.npy at the top)")
            missing = sorted(expected - set(names))
            if missing:
                raise UserError(f"{path}: missing {missing[0]} (every chosen subject needs both hemispheres)")
            for name in sorted(expected):
                subject, hemi = _ENTRY.match(name).groups()  # type: ignore[union-attr]
                subj = dataset.subject(int(subject))
                shape = (subj.n_test, subj.n_vertices[hemi])
                _check_array(f"{path}: {name}", read_npy_entry(zf, name, shape, np.float32, where=str(path)), shape)
    except ZIP_ERRORS as exc:
        raise UserError(f"{path}: not a valid zip file ({str(exc)[:160] or type(exc).__name__})") from None


def build_submission(out: str | os.PathLike, predictions: Predictions, dataset: Dataset) -> Path:
    """Write and validate the submission zip for ``predictions`` at ``out`` (atomically)."""
    out = Path(out)
    if not predictions:
        raise UserError("no predictions to submit: choose at least one subject")
    subjects = sorted(int(s) for s in predictions)
    for s in subjects:
        subj = dataset.subject(s)
        for hemi in HEMIS:
            if hemi not in predictions[s]:
                raise UserError(f"subj{s:02d}: no {hemi} test predictions")
            _check_array(f"subj{s:02d} {hemi} predictions", np.asarray(predictions[s][hemi]),
                         (subj.n_test, subj.n_vertices[hemi]))
    with atomic_path(out) as tmp:
        with zipfile.ZipFile(tmp, "w") as zf:
            for s in subjects:
                for hemi in HEMIS:
                    info = zipfile.ZipInfo(entry_name(s, hemi), date_time=time.localtime()[:6])
                    info.compress_type = zipfile.ZIP_DEFLATED
                    with zf.open(info, "w", force_zip64=True) as fh:
                        np.lib.format.write_array(fh, np.asarray(predictions[s][hemi]), allow_pickle=False)
        validate_submission(tmp, dataset, subjects)
    return out


def prediction_path(run_dir: Path, subject: int, hemi: str) -> Path:
    """Where a run keeps a subject's test predictions (its run directory mirrors the zip)."""
    return run_dir / entry_name(subject, hemi)


def build_from_runs(out: str | os.PathLike, runs: list[Run], data: str | os.PathLike | None = None) -> Path:
    """The submission from chosen finished fit or pipeline runs (each subject in exactly one of them).

    The dataset is ``data`` if given, else the one the runs were fitted on (they must agree).
    """
    if not runs:
        raise UserError("no runs chosen: choose one finished run per subject")
    by_subject: dict[int, Run] = {}
    for run in runs:
        if run.status != "done":
            raise UserError(f"run {run.id} is {run.status}, not done: only finished runs can be submitted")
        subjects = run.config.get("subjects") or []
        if not subjects or not all(prediction_path(run.dir, s, h).is_file() for s in subjects for h in HEMIS):
            raise UserError(f"run {run.id} ({run.kind}) has no test predictions")
        for subject in subjects:
            if subject in by_subject:
                raise UserError(f"two runs for subj{subject:02d} ({by_subject[subject].id} and {run.id}): choose one")
            by_subject[subject] = run
    roots = {str(r.config.get("data")) for r in runs}
    if data is None and len(roots) != 1:
        raise UserError(f"the chosen runs were fitted on different data directories ({', '.join(sorted(roots))})")
    dataset = open_dataset(data if data is not None else roots.pop(), sorted(by_subject))
    predictions = {s: {h: np.load(prediction_path(r.dir, s, h), mmap_mode="r", allow_pickle=False) for h in HEMIS}
                   for s, r in by_subject.items()}
    return build_submission(out, predictions, dataset)
