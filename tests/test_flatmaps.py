"""core.viz.flatmaps: ROI borders, the nilearn fsaverage5 flat map, a real pycortex render on its bundled
S1 subject, and the messages when pycortex or its fsaverage subject is missing.

pycortex is pointed at private filestores (``use_filestore``): an empty one, or a copy of the S1
subject that ships inside the package (``s1_filestore``), so no test depends on the user's filestore.
"""

from __future__ import annotations

import io
import re
import socket
import sys

import numpy as np
import pytest
from PIL import Image

from core.viz import flatmaps
from core.viz.surfaces import SurfaceError, roi_overlays, vertex_maps


from tests.pycortex_store import s1_filestore, use_filestore


@pytest.fixture
def empty_store(tmp_path):
    store = tmp_path / "pycortex-db"
    store.mkdir()
    with use_filestore(store):
        yield store


@pytest.fixture(scope="module")
def s1(request, tmp_path_factory):
    with use_filestore(s1_filestore(request, tmp_path_factory)) as cortex:
        yield cortex


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def pixels(png: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB")).astype(int)


def above_colour_bar(px: np.ndarray) -> np.ndarray:
    """The image rows above the colour bar (it takes less than the bottom 15 %)."""
    return px[: int(0.85 * px.shape[0])]


def colour_shares(px: np.ndarray) -> tuple[float, float]:
    """Shares of pixels that are strongly red/yellow and strongly blue/cyan."""
    warm = (px[..., 0] - px[..., 2] > 80) & (px.max(axis=2) - px.min(axis=2) > 80)
    cold = (px[..., 2] - px[..., 0] > 80) & (px.max(axis=2) - px.min(axis=2) > 80)
    return float(warm.mean()), float(cold.mean())


def demo_inputs(demo_root):
    from core.algonauts2023.dataset import open_dataset

    subj = open_dataset(demo_root).subject(1)
    masks = {h: subj.fsaverage_mask(h) for h in ("lh", "rh")}
    overlays, names = roi_overlays(subj, ("lh", "rh"), "prf-visualrois")
    rois = {h: ov.values for h, ov in overlays.items()}
    nc = {h: vertex_maps(subj, h)["Noise ceiling"].values for h in ("lh", "rh")}
    return subj, masks, rois, names, nc


# ---------------------------------------------------------------------------------------------
# borders
# ---------------------------------------------------------------------------------------------
def grid_mesh(nx: int = 6, ny: int = 4) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.meshgrid(np.arange(nx, dtype=float), np.arange(ny, dtype=float))
    coords = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], axis=1)
    idx = np.arange(nx * ny).reshape(ny, nx)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return coords, faces


def test_borders_run_between_differently_labelled_vertices():
    coords, faces = grid_mesh()
    labels = np.where(coords[:, 0] <= 2, 1.0, np.nan)  # columns 0..2 labelled, 3..5 not
    segs = flatmaps.border_segments(coords, faces, labels)
    # one straight border halfway between columns 2 and 3, spanning the 3 rows of squares
    assert segs.shape[1:] == (2, 2) and len(segs) == 6
    assert np.allclose(segs[..., 0], 2.5)
    assert np.isclose(np.abs(segs[:, 1, 1] - segs[:, 0, 1]).sum(), 3.0)
    # 0 and NaN both mean "no label"; one label everywhere has no border
    assert len(flatmaps.border_segments(coords, faces, np.nan_to_num(labels))) == 6
    assert flatmaps.border_segments(coords, faces, np.ones(len(coords))).shape == (0, 2, 2)
    # two ROIs side by side: a second border between them
    two = np.where(coords[:, 0] <= 1, 1.0, np.where(coords[:, 0] <= 3, 2.0, 0.0))
    xs = np.unique(flatmaps.border_segments(coords, faces, two)[..., 0])
    assert np.allclose(xs, [1.5, 3.5])


def test_borders_meet_at_the_centroid_where_three_labels_meet():
    coords = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    segs = flatmaps.border_segments(coords, np.array([[0, 1, 2]]), np.array([1, 2, 3]))
    assert len(segs) == 3
    assert np.allclose(segs[:, 1], [2 / 3, 2 / 3])
    assert {tuple(p) for p in segs[:, 0]} == {(1.0, 0.0), (1.0, 1.0), (0.0, 1.0)}
    with pytest.raises(SurfaceError, match="3 labels for a mesh of 4"):
        flatmaps.border_segments(np.zeros((4, 2)), np.array([[0, 1, 2]]), np.ones(3))


# ---------------------------------------------------------------------------------------------
# nilearn fsaverage5 flat map (the offline demo's path)
# ---------------------------------------------------------------------------------------------
def test_nilearn_flatmap_draws_each_hemisphere_in_its_half(demo_root):
    _, masks, rois, names, nc = demo_inputs(demo_root)
    png = flatmaps.flatmap_png({"lh": nc["lh"]}, masks=masks, backend="nilearn", cmap="hot", symmetric=False,
                               colorbar_title="Noise ceiling (%)", title="subj01: Noise ceiling", height=400)  # fmt: skip
    px = pixels(png)
    h, w, _ = px.shape
    assert 400 < h < 500 and 2.0 < w / 400 < 2.6  # title, the map, the colour bar; two hemispheres side by side
    band = above_colour_bar(px)
    left, right = colour_shares(band[:, : w // 2])[0], colour_shares(band[:, w // 2 :])[0]
    assert left > 0.03, f"no data drawn on the left hemisphere ({left:.4f})"
    assert right == 0.0, "data drawn on the right hemisphere, which had none"
    gray = (band.max(axis=2) - band.min(axis=2) < 10) & (band.min(axis=2) > 90) & (band.min(axis=2) < 230)
    assert gray.mean() > 0.2, "no sulcal shading"
    # ROI borders change the picture, with light and dark (unsaturated) pixels only
    with_borders = pixels(flatmaps.flatmap_png({"lh": nc["lh"]}, masks=masks, rois=rois, backend="nilearn", cmap="hot",
                                               symmetric=False, colorbar_title="Noise ceiling (%)",
                                               title="subj01: Noise ceiling", height=400))  # fmt: skip
    changed = (with_borders != px).any(axis=2)
    assert changed.mean() > 0.002
    spread = with_borders.max(axis=2) - with_borders.min(axis=2)
    assert np.median(spread[changed]) < 60


def test_nilearn_flatmap_threshold_labels_and_bad_input(demo_root):
    _, masks, rois, names, nc = demo_inputs(demo_root)
    hidden = pixels(flatmaps.flatmap_png(nc, masks=masks, backend="nilearn", cmap="hot", threshold=1e6, height=300))
    assert colour_shares(above_colour_bar(hidden))[0] == 0.0  # all below the threshold: nothing drawn
    assert colour_shares(hidden[len(above_colour_bar(hidden)) :])[0] > 0.02  # but the colour bar
    legend = pixels(flatmaps.flatmap_png(rois, masks=masks, backend="nilearn", labels=dict(enumerate(names, 1)), height=300))
    assert colour_shares(legend)[1] > 0.002  # V1v is drawn in the first category colour (blue)
    with pytest.raises(SurfaceError, match="12 values for a 10242-vertex"):
        flatmaps.flatmap_png({"lh": np.zeros(12)}, backend="nilearn")
    with pytest.raises(SurfaceError, match="unknown flat-map backend"):
        flatmaps.flatmap_png(nc, masks=masks, backend="matplotlib")


# ---------------------------------------------------------------------------------------------
# pycortex, for real, on its bundled S1 subject
# ---------------------------------------------------------------------------------------------
def s1_maps(cortex) -> tuple[dict, dict]:
    """Positive values on S1's left hemisphere, negative on its right; one ROI at the occipital end."""
    values, rois = {}, {}
    for sign, h in ((1, "lh"), (-1, "rh")):
        pia = cortex.db.get_surf("S1", "pia", h)[0]
        values[h] = sign * (0.6 + 0.4 * np.sin(pia[:, 2] / 10))
        rois[h] = (pia[:, 1] < pia[:, 1].min() + 40).astype(float)
    return values, rois


def test_pycortex_flatmap_on_s1(s1):
    assert flatmaps.subject_unavailable_reason("S1") is None
    assert flatmaps.flatmap_backend("auto", "S1") == "pycortex"
    values, rois = s1_maps(s1)
    png = flatmaps.flatmap_png(values, subject="S1", title="S1", colorbar_title="v")
    px = pixels(png)
    h, w, _ = px.shape
    assert abs(w - 1960) <= 2 and 1024 < h < 1300  # quickflat's S1 flat map at 1024 px high
    band = above_colour_bar(px)
    warm_l, cold_l = colour_shares(band[:, : w // 2])
    warm_r, cold_r = colour_shares(band[:, w // 2 :])
    assert warm_l > 0.2 and cold_l < 0.01, (warm_l, cold_l)  # positive left hemisphere: red/yellow
    assert cold_r > 0.2 and warm_r < 0.01, (warm_r, cold_r)  # negative right hemisphere: blue/cyan
    bordered = pixels(flatmaps.flatmap_png(values, subject="S1", rois=rois, roi_names={1: "occipital"}, title="S1",
                                           colorbar_title="v"))  # fmt: skip
    assert (bordered != px).any(axis=2).mean() > 0.001
    with pytest.raises(SurfaceError, match="pycortex mesh has"):
        flatmaps.flatmap_png({"lh": np.zeros(10242)}, subject="S1")


# ---------------------------------------------------------------------------------------------
# missing pieces: pycortex's fsaverage subject, pycortex itself
# ---------------------------------------------------------------------------------------------
def test_without_the_fsaverage_subject_flat_maps_fall_back_and_say_why(empty_store, demo_root, monkeypatch):
    reason = flatmaps.subject_unavailable_reason()
    assert "fsaverage subject is not in its filestore" in reason and str(empty_store) in reason
    assert flatmaps.flatmap_backend() == "nilearn"
    _, masks, _, _, nc = demo_inputs(demo_root)
    assert pixels(flatmaps.flatmap_png(nc, masks=masks, height=200)).shape[0] > 200
    with pytest.raises(flatmaps.PycortexUnavailable, match="fsaverage subject is not in its filestore"):
        flatmaps.flatmap_png(nc, masks=masks, backend="pycortex")
    with pytest.raises(flatmaps.PycortexUnavailable, match="fsaverage subject is not in its filestore"):
        flatmaps.static_viewer_zip(nc, masks=masks)

    def offline(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(socket, "create_connection", offline)
    ok, message = flatmaps.download_fsaverage()
    assert not ok
    assert "ndownloader.figshare.com cannot be reached" in message and str(empty_store) in message


def test_without_pycortex_everything_but_pycortex_keeps_working(monkeypatch, demo_root):
    monkeypatch.setitem(sys.modules, "cortex", None)  # `import cortex` raises ImportError
    reason = flatmaps.pycortex_unavailable_reason()
    assert re.match(r"pycortex is not available \((ModuleNotFound|Import)Error", reason)
    assert "pip install pycortex==1.4.0" in reason
    assert flatmaps.subject_unavailable_reason() == reason
    assert flatmaps.pycortex_filestore() is None
    assert flatmaps.flatmap_backend() == "nilearn"
    assert flatmaps.download_fsaverage() == (False, reason)
    _, masks, _, _, nc = demo_inputs(demo_root)
    assert pixels(flatmaps.flatmap_png(nc, masks=masks, height=200)).size
    with pytest.raises(flatmaps.PycortexUnavailable, match="pycortex is not available"):
        flatmaps.static_viewer_zip(nc, masks=masks)


def test_roi_names_are_moved_apart_until_they_do_not_overlap():
    from core.viz.flatmaps import spread_labels

    xy = np.array([[0.0, 0.0], [0.5, 0.1], [0.2, 0.0], [9.0, 9.0]])  # three names on one spot, one far away
    half_widths = np.array([1.0, 1.0, 1.0, 1.0])
    out = spread_labels(xy, half_widths, 0.5)
    for i in range(4):
        for j in range(i + 1, 4):
            apart_x = abs(out[i, 0] - out[j, 0]) >= half_widths[i] + half_widths[j]
            apart_y = abs(out[i, 1] - out[j, 1]) >= 2 * 0.5 - 1e-9
            assert apart_x or apart_y, (i, j, out)
    assert np.array_equal(out[:, 0], xy[:, 0])  # moved vertically only
    assert np.array_equal(out[3], xy[3])  # a name with room stays where it was
    assert np.abs(out[:3, 1]).max() < 1.5  # and the others stay near their ROI
