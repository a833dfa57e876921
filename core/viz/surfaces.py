"""fsaverage surfaces for display, and challenge-space data mapped onto them.

Meshes come through nilearn:

* **fsaverage5** (10,242 vertices per hemisphere) is bundled with nilearn and always works offline,
  including the 2-D flat map.
* **full fsaverage** (163,842 vertices) is used when it is on disk: a directory given by the user
  (the ``fsaverage_dir`` argument, else ``$BES_FSAVERAGE_DIR``), else nilearn's own data directory
  (``~/nilearn_data/fsaverage`` after ``fetch_full_fsaverage()`` ran once online). Nothing here
  downloads unless ``fetch_full_fsaverage`` is called.

fsaverage meshes are nested icosahedra: the first 10,242 vertices of fsaverage *are* fsaverage5's
vertices (and the first 40,962 are fsaverage6's). So a full-resolution vector is shown on a coarser
mesh by taking its first ``n`` values (``to_surface(..., n_mesh_vertices=n)``), and the full mesh is
decimated for the browser by rebuilding the coarser icosahedron's faces (``Surface.decimate``).

Challenge data has one value per *challenge vertex*; the subject's ``all-vertices`` mask says which
fsaverage vertex each one is (``to_surface``). ``vertex_maps`` lists the per-vertex maps stored for a
subject and hemisphere (noise ceiling; other modules add theirs with ``register_map_provider``).
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from core.util.errors import UserError

MESHES: tuple[str, ...] = ("inflated", "pial", "white", "sphere", "flat")
RESOLUTIONS: tuple[str, ...] = ("auto", "fsaverage5", "fsaverage")
HEMIS: tuple[str, str] = ("lh", "rh")
HEMI_NAMES = {"lh": "left", "rh": "right"}
FSAVERAGE_DIR_ENV = "BES_FSAVERAGE_DIR"
N_FSAVERAGE = 163_842
N_FSAVERAGE6 = 40_962
N_FSAVERAGE5 = 10_242
# Vertex counts of icosahedral meshes: 10 * 4**k + 2.
ICO_SIZES: tuple[int, ...] = tuple(10 * 4**k + 2 for k in range(8))
_FILE_PREFIX = {"inflated": "infl", "pial": "pial", "white": "white", "sphere": "sphere", "flat": "flat"}


class SurfaceError(UserError):
    """A surface file or directory is missing or malformed, or an argument is invalid."""


# ---------------------------------------------------------------------------------------------
# Surfaces
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Surface:
    """One hemisphere's mesh with its sulcal depth, ready to plot.

    ``coords`` float32 (n, 3) in mm, ``faces`` int32 (m, 3), ``sulc`` float32 (n,). Vertex ``i`` is
    fsaverage vertex ``i`` (meshes are prefixes of the full icosahedron), so data for this surface is
    ``to_surface(values, mask, surface.n_vertices)``. Flat maps cut the medial wall: some vertices are
    in no face. Arrays are read-only; instances are cached and shared, compare them by identity.
    """

    mesh: str
    hemi: str
    resolution: str  # "fsaverage5" or "fsaverage"
    coords: np.ndarray
    faces: np.ndarray
    sulc: np.ndarray
    source: str = ""
    _derived: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_vertices(self) -> int:
        return int(self.coords.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def label(self) -> str:
        """``"inflated, fsaverage5 (10,242 vertices)"``."""
        extra = "" if self.n_vertices in (N_FSAVERAGE, N_FSAVERAGE5) else ", decimated"
        return f"{self.mesh}, {self.resolution} ({self.n_vertices:,} vertices{extra})"

    def shading(self) -> np.ndarray:
        """Background shade per vertex in [0, 1] from sulcal depth (1 = deep sulcus = darker)."""
        if "shading" not in self._derived:
            s = np.asarray(self.sulc, dtype=np.float32)
            finite = np.isfinite(s)
            scale = float(np.percentile(np.abs(s[finite]), 98)) if finite.any() else 1.0
            shade = np.clip(0.5 + 0.5 * np.tanh(np.nan_to_num(s) / max(scale, 1e-6) * 1.5), 0, 1)
            self._derived["shading"] = _readonly(shade.astype(np.float32))
        return self._derived["shading"]

    def normals(self) -> np.ndarray:
        """Unit outward normal per vertex (float32 (n, 3); the area-weighted mean of its faces' normals)."""
        if "normals" not in self._derived:
            xyz = self.coords.astype(np.float64)
            a, b, c = (xyz[self.faces[:, i]] for i in range(3))
            per_face = np.cross(b - a, c - a)
            out = np.zeros_like(xyz)
            for i in range(3):
                np.add.at(out, self.faces[:, i], per_face)
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
            self._derived["normals"] = _readonly(out.astype(np.float32))
        return self._derived["normals"]

    def decimate(self, n_vertices: int) -> "Surface":
        """The same surface on the coarser icosahedron with ``n_vertices`` (40,962 or 10,242, ...).

        Vertex coordinates are kept (the first ``n_vertices`` of this mesh); faces are rebuilt from
        the icosahedral subdivision. Cached per surface.
        """
        n_vertices = int(n_vertices)
        if n_vertices == self.n_vertices:
            return self
        if n_vertices not in ICO_SIZES or n_vertices > self.n_vertices or self.n_vertices not in ICO_SIZES:
            raise SurfaceError(
                f"cannot decimate a {self.n_vertices}-vertex mesh to {n_vertices} vertices "
                f"(icosahedral sizes: {', '.join(str(n) for n in ICO_SIZES if n <= self.n_vertices)})"
            )
        key = ("decimate", n_vertices)
        with _LOCK:
            if key not in self._derived:
                faces = self.faces
                n = self.n_vertices
                while n > n_vertices:
                    n = ICO_SIZES[ICO_SIZES.index(n) - 1]
                    faces = coarsen_faces(faces, n)
                self._derived[key] = Surface(
                    mesh=self.mesh,
                    hemi=self.hemi,
                    resolution=self.resolution,
                    coords=_readonly(self.coords[:n_vertices]),
                    faces=_readonly(faces),
                    sulc=_readonly(self.sulc[:n_vertices]),
                    source=self.source,
                )
        return self._derived[key]


_LOCK = threading.RLock()


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def coarsen_faces(faces: np.ndarray, n_parent: int) -> np.ndarray:
    """Faces of the parent icosahedron (``n_parent`` vertices) from a once-subdivided mesh's faces.

    Loop subdivision splits each parent triangle (a, b, c) into (a, ab, ca), (ab, b, bc),
    (ca, bc, c) and the centre (ab, bc, ca), where a new vertex such as ``ab`` has index
    >= ``n_parent`` and exactly two old neighbours, its edge's ends. Each centre face therefore
    gives back its parent, with the same orientation. Works on cut meshes (flat maps) too: a parent
    face is returned when its centre child is present.
    """
    faces = np.asarray(faces, dtype=np.int64)
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.concatenate([edges, edges[:, ::-1]])
    link = edges[(edges[:, 0] >= n_parent) & (edges[:, 1] < n_parent)]
    # unique (new vertex, old neighbour) pairs, sorted by new vertex (1-D keys: much faster)
    keys = np.unique(link[:, 0] * n_parent + link[:, 1])
    link = np.stack([keys // n_parent, keys % n_parent], axis=1)
    counts = np.bincount(link[:, 0] - n_parent)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ok = counts == 2
    parents = np.full((counts.shape[0], 2), -1, dtype=np.int64)
    parents[ok, 0] = link[first[ok], 1]
    parents[ok, 1] = link[first[ok] + 1, 1]
    centre = faces[(faces >= n_parent).all(axis=1)]
    centre = centre[ok[centre - n_parent].all(axis=1)]
    p = parents[centre - n_parent]  # (F, 3, 2): the two parents of ab, bc, ca

    def common(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hit0 = (x[:, 0] == y[:, 0]) | (x[:, 0] == y[:, 1])
        hit1 = (x[:, 1] == y[:, 0]) | (x[:, 1] == y[:, 1])
        return np.where(hit0, x[:, 0], x[:, 1]), hit0 ^ hit1

    a, ok_a = common(p[:, 0], p[:, 2])
    b, ok_b = common(p[:, 0], p[:, 1])
    c, ok_c = common(p[:, 1], p[:, 2])
    good = ok_a & ok_b & ok_c
    return np.stack([a, b, c], axis=1)[good].astype(np.int32)


def _mesh_file(directory: Path, mesh: str, hemi: str) -> Path:
    return directory / f"{_FILE_PREFIX[mesh]}_{HEMI_NAMES[hemi]}.gii.gz"


def _sulc_file(directory: Path, hemi: str) -> Path:
    return directory / f"sulc_{HEMI_NAMES[hemi]}.gii.gz"


def _fsaverage5_dir() -> Path:
    from nilearn.datasets import fetch_surf_fsaverage

    return Path(fetch_surf_fsaverage("fsaverage5")["pial_left"]).parent


def _nilearn_fsaverage_dirs() -> list[Path]:
    """Where nilearn keeps (or would keep) the full fsaverage download; never creates anything."""
    try:
        from nilearn.datasets import get_data_dirs

        return [Path(d) / "fsaverage" for d in get_data_dirs()]
    except Exception:  # pragma: no cover - nilearn internals moved
        return [Path.home() / "nilearn_data" / "fsaverage"]


@dataclass(frozen=True)
class FsaverageStatus:
    """Where the full fsaverage was found (``path``), or why not (``message``)."""

    path: Path | None
    message: str


def fsaverage_status(fsaverage_dir: str | os.PathLike | None = None) -> FsaverageStatus:
    """Look for the full fsaverage: ``fsaverage_dir``, else ``$BES_FSAVERAGE_DIR``, else nilearn's dir.

    A directory qualifies when it holds ``pial_left.gii.gz`` (nilearn's file names). Only the directory
    is checked here; the files are validated when loaded.
    """
    explicit = fsaverage_dir if fsaverage_dir not in (None, "") else os.environ.get(FSAVERAGE_DIR_ENV) or None
    if explicit is not None:
        path = Path(explicit).expanduser()
        origin = "fsaverage_dir" if fsaverage_dir not in (None, "") else f"${FSAVERAGE_DIR_ENV}"
        if not path.is_dir():
            return FsaverageStatus(None, f"{path}: directory not found ({origin}); using fsaverage5")
        if not _mesh_file(path, "pial", "lh").is_file():
            return FsaverageStatus(
                None, f"{path}: no pial_left.gii.gz there ({origin}; expected nilearn's fsaverage files); using fsaverage5"
            )
        return FsaverageStatus(path, f"full fsaverage from {path}")
    for path in _nilearn_fsaverage_dirs():
        if _mesh_file(path, "pial", "lh").is_file():
            return FsaverageStatus(path, f"full fsaverage from nilearn's data directory {path}")
    return FsaverageStatus(
        None,
        f"full fsaverage not found (set ${FSAVERAGE_DIR_ENV} to a directory of nilearn's fsaverage files, "
        "or download it once with core.viz.surfaces.fetch_full_fsaverage()); using fsaverage5",
    )


def find_full_fsaverage(fsaverage_dir: str | os.PathLike | None = None) -> Path | None:
    """The full-fsaverage directory to use, or ``None`` (see ``fsaverage_status``)."""
    return fsaverage_status(fsaverage_dir).path


def fetch_full_fsaverage(data_dir: str | os.PathLike | None = None) -> Path:
    """Download the full fsaverage once through nilearn (needs the internet); returns its directory."""
    from nilearn.datasets import fetch_surf_fsaverage

    try:
        bunch = fetch_surf_fsaverage("fsaverage", data_dir=data_dir)
    except Exception as exc:
        raise SurfaceError(f"could not download the full fsaverage through nilearn ({type(exc).__name__}: {exc})") from None
    return Path(bunch["pial_left"]).parent


def _check_args(mesh: str, hemi: str, resolution: str) -> None:
    if mesh not in MESHES:
        raise SurfaceError(f"unknown mesh '{mesh}' (use one of {', '.join(MESHES)})")
    if hemi not in HEMIS:
        raise SurfaceError(f"unknown hemisphere '{hemi}' (use 'lh' or 'rh')")
    if resolution not in RESOLUTIONS:
        raise SurfaceError(f"unknown resolution '{resolution}' (use one of {', '.join(RESOLUTIONS)})")


def resolve_resolution(
    mesh: str = "inflated",
    hemi: str = "lh",
    resolution: str = "auto",
    fsaverage_dir: str | os.PathLike | None = None,
) -> tuple[str, Path]:
    """``(resolution, directory)`` that ``load_surface`` would read, without reading meshes."""
    _check_args(mesh, hemi, resolution)
    if resolution == "fsaverage5":
        return "fsaverage5", _fsaverage5_dir()
    status = fsaverage_status(fsaverage_dir)
    full = status.path
    if full is not None and _mesh_file(full, mesh, hemi).is_file() and _sulc_file(full, hemi).is_file():
        return "fsaverage", full
    if resolution == "fsaverage":
        if full is None:
            raise SurfaceError(status.message.replace("; using fsaverage5", ""))
        missing = [p for p in (_mesh_file(full, mesh, hemi), _sulc_file(full, hemi)) if not p.is_file()]
        raise SurfaceError(f"{missing[0]}: missing file (needed for the full-fsaverage {mesh} mesh)")
    return "fsaverage5", _fsaverage5_dir()


def load_surface(
    mesh: str = "inflated",
    hemi: str = "lh",
    resolution: str = "auto",
    fsaverage_dir: str | os.PathLike | None = None,
) -> Surface:
    """Load (cached) one hemisphere's fsaverage mesh with sulcal depth.

    ``resolution="auto"`` uses the full fsaverage when it is on disk (``fsaverage_dir``, else
    ``$BES_FSAVERAGE_DIR``, else nilearn's data directory) and has this mesh, else fsaverage5;
    ``"fsaverage"`` insists on the full mesh (``SurfaceError`` if absent); ``"fsaverage5"`` always
    works offline. ``mesh="flat"`` is the 2-D flat map (nilearn bundles it for fsaverage5).
    """
    res, directory = resolve_resolution(mesh, hemi, resolution, fsaverage_dir)
    mesh_path = _mesh_file(directory, mesh, hemi)
    sulc_path = _sulc_file(directory, hemi)
    for p in (mesh_path, sulc_path):
        if not p.is_file():
            raise SurfaceError(f"{p}: missing file")
    key = tuple((str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in (mesh_path, sulc_path))
    return _load_surface_cached(mesh, hemi, res, key)


@functools.lru_cache(maxsize=32)
def _load_surface_cached(mesh: str, hemi: str, resolution: str, key: tuple) -> Surface:
    from nilearn import surface as nsurf

    mesh_path, sulc_path = Path(key[0][0]), Path(key[1][0])
    expected = N_FSAVERAGE if resolution == "fsaverage" else N_FSAVERAGE5
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = nsurf.load_surf_mesh(str(mesh_path))
            sulc = nsurf.load_surf_data(str(sulc_path))
        coords, faces = np.asarray(loaded[0]), np.asarray(loaded[1])
    except Exception as exc:
        raise SurfaceError(f"{mesh_path}: unreadable surface ({type(exc).__name__}: {exc})") from None
    if coords.ndim != 2 or coords.shape != (expected, 3):
        raise SurfaceError(f"{mesh_path}: expected {expected} vertices ({resolution}), found coordinates {coords.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or faces.size == 0 or faces.min() < 0 or faces.max() >= expected:
        raise SurfaceError(f"{mesh_path}: faces are not triangles over {expected} vertices (shape {faces.shape})")
    sulc = np.asarray(sulc, dtype=np.float32).reshape(-1)
    if sulc.shape[0] != expected:
        raise SurfaceError(f"{sulc_path}: expected {expected} values, found {sulc.shape[0]}")
    return Surface(
        mesh=mesh,
        hemi=hemi,
        resolution=resolution,
        coords=_readonly(coords.astype(np.float32)),
        faces=_readonly(faces.astype(np.int32)),
        sulc=_readonly(sulc),
        source=str(mesh_path.parent),
    )


def display_surface(
    mesh: str = "inflated",
    hemi: str = "lh",
    resolution: str = "auto",
    detail: str = "decimated",
    fsaverage_dir: str | os.PathLike | None = None,
) -> Surface:
    """The surface to send to a browser: ``load_surface``, with the full mesh decimated to fsaverage6's
    40,962 vertices unless ``detail="full"`` (fsaverage5 is always sent as is)."""
    if detail not in ("decimated", "full"):
        raise SurfaceError(f"unknown detail '{detail}' (use 'decimated' or 'full')")
    surf = load_surface(mesh, hemi, resolution, fsaverage_dir)
    if detail == "decimated" and surf.n_vertices > N_FSAVERAGE6:
        surf = surf.decimate(N_FSAVERAGE6)
    return surf


# ---------------------------------------------------------------------------------------------
# Challenge space -> surface
# ---------------------------------------------------------------------------------------------
def challenge_indices(fsaverage_mask_or_indices: np.ndarray) -> np.ndarray:
    """fsaverage vertex index of each challenge vertex, from an ``all-vertices`` mask or indices."""
    m = np.asarray(fsaverage_mask_or_indices)
    if m.ndim != 1:
        raise SurfaceError(f"expected a 1-D fsaverage mask or index array, found shape {m.shape}")
    if m.dtype == bool or (m.shape[0] == N_FSAVERAGE and np.isin(m, (0, 1)).all()):
        if m.shape[0] != N_FSAVERAGE:
            raise SurfaceError(f"an fsaverage mask needs {N_FSAVERAGE} values, found {m.shape[0]}")
        return np.flatnonzero(m)
    if not np.issubdtype(m.dtype, np.integer):
        raise SurfaceError(f"fsaverage indices must be integers, found dtype {m.dtype}")
    if m.size and (m.min() < 0 or m.max() >= N_FSAVERAGE):
        raise SurfaceError(f"fsaverage indices must lie in 0..{N_FSAVERAGE - 1}")
    return m.astype(np.int64, copy=False)


def to_surface(
    values_challenge: np.ndarray,
    fsaverage_mask_or_indices: np.ndarray,
    n_mesh_vertices: int = N_FSAVERAGE,
    fill: float = np.nan,
) -> np.ndarray:
    """Map one value per challenge vertex onto an fsaverage mesh of ``n_mesh_vertices`` vertices.

    ``fsaverage_mask_or_indices`` is the subject's ``all-vertices`` mask (163,842 booleans or 0/1) or the
    fsaverage index of each challenge vertex. Vertices without data get ``fill`` (NaN: not drawn).
    With ``n_mesh_vertices`` below 163,842 (fsaverage5: 10,242) the first ``n`` fsaverage vertices are
    kept: they are that coarser mesh's vertices. Returns float32 (n_mesh_vertices,).
    """
    idx = challenge_indices(fsaverage_mask_or_indices)
    values = np.asarray(values_challenge)
    if values.ndim != 1:
        raise SurfaceError(f"expected one value per challenge vertex (1-D), found shape {values.shape}")
    if values.shape[0] != idx.shape[0]:
        raise SurfaceError(
            f"{values.shape[0]} values but the fsaverage mask has {idx.shape[0]} challenge vertices "
            "(wrong hemisphere or subject?)"
        )
    n = int(n_mesh_vertices)
    if not 0 < n <= N_FSAVERAGE:
        raise SurfaceError(f"n_mesh_vertices must be in 1..{N_FSAVERAGE}, found {n}")
    out = np.full(n, fill, dtype=np.float32)
    keep = idx < n
    out[idx[keep]] = values[keep]
    return out


# ---------------------------------------------------------------------------------------------
# ROIs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RoiOverlay:
    """What to draw for a ROI selection on one hemisphere.

    ``values`` is challenge-space float32: 1 inside a single ROI, or 1..K (index into ``names``) for a
    whole class, NaN elsewhere; ``None`` with a plain-language ``message`` when there is nothing to draw.
    """

    values: np.ndarray | None
    names: tuple[str, ...]
    message: str | None = None

    @property
    def labels(self) -> dict[int, str]:
        return {i + 1: n for i, n in enumerate(self.names)}


def roi_overlay(subject: Any, hemi: str, roi_class: str, roi: str | None = None) -> RoiOverlay:
    """The ROI ``roi`` (or, with ``roi=None``, every ROI of ``roi_class``) of a dataset ``Subject``."""
    where = f"{subject.name}'s {HEMI_NAMES.get(hemi, hemi)} hemisphere"
    labels = subject.roi_labels(hemi, roi_class, "challenge") if roi_class in subject.roi_classes() else None
    if labels is None:
        return RoiOverlay(None, (), f"The ROI class {roi_class} has no files for {where}.")
    present = subject.rois(hemi).get(roi_class, [])
    mapping = subject.roi_mapping(roi_class)
    if roi is not None:
        if roi not in present:
            others = f" ROIs of {roi_class} that exist there: {', '.join(present)}." if present else ""
            return RoiOverlay(None, (), f"{roi} does not exist in {where}.{others}")
        mask = subject.roi_mask(hemi, roi, "challenge")
        values = np.where(mask, np.float32(1), np.float32(np.nan)).astype(np.float32)
        return RoiOverlay(values, (roi,))
    if not present:
        return RoiOverlay(None, (), f"No ROI of {roi_class} exists in {where}.")
    code = np.full(int(labels.max(initial=0)) + 1, np.nan, dtype=np.float32)
    for label, name in mapping.items():
        if name in present and 0 < label < code.shape[0]:
            code[label] = present.index(name) + 1
    values = code[np.clip(labels, 0, code.shape[0] - 1)]
    values[labels < 0] = np.nan
    return RoiOverlay(values.astype(np.float32), tuple(present))


def roi_overlays(
    subject: Any, hemis: Sequence[str], roi_class: str, roi: str | None = None
) -> tuple[dict[str, RoiOverlay], tuple[str, ...]]:
    """``roi_overlay`` for several hemispheres with one shared coding: returns ``(overlays, names)``
    where code ``k`` means ``names[k - 1]`` in every hemisphere (the subject's canonical ROI order,
    ``subject.ordered_rois``), for one legend."""
    overlays = {h: roi_overlay(subject, h, roi_class, roi) for h in hemis}
    names = tuple(subject.ordered_rois(roi_class, {n for ov in overlays.values() for n in ov.names}))
    out = {}
    for h, ov in overlays.items():
        if ov.values is None or ov.names == names:
            out[h] = ov
            continue
        recode = np.array([np.nan] + [names.index(n) + 1 for n in ov.names], dtype=np.float32)
        values = recode[np.nan_to_num(ov.values, nan=0).astype(np.int64)]
        out[h] = RoiOverlay(values, names, ov.message)
    return out, names


# ---------------------------------------------------------------------------------------------
# Stored per-vertex maps
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VertexMap:
    """A named per-vertex map in challenge space (one value per challenge vertex of one hemisphere).

    ``kind`` is ``"positive"`` (0..max, e.g. a noise ceiling) or ``"symmetric"`` (-m..m, e.g. a
    correlation); ``vmin``/``vmax`` suggest a colour range (``None``: from the data).
    """

    name: str
    values: np.ndarray
    unit: str = ""
    kind: str = "positive"
    description: str = ""
    vmin: float | None = None
    vmax: float | None = None


MapProvider = Callable[[Any, str], Mapping[str, VertexMap]]
_PROVIDERS: dict[str, MapProvider] = {}


def register_map_provider(name: str, provider: MapProvider) -> None:
    """Add a source of per-vertex maps: ``provider(subject, hemi) -> {name: VertexMap}``.

    Registering the same ``name`` again replaces it. A provider that raises is skipped (its error is
    reported by ``vertex_maps`` under ``errors``), so one broken run never hides the others.
    """
    _PROVIDERS[name] = provider


def unregister_map_provider(name: str) -> None:
    _PROVIDERS.pop(name, None)


def _noise_ceiling_maps(subject: Any, hemi: str) -> dict[str, VertexMap]:
    nc = subject.noise_ceiling(hemi)
    if nc is None:
        return {}
    return {
        "Noise ceiling": VertexMap(
            "Noise ceiling",
            nc,
            unit="%",
            kind="positive",
            description="Share of the response variance that is explainable (percent, 0-100).",
            vmin=0.0,
            vmax=None,
        )
    }


register_map_provider("noise_ceiling", _noise_ceiling_maps)


def vertex_maps(
    subject: Any,
    hemi: str,
    extra: Mapping[str, VertexMap | np.ndarray] | None = None,
    errors: list[str] | None = None,
) -> dict[str, VertexMap]:
    """Per-vertex maps available for ``subject`` and ``hemi``: every registered provider's, then ``extra``.

    ``extra`` maps names to ``VertexMap``s or plain arrays (kind guessed from the sign of the data).
    Maps whose length is not the hemisphere's number of challenge vertices are left out, with a note
    appended to ``errors`` when a list is given.
    """
    n = subject.n_vertices.get(hemi) if hasattr(subject, "n_vertices") else None
    out: dict[str, VertexMap] = {}
    sources: list[tuple[str, Callable[[], Mapping[str, Any]]]] = [
        (name, functools.partial(fn, subject, hemi)) for name, fn in list(_PROVIDERS.items())
    ]
    if extra:
        sources.append(("extra", lambda: extra))
    for source, get in sources:
        try:
            maps = dict(get())
        except Exception as exc:  # one broken provider must not hide the others
            if errors is not None:
                errors.append(f"{source}: {exc}")
            continue
        for name, m in maps.items():
            if not isinstance(m, VertexMap):
                arr = np.asarray(m, dtype=np.float32)
                kind = "symmetric" if np.nanmin(arr) < 0 else "positive"
                m = VertexMap(str(name), arr, kind=kind)
            if m.values.ndim != 1 or (n is not None and m.values.shape[0] != n):
                if errors is not None:
                    errors.append(f"{name}: {m.values.shape} values, expected ({n},) for {hemi}")
                continue
            out[str(name)] = m
    return out
