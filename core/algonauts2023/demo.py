"""The embedded demo dataset: a synthetic NSD / Algonauts 2023 look-alike with real structure.

``generate_demo(out)`` writes, for each subject, exactly the Algonauts 2023 layout as the
organisers ship it (``subjXX/training_split``, ``test_split``, ``roi_masks``), the public
per-subject noise-ceiling files (``noise_ceiling/subjXX/{lh,rh}.npy``), the ground truth of the
simulation (``demo_metadata/``) and a marker ``DEMO_README.txt``. ``ensure_demo()`` generates it
once into the user's cache (``core.util.paths.demo_dir()``).

What is simulated (all deterministic from ``seed``; same seed -> byte-identical files):

* **Cortex.** Challenge vertices are real fsaverage vertices (indices < 10,242, i.e. the
  fsaverage5 vertices nilearn bundles) in occipital, ventral/lateral occipito-temporal and
  posterior parietal cortex. A calcarine path on the real fsaverage mesh anchors a retinotopic
  map: geodesic distance from the calcarine gives V1 / V2 / V3 bands (dorsal = lower visual
  field, ventral = upper), hV4 beyond ventral V3, eccentricity grows anteriorly along the
  calcarine from the foveal confluence at the occipital pole (log cortical magnification), the
  left hemisphere sees the right visual field. Category ROIs (faces, bodies, places, words) are
  thresholded geodesic "selectivity blobs" around literature MNI coordinates (FFA on the
  fusiform, PPA on the collateral sulcus, EBA/OFA/OPA lateral occipital, RSC medial...);
  streams partition the challenge vertices coarsely. Each subject jitters ROI centres, sizes and
  borders; a few fragile ROIs are absent in some subject/hemisphere (as in real data).
* **Images.** Procedural 425x425 RGB scenes: a textured or scene-like background (outdoor
  scenes and rooms count as *places*) and 0-3 objects: cartoon faces, stick/blob bodies, words
  (Pillow's bundled font), generic shapes. Images are a function of (seed, NSD id), so an NSD id
  shared by two subjects is the same picture (test images are shared, like NSD's shared images).
* **Responses.** Retinotopic vertices: a Gaussian pRF (size growing with eccentricity and from
  V1 to hV4) over the local edge-energy map, with a compressive exponent. Category vertices:
  their selectivity for faces / bodies / places / words / objects (with weaker responses to
  neighbouring categories) times how much of that category each image holds. Every vertex
  has its own noise-ceiling SNR; ``N_REPS`` noisy repeats are averaged, then z-scored per
  vertex. Noise ceiling = ``100 * ncsnr^2 / (ncsnr^2 + 1 / N_REPS)`` (NSD's formula) from
  the known signal and noise levels. Test images get no fMRI, as in the challenge.
"""

from __future__ import annotations

import csv
import functools
import os
import shutil
import string
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from core.algonauts2023.dataset import HEMIS, ROI_CLASSES
from core.viz.surfaces import N_FSAVERAGE, N_FSAVERAGE5
from core.util.errors import UserError
from core.util.progress import Progress, report

GENERATOR_VERSION = 1
MARKER = "DEMO_README.txt"
IMAGE_SIZE = 425
N_NSD_IMAGES = 73_000
N_REPS = 3
FIELD_OF_VIEW_DEG = 8.4  # NSD images subtended 8.4 x 8.4 degrees
GRID = 48  # resolution of the low-level feature maps (pixels per image side)
PNG_COMPRESS_LEVEL = 1
CATEGORIES = ("face", "body", "place", "word", "object")
CLASS_CATEGORY = {"floc-faces": "face", "floc-bodies": "body", "floc-places": "place", "floc-words": "word"}

# Category ROIs: (class, name, left-hemisphere MNI-like centre on the fsaverage pial surface,
# geodesic radius in mm, peak selectivity). The right hemisphere mirrors x.
_FLOC_ROIS: tuple[tuple[str, str, tuple[float, float, float], float, float], ...] = (
    ("floc-faces", "OFA", (-40, -80, -10), 9, 0.9),
    ("floc-faces", "FFA-1", (-40, -60, -18), 9, 1.0),
    ("floc-faces", "FFA-2", (-40, -47, -20), 8, 0.9),
    ("floc-faces", "mTL-faces", (-30, -30, -18), 6, 0.6),
    ("floc-faces", "aTL-faces", (-38, -12, -32), 6, 0.6),
    ("floc-bodies", "EBA", (-48, -72, 4), 13, 1.0),
    ("floc-bodies", "FBA-1", (-44, -55, -16), 8, 0.8),
    ("floc-bodies", "FBA-2", (-44, -43, -16), 7, 0.7),
    ("floc-bodies", "mTL-bodies", (-36, -34, -10), 6, 0.6),
    ("floc-places", "OPA", (-34, -84, 22), 10, 1.0),
    ("floc-places", "PPA", (-26, -46, -10), 10, 1.0),
    ("floc-places", "RSC", (-14, -56, 12), 9, 0.9),
    ("floc-words", "OWFA", (-42, -76, -14), 7, 0.8),
    ("floc-words", "VWFA-1", (-44, -58, -12), 8, 1.0),
    ("floc-words", "VWFA-2", (-46, -46, -12), 7, 0.9),
    ("floc-words", "mfs-words", (-42, -38, -20), 6, 0.7),
    ("floc-words", "mTL-words", (-34, -26, -14), 6, 0.6),
)
# ROIs that may be absent in a subject/hemisphere (small, anterior or lateralised ones).
_FRAGILE_ROIS = ("mTL-faces", "aTL-faces", "mTL-bodies", "FBA-2", "VWFA-2", "mfs-words", "mTL-words")
_FORCED_ABSENT = {(2, "rh", "mTL-words"), (1, "lh", "mTL-bodies")}
# How strongly a region selective for one category also answers the others (rows: ROI category).
_CROSSTALK = {
    "face": {"face": 1.0, "body": 0.35, "word": 0.15, "object": 0.1},
    "body": {"body": 1.0, "face": 0.3, "object": 0.2},
    "place": {"place": 1.0, "object": 0.15},
    "word": {"word": 1.0, "face": 0.2, "object": 0.1},
}
# Left-hemisphere calcarine sulcus, posterior (occipital pole) to anterior, on the pial surface.
_CALCARINE_LH = ((-10.0, -100.0, 0.0), (-11.5, -89.0, 2.0), (-13.0, -80.0, 8.0), (-19.0, -73.0, 5.0), (-21.0, -59.0, 3.0))
# Retinotopic band edges (geodesic mm from the calcarine): V1 | V2 | V3 | hV4 and pRF size slopes.
_BANDS = (12.0, 21.0, 28.0, 37.0)
_PRF_SLOPE = {"V1": 0.12, "V2": 0.18, "V3": 0.26, "hV4": 0.38, "other": 0.6}


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------
def generate_demo(
    out: str | os.PathLike,
    *,
    subjects: Iterable[int] = (1, 2),
    n_train: int = 1000,
    n_test: int = 100,
    seed: int = 0,
    progress: Optional[Progress] = None,
) -> Path:
    """Write a demo dataset in the Algonauts 2023 layout to ``out``; returns ``out``.

    Generation happens in a temporary sibling directory renamed onto ``out`` at the end, so an
    interrupted run never leaves a half dataset. ``out`` must not exist or be an empty directory.
    """
    out = Path(out).expanduser()
    subjects, n_train, n_test, seed = check_params(subjects, n_train, n_test, seed)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: already exists and is not empty; choose a new directory")
    tmp = _generate_temp(out, subjects, n_train, n_test, seed, progress)
    try:
        if out.exists():
            out.rmdir()  # empty (checked above); a race that filled it makes this fail loudly
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report(progress, 1.0, "demo dataset ready")
    return out


def check_params(subjects: Iterable[int], n_train: int, n_test: int, seed: int) -> tuple[tuple[int, ...], int, int, int]:
    """Validate ``generate_demo``'s parameters (``UserError`` with one line if wrong)."""
    try:
        subjects = tuple(int(s) for s in subjects)
        n_train, n_test, seed = int(n_train), int(n_test), int(seed)
    except (TypeError, ValueError):
        raise UserError("demo: subjects, n_train, n_test and seed must be integers") from None
    if not subjects or any(not 1 <= s <= 99 for s in subjects) or len(set(subjects)) != len(subjects):
        raise UserError(f"demo: subjects must be distinct numbers 1..99, got {list(subjects)}")
    if n_train < 10 or n_test < 1:
        raise UserError(f"demo: need at least 10 training and 1 test image per subject (got {n_train} and {n_test})")
    if n_train + n_test > N_NSD_IMAGES // 2:
        raise UserError(f"demo: at most {N_NSD_IMAGES // 2} images per subject (got {n_train + n_test})")
    if seed < 0:
        raise UserError(f"demo: seed must be >= 0 (got {seed})")
    return subjects, n_train, n_test, seed


def _generate_temp(out: Path, subjects, n_train, n_test, seed, progress) -> Path:
    """Generate into a new temporary sibling of ``out``; removed again if anything fails."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        _generate_into(tmp, subjects, n_train, n_test, seed, progress)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def ensure_demo(path: Optional[Path] = None, progress: Optional[Progress] = None, **params) -> Path:
    """The demo dataset at ``path`` (default ``core.util.paths.demo_dir()``), generated once if absent.

    A complete demo is recognised by its marker file; one from an older generator version is
    replaced. ``params`` go to ``generate_demo`` (defaults: 2 subjects, 1000 + 100 images).
    Several processes may call this at once: each generates into its own temporary directory
    and the first to finish wins.
    """
    if path is None:
        from core.util.paths import demo_dir

        path = demo_dir()
    path = Path(path).expanduser()
    if is_demo(path):
        return path
    outdated = (path / MARKER).is_file()
    if path.exists() and not outdated and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"{path}: exists but is not a demo dataset (no {MARKER}); move it away to regenerate")
    _remove_stale_temps(path)
    try:
        if not outdated:
            return generate_demo(path, progress=progress, **params)
        p = check_params(**{"subjects": (1, 2), "n_train": 1000, "n_test": 100, "seed": 0, **params})
        tmp = _generate_temp(path, *p, progress)
        old = path.parent / f".{path.name}.tmp-old-{os.getpid()}-{time.time_ns()}"
        try:
            os.replace(path, old)
            os.replace(tmp, path)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(old, ignore_errors=True)
        report(progress, 1.0, "demo dataset ready")
        return path
    except (UserError, OSError):
        if is_demo(path):  # another process finished first
            return path
        raise


def is_demo(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a complete demo dataset of this generator version."""
    marker = Path(path) / MARKER
    try:
        text = marker.read_text(encoding="utf-8")
    except OSError:
        return False
    return f"generator_version: {GENERATOR_VERSION}\n" in text


def _remove_stale_temps(path: Path, max_age_s: float = 3600.0) -> None:
    parent = path.parent
    if not parent.is_dir():
        return
    now = time.time()
    for p in parent.glob(f".{path.name}.tmp-*"):
        try:
            if now - p.stat().st_mtime > max_age_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------
def _generate_into(root: Path, subjects, n_train, n_test, seed, progress) -> None:
    report(progress, 0.0, "building cortex model")
    ids = _choose_nsd_ids(subjects, n_train, n_test, seed)
    models = {s: {h: build_hemi_model(h, s, seed) for h in HEMIS} for s in subjects}
    meta = root / "demo_metadata"
    meta.mkdir()
    rendered: dict[int, tuple[Path, ImageInfo]] = {}  # nsd id -> (first file, info)
    n_per_subject = n_train + n_test
    for k, subj in enumerate(subjects):
        # each subject gets an equal share of [0.05, 1): 90% images, 10% fMRI
        start, share = 0.05 + 0.95 * k / len(subjects), 0.95 / len(subjects)
        sname = f"subj{subj:02d}"
        sdir = root / sname
        infos: dict[str, list[ImageInfo]] = {}
        done = 0
        for split, folder, prefix in (
            ("train", sdir / "training_split" / "training_images", "train"),
            ("test", sdir / "test_split" / "test_images", "test"),
        ):
            folder.mkdir(parents=True)
            infos[split] = []
            for i, nsd in enumerate(ids[subj][split]):
                name = f"{prefix}-{i + 1:04d}_nsd-{nsd:05d}.png"
                if nsd in rendered:  # the same NSD image as another subject's: the same picture
                    shutil.copyfile(rendered[nsd][0], folder / name)
                    info = rendered[nsd][1]
                else:
                    img, info = render_image(int(nsd), seed)
                    img.save(folder / name, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
                    info.energy = local_contrast_map(img)
                    rendered[nsd] = (folder / name, info)
                infos[split].append(info)
                done += 1
                if done % 25 == 0:
                    report(progress, start + 0.9 * share * done / n_per_subject, f"{sname}: images {done}/{n_per_subject}")
            _write_labels(meta / f"{sname}_{split}_labels.csv", meta / f"{sname}_{split}_objects.csv", split, infos[split])
        report(progress, start + 0.9 * share, f"{sname}: simulating fMRI")
        _write_subject_responses(root, subj, models[subj], infos["train"], seed)
    _write_marker(root, subjects, n_train, n_test, seed)


def _choose_nsd_ids(subjects, n_train, n_test, seed) -> dict[int, dict[str, np.ndarray]]:
    """Test images shared by all subjects; a quarter of the training images shared too."""
    rng = np.random.default_rng([seed, 101])
    perm = rng.permutation(N_NSD_IMAGES)
    n_shared = n_train // 4
    test = np.sort(perm[:n_test])
    shared = perm[n_test : n_test + n_shared]
    pool = perm[n_test + n_shared :]
    out = {}
    for s in subjects:
        rs = np.random.default_rng([seed, 102, s])
        own = rs.choice(pool, n_train - n_shared, replace=False)
        out[s] = {"train": np.sort(np.concatenate([shared, own])), "test": test}
    return out


def _write_marker(root: Path, subjects, n_train, n_test, seed) -> None:
    from core.util.fileio import write_text

    subj = " ".join(str(s) for s in subjects)
    write_text(
        root / MARKER,
        "Brain Encoding Studio demo dataset (synthetic; not real fMRI data)\n"
        "\n"
        "Procedurally generated images and simulated responses in the Algonauts 2023 layout\n"
        "(subjXX/training_split, test_split, roi_masks) with noise ceilings beside it\n"
        "(noise_ceiling/subjXX/{lh,rh}.npy) and the simulation's ground truth in demo_metadata/.\n"
        "Challenge vertices are real fsaverage vertices of visual cortex; ROIs are placed\n"
        "plausibly but are not any person's anatomy. Regenerate with: python -m core demo --out DIR\n"
        "\n"
        f"generator_version: {GENERATOR_VERSION}\n"
        f"seed: {seed}\n"
        f"subjects: {subj}\n"
        f"n_train: {n_train}\n"
        f"n_test: {n_test}\n"
        f"n_reps: {N_REPS}\n",
    )


# ---------------------------------------------------------------------------------------------
# Cortex model
# ---------------------------------------------------------------------------------------------
@dataclass
class _Mesh:
    pial: np.ndarray
    mid: np.ndarray
    normals: np.ndarray  # of the inflated surface: which way each vertex faces
    graph: "object"  # scipy CSR adjacency, edge weights = midthickness lengths in mm
    smoother: "object"  # row-normalised adjacency (with self loops) for smoothing fields


@functools.lru_cache(maxsize=2)
def _mesh(hemi: str) -> _Mesh:
    from nilearn import datasets
    from scipy import sparse

    fs = datasets.load_fsaverage("fsaverage5")
    side = {"lh": "left", "rh": "right"}[hemi]
    pial = np.asarray(fs["pial"].parts[side].coordinates, dtype=np.float64)
    white = np.asarray(fs["white_matter"].parts[side].coordinates, dtype=np.float64)
    infl = np.asarray(fs["inflated"].parts[side].coordinates, dtype=np.float64)
    faces = np.asarray(fs["pial"].parts[side].faces, dtype=np.int64)
    mid = (pial + white) / 2
    n = pial.shape[0]
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    w = np.linalg.norm(mid[e[:, 0]] - mid[e[:, 1]], axis=1)
    graph = sparse.coo_matrix((np.r_[w, w], (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n)).tocsr()
    adj = sparse.coo_matrix((np.ones(2 * len(e) + n), (np.r_[e[:, 0], e[:, 1], np.arange(n)],
                                                        np.r_[e[:, 1], e[:, 0], np.arange(n)])), shape=(n, n)).tocsr()
    smoother = sparse.diags(1.0 / np.asarray(adj.sum(1)).ravel()) @ adj
    fn = np.cross(infl[faces[:, 1]] - infl[faces[:, 0]], infl[faces[:, 2]] - infl[faces[:, 0]])
    normals = np.zeros_like(infl)
    for k in range(3):
        np.add.at(normals, faces[:, k], fn)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True) + 1e-12
    return _Mesh(pial=pial, mid=mid, normals=normals, graph=graph, smoother=smoother.tocsr())


def _nearest(coords: np.ndarray, point, allowed: Optional[np.ndarray] = None) -> int:
    d = np.linalg.norm(coords - np.asarray(point, dtype=np.float64), axis=1)
    if allowed is not None:
        d = np.where(allowed, d, np.inf)
    return int(np.argmin(d))


def _mirror(point, hemi: str):
    x, y, z = point
    return (x if hemi == "lh" else -x, y, z)


def _smooth_field(mesh: _Mesh, rng: np.random.Generator, iterations: int = 12) -> np.ndarray:
    """A spatially smooth random field over the mesh, standardised to mean 0, sd 1."""
    f = rng.standard_normal(mesh.pial.shape[0])
    for _ in range(iterations):
        f = mesh.smoother @ f
    return (f - f.mean()) / (f.std() + 1e-12)


@functools.lru_cache(maxsize=2)
def _calcarine(hemi: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Geodesic distance to the calcarine path, arc position (mm from the pole) of the nearest
    path vertex, that vertex, and the dorsal(+1)/ventral(-1) side of each vertex."""
    from scipy.sparse import csgraph

    m = _mesh(hemi)
    medial = m.normals[:, 0] * (1 if hemi == "lh" else -1) > 0.2
    anchors = [_nearest(m.pial, _mirror(p, hemi), medial) for p in _CALCARINE_LH]
    path = [anchors[0]]
    for a, b in zip(anchors[:-1], anchors[1:]):
        _, pred = csgraph.dijkstra(m.graph, indices=a, return_predecessors=True)
        seg = [b]
        while seg[-1] != a:
            seg.append(int(pred[seg[-1]]))
        path.extend(reversed(seg[:-1]))
    path = np.array(path)
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(m.mid[path], axis=0), axis=1))]
    dist, _, src = csgraph.dijkstra(m.graph, indices=path, min_only=True, return_predecessors=True)
    arc_of = dict(zip(path.tolist(), arc.tolist()))
    a = np.array([arc_of.get(int(s), 0.0) for s in src])
    dz = m.pial[:, 2] - m.pial[src, 2]
    split = np.median(dz[dist < _BANDS[0]])  # balance the dorsal and ventral banks of V1
    side = np.where(dz >= split, 1.0, -1.0)
    for _ in range(3):  # clean speckles where the sulcus wiggles
        side = m.smoother @ side
    side = np.where(side >= 0, 1.0, -1.0)
    return dist, a, src, side


@dataclass
class HemiModel:
    """Ground truth of one subject's hemisphere: which vertices, their ROIs and their tuning."""

    hemi: str
    subject: int
    fs_index: np.ndarray  # fsaverage index of each challenge vertex (ascending)
    labels: dict[str, np.ndarray]  # ROI class -> int label per challenge vertex (0 = none)
    area: np.ndarray  # "V1".."hV4" or "other" per challenge vertex
    rf_x: np.ndarray  # pRF centre in image units (-1 left .. 1 right)
    rf_y: np.ndarray  # pRF centre in image units (-1 top .. 1 bottom)
    rf_sigma: np.ndarray  # pRF size in image units (1 = half the image)
    ecc_deg: np.ndarray
    angle_deg: np.ndarray  # polar angle, 0 = horizontal meridian, +90 = upper vertical meridian
    lowlevel_weight: np.ndarray
    exponent: np.ndarray  # compressive exponent on the pRF response
    category_weights: np.ndarray  # (n, len(CATEGORIES))
    ncsnr: np.ndarray  # noise-ceiling SNR (signal sd / single-trial noise sd)
    absent: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_vertices(self) -> int:
        return int(self.fs_index.shape[0])


def build_hemi_model(hemi: str, subject: int, seed: int) -> HemiModel:
    """The cortex model of one subject's hemisphere (deterministic from seed and subject)."""
    from scipy.sparse import csgraph

    m = _mesh(hemi)
    n = m.pial.shape[0]
    rng = np.random.default_rng([seed, 201, subject, HEMIS.index(hemi)])
    dist, arc, _src, side = _calcarine(hemi)
    lat_sign = -1.0 if hemi == "lh" else 1.0
    nx = m.normals[:, 0] * lat_sign  # > 0: faces laterally
    nz = m.normals[:, 2]
    y, z = m.pial[:, 1], m.pial[:, 2]

    # Subject-specific borders: scaled band widths plus a smooth random offset (mm).
    d = dist * rng.uniform(0.92, 1.08) + 1.5 * _smooth_field(m, rng)
    b1, b2, b3, b4 = _BANDS
    dorsal = side > 0
    area = np.full(n, "other", dtype=object)
    area[d < b4] = "hV4"
    area[d < b3] = "V3"
    area[d < b2] = "V2"
    area[d < b1] = "V1"
    is_hv4 = (area == "hV4") & ~dorsal & (arc < 24) & (nz < 0.3)
    area[(area == "hV4") & ~is_hv4] = "other"

    # Visual-field map: eccentricity from the arc position (log cortical magnification),
    # polar angle from the position across the bands (mirror reversals at the area borders).
    ecc = np.clip(0.75 * (np.exp(arc / 20.0) - 1.0), 0.05, None)
    ecc = np.where(area == "other", np.minimum(ecc + 0.08 * np.clip(d - b3, 0, None), 12.0), ecc)
    frac = np.select(
        [area == "V1", area == "V2", area == "V3", area == "hV4"],
        [d / b1, 1 - (d - b1) / (b2 - b1), (d - b2) / (b3 - b2), 1 - (d - b3) / (b4 - b3)],
        default=0.5 + 0.45 * np.tanh(_smooth_field(m, rng)),
    )
    frac = np.clip(frac, 0, 1)
    angle = 90.0 * frac * np.where(dorsal, -1.0, 1.0)  # dorsal = lower field
    theta = np.deg2rad(angle)
    hemifield = 1.0 if hemi == "lh" else -1.0  # left hemisphere sees the right visual field
    half_fov = FIELD_OF_VIEW_DEG / 2
    rf_x = hemifield * ecc * np.cos(theta) / half_fov
    rf_y = -ecc * np.sin(theta) / half_fov
    slope = np.array([_PRF_SLOPE[a] for a in area])
    sigma_deg = (0.25 + slope * ecc) * rng.lognormal(0, 0.12, n)
    sigma_deg = np.where(area == "other", np.maximum(sigma_deg, 1.2), sigma_deg)
    rf_sigma = np.minimum(sigma_deg, 6.0) / half_fov

    # Category selectivity fields: geodesic blobs around each ROI centre, jittered per subject.
    sel = np.zeros((n, len(CATEGORIES)))
    roi_dist: dict[str, tuple[np.ndarray, float]] = {}
    absent = []
    for cls, name, centre, radius, peak in _FLOC_ROIS:
        c = np.asarray(_mirror(centre, hemi), dtype=np.float64) + rng.normal(0, 2.5, 3)
        r = radius * rng.uniform(0.85, 1.15)
        if cls == "floc-words" and hemi == "rh":
            r *= 0.75  # words are left-lateralised
            peak *= 0.8
        v0 = _nearest(m.pial, c, nz < 0.6)
        dd = csgraph.dijkstra(m.graph, indices=v0, limit=4 * r)
        gone = (subject, hemi, name) in _FORCED_ABSENT or (name in _FRAGILE_ROIS and rng.random() < 0.12)
        if gone:
            absent.append(name)
            peak *= 0.5  # the region still exists, below the localiser's threshold
        roi_dist[name] = (dd, r if not gone else 0.0)
        blob = peak * np.exp(-0.5 * (dd / (0.8 * r)) ** 2)
        k = CATEGORIES.index(CLASS_CATEGORY[cls])
        sel[:, k] = np.maximum(sel[:, k], blob)

    # Challenge vertices: occipital, ventral / lateral occipito-temporal and posterior parietal
    # cortex around the calcarine, with subject-specific ragged borders, plus every ROI.
    jitter = 4.0 * _smooth_field(m, rng)
    medial_face = nx < -0.55
    front = np.select([z < -8, z < 15], [-38.0, -56.0], default=-64.0)  # anterior edge by height
    keep = (
        (y + jitter < front)
        & (z + jitter < 48)
        & ~(medial_face & (y + jitter > -68) & (z > -4) & (d > b2))  # precuneus / medial wall
    )
    roi_member = {}
    for name, (dd, r) in roi_dist.items():
        roi_member[name] = (dd < r * (1 + 0.12 * jitter / 4.0)) if r > 0 else np.zeros(n, bool)
        if 0 < roi_member[name].sum() < 5:  # too small to survive the localiser's cluster threshold
            roi_member[name][:] = False
            absent.append(name)
        keep |= roi_member[name]
    for name in roi_member:
        roi_member[name] &= keep
    idx = np.flatnonzero(keep)
    sub = lambda a: a[idx]  # noqa: E731

    # ROI labels per class (challenge space). Overlaps within a class go to the nearest centre.
    labels: dict[str, np.ndarray] = {}
    names = ROI_CLASSES["prf-visualrois"]
    lab = np.zeros(n, dtype=np.int32)
    for a in ("V1", "V2", "V3"):
        lab[(area == a) & ~dorsal] = names.index(f"{a}v") + 1
        lab[(area == a) & dorsal] = names.index(f"{a}d") + 1
    lab[area == "hV4"] = names.index("hV4") + 1
    labels["prf-visualrois"] = lab[idx]
    for cls in ("floc-bodies", "floc-faces", "floc-places", "floc-words"):
        best = np.full(n, np.inf)
        lab = np.zeros(n, dtype=np.int32)
        for j, name in enumerate(ROI_CLASSES[cls]):
            dd, r = roi_dist[name]
            better = roi_member[name] & (dd / max(r, 1e-9) < best)
            lab[better] = j + 1
            best[better] = (dd / max(r, 1e-9))[better]
        labels[cls] = lab[idx]
    # Streams: early = V1-V3; a band beyond it split by where the cortex faces; then high level.
    st = ROI_CLASSES["streams"]
    s_lab = np.zeros(n, dtype=np.int32)
    early = np.isin(area, ("V1", "V2", "V3"))
    mid = ~early & (d < b3 + 14)
    ventral_face = (nz < -0.35) | (~dorsal & (z < -8))
    lateral_face = ~ventral_face & (nx > 0.35) & (z < 25)
    dorsal_face = ~ventral_face & ~lateral_face
    s_lab[early] = st.index("early") + 1
    s_lab[mid & ventral_face] = st.index("midventral") + 1
    s_lab[mid & lateral_face] = st.index("midlateral") + 1
    s_lab[mid & dorsal_face] = st.index("midparietal") + 1
    high = ~early & ~mid
    s_lab[high & ventral_face] = st.index("ventral") + 1
    s_lab[high & lateral_face] = st.index("lateral") + 1
    s_lab[high & dorsal_face] = st.index("parietal") + 1
    labels["streams"] = s_lab[idx]

    # Tuning: low-level drive fades with distance from early cortex; category weights from the
    # selectivity fields with cross-talk; a weak smooth random mixture everywhere else.
    area_c = sub(area)
    ll = np.clip(1.0 - (sub(d) - b3) / 25.0, 0.15, 1.0)
    cat = np.zeros((len(idx), len(CATEGORIES)))
    for cat_name, row in _CROSSTALK.items():
        k = CATEGORIES.index(cat_name)
        for other, wgt in row.items():
            cat[:, CATEGORIES.index(other)] += wgt * sub(sel[:, k])
    mixture = np.stack([np.clip(_smooth_field(m, rng), 0, None) for _ in CATEGORIES], axis=1)
    cat += 0.25 * (1 - ll[:, None]) * sub(mixture)
    cat[np.isin(area_c, ("V1", "V2", "V3"))] *= 0.2
    exponent = np.array([{"V1": 0.8, "V2": 0.7, "V3": 0.6, "hV4": 0.5}.get(a, 0.4) for a in area_c])

    # Noise-ceiling SNR: smooth over cortex, higher in early and selective cortex, lower at the
    # edges of the region and where the pRF falls outside the image; a few dead vertices.
    base = np.exp(0.35 * _smooth_field(m, rng))[idx]
    level = np.where(np.isin(area_c, ("V1", "V2", "V3", "hV4")), 1.1, 0.7 + 0.5 * sub(sel).max(1))
    edge = np.clip(1.2 - sub(d) / 90.0, 0.3, 1.0)
    vis = _rf_visibility(sub(rf_x), sub(rf_y), sub(rf_sigma))
    vis = np.where(area_c == "other", 1.0, 0.15 + 0.85 * vis)
    ncsnr = base * level * edge * vis * rng.lognormal(0, 0.15, len(idx))
    ncsnr[rng.random(len(idx)) < 0.04] *= 0.1
    ncsnr = np.clip(ncsnr, 0.0, 1.4)

    return HemiModel(
        hemi=hemi, subject=subject, fs_index=idx, labels=labels, area=area_c.astype(str),
        rf_x=sub(rf_x), rf_y=sub(rf_y), rf_sigma=sub(rf_sigma), ecc_deg=sub(ecc), angle_deg=sub(angle),
        lowlevel_weight=ll, exponent=exponent, category_weights=cat, ncsnr=ncsnr, absent=tuple(absent),
    )


def _rf_visibility(rx, ry, rs) -> np.ndarray:
    """Fraction of each Gaussian pRF's mass that falls on the image ([-1, 1]^2)."""
    from scipy.special import erf

    def inside(c):
        return 0.5 * (erf((1 - c) / (np.sqrt(2) * rs)) - erf((-1 - c) / (np.sqrt(2) * rs)))

    return inside(rx) * inside(ry)


def prf_weights(rf_x, rf_y, rf_sigma, grid: int = GRID) -> np.ndarray:
    """(grid*grid, n) float32 Gaussian pRF weights over the pixels of a ``local_contrast_map``.

    ``rf_x``, ``rf_y``, ``rf_sigma`` in image units (as in ``HemiModel`` and the vertex tables in
    ``demo_metadata``). Mass outside the image is lost (a pRF off the image sees nothing), so
    columns sum to at most 1.
    """
    rf_x, rf_y, rf_sigma = (np.asarray(a, dtype=np.float64) for a in (rf_x, rf_y, rf_sigma))
    c = (np.arange(grid) + 0.5) / grid * 2 - 1  # pixel centres in image units
    gx = np.exp(-0.5 * ((c[:, None] - rf_x[None, :]) / rf_sigma[None, :]) ** 2)  # (grid, n)
    gy = np.exp(-0.5 * ((c[:, None] - rf_y[None, :]) / rf_sigma[None, :]) ** 2)
    norm = 2 * np.pi * (rf_sigma * grid / 2) ** 2  # continuous Gaussian mass in pixels
    w = (gy[:, None, :] * gx[None, :, :]).reshape(grid * grid, -1) / norm
    return w.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------
@dataclass
class ImageInfo:
    """What an image shows: its background and objects (bounding boxes in pixels)."""

    nsd_id: int
    background: str  # "scene", "room", "texture" or "gradient"
    objects: list[dict]  # {"category", "x0", "y0", "x1", "y1"}
    energy: Optional[np.ndarray] = None  # (GRID, GRID) local contrast map

    def count(self, category: str) -> int:
        if category == "place":
            return int(self.background in ("scene", "room"))
        return sum(1 for o in self.objects if o["category"] == category)

    def drives(self) -> np.ndarray:
        """How much of each category the image holds (size- and, for faces/words, fovea-weighted)."""
        out = np.zeros(len(CATEGORIES))
        s = float(IMAGE_SIZE)
        for o in self.objects:
            w, h = (o["x1"] - o["x0"]) / s, (o["y1"] - o["y0"]) / s
            cx, cy = (o["x0"] + o["x1"]) / s - 1, (o["y0"] + o["y1"]) / s - 1
            size = np.sqrt(max(w * h, 0.0))
            fovea = np.exp(-(cx**2 + cy**2) / (2 * 0.6**2))
            if o["category"] in ("face", "word"):
                size *= 0.5 + 0.5 * fovea
            out[CATEGORIES.index(o["category"])] += size
        if self.background in ("scene", "room"):
            covered = sum(((o["x1"] - o["x0"]) * (o["y1"] - o["y0"])) for o in self.objects) / s**2
            out[CATEGORIES.index("place")] = max(0.3, 1.0 - 0.6 * covered)
        return out


_SKIN = ((241, 194, 160), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172), (170, 120, 90))
_LETTERS = string.ascii_lowercase


@functools.lru_cache(maxsize=16)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except Exception:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _color(rng, lo=0, hi=256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def render_image(nsd_id: int, seed: int = 0):
    """The demo picture for ``nsd_id``: a PIL RGB image (425x425) and its ``ImageInfo``."""
    from PIL import ImageDraw

    rng = np.random.default_rng([seed, 301, nsd_id])
    S = IMAGE_SIZE
    kind = rng.choice(["scene", "room", "texture", "gradient"], p=[0.3, 0.12, 0.33, 0.25])
    img = _background(rng, str(kind))
    draw = ImageDraw.Draw(img)
    if kind == "scene":
        _draw_scene(draw, rng)
    elif kind == "room":
        _draw_room(draw, rng)
    n_obj = int(rng.choice(4, p=[0.15, 0.4, 0.3, 0.15]))
    objects = []
    for _ in range(n_obj):
        category = str(rng.choice(["face", "body", "word", "object"], p=[0.27, 0.22, 0.2, 0.31]))
        box = {"face": _draw_face, "body": _draw_body, "word": _draw_word, "object": _draw_object}[category](draw, rng)
        x0, y0, x1, y1 = (int(np.clip(v, 0, S)) for v in box)
        if x1 - x0 > 2 and y1 - y0 > 2:
            objects.append({"category": category, "x0": x0, "y0": y0, "x1": x1, "y1": y1})
    return img, ImageInfo(nsd_id=int(nsd_id), background=str(kind), objects=objects)


def _background(rng, kind: str):
    from PIL import Image

    S = IMAGE_SIZE
    if kind in ("texture", "gradient"):
        n = int(rng.integers(2, 6)) if kind == "gradient" else int(rng.integers(4, 28))
        base = np.asarray(_color(rng, 30, 230), dtype=np.float32)
        amp = rng.uniform(20, 70) if kind == "gradient" else rng.uniform(30, 90)
        lum = rng.random((n, n, 1), dtype=np.float32) * 2 - 1
        chroma = rng.random((n, n, 3), dtype=np.float32) * 2 - 1
        small = base + amp * (0.8 * lum + rng.uniform(0.1, 0.5) * chroma)
        img = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8)).resize((S, S), Image.BICUBIC)
        if kind == "texture" and rng.random() < 0.5:  # an oriented grating / stripes
            arr = np.asarray(img, dtype=np.float32)
            t = np.linspace(-1, 1, S, dtype=np.float32)
            a = rng.uniform(0, np.pi)
            f = rng.uniform(3, 25)
            g = np.sin(f * np.pi * (np.cos(a) * t[None, :] + np.sin(a) * t[:, None]) + rng.uniform(0, 6.3))
            if rng.random() < 0.5:
                g = np.sign(g)
            arr = arr + rng.uniform(15, 60) * g[:, :, None]
            img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        return img
    sky = np.asarray(_color(rng, 120, 256), dtype=np.float32) * np.array([0.7, 0.85, 1.0], dtype=np.float32)
    ground = np.asarray(_color(rng, 40, 180), dtype=np.float32)
    col = np.linspace(0, 1, 8, dtype=np.float32)[:, None]
    small = np.concatenate([sky * (1 - 0.3 * col), ground * (0.7 + 0.3 * col)])[:, None, :]
    return Image.fromarray(np.clip(small, 0, 255).astype(np.uint8).repeat(2, axis=1)).resize((S, S), Image.BILINEAR)


def _draw_scene(draw, rng) -> None:
    S = IMAGE_SIZE
    horizon = int(S * rng.uniform(0.4, 0.62))
    draw.rectangle([0, horizon, S, S], fill=_color(rng, 40, 170))
    x = int(rng.integers(-40, 10))
    while x < S:  # a row of buildings with windows
        w = int(rng.integers(40, 110))
        h = int(rng.integers(50, horizon - 20))
        c = _color(rng, 60, 220)
        draw.rectangle([x, horizon - h, x + w, horizon], fill=c, outline=(30, 30, 30))
        wc = _color(rng, 150, 256) if rng.random() < 0.5 else (40, 50, 70)
        for wy in range(horizon - h + 10, horizon - 14, 18):
            for wx in range(x + 8, x + w - 12, 16):
                draw.rectangle([wx, wy, wx + 7, wy + 9], fill=wc)
        x += w + int(rng.integers(0, 30))
    vx = int(rng.integers(S // 4, 3 * S // 4))  # a road to a vanishing point
    draw.polygon([(vx - 4, horizon), (vx + 4, horizon), (int(S * rng.uniform(0.75, 1.2)), S),
                  (int(S * rng.uniform(-0.2, 0.25)), S)], fill=_color(rng, 70, 130))
    for frac in np.linspace(-0.5, 1.5, int(rng.integers(3, 7))):
        draw.line([(vx, horizon), (int(frac * S), S)], fill=(230, 230, 210), width=2)
    for _ in range(int(rng.integers(0, 4))):  # trees
        tx, ty = int(rng.integers(0, S)), int(rng.integers(horizon + 5, S))
        r = int(rng.integers(12, 35))
        draw.rectangle([tx - 3, ty - 2 * r, tx + 3, ty], fill=(90, 60, 30))
        draw.ellipse([tx - r, ty - 3 * r, tx + r, ty - r], fill=(int(rng.integers(20, 80)), int(rng.integers(100, 180)), 40))


def _draw_room(draw, rng) -> None:
    S = IMAGE_SIZE
    x0, y0 = int(S * rng.uniform(0.22, 0.38)), int(S * rng.uniform(0.22, 0.38))
    x1, y1 = int(S * rng.uniform(0.62, 0.78)), int(S * rng.uniform(0.58, 0.75))
    wall = np.asarray(_color(rng, 120, 240))
    draw.polygon([(0, 0), (S, 0), (x1, y0), (x0, y0)], fill=tuple(int(v) for v in wall * 0.95))  # ceiling
    draw.polygon([(0, S), (S, S), (x1, y1), (x0, y1)], fill=_color(rng, 60, 160))  # floor
    draw.polygon([(0, 0), (x0, y0), (x0, y1), (0, S)], fill=tuple(int(v) for v in wall * 0.8))
    draw.polygon([(S, 0), (x1, y0), (x1, y1), (S, S)], fill=tuple(int(v) for v in wall * 0.7))
    draw.rectangle([x0, y0, x1, y1], fill=tuple(int(v) for v in wall))
    for p, q in (((0, 0), (x0, y0)), ((S, 0), (x1, y0)), ((0, S), (x0, y1)), ((S, S), (x1, y1))):
        draw.line([p, q], fill=(40, 40, 40), width=2)
    if rng.random() < 0.7:  # a window or door on the back wall
        wx = int(rng.integers(x0 + 5, max(x0 + 6, x1 - 50)))
        draw.rectangle([wx, y0 + 15, wx + 40, y1 - (0 if rng.random() < 0.5 else 40)],
                       fill=_color(rng, 100, 256), outline=(50, 40, 30), width=3)
    for k in range(1, int(rng.integers(2, 6))):  # floor boards in perspective
        t = k / 6
        draw.line([(int(x0 + (0 - x0) * t * 2), S), (x0 + (x1 - x0) * k // 6, y1)], fill=(50, 40, 30), width=1)


def _place(rng, w, h):
    S = IMAGE_SIZE
    cx = rng.uniform(w / 2, S - w / 2) if w < S else S / 2
    cy = rng.uniform(h / 2, S - h / 2) if h < S else S / 2
    return cx, cy


def _draw_face(draw, rng):
    s = rng.uniform(70, 190)
    w, h = 0.78 * s, s
    cx, cy = _place(rng, w, h)
    x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    skin = _SKIN[int(rng.integers(len(_SKIN)))]
    if rng.random() < 0.7:  # hair
        draw.ellipse([x0 - 0.05 * w, y0 - 0.06 * h, x1 + 0.05 * w, cy + 0.1 * h], fill=_color(rng, 10, 120))
    draw.ellipse([x0, y0, x1, y1], fill=skin, outline=(60, 40, 30), width=2)
    ey = cy - 0.08 * h
    er = max(3.0, 0.09 * w)
    for ex in (cx - 0.2 * w, cx + 0.2 * w):
        draw.ellipse([ex - er, ey - 0.6 * er, ex + er, ey + 0.6 * er], fill=(250, 250, 250), outline=(40, 40, 40))
        pr = 0.5 * er
        draw.ellipse([ex - pr, ey - pr, ex + pr, ey + pr], fill=_color(rng, 0, 90))
        draw.line([(ex - er, ey - 1.3 * er), (ex + er, ey - 1.5 * er)], fill=(50, 30, 20), width=max(2, int(0.02 * s)))
    draw.line([(cx, ey + 0.3 * er), (cx - 0.04 * w, cy + 0.15 * h), (cx + 0.03 * w, cy + 0.17 * h)],
              fill=(120, 70, 50), width=2)
    mw = rng.uniform(0.18, 0.3) * w
    smile = rng.uniform(0.02, 0.1) * h
    draw.arc([cx - mw, cy + 0.22 * h - smile, cx + mw, cy + 0.3 * h + smile], 10, 170, fill=(150, 30, 40),
             width=max(2, int(0.03 * s)))
    return x0, y0 - (0.06 * h), x1, y1


def _draw_body(draw, rng):
    s = rng.uniform(110, 280)  # height
    w = 0.55 * s
    cx, cy = _place(rng, w, s)
    top = cy - s / 2
    col = _color(rng, 0, 200)
    thick = max(3, int(s * rng.uniform(0.04, 0.09)))
    hr = 0.09 * s
    draw.ellipse([cx - hr, top, cx + hr, top + 2 * hr], fill=_SKIN[int(rng.integers(len(_SKIN)))], outline=(40, 30, 20))
    neck, hip = (cx, top + 2 * hr), (cx + rng.uniform(-0.05, 0.05) * s, top + 0.58 * s)
    if rng.random() < 0.5:  # blob torso
        draw.ellipse([cx - 0.13 * s, neck[1], cx + 0.13 * s, hip[1] + 0.03 * s], fill=col)
    else:
        draw.line([neck, hip], fill=col, width=thick + 2)
    shoulder = (cx, neck[1] + 0.06 * s)
    for sgn in (-1, 1):
        a = np.deg2rad(rng.uniform(20, 160))  # arm angle from straight down
        elbow = (shoulder[0] + sgn * 0.17 * s * np.sin(a), shoulder[1] + 0.17 * s * np.cos(a))
        a2 = a + rng.uniform(-0.8, 0.8)
        hand = (elbow[0] + sgn * 0.15 * s * np.sin(a2), elbow[1] + 0.15 * s * np.cos(a2))
        draw.line([shoulder, elbow, hand], fill=col, width=thick, joint="curve")
        legs = np.deg2rad(rng.uniform(5, 35))
        knee = (hip[0] + sgn * 0.2 * s * np.sin(legs), hip[1] + 0.2 * s * np.cos(legs))
        foot = (knee[0] + sgn * rng.uniform(-0.05, 0.08) * s, min(cy + s / 2, knee[1] + 0.2 * s))
        draw.line([hip, knee, foot], fill=col, width=thick, joint="curve")
    return cx - w / 2, top, cx + w / 2, cy + s / 2


def _draw_word(draw, rng):
    size = int(rng.integers(26, 66))
    font = _font(size)
    n_letters = int(rng.integers(3, 9))
    text = "".join(_LETTERS[i] for i in rng.integers(0, 26, n_letters))
    if rng.random() < 0.4:
        text = text.upper()
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    w, h = x1 - x0 + 16, y1 - y0 + 12
    cx, cy = _place(rng, w, h)
    bx0, by0 = cx - w / 2, cy - h / 2
    if rng.random() < 0.6:  # a sign behind the text
        bg = np.asarray(_color(rng, 0, 256))
        draw.rectangle([bx0, by0, bx0 + w, by0 + h], fill=tuple(int(v) for v in bg))
        fg = (0, 0, 0) if bg.mean() > 128 else (255, 255, 255)
    else:
        fg = _color(rng, 0, 256)
    draw.text((bx0 + 8 - x0, by0 + 6 - y0), text, font=font, fill=fg)
    return bx0, by0, bx0 + w, by0 + h


def _draw_object(draw, rng):
    s = rng.uniform(40, 170)
    cx, cy = _place(rng, s, s)
    col, edge = _color(rng), _color(rng, 0, 120)
    shape = int(rng.integers(4))
    r = s / 2
    if shape == 0:
        draw.ellipse([cx - r, cy - r * rng.uniform(0.5, 1), cx + r, cy + r * rng.uniform(0.5, 1)], fill=col, outline=edge, width=3)
    elif shape == 1:
        draw.rectangle([cx - r, cy - r * rng.uniform(0.4, 1), cx + r, cy + r], fill=col, outline=edge, width=3)
    else:
        k = int(rng.integers(3, 8))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k)) if shape == 2 else np.linspace(0, 2 * np.pi, 2 * k, endpoint=False)
        rad = r * (rng.uniform(0.6, 1.0, len(ang)) if shape == 2 else np.tile([1.0, 0.45], k))
        draw.polygon([(cx + a * np.cos(t), cy + a * np.sin(t)) for a, t in zip(rad, ang)], fill=col, outline=edge)
    return cx - r, cy - r, cx + r, cy + r


def local_contrast_map(image, grid: int = GRID) -> np.ndarray:
    """Local edge energy of an image: (grid, grid) float32, row 0 = top of the image.

    Grayscale at ``2*grid`` pixels, gradient magnitude, pooled over 2x2 blocks. This is the
    low-level statistic the demo's retinotopic vertices respond to.
    """
    from PIL import Image

    if not isinstance(image, Image.Image):
        with Image.open(image) as im:
            return local_contrast_map(im.convert("RGB"), grid)
    g = np.asarray(image.convert("L").resize((2 * grid, 2 * grid), Image.BOX), dtype=np.float32) / 255.0
    gx = np.zeros_like(g)
    gy = np.zeros_like(g)
    gx[:, 1:-1] = (g[:, 2:] - g[:, :-2]) / 2
    gy[1:-1, :] = (g[2:, :] - g[:-2, :]) / 2
    e = np.sqrt(gx**2 + gy**2)
    return e.reshape(grid, 2, grid, 2).mean(axis=(1, 3))


# ---------------------------------------------------------------------------------------------
# Responses and files
# ---------------------------------------------------------------------------------------------
def _zscore(a: np.ndarray, axis: int = 0) -> np.ndarray:
    sd = a.std(axis=axis, keepdims=True)
    return (a - a.mean(axis=axis, keepdims=True)) / np.where(sd > 1e-9, sd, 1.0)


def simulate_signal(model: HemiModel, infos: list[ImageInfo]) -> np.ndarray:
    """Noise-free responses (images x vertices), each vertex scaled to unit variance
    (a vertex with no signal at all stays 0)."""
    energy = np.stack([i.energy.ravel() for i in infos]).astype(np.float32)
    prf = energy @ prf_weights(model.rf_x, model.rf_y, model.rf_sigma)  # (n_images, n_vertices)
    prf = np.power(np.maximum(prf, 0), model.exponent[None, :].astype(np.float32))
    drives = _zscore(np.stack([i.drives() for i in infos]))
    raw = model.lowlevel_weight[None, :] * _zscore(prf.astype(np.float64)) + drives @ model.category_weights.T
    return _zscore(raw)


def noise_ceiling(ncsnr: np.ndarray, n_reps: int = N_REPS) -> np.ndarray:
    """NSD's noise ceiling in percent: ``100 * ncsnr^2 / (ncsnr^2 + 1 / n_reps)``."""
    ncsnr = np.asarray(ncsnr, dtype=np.float64)
    return 100.0 * ncsnr**2 / (ncsnr**2 + 1.0 / n_reps)


def _write_subject_responses(root: Path, subj: int, models: dict, train_infos, seed: int) -> None:
    sname = f"subj{subj:02d}"
    fmri_dir = root / sname / "training_split" / "training_fmri"
    roi_dir = root / sname / "roi_masks"
    nc_dir = root / "noise_ceiling" / sname
    for d in (fmri_dir, roi_dir, nc_dir):
        d.mkdir(parents=True, exist_ok=True)
    for cls, names in ROI_CLASSES.items():
        np.save(roi_dir / f"mapping_{cls}.npy", {0: "Unknown", **{i + 1: n for i, n in enumerate(names)}})
    for hemi in HEMIS:
        model = models[hemi]
        rng = np.random.default_rng([seed, 401, subj, HEMIS.index(hemi)])
        signal = simulate_signal(model, train_infos)
        amp = model.ncsnr[None, :]
        avg = np.zeros_like(signal)
        for _ in range(N_REPS):
            avg += amp * signal + rng.standard_normal(signal.shape)
        fmri = _zscore(avg / N_REPS).astype(np.float32)
        np.save(fmri_dir / f"{hemi}_training_fmri.npy", fmri)
        mask = np.zeros(N_FSAVERAGE, dtype=np.float32)
        mask[model.fs_index] = 1.0
        np.save(roi_dir / f"{hemi}.all-vertices_fsaverage_space.npy", mask)
        for cls, lab in model.labels.items():
            np.save(roi_dir / f"{hemi}.{cls}_challenge_space.npy", lab.astype(np.float32))
            full = np.zeros(N_FSAVERAGE, dtype=np.float32)
            full[model.fs_index] = lab
            np.save(roi_dir / f"{hemi}.{cls}_fsaverage_space.npy", full)
        np.save(nc_dir / f"{hemi}.npy", noise_ceiling(model.ncsnr).astype(np.float32))
        _write_vertex_params(root / "demo_metadata" / f"{sname}_{hemi}_vertices.csv", model)


def _write_vertex_params(path: Path, m: HemiModel) -> None:
    cols = ["fsaverage_index", "area", "rf_x", "rf_y", "rf_sigma", "ecc_deg", "angle_deg", "lowlevel_weight",
            "exponent", *[f"w_{c}" for c in CATEGORIES], "ncsnr", "noise_ceiling"]
    nc = noise_ceiling(m.ncsnr)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for i in range(m.n_vertices):
            w.writerow([int(m.fs_index[i]), m.area[i], *(f"{v:.5g}" for v in (
                m.rf_x[i], m.rf_y[i], m.rf_sigma[i], m.ecc_deg[i], m.angle_deg[i], m.lowlevel_weight[i],
                m.exponent[i], *m.category_weights[i], m.ncsnr[i], nc[i]))])


def _write_labels(path: Path, objects_path: Path, split: str, infos: list[ImageInfo]) -> None:
    prefix = "train" if split == "train" else "test"
    with open(path, "w", newline="") as fh, open(objects_path, "w", newline="") as fo:
        w, wo = csv.writer(fh), csv.writer(fo)
        w.writerow(["image", "nsd_id", "background", *[f"n_{c}" for c in CATEGORIES], *[f"drive_{c}" for c in CATEGORIES]])
        wo.writerow(["image", "nsd_id", "category", "x0", "y0", "x1", "y1"])
        for i, info in enumerate(infos):
            name = f"{prefix}-{i + 1:04d}_nsd-{info.nsd_id:05d}.png"
            w.writerow([name, info.nsd_id, info.background, *[info.count(c) for c in CATEGORIES],
                        *(f"{v:.4f}" for v in info.drives())])
            for o in info.objects:
                wo.writerow([name, info.nsd_id, o["category"], o["x0"], o["y0"], o["x1"], o["y1"]])
