"""Flat maps (PNG) and shareable WebGL viewers (zip) of per-vertex maps, through pycortex when it is there.

* ``flatmap_png(values, ...)`` draws both hemispheres' flat maps with sulcal shading, optional ROI
  borders and names, and a colour bar. ``backend="auto"`` uses pycortex's ``quickflat`` on pycortex's
  ``fsaverage`` subject when pycortex imports and that subject is in its filestore; otherwise it draws
  nilearn's bundled fsaverage5 flat mesh with matplotlib, so the offline demo always gets a flat map.
* ``static_viewer_zip(values, ...)`` exports ``cortex.webgl.make_static``'s viewer as a zip holding one
  ``index.html`` with every file it loads inlined, so it opens from disk in a browser without a server.
* ``download_fsaverage()`` fetches pycortex's fsaverage subject once (needs the internet).

``values`` is ``{"lh": array, "rh": array}`` with one value per fsaverage vertex (a finer icosahedron's
vector is cut to fsaverage5 for the fallback), or per challenge vertex together with ``masks``, the
subject's ``all-vertices`` masks (``Subject.fsaverage_mask``). A missing hemisphere is drawn without
data. For another pycortex subject (``subject="S1"``) the arrays have that subject's vertex counts.
ROI borders are computed here from ROI label maps (``rois``, same layout as ``values``): pycortex's
own ROI outlines need Inkscape.

pycortex is optional: every entry point says why it is unavailable (``pycortex_unavailable_reason``,
``subject_unavailable_reason``) instead of failing. It keeps its filestore and caches where its
configuration says (``cortex.db.filestore``) and writes its user configuration when first imported.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import json
import os
import socket
import sys
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np
from plotly.colors import convert_colors_to_same_type

from core.util.errors import UserError
from core.viz.plotting import BACKGROUND_DARK, BACKGROUND_LIGHT, CATEGORY_COLORS, fit_values, color_range, colorscale
from core.viz.surfaces import HEMIS, SurfaceError, load_surface, to_surface

PYCORTEX_REQUIREMENT = "pycortex==1.4.0"
FSAVERAGE = "fsaverage"
BACKENDS: tuple[str, ...] = ("auto", "pycortex", "nilearn")
# cortex.download_subject("fsaverage") fetches from figshare; checked first so that offline fails fast.
DOWNLOAD_HOST = ("ndownloader.figshare.com", 443)
# The closest colour map the pycortex viewer ships for each of the dashboard's (plotting.COLORMAPS).
VIEWER_CMAPS = {"cold_hot": "BuBkRd", "RdBu_r": "RdBu_r", "hot": "hot", "Viridis": "viridis", "Inferno": "inferno",
                "Plasma": "plasma", "Cividis": "viridis", "Turbo": "jet"}  # fmt: skip
VIEWER_ROI_CMAP = "Set1"
_HEMI_GAP = 0.06  # gap between the hemispheres of the nilearn flat map, as a share of their width
_LOCK = threading.Lock()  # pycortex keeps global state (db.auxfile, caches) and pyplot is not thread safe


class PycortexUnavailable(UserError):
    """pycortex, or the pycortex subject asked for, cannot be used here; the message says why."""


# ---------------------------------------------------------------------------------------------
# pycortex availability
# ---------------------------------------------------------------------------------------------
def import_cortex():
    """The ``cortex`` module, or ``PycortexUnavailable`` saying why it does not import."""
    first = "cortex" not in sys.modules
    try:
        # pycortex prints an Inkscape notice on first import; keep the console clean
        with contextlib.redirect_stdout(io.StringIO()) if first else contextlib.nullcontext():
            import cortex
    except Exception as exc:
        raise PycortexUnavailable(
            f"pycortex is not available ({type(exc).__name__}: {exc}). Install it with "
            f"`python -m pip install {PYCORTEX_REQUIREMENT}` (it builds from source: needs a C compiler)."
        ) from None
    return cortex


def pycortex_unavailable_reason() -> str | None:
    """``None`` when pycortex imports, else one line saying why not and how to fix it."""
    try:
        import_cortex()
    except PycortexUnavailable as exc:
        return str(exc)
    return None


def pycortex_filestore() -> Path | None:
    """pycortex's filestore (``cortex.db.filestore``), or ``None`` when pycortex does not import."""
    try:
        return Path(import_cortex().db.filestore)
    except PycortexUnavailable:
        return None


def subject_unavailable_reason(subject: str = FSAVERAGE) -> str | None:
    """``None`` when pycortex imports and ``subject`` is in its filestore, else why not (one line)."""
    try:
        _require_subject(subject)
    except PycortexUnavailable as exc:
        return str(exc)
    return None


def _require_subject(subject: str):
    cortex = import_cortex()
    store = cortex.db.filestore
    try:
        cortex.db.reload_subjects()  # it may have been added since (download, copy)
        present = subject in cortex.db.subjects
    except OSError as exc:
        raise PycortexUnavailable(f"pycortex's filestore {store} cannot be read ({exc})") from None
    if not present:
        how = (
            "download it once (the Flatmaps page's button, or core.viz.flatmaps.download_fsaverage()), or copy "
            "a pycortex fsaverage folder there"
            if subject == FSAVERAGE
            else "import it with pycortex first"
        )
        raise PycortexUnavailable(f"pycortex's {subject} subject is not in its filestore {store}: {how}.")
    return cortex


def flatmap_backend(backend: str = "auto", subject: str = FSAVERAGE) -> str:
    """The backend ``flatmap_png`` will use: ``"pycortex"`` or ``"nilearn"`` (see the module doc)."""
    if backend not in BACKENDS:
        raise SurfaceError(f"unknown flat-map backend '{backend}' (use one of {', '.join(BACKENDS)})")
    if backend == "auto":
        return "pycortex" if subject_unavailable_reason(subject) is None else "nilearn"
    return backend


def download_fsaverage(timeout: float = 10.0) -> tuple[bool, str]:
    """Download pycortex's fsaverage subject into its filestore: ``(ok, message)``; never raises."""
    try:
        cortex = import_cortex()
    except PycortexUnavailable as exc:
        return False, str(exc)
    store = Path(cortex.db.filestore)
    if subject_unavailable_reason(FSAVERAGE) is None:
        return True, f"pycortex's fsaverage subject is already in {store}."
    if not os.access(store if store.exists() else store.parent, os.W_OK):
        return False, f"pycortex's filestore {store} is not writable; set `filestore` in {cortex.options.usercfg}."
    try:
        socket.create_connection(DOWNLOAD_HOST, timeout=timeout).close()
    except OSError as exc:
        return False, (
            f"{DOWNLOAD_HOST[0]} cannot be reached ({exc}); no internet here? On a machine online run "
            f"`python -c \"import cortex; cortex.download_subject('fsaverage')\"` and copy the fsaverage "
            f"folder into {store}. Until then flat maps use nilearn's fsaverage5."
        )
    try:
        cortex.download_subject(FSAVERAGE)
    except Exception as exc:
        return False, f"downloading pycortex's fsaverage subject failed ({type(exc).__name__}: {exc})."
    reason = subject_unavailable_reason(FSAVERAGE)
    return (reason is None), reason or f"pycortex's fsaverage subject is now in {store}."


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------
def border_segments(coords: np.ndarray, faces: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Line segments ``(k, 2, 2)`` (start/end, x/y) tracing the borders between differently labelled vertices.

    ``labels`` has one code per vertex; 0 and NaN both mean "no label". Each triangle whose vertices
    carry different codes contributes the segment(s) joining the midpoints of its mixed edges (through
    its centroid when all three differ), so the borders run between vertices as closed contours.
    """
    xy = np.asarray(coords, dtype=np.float64)[:, :2]
    faces = np.asarray(faces, dtype=np.int64)
    lab = np.nan_to_num(np.asarray(labels, dtype=np.float64), nan=0.0)
    if lab.shape[0] != xy.shape[0]:
        raise SurfaceError(f"{lab.shape[0]} labels for a mesh of {xy.shape[0]} vertices")
    lf = lab[faces]
    same = np.stack([lf[:, 0] == lf[:, 1], lf[:, 1] == lf[:, 2], lf[:, 2] == lf[:, 0]], axis=1)
    p = xy[faces]  # (F, 3, 2)
    mid = (p + np.roll(p, -1, axis=1)) / 2  # midpoints of edges 01, 12, 20
    segments = []
    two = same.sum(axis=1) == 1  # two codes: the odd vertex's two edges are crossed
    if two.any():
        # same edge k (k -> k+1) => odd vertex k+2, crossed edges k+1 and k+2
        k = np.argmax(same[two], axis=1)
        rows = np.flatnonzero(two)
        segments.append(np.stack([mid[rows, (k + 1) % 3], mid[rows, (k + 2) % 3]], axis=1))
    three = ~same.any(axis=1)
    if three.any():
        centre = p[three].mean(axis=1)
        segments += [np.stack([mid[three, e], centre], axis=1) for e in range(3)]
    return np.concatenate(segments) if segments else np.zeros((0, 2, 2))


@functools.lru_cache(maxsize=4)
def _nilearn_flat() -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Both fsaverage5 flat hemispheres side by side: ``(xy, faces, shade, n per hemi)``, lh first."""
    xys, faces, shades, counts, offset = [], [], [], {}, 0
    surfs = {h: load_surface("flat", h, "fsaverage5") for h in HEMIS}
    used = {h: np.unique(s.faces) for h, s in surfs.items()}
    width = max(float(np.ptp(s.coords[used[h], 0])) for h, s in surfs.items())
    for h, s in surfs.items():
        xy = s.coords[:, :2].astype(np.float64)
        x = xy[used[h], 0]
        # left hemisphere right-aligned left of the gap, right hemisphere left-aligned right of it
        xy[:, 0] += (-_HEMI_GAP * width / 2 - x.max()) if h == "lh" else (_HEMI_GAP * width / 2 - x.min())
        xys.append(xy)
        faces.append(s.faces.astype(np.int64) + offset)
        shades.append(s.shading())
        counts[h] = s.n_vertices
        offset += s.n_vertices
    return np.concatenate(xys), np.concatenate(faces), np.concatenate(shades), counts


def _pycortex_flat(cortex, subject: str) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """pycortex's flat mesh of ``subject``, both hemispheres as quickflat places them: ``(xy, faces, n per hemi)``."""
    pts, polys = cortex.db.get_surf(subject, "flat", merge=True, nudge=True)
    n_lh = cortex.db.get_surf(subject, "flat", "lh")[0].shape[0]
    return np.asarray(pts)[:, :2], np.asarray(polys), {"lh": int(n_lh), "rh": int(pts.shape[0] - n_lh)}


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------
def _per_vertex(
    values: Mapping[str, np.ndarray | None] | None,
    masks: Mapping[str, np.ndarray] | None,
    counts: Mapping[str, int],
    nilearn: bool,
    what: str,
) -> np.ndarray | None:
    """One float32 vector over both hemispheres' mesh vertices (lh first, NaN = no data), or ``None``."""
    if not values or all(v is None for v in values.values()):
        return None
    unknown = set(values) - set(HEMIS)
    if unknown:
        raise SurfaceError(f"{what}: unknown hemisphere(s) {', '.join(sorted(unknown))} (use 'lh' and 'rh')")
    parts = []
    for h in HEMIS:
        n = counts[h]
        v = values.get(h)
        if v is None:
            parts.append(np.full(n, np.nan, np.float32))
            continue
        v = np.asarray(v, dtype=np.float32)
        if masks is not None:
            if h not in masks:
                raise SurfaceError(f"{what}: no fsaverage mask given for {h}")
            v = to_surface(v, masks[h], n)
        elif nilearn:
            v = fit_values(load_surface("flat", h, "fsaverage5"), v)
        elif v.ndim != 1 or v.shape[0] != n:
            raise SurfaceError(f"{what}: {v.shape[0] if v.ndim == 1 else v.shape} values for {h}, "
                               f"but the pycortex mesh has {n} vertices")  # fmt: skip
        parts.append(np.asarray(v, dtype=np.float32))
    return np.concatenate(parts)


def _visible(values: np.ndarray, lo: float, sym: bool, threshold: float | None) -> np.ndarray:
    """NaN where a value is not drawn: below ``threshold`` in magnitude, or below the range when positive."""
    v = values.copy()
    hide = ~np.isfinite(v)
    if threshold:
        hide |= np.abs(np.nan_to_num(v)) < float(threshold)
    if not sym:
        hide |= np.nan_to_num(v, nan=-np.inf) < lo
    v[hide] = np.nan
    return v


def _mpl_cmap(name: str):
    from matplotlib.colors import LinearSegmentedColormap

    scale = colorscale(name)
    rgb = convert_colors_to_same_type([c for _, c in scale], colortype="tuple")[0]
    return LinearSegmentedColormap.from_list(name, [(float(p), c) for (p, _), c in zip(scale, rgb)], N=256)


def _category_cmap(n: int):
    from matplotlib.colors import ListedColormap

    return ListedColormap([CATEGORY_COLORS[i % len(CATEGORY_COLORS)] for i in range(max(n, 1))])


# ---------------------------------------------------------------------------------------------
# Flat maps
# ---------------------------------------------------------------------------------------------
def flatmap_png(
    values: Mapping[str, np.ndarray | None] | None,
    *,
    masks: Mapping[str, np.ndarray] | None = None,
    rois: Mapping[str, np.ndarray | None] | None = None,
    roi_names: Mapping[int, str] | None = None,
    labels: Mapping[int, str] | None = None,
    backend: str = "auto",
    subject: str = FSAVERAGE,
    cmap: str = "cold_hot",
    symmetric: bool | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    threshold: float | None = None,
    colorbar_title: str = "",
    title: str | None = None,
    height: int = 1024,
) -> bytes:
    """A PNG of both hemispheres' flat maps: ``values`` in colour over sulcal shading, ROI borders on top.

    ``values``/``masks``: see the module doc (``None``: shading and borders only). ``rois``: integer
    ROI codes per vertex in the same layout, drawn as white borders, named from ``roi_names``
    (``{code: name}``) when given. ``labels={1: "V1v", ...}``: ``values`` are such codes, drawn as
    categories with a legend. Colours as in ``core.viz.plotting.plot_surface_map`` (``cmap``, a symmetric
    or positive range, ``vmin``/``vmax``, ``threshold``). ``backend``: ``auto``, ``pycortex`` (the
    pycortex ``subject``'s flat map through ``cortex.quickflat``; ``PycortexUnavailable`` when it
    cannot be used) or ``nilearn`` (fsaverage5). ``height``: pixels of the flat map itself.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    which = flatmap_backend(backend, subject)
    cortex = _require_subject(subject) if which == "pycortex" else None
    if cortex is not None and masks is not None and subject != FSAVERAGE:
        raise SurfaceError(f"challenge-space values (masks) can only be shown on fsaverage, not on {subject}")
    if cortex is not None:
        xy, faces, counts = _pycortex_flat(cortex, subject)
        shade = None
    else:
        xy, faces, shade, counts = _nilearn_flat()
    data = _per_vertex(values, masks, counts, cortex is None, "values")
    codes = _per_vertex(rois, masks, counts, cortex is None, "rois")
    if labels is not None:
        labels = {int(k): str(v) for k, v in labels.items()}
        lo, hi, sym = 0.5, len(labels) + 0.5, False
        colours = _category_cmap(len(labels))
    else:
        lo, hi, sym = color_range(data if data is not None else [], symmetric, vmin, vmax, threshold)
        colours = _mpl_cmap(cmap)
    if data is not None:
        data = _visible(data, lo, sym, threshold if labels is None else None)

    used = np.unique(faces)
    x0, y0 = xy[used].min(axis=0)
    x1, y1 = xy[used].max(axis=0)
    map_h = int(height)
    map_w = int(round(map_h * (x1 - x0) / (y1 - y0)))
    scale = map_h / 1024  # text, lines and margins grow with the map, so it reads the same at any size
    top, bottom = round((72 if title else 16) * scale), round((150 if data is not None else 16) * scale)
    dpi = 100
    total = map_h + top + bottom
    fig = Figure(figsize=(map_w / dpi, total / dpi), dpi=dpi, facecolor="white")
    ax = fig.add_axes((0, bottom / total, 1, map_h / total))
    ax.set_axis_off()

    if cortex is not None:
        from cortex import quickflat

        vertex = cortex.Vertex(
            data if data is not None else np.full(sum(counts.values()), np.nan, np.float32),
            subject, cmap=colours, vmin=lo, vmax=hi,
        )  # fmt: skip
        with _LOCK:
            quickflat.make_figure(vertex, fig=ax, height=map_h, with_curvature=True, with_rois=False,
                                  with_sulci=False, with_labels=False, with_colorbar=False, with_dropout=False)  # fmt: skip
    else:
        from matplotlib.colors import LinearSegmentedColormap
        from matplotlib.tri import Triangulation

        gray = LinearSegmentedColormap.from_list("sulc", [np.array(BACKGROUND_LIGHT) / 255, np.array(BACKGROUND_DARK) / 255])
        ax.tripcolor(Triangulation(xy[:, 0], xy[:, 1], faces), shade, cmap=gray, vmin=0, vmax=1,
                     shading="gouraud", rasterized=True, zorder=0)  # fmt: skip
        if data is not None:
            if labels is not None:  # categories: each triangle takes the code of most of its corners
                a, b, c = data[faces].T
                per_face = np.where((a == b) | (a == c), a, np.where(b == c, b, np.nan))
                hidden = np.isnan(per_face)
            else:
                hidden = np.isnan(data)[faces].any(axis=1)
            if not hidden.all():
                tri = Triangulation(xy[:, 0], xy[:, 1], faces[~hidden])
                style = dict(cmap=colours, vmin=lo, vmax=hi, rasterized=True, zorder=1)
                if labels is not None:
                    ax.tripcolor(tri, facecolors=per_face[~hidden], **style)
                else:
                    ax.tripcolor(tri, np.nan_to_num(data), shading="gouraud", **style)
    if codes is not None:
        segs = border_segments(xy, faces, codes)
        ax.add_collection(LineCollection(segs, colors="white", linewidths=2 * scale, zorder=5))
        ax.add_collection(LineCollection(segs, colors="black", linewidths=4 * scale, alpha=0.45, zorder=4))
        if roi_names:
            _name_rois(ax, xy, counts, codes, roi_names, 17 * scale, (x1 - x0) / map_w * dpi / 72)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    for h, x in (("left", 0.02), ("right", 0.98)):
        fig.text(x, bottom / total, h, ha="left" if h == "left" else "right", va="bottom", fontsize=20 * scale, color="#555")
    if title:
        fig.text(0.5, 1 - 16 * scale / total, title, ha="center", va="top", fontsize=28 * scale)
    if data is not None:
        _legend(fig, colours, lo, hi, labels, colorbar_title, bottom / total, 20 * scale)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def spread_labels(xy: np.ndarray, half_widths: np.ndarray, half_height: float, iterations: int = 200) -> np.ndarray:
    """Label centres moved apart (vertically, the least each) until no two label boxes overlap: boxes of
    ``2 * half_widths[i]`` x ``2 * half_height`` around ``xy[i]``, all in data units."""
    xy = np.array(xy, dtype=float)
    hw = np.asarray(half_widths, dtype=float)
    for _ in range(iterations):
        dx = xy[:, None, 0] - xy[None, :, 0]
        dy = xy[:, None, 1] - xy[None, :, 1]
        over_x = hw[:, None] + hw[None, :] - np.abs(dx)
        over_y = 2 * half_height - np.abs(dy)
        hit = (over_x > 0) & (over_y > 0)
        np.fill_diagonal(hit, False)
        if not hit.any():
            break
        # ties (same height) part by index so that two labels on one spot separate
        sign = np.where(dy != 0, np.sign(dy), np.sign(np.arange(len(xy))[:, None] - np.arange(len(xy))[None, :]))
        xy[:, 1] += np.where(hit, sign * over_y, 0.0).sum(axis=1) * 0.25  # each of a pair moves a share
    return xy


def _name_rois(
    ax, xy: np.ndarray, counts: Mapping[str, int], codes: np.ndarray, names: Mapping[int, str], size: float,
    data_per_pt: float,
) -> None:
    """Each ROI's name near its median position, per hemisphere, moved apart where names would overlap."""
    import matplotlib.patheffects as pe

    start = 0
    for h in HEMIS:
        part = codes[start : start + counts[h]]
        found = []
        for code, name in names.items():
            where = np.flatnonzero(part == code)
            if where.size:
                found.append((name, np.median(xy[start + where], axis=0)))
        if found:
            half_widths = np.array([0.32 * size * len(name) + 0.2 * size for name, _ in found]) * data_per_pt
            placed = spread_labels(np.array([p for _, p in found]), half_widths, 0.62 * size * data_per_pt)
            for (name, _), (x, y) in zip(found, placed):
                ax.text(x, y, name, ha="center", va="center", fontsize=size, fontweight="bold", color="white", zorder=6,
                        path_effects=[pe.withStroke(linewidth=size / 5, foreground="black")])  # fmt: skip
        start += counts[h]


def _legend(
    fig, colours, lo: float, hi: float, labels: Mapping[int, str] | None, title: str, height: float, size: float
) -> None:
    """A horizontal colour bar (or category legend) in the band of ``height`` at the bottom; text of ``size`` pt."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Patch

    if labels is not None:
        handles = [Patch(color=colours(i), label=labels[k]) for i, k in enumerate(sorted(labels))]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 8), frameon=False, fontsize=size,
                   bbox_to_anchor=(0.5, 0.15 * height), title=title or None, title_fontsize=size)  # fmt: skip
        return
    cax = fig.add_axes((0.35, height * 0.6, 0.3, height * 0.18))
    bar = fig.colorbar(ScalarMappable(Normalize(lo, hi), colours), cax=cax, orientation="horizontal")
    bar.ax.tick_params(labelsize=size * 0.9)
    if title:
        bar.set_label(title, fontsize=size)


# ---------------------------------------------------------------------------------------------
# WebGL viewer
# ---------------------------------------------------------------------------------------------
_MIME = {".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png"}
# Answers the viewer's requests for its files from the page itself: browsers refuse XMLHttpRequest to
# file:// URLs but allow it to data: URLs, so the page works opened from disk (and when served).
_SHIM = """<script>(function(){var files=%s;var open=XMLHttpRequest.prototype.open;
XMLHttpRequest.prototype.open=function(method,url){var key=decodeURI(String(url)).replace(/^\\.\\//,"");
if(Object.prototype.hasOwnProperty.call(files,key))arguments[1]=files[key];return open.apply(this,arguments);};})();</script>"""
_README = """{title}

A pycortex WebGL viewer (pycortex {version}, subject {subject}). Open index.html in a web browser with
WebGL: everything it needs is inside that one file, so it works from disk, without a server or the
internet (and from any web server). Drag to rotate, scroll to zoom; "Open Controls" (top right) holds
the viewer's settings and, when there are several, the data sets.
"""


def inline_viewer(directory: str | os.PathLike) -> str:
    """``index.html`` of a ``make_static`` output folder with every other file in it inlined."""
    root = Path(directory)
    files = {
        p.relative_to(root).as_posix(): f"data:{_MIME.get(p.suffix, 'application/octet-stream')};base64,"
        + base64.b64encode(p.read_bytes()).decode("ascii")
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "index.html"
    }
    html = (root / "index.html").read_text(encoding="utf-8")
    shim = _SHIM % json.dumps(files).replace("</", "<\\/")
    head = html.find(">", html.lower().find("<!doctype")) + 1 if html.lower().startswith("<!doctype") else 0
    return html[:head] + shim + html[head:]


def static_viewer_zip(
    values: Mapping[str, np.ndarray | None],
    *,
    masks: Mapping[str, np.ndarray] | None = None,
    rois: Mapping[str, np.ndarray | None] | None = None,
    subject: str = FSAVERAGE,
    name: str = "data",
    cmap: str = "cold_hot",
    symmetric: bool | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    threshold: float | None = None,
    title: str = "Brain",
) -> bytes:
    """A zip with a self-contained pycortex WebGL viewer (``index.html``) of ``values`` on ``subject``.

    ``values``/``masks``/``rois`` as in ``flatmap_png`` (ROIs become a second data set in the viewer).
    The colour map is the viewer's closest one (``VIEWER_CMAPS``). ``PycortexUnavailable`` when pycortex
    or the subject cannot be used. The first export for a subject builds pycortex's mesh cache in its
    filestore (about half a minute); later ones take seconds.
    """
    cortex = _require_subject(subject)
    if masks is not None and subject != FSAVERAGE:
        raise SurfaceError(f"challenge-space values (masks) can only be shown on fsaverage, not on {subject}")
    _, _, counts = _pycortex_flat(cortex, subject)
    data = _per_vertex(values, masks, counts, False, "values")
    if data is None:
        raise SurfaceError("nothing to export: no values given")
    lo, hi, sym = color_range(data, symmetric, vmin, vmax, threshold)
    views = {name: cortex.Vertex(_visible(data, lo, sym, threshold), subject, cmap=VIEWER_CMAPS.get(cmap, cmap), vmin=lo, vmax=hi)}
    codes = _per_vertex(rois, masks, counts, False, "rois")
    if codes is not None and np.nan_to_num(codes).any():
        codes[codes == 0] = np.nan
        views["ROIs"] = cortex.Vertex(codes, subject, cmap=VIEWER_ROI_CMAP, vmin=0.5, vmax=float(np.nanmax(codes)) + 0.5)
    with tempfile.TemporaryDirectory(prefix="bes-webgl-") as tmp, _LOCK:
        cortex.webgl.make_static(tmp, views, title=title)
        html = inline_viewer(tmp)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("index.html", html)
        zf.writestr("README.txt", _README.format(title=title, version=cortex.__version__, subject=subject))
    return buf.getvalue()

