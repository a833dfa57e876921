"""core.viz.plotting: per-vertex maps -> Plotly figures (traces, colours, ranges, cameras, payload)."""

from __future__ import annotations

import json
import time

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest

from core.viz import plotting as P
from core.viz import surfaces as S


@pytest.fixture(scope="module")
def lh():
    return S.load_surface("inflated", "lh", "fsaverage5")


@pytest.fixture(scope="module")
def rh():
    return S.load_surface("inflated", "rh", "fsaverage5")


def occipital_values(surface, seed=0, signed=True):
    """NaN everywhere but a posterior patch (like challenge vertices), smooth-ish values there."""
    rng = np.random.default_rng(seed)
    v = np.full(surface.n_vertices, np.nan, np.float32)
    patch = surface.coords[:, 1] < -60
    v[patch] = np.sin(surface.coords[patch, 2] / 10) * 2 + 0.1 * rng.standard_normal(patch.sum())
    return v if signed else np.abs(v)


def traces(fig, name):
    return [t for t in fig.data if getattr(t, "name", None) == name]


def test_one_hemisphere_figure_structure(lh):
    v = occipital_values(lh)
    fig = P.plot_surface_map(lh, v, colorbar_title="z")
    assert isinstance(fig, go.Figure)
    (cortex,) = traces(fig, "cortex")
    (data,) = traces(fig, "data")
    bars = [t for t in fig.data if t.type == "scatter3d"]
    assert len(bars) == 1 and bars[0].marker.showscale
    # every face is drawn exactly once, by the cortex or the data trace
    assert len(cortex.i) + len(data.i) == lh.n_faces
    # the data trace holds the faces touching a shown vertex, and only the vertices they use
    shown = np.isfinite(v)
    assert len(data.i) == int(shown[lh.faces].any(axis=1).sum())
    assert len(data.x) == len(data.vertexcolor) == len(data.customdata)
    assert np.nanmax(np.asarray(data.customdata)) == pytest.approx(np.nanmax(v))
    # compact arrays: float32 coordinates, uint16 faces for fsaverage5
    assert np.asarray(cortex.x).dtype == np.float32 and np.asarray(cortex.i).dtype == np.uint16
    assert fig.layout.scene.camera.eye.x < 0  # left lateral: seen from the left
    assert fig.layout.scene.aspectmode == "manual"


def test_colours_range_and_threshold(lh):
    v = occipital_values(lh)
    vmax = float(np.nanmax(np.abs(v)))
    fig = P.plot_surface_map(lh, v)
    assert fig.layout.meta["symmetric"] and fig.layout.meta["vmin"] == pytest.approx(-vmax)
    (bar,) = [t for t in fig.data if t.type == "scatter3d"]
    assert (bar.marker.cmin, bar.marker.cmax) == pytest.approx((-vmax, vmax))

    pos = P.plot_surface_map(lh, np.abs(v))
    assert not pos.layout.meta["symmetric"] and pos.layout.meta["vmin"] == 0
    fixed = P.plot_surface_map(lh, v, symmetric=False, vmin=-1, vmax=3)
    assert (fixed.layout.meta["vmin"], fixed.layout.meta["vmax"]) == (-1, 3)
    # a positive view of signed data: 0..max, the negative part is not drawn
    half = P.plot_surface_map(lh, v, symmetric=False)
    assert (half.layout.meta["vmin"], half.layout.meta["vmax"]) == pytest.approx((0, float(np.nanmax(v))))
    assert np.nanmin(np.asarray(traces(half, "data")[0].customdata)) >= 0

    # the vertex holding the maximum gets the colour map's last colour; gray outside the data
    one = np.full(lh.n_vertices, np.nan, np.float32)
    one[[0, 1, 2]] = [0.0, 0.5, 1.0]
    fig = P.plot_surface_map(lh, one, cmap="Viridis", symmetric=False, vmin=0, vmax=1)
    (data,) = traces(fig, "data")
    cd = np.asarray(data.customdata)
    colours = np.asarray(data.vertexcolor, dtype=object)
    assert colours[np.nanargmax(cd)] == "#fde725"  # viridis' yellow end
    assert colours[np.nanargmin(cd)] == "#440154"  # viridis' purple start
    gray = colours[np.isnan(cd)]
    assert len(gray) and all(c[1:3] == c[3:5] == c[5:7] for c in gray)

    # threshold: |v| < 1 is not drawn
    thr = P.plot_surface_map(lh, v, threshold=1.0)
    (data_thr,) = traces(thr, "data")
    cd = np.asarray(data_thr.customdata)
    assert np.nanmin(np.abs(cd)) >= 1.0
    assert len(data_thr.i) < len(traces(P.plot_surface_map(lh, v), "data")[0].i)
    # nothing above the threshold: only the cortex
    empty = P.plot_surface_map(lh, v, threshold=100)
    assert traces(empty, "data") == [] and len(traces(empty, "cortex")[0].i) == lh.n_faces


def test_categorical_labels(lh):
    v = np.full(lh.n_vertices, np.nan, np.float32)
    v[lh.coords[:, 1] < -70] = 1
    v[(lh.coords[:, 1] >= -70) & (lh.coords[:, 1] < -50)] = 2
    fig = P.plot_surface_map(lh, v, labels={1: "V1v", 2: "hV4"})
    (bar,) = [t for t in fig.data if t.type == "scatter3d"]
    assert list(bar.marker.colorbar.ticktext) == ["V1v", "hV4"]
    (data,) = traces(fig, "data")
    assert {"V1v", "hV4"} <= set(data.text)
    colours = set(np.asarray(data.vertexcolor)[np.isin(np.asarray(data.text), ["V1v"])])
    assert colours == {P.CATEGORY_COLORS[0]}
    single = P.plot_surface_map(lh, np.where(v == 1, 1.0, np.nan), labels={1: "V1v"})
    assert set(np.asarray(traces(single, "data")[0].vertexcolor)[np.asarray(traces(single, "data")[0].text) == "V1v"]) == {
        P.SINGLE_ROI_COLOR
    }


def test_both_hemispheres_side_by_side(lh, rh):
    fig = P.plot_hemispheres({"rh": rh, "lh": lh}, {"lh": occipital_values(lh), "rh": occipital_values(rh, 1)}, view="lateral")
    s1, s2 = fig.layout.scene, fig.layout.scene2
    assert s1.domain.x == (0, 0.5) and s2.domain.x == (0.5, 1)
    assert s1.camera.eye.x < 0 < s2.camera.eye.x  # left then right, each seen from its lateral side
    assert {t.scene for t in fig.data} == {"scene", "scene2"}
    assert len([t for t in fig.data if t.type == "scatter3d"]) == 1  # one shared colour bar
    texts = [a.text for a in fig.layout.annotations]
    assert texts == ["left hemisphere", "right hemisphere"]
    medial = P.plot_hemispheres({"lh": lh, "rh": rh}, None, view="medial")
    assert medial.layout.scene.camera.eye.x > 0 > medial.layout.scene2.camera.eye.x
    assert all(t.type == "mesh3d" for t in medial.data)  # no values: cortex only, no colour bar


@pytest.mark.parametrize("view", P.VIEWS)
def test_camera_presets(view):
    cam = P.camera(view, "lh")
    eye = np.array([cam["eye"][k] for k in "xyz"])
    up = np.array([cam["up"][k] for k in "xyz"])
    assert np.linalg.norm(eye) > 1 and abs(eye @ up) < 1e-9
    expected = {"lateral": (0, -1), "medial": (0, 1), "ventral": (2, -1), "dorsal": (2, 1), "posterior": (1, -1),
                "anterior": (1, 1)}[view]  # fmt: skip
    axis, sign = expected
    assert np.sign(eye[axis]) == sign and np.count_nonzero(eye) == 1


def test_flat_map_seen_from_above():
    flat = S.load_surface("flat", "lh", "fsaverage5")
    fig = P.plot_surface_map(flat, None, view="medial")
    assert fig.layout.scene.camera.eye.z > 0 and fig.layout.scene.camera.eye.x == 0
    ar = fig.layout.scene.aspectratio
    assert ar.z < 0.1 < ar.x
    (cortex,) = traces(fig, "cortex")
    assert len(cortex.x) == np.unique(flat.faces).size < flat.n_vertices  # the cut medial wall is not sent


def test_values_length_checks(lh):
    full = np.full(S.N_FSAVERAGE, np.nan, np.float32)
    full[:100] = 1.0
    fig = P.plot_surface_map(lh, full)  # a full-resolution vector on fsaverage5: its first 10,242 values
    assert len(traces(fig, "data")) == 1
    with pytest.raises(S.SurfaceError, match="12 values for a 10242-vertex fsaverage5 mesh"):
        P.plot_surface_map(lh, np.zeros(12))
    with pytest.raises(S.SurfaceError, match="unknown view"):
        P.plot_surface_map(lh, None, view="frontal")
    with pytest.raises(S.SurfaceError, match="unknown colour map"):
        P.plot_surface_map(lh, full, cmap="no-such-map")


@pytest.mark.parametrize("name", P.COLORMAPS + ("RdBu", "cold_hot_r"))
def test_colormaps(name):
    scale = P.colorscale(name)
    assert scale[0][0] == 0 and scale[-1][0] == 1
    assert P._lut(name).shape == (256, 3)


def test_payload_is_compact_and_fast(lh, rh):
    v = {"lh": occipital_values(lh), "rh": occipital_values(rh, 1)}
    P.plot_hemispheres({"lh": lh, "rh": rh}, v)  # warm caches
    t0 = time.perf_counter()
    fig = P.plot_surface_map(lh, v["lh"])
    build = time.perf_counter() - t0
    spec = pio.to_json(fig, validate=False)
    assert build < 0.5
    assert P.figure_payload_bytes(fig) == len(spec.encode()) < 600_000
    data = json.loads(spec)["data"]
    cortex = next(t for t in data if t.get("name") == "cortex")
    assert cortex["x"]["dtype"] == "f4" and cortex["i"]["dtype"] == "u2" and cortex["intensity"]["dtype"] == "u1"


def test_cameras_step_back_to_fit_narrow_scenes(lh, rh):
    def dist(cam):
        return float(np.linalg.norm([cam["eye"][k] for k in "xyz"]))

    wide, narrow = P.camera("lateral", "lh", scene_aspect=2.0), P.camera("lateral", "lh", scene_aspect=0.7)
    assert dist(narrow) > dist(wide)
    # lateral: the long anterior-posterior axis is horizontal, so a wide scene is limited by height only
    assert dist(P.camera("lateral", "lh", scene_aspect=3.0)) == pytest.approx(dist(wide))
    one = P.plot_surface_map(lh, None, height=400, aspect=1.6)
    two = P.plot_hemispheres({"lh": lh, "rh": rh}, None, height=400, aspect=1.6)
    assert dist(two.layout.scene.camera.to_plotly_json()) > dist(one.layout.scene.camera.to_plotly_json())
