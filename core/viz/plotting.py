"""Interactive Plotly figures of per-vertex maps on fsaverage surfaces (data in, figure out).

``plot_surface_map(surface, values, ...)`` draws one hemisphere, or both side by side when given
``{"lh": surface, "rh": surface}`` and ``{"lh": values, "rh": values}``; ``values`` has one value per
mesh vertex (``core.viz.surfaces.to_surface``), NaN where there is no data.

How a figure is built, for speed and a small payload:

* the cortex is a gray ``Mesh3d`` shaded by sulcal depth through ``intensity`` (one byte per vertex);
* the data is a second ``Mesh3d`` holding only the faces that touch a shown vertex, coloured per vertex
  (``vertexcolor``), so the data fades into the gray cortex over one face, as in nilearn's
  ``view_surf``; its vertices carry the values for hover;
* each trace sends only the vertices its faces use (the flat map's medial wall is never sent), with
  float32 coordinates and uint16 faces when they fit (Plotly sends numpy arrays as base64);
* the colour bar is an invisible one-point trace, so the colour map is exact and the range symmetric or
  positive as asked.

Everything is vectorised numpy; meshes come cached from ``core.viz.surfaces``.
"""

from __future__ import annotations

import functools
from typing import Mapping, Sequence

import numpy as np
import plotly.colors as pcolors
import plotly.graph_objects as go
from plotly.exceptions import PlotlyError

from core.viz.surfaces import ICO_SIZES, Surface, SurfaceError

VIEWS: tuple[str, ...] = ("lateral", "medial", "ventral", "posterior", "anterior", "dorsal")
HEMI_TITLES = {"lh": "left hemisphere", "rh": "right hemisphere"}

# nilearn's "cold_hot": cyan -> blue -> black -> red -> yellow (the devkit's colour map).
COLD_HOT = [[0.0, "#00ffff"], [0.25, "#0000ff"], [0.5, "#000000"], [0.75, "#ff0000"], [1.0, "#ffff00"]]
# A "hot" map for positive data that stays visible on gray: dark red -> red -> yellow -> white.
HOT = [[0.0, "#800000"], [0.35, "#ff0000"], [0.7, "#ffd000"], [1.0, "#ffffe0"]]
_CUSTOM = {"cold_hot": COLD_HOT, "hot": HOT}
COLORMAPS: tuple[str, ...] = ("cold_hot", "RdBu_r", "hot", "Viridis", "Inferno", "Plasma", "Cividis", "Turbo")
CATEGORY_COLORS: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
    "#7f7f7f", "#aec7e8", "#ffbb78",
)  # fmt: skip
SINGLE_ROI_COLOR = "#00b4ff"

BACKGROUND_LIGHT = (217, 217, 217)  # gyri
BACKGROUND_DARK = (110, 110, 110)  # sulci
LIGHTING = dict(ambient=0.55, diffuse=0.6, specular=0.05, roughness=0.9, fresnel=0.05,
                facenormalsepsilon=0, vertexnormalsepsilon=0)  # fmt: skip
_LUT_SIZE = 256


# ---------------------------------------------------------------------------------------------
# Colours
# ---------------------------------------------------------------------------------------------
def colorscale(name: str) -> list[list]:
    """A Plotly colour scale by name: ``cold_hot``/``hot`` (nilearn-like) or any Plotly scale
    (``"RdBu_r"``, ``"Viridis"``, ... ``_r`` reverses)."""
    if name in _CUSTOM:
        return [list(x) for x in _CUSTOM[name]]
    if name.endswith("_r") and name[:-2] in _CUSTOM:
        return [[1 - p, c] for p, c in reversed(_CUSTOM[name[:-2]])]
    try:
        return [list(x) for x in pcolors.get_colorscale(name)]
    except PlotlyError:  # plotly's one error for an unknown scale
        raise SurfaceError(f"unknown colour map '{name}' (try one of {', '.join(COLORMAPS)})") from None


def _parse_color(c: str) -> tuple[int, int, int]:
    c = c.strip()
    if c.startswith("#"):
        r, g, b = pcolors.hex_to_rgb(c)
        return int(r), int(g), int(b)
    rgb = pcolors.unlabel_rgb(c)
    return int(round(rgb[0])), int(round(rgb[1])), int(round(rgb[2]))


@functools.lru_cache(maxsize=64)
def _lut(name: str) -> np.ndarray:
    """(256, 3) uint8 colours sampled from the colour scale ``name``."""
    scale = colorscale(name)
    pos = np.array([float(p) for p, _ in scale])
    rgb = np.array([_parse_color(c) for _, c in scale], dtype=float)
    x = np.linspace(0, 1, _LUT_SIZE)
    out = np.stack([np.interp(x, pos, rgb[:, i]) for i in range(3)], axis=1)
    return np.rint(out).astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _hex_table(rgb_bytes: bytes) -> np.ndarray:
    rgb = np.frombuffer(rgb_bytes, dtype=np.uint8).reshape(-1, 3)
    return np.array([f"#{r:02x}{g:02x}{b:02x}" for r, g, b in rgb], dtype=object)


def _background_lut() -> np.ndarray:
    x = np.linspace(0, 1, _LUT_SIZE)[:, None]
    return np.rint(np.array(BACKGROUND_LIGHT) * (1 - x) + np.array(BACKGROUND_DARK) * x).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Cameras
# ---------------------------------------------------------------------------------------------
# Apparent size: at eye distance d a scene unit spans about _PX_PER_UNIT * height / d pixels
# (Plotly's fixed vertical field of view; measured on the inflated fsaverage).
_PX_PER_UNIT = 0.70 * 1.55
_FILL = 0.84  # share of the scene the surface may fill


def camera(
    view: str = "lateral",
    hemi: str = "lh",
    mesh: str = "inflated",
    aspectratio: Sequence[float] = (0.6, 1.57, 1.06),
    scene_aspect: float = 1.6,
) -> dict:
    """A Plotly scene camera for a named view of one hemisphere (flat maps are always seen from above).

    The eye steps back far enough for the scene's box (``aspectratio``, x/y/z) to fit a scene whose
    width / height is ``scene_aspect`` (Plotly's field of view is fixed vertically).
    """
    if view not in VIEWS:
        raise SurfaceError(f"unknown view '{view}' (use one of {', '.join(VIEWS)})")
    side = -1.0 if hemi == "lh" else 1.0
    if mesh == "flat":
        direction, up = (0.0, 0.0, 1.0), (0.0, 1.0, 0.0)
    else:
        direction, up = {
            "lateral": ((side, 0, 0), (0, 0, 1)),
            "medial": ((-side, 0, 0), (0, 0, 1)),
            "ventral": ((0, 0, -1), (0, 1, 0)),
            "dorsal": ((0, 0, 1), (0, 1, 0)),
            "posterior": ((0, -1, 0), (0, 0, 1)),
            "anterior": ((0, 1, 0), (0, 0, 1)),
        }[view]
    box = np.abs(np.asarray(aspectratio, dtype=float))
    dirv, upv = np.asarray(direction, dtype=float), np.asarray(up, dtype=float)
    right = np.cross(dirv, upv)
    vertical = float(box @ np.abs(upv))
    horizontal = float(box @ np.abs(right))
    depth = float(box @ np.abs(dirv))
    d = _PX_PER_UNIT / _FILL * max(vertical, horizontal / max(scene_aspect, 0.1))
    d += 0.3 * depth  # the near side of the surface is closer than the centre
    eye = dirv * round(d, 4)
    return dict(eye=dict(zip("xyz", eye.tolist())), up=dict(zip("xyz", upv.tolist())), center=dict(x=0, y=0, z=0))


def facing_view(
    surfaces: Mapping[str, Surface], values: Mapping[str, np.ndarray | None], views: Sequence[str] = VIEWS
) -> str | None:
    """The camera preset (of ``views``) that sees most of the vertices with values, e.g. an ROI: the view
    whose direction best matches their outward surface normals, summed over vertices and hemispheres.
    None when no vertex has a value."""
    score = dict.fromkeys(views, 0.0)
    found = False
    for hemi, surf in surfaces.items():
        vals = fit_values(surf, values.get(hemi))
        if vals is None or not np.isfinite(vals).any():
            continue
        found = True
        normals = surf.normals()[np.isfinite(vals)].astype(np.float64)
        for view in views:
            eye = np.array(list(camera(view, hemi, surf.mesh)["eye"].values()))
            score[view] += float(np.clip(normals @ (eye / (np.linalg.norm(eye) or 1.0)), 0, None).sum())
    return max(score, key=score.get) if found else None


@functools.lru_cache(maxsize=64)
def _aspect(surface: Surface) -> tuple[float, float, float]:
    """Scene aspect ratio from the extent of the vertices in faces (Plotly's ``aspectmode="data"``
    normalisation, product 1), with a thin but non-zero depth for the 2-D flat map."""
    used = np.zeros(surface.n_vertices, dtype=bool)
    used[surface.faces.ravel()] = True
    xyz = surface.coords[used]
    ext = np.maximum(xyz.max(axis=0) - xyz.min(axis=0), 1e-6).astype(float)
    if surface.mesh == "flat":
        g = float(np.sqrt(ext[0] * ext[1]))
        return float(ext[0] / g), float(ext[1] / g), 0.02
    g = float(np.cbrt(np.prod(ext)))
    return tuple(float(e / g) for e in ext)  # type: ignore[return-value]


def _light_position(cam: dict) -> dict:
    e = np.array([cam["eye"][k] for k in "xyz"], dtype=float)
    u = np.array([cam["up"][k] for k in "xyz"], dtype=float)
    p = e / (np.linalg.norm(e) or 1.0) + 0.5 * u
    p = p / np.linalg.norm(p) * 1e5
    return dict(x=float(p[0]), y=float(p[1]), z=float(p[2]))


# ---------------------------------------------------------------------------------------------
# Colour range
# ---------------------------------------------------------------------------------------------
def color_range(
    values: np.ndarray | Sequence[np.ndarray],
    symmetric: bool | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    threshold: float | None = None,
) -> tuple[float, float, bool]:
    """``(vmin, vmax, symmetric)`` for the finite values: symmetric ``[-m, m]`` (default when any value
    is negative) or positive ``[0, max]``; explicit ``vmin``/``vmax`` win."""
    arrays = [values] if isinstance(values, np.ndarray) else list(values)
    finite = [a[np.isfinite(a)] for a in (np.asarray(x, dtype=np.float32) for x in arrays if x is not None)]
    finite = np.concatenate(finite) if finite else np.zeros(0, np.float32)
    if symmetric is None:
        symmetric = bool(finite.size and finite.min() < 0)
    if symmetric:
        m = vmax if vmax is not None else (abs(vmin) if vmin is not None else (float(np.abs(finite).max()) if finite.size else 1.0))
        m = float(m) if m and np.isfinite(m) and m > 0 else max(float(threshold or 0), 1.0)
        return -m, m, True
    lo = float(vmin) if vmin is not None else 0.0
    hi = float(vmax) if vmax is not None else (float(finite.max()) if finite.size else 1.0)
    if not hi > lo:
        hi = lo + 1.0
    return lo, hi, False


# ---------------------------------------------------------------------------------------------
# Traces
# ---------------------------------------------------------------------------------------------
def _index_dtype(n: int):
    return np.uint16 if n < 65536 else np.uint32


def _compact(coords: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep only the vertices ``faces`` use: ``(vertex ids, coords, re-indexed faces)``."""
    used = np.zeros(coords.shape[0], dtype=bool)
    used[faces.ravel()] = True
    ids = np.flatnonzero(used)
    remap = np.cumsum(used, dtype=np.int64) - 1
    return ids, coords[ids], remap[faces].astype(_index_dtype(ids.size))


def _mesh_kwargs(xyz: np.ndarray, faces: np.ndarray) -> dict:
    xyz = np.asarray(xyz, dtype=np.float32)
    return dict(
        x=np.ascontiguousarray(xyz[:, 0]),
        y=np.ascontiguousarray(xyz[:, 1]),
        z=np.ascontiguousarray(xyz[:, 2]),
        i=np.ascontiguousarray(faces[:, 0]),
        j=np.ascontiguousarray(faces[:, 1]),
        k=np.ascontiguousarray(faces[:, 2]),
    )


@functools.lru_cache(maxsize=64)
def _shade_bytes(surface: Surface) -> np.ndarray:
    """Per-vertex background shade as uint8 0..255 (cached per surface)."""
    out = np.rint(surface.shading() * (_LUT_SIZE - 1)).astype(np.uint8)
    out.setflags(write=False)
    return out


def _background_trace(surface: Surface, faces: np.ndarray, scene: str, lightpos: dict) -> go.Mesh3d | None:
    if faces.shape[0] == 0:
        return None
    ids, xyz, f = _compact(surface.coords, faces)
    gray = _background_lut()
    return go.Mesh3d(
        **_mesh_kwargs(xyz, f),
        intensity=_shade_bytes(surface)[ids],
        intensitymode="vertex",
        cmin=0,
        cmax=_LUT_SIZE - 1,
        colorscale=[[0.0, f"rgb{tuple(int(c) for c in gray[0])}"], [1.0, f"rgb{tuple(int(c) for c in gray[-1])}"]],
        showscale=False,
        hoverinfo="skip",
        lighting=LIGHTING,
        lightposition=lightpos,
        flatshading=False,
        scene=scene,
        name="cortex",
        showlegend=False,
    )


def _hemisphere_traces(
    surface: Surface,
    values: np.ndarray | None,
    *,
    scene: str,
    cam: dict,
    lut: np.ndarray,
    vmin: float,
    vmax: float,
    threshold: float | None,
    labels: Mapping[int, str] | None,
    hover: bool,
    value_format: str,
    hemi_title: str,
    floor: float | None = None,
) -> list:
    lightpos = _light_position(cam)
    faces = surface.faces
    if values is None:
        bg = _background_trace(surface, faces, scene, lightpos)
        return [bg] if bg is not None else []
    v = np.asarray(values, dtype=np.float32)
    shown = np.isfinite(v)
    if threshold:
        shown &= np.abs(np.nan_to_num(v)) >= float(threshold)
    if floor is not None:
        shown &= np.nan_to_num(v, nan=-np.inf) >= floor
    touch = shown[faces].any(axis=1)
    traces = []
    bg = _background_trace(surface, faces[~touch], scene, lightpos)
    if bg is not None:
        traces.append(bg)
    if not touch.any():
        return traces
    ids, xyz, f = _compact(surface.coords, faces[touch])
    vs, sh = v[ids], shown[ids]
    # colour index per vertex: data colour where shown, the cortex gray elsewhere (so data fades into it)
    rgb = _background_lut()[_shade_bytes(surface)[ids]]
    if labels is not None:
        codes = np.rint(np.nan_to_num(vs[sh])).astype(np.int64)
        palette = _category_rgb(len(labels))
        rgb[sh] = palette[np.clip(codes - 1, 0, len(palette) - 1)]
    else:
        pos = (np.clip(vs[sh], vmin, vmax) - vmin) / (vmax - vmin)
        rgb[sh] = lut[np.rint(pos * (_LUT_SIZE - 1)).astype(np.int64)]
    colors = _rgb_to_hex(rgb)
    kw: dict = {}
    if hover:
        if labels is not None:
            names = np.array([""] + [str(labels.get(k, k)) for k in sorted(labels)], dtype=object)
            codes_all = np.where(sh, np.rint(np.nan_to_num(vs)).astype(np.int64), 0)
            kw.update(text=names[np.clip(codes_all, 0, len(names) - 1)].tolist(), hovertemplate=f"%{{text}}<extra>{hemi_title}</extra>")
        else:
            kw.update(
                customdata=np.where(sh, vs, np.nan).astype(np.float32),
                hovertemplate=f"%{{customdata:{value_format}}}<extra>{hemi_title}</extra>",
            )
    else:
        kw.update(hoverinfo="skip")
    traces.append(
        go.Mesh3d(
            **_mesh_kwargs(xyz, f),
            vertexcolor=colors,
            lighting=LIGHTING,
            lightposition=lightpos,
            flatshading=False,
            scene=scene,
            name="data",
            showlegend=False,
            **kw,
        )
    )
    return traces


def _rgb_to_hex(rgb: np.ndarray) -> list[str]:
    """``#rrggbb`` per row, through a table of the distinct colours (fast for 10^5 vertices)."""
    packed = (rgb[:, 0].astype(np.int64) << 16) | (rgb[:, 1].astype(np.int64) << 8) | rgb[:, 2]
    uniq, inv = np.unique(packed, return_inverse=True)
    table = np.array([f"#{int(p):06x}" for p in uniq], dtype=object)
    return table[inv.reshape(-1)].tolist()


def _category_rgb(n: int) -> np.ndarray:
    if n == 1:
        return np.array([_parse_color(SINGLE_ROI_COLOR)], dtype=np.uint8)
    cols = [CATEGORY_COLORS[i % len(CATEGORY_COLORS)] for i in range(n)]
    return np.array([_parse_color(c) for c in cols], dtype=np.uint8)


def _colorbar_trace(
    scene: str,
    cmap: str,
    vmin: float,
    vmax: float,
    labels: Mapping[int, str] | None,
    title: str,
    threshold: float | None,
) -> go.Scatter3d:
    cb: dict = dict(title=dict(text=title, side="right"), thickness=14, len=0.75, x=1.0, xanchor="left", outlinewidth=0)
    if labels is not None:
        n = len(labels)
        pal = _category_rgb(n)
        scale = []
        for idx in range(n):
            c = "#%02x%02x%02x" % tuple(int(x) for x in pal[idx])
            scale += [[idx / n, c], [(idx + 1) / n, c]]
        cmin, cmax = 0.5, n + 0.5
        cb.update(tickvals=list(range(1, n + 1)), ticktext=[labels[k] for k in sorted(labels)], ticks="")
    else:
        scale = colorscale(cmap)
        cmin, cmax = vmin, vmax
        if threshold:
            cb.update(title=dict(text=f"{title} (|v| ≥ {threshold:g})" if title else f"|v| ≥ {threshold:g}", side="right"))
    return go.Scatter3d(
        x=[None], y=[None], z=[None], mode="markers", scene=scene, hoverinfo="skip", showlegend=False,
        marker=dict(size=0, color=[cmin], colorscale=scale, cmin=cmin, cmax=cmax, showscale=True, colorbar=cb),
    )  # fmt: skip


def _as_pairs(surface, values) -> list[tuple[str, Surface, np.ndarray | None]]:
    if isinstance(surface, Surface):
        if isinstance(values, Mapping):
            raise SurfaceError("one surface needs one values array (pass dicts for both hemispheres)")
        return [(surface.hemi, surface, values)]
    if isinstance(surface, Mapping):
        if values is not None and not isinstance(values, Mapping):
            raise SurfaceError("pass values as {hemi: array} together with {hemi: surface}")
        vals = values or {}
        return [(h, s, vals.get(h)) for h, s in surface.items()]
    surfaces = list(surface)
    vals = list(values) if values is not None else [None] * len(surfaces)
    if len(vals) != len(surfaces):
        raise SurfaceError(f"{len(surfaces)} surfaces but {len(vals)} value arrays")
    return [(s.hemi, s, v) for s, v in zip(surfaces, vals)]


def fit_values(surface: Surface, values) -> np.ndarray | None:
    if values is None:
        return None
    v = np.asarray(values)
    if v.ndim != 1:
        raise SurfaceError(f"expected one value per vertex (1-D), found shape {v.shape}")
    n = surface.n_vertices
    if v.shape[0] == n:
        return v
    if v.shape[0] > n and v.shape[0] in ICO_SIZES and n in ICO_SIZES:
        return v[:n]  # finer icosahedron: its first n vertices are this mesh's vertices
    raise SurfaceError(
        f"{v.shape[0]} values for a {n}-vertex {surface.resolution} mesh "
        "(map challenge-space data with core.viz.surfaces.to_surface first)"
    )


# ---------------------------------------------------------------------------------------------
# Public
# ---------------------------------------------------------------------------------------------
def plot_surface_map(
    surface: Surface | Mapping[str, Surface] | Sequence[Surface],
    values: np.ndarray | Mapping[str, np.ndarray | None] | Sequence | None = None,
    *,
    cmap: str = "cold_hot",
    symmetric: bool | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    threshold: float | None = None,
    labels: Mapping[int, str] | None = None,
    colorbar: bool = True,
    colorbar_title: str = "",
    view: str = "lateral",
    title: str | None = None,
    height: int = 480,
    aspect: float | None = None,
    hover: bool = True,
    value_format: str = ".3g",
    hemi_titles: bool | None = None,
) -> go.Figure:
    """An interactive figure of a per-vertex map on one hemisphere, or several side by side.

    ``surface``: a ``Surface`` with ``values`` (one per vertex, NaN = no data), or ``{"lh": Surface,
    "rh": Surface}`` with ``{"lh": values, "rh": values}`` for both hemispheres side by side
    (a finer icosahedron's vector is accepted and cut to the mesh). ``values=None`` draws the bare cortex.

    ``cmap``: ``cold_hot``, ``hot`` or a Plotly colour scale name. Range: symmetric ``[-m, m]``
    (``symmetric=True``; default when any value is negative) or positive ``[0, max]``, where values
    below the range are not drawn (a positive view of signed data shows its positive part);
    ``vmin``/``vmax`` override.
    ``threshold``: values with ``|v| < threshold`` are not drawn. ``labels={1: "V1v", ...}`` draws
    integer codes as categories with a legend-like colour bar (one label: a single highlight colour).
    ``view``: lateral, medial, ventral, posterior, anterior or dorsal (flat maps: from above).
    ``aspect``: the width / height the figure will have on screen (a hint; default 1.6 per hemisphere
    up to 2.5 for two): cameras step back so that each hemisphere fits its scene.
    """
    pairs = [(h, s, fit_values(s, v)) for h, s, v in _as_pairs(surface, values)]
    if not pairs:
        raise SurfaceError("nothing to plot: no surface given")
    if labels is not None:
        labels = {int(k): str(v) for k, v in labels.items()}
        lo, hi, sym = 0.5, len(labels) + 0.5, False
    else:
        lo, hi, sym = color_range([v for _, _, v in pairs if v is not None], symmetric, vmin, vmax, threshold)
    lut = _lut(cmap)
    n = len(pairs)
    show_titles = (n > 1) if hemi_titles is None else hemi_titles
    fig_aspect = float(aspect) if aspect else (1.6 if n == 1 else 1.25 * n)
    fig = go.Figure()
    layout: dict = {}
    any_values = any(v is not None for _, _, v in pairs)
    for col, (hemi, surf, vals) in enumerate(pairs):
        scene = "scene" if col == 0 else f"scene{col + 1}"
        ar = _aspect(surf)
        cam = camera(view, hemi, surf.mesh, ar, fig_aspect / n)
        for tr in _hemisphere_traces(
            surf, vals, scene=scene, cam=cam, lut=lut, vmin=lo, vmax=hi, threshold=threshold, labels=labels,
            hover=hover, value_format=value_format, hemi_title=HEMI_TITLES.get(hemi, hemi),
            floor=lo if (labels is None and not sym) else None,
        ):  # fmt: skip
            fig.add_trace(tr)
        axis = dict(visible=False, showgrid=False, zeroline=False, showbackground=False, showspikes=False)
        layout[scene] = dict(
            domain=dict(x=[col / n, (col + 1) / n], y=[0, 0.94 if show_titles or title else 1.0]),
            xaxis=axis, yaxis=axis, zaxis=axis,
            aspectmode="manual",
            aspectratio=dict(zip("xyz", ar)),
            camera=cam,
            dragmode="orbit",
            bgcolor="rgba(0,0,0,0)",
        )  # fmt: skip
    if colorbar and any_values:
        fig.add_trace(_colorbar_trace("scene", cmap, lo, hi, labels, colorbar_title, threshold))
    annotations = []
    if show_titles:
        for col, (hemi, surf, _) in enumerate(pairs):
            annotations.append(
                dict(text=HEMI_TITLES.get(hemi, hemi), x=(col + 0.5) / n, y=1.0, xref="paper", yref="paper",
                     xanchor="center", yanchor="top", showarrow=False, font=dict(size=13, color="#444"))
            )  # fmt: skip
    fig.update_layout(
        **layout,
        height=height,
        margin=dict(l=0, r=0, t=36 if title else (24 if show_titles else 0), b=0),
        paper_bgcolor="white",
        plot_bgcolor="white",
        showlegend=False,
        annotations=annotations,
        title=dict(text=title, x=0.5, xanchor="center", y=0.99, yanchor="top", font=dict(size=15)) if title else None,
        uirevision=f"{view}|{'|'.join(s.mesh + s.hemi for _, s, _ in pairs)}",
        hoverlabel=dict(bgcolor="white"),
    )
    fig.layout.meta = dict(vmin=lo, vmax=hi, symmetric=sym, n_vertices=[s.n_vertices for _, s, _ in pairs])
    return fig


def plot_hemispheres(
    surfaces: Mapping[str, Surface],
    values: Mapping[str, np.ndarray | None] | None = None,
    **kwargs,
) -> go.Figure:
    """Both hemispheres side by side (left, then right), sharing one colour range and colour bar."""
    order = [h for h in ("lh", "rh") if h in surfaces] + [h for h in surfaces if h not in ("lh", "rh")]
    vals = values or {}
    return plot_surface_map({h: surfaces[h] for h in order}, {h: vals.get(h) for h in order}, **kwargs)


def figure_payload_bytes(fig: go.Figure) -> int:
    """Size of the JSON the browser receives for ``fig`` (what ``st.plotly_chart`` sends)."""
    import plotly.io as pio

    return len(pio.to_json(fig, validate=False).encode())
