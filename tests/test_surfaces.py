"""core.viz.surfaces: fsaverage meshes (bundled fsaverage5, a user's full fsaverage), decimation,
challenge-space -> surface mapping, ROI overlays and the per-vertex map registry."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.viz import surfaces as S
from core.algonauts2023.dataset import open_dataset
from tests.conftest import REALDATA, make_tiny_dataset

FULL_DIR = REALDATA / "fsaverage"  # a local full-fsaverage directory, as a user would set it
needs_full = pytest.mark.skipif(not (FULL_DIR / "pial_left.gii.gz").is_file(), reason="no local full fsaverage")


@pytest.fixture(autouse=True)
def no_user_fsaverage(monkeypatch, tmp_path):
    """Tests start with no full fsaverage anywhere: no env var, an empty nilearn data dir."""
    monkeypatch.delenv(S.FSAVERAGE_DIR_ENV, raising=False)
    monkeypatch.delenv("NILEARN_SHARED_DATA", raising=False)
    monkeypatch.setenv("NILEARN_DATA", str(tmp_path / "nilearn_data"))


def oriented_faces(faces: np.ndarray) -> set[tuple[int, int, int]]:
    """Faces as a set, each rotated to start at its smallest vertex (orientation kept)."""
    f = np.asarray(faces)
    r = np.argmin(f, axis=1)
    idx = (r[:, None] + np.arange(3)) % 3
    return set(map(tuple, np.take_along_axis(f, idx, axis=1).tolist()))


def check_closed_oriented(faces: np.ndarray, n_vertices: int) -> None:
    """A closed, consistently oriented triangle mesh of a sphere: each directed edge once, V - E + F = 2."""
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).astype(np.int64)
    keys = e[:, 0] * n_vertices + e[:, 1]
    assert np.unique(keys).size == keys.size  # no directed edge twice: consistent orientation
    rev = e[:, 1] * n_vertices + e[:, 0]
    assert np.isin(rev, keys).all()  # every edge has its twin: closed
    assert n_vertices - keys.size // 2 + faces.shape[0] == 2


# -- fsaverage5 (bundled) -----------------------------------------------------------------------
@pytest.mark.parametrize("mesh", S.MESHES)
@pytest.mark.parametrize("hemi", S.HEMIS)
def test_fsaverage5_meshes_load_offline(mesh, hemi):
    s = S.load_surface(mesh, hemi, "fsaverage5")
    assert (s.mesh, s.hemi, s.resolution) == (mesh, hemi, "fsaverage5")
    assert s.coords.shape == (S.N_FSAVERAGE5, 3) and s.coords.dtype == np.float32
    assert s.faces.dtype == np.int32 and s.faces.min() >= 0 and s.faces.max() < S.N_FSAVERAGE5
    assert s.sulc.shape == (S.N_FSAVERAGE5,) and np.isfinite(s.sulc).all()
    shade = s.shading()
    assert shade.shape == (S.N_FSAVERAGE5,) and 0 <= shade.min() and shade.max() <= 1
    assert not s.coords.flags.writeable and not s.faces.flags.writeable
    if mesh == "flat":
        assert np.allclose(s.coords[np.unique(s.faces), 2], 0)  # a 2-D map, medial wall cut
        assert s.n_faces < 20480
    else:
        check_closed_oriented(s.faces, s.n_vertices)


def test_load_surface_is_cached():
    a = S.load_surface("inflated", "lh", "auto")
    assert S.load_surface("inflated", "lh", "auto") is a
    assert S.load_surface("inflated", "rh", "auto") is not a
    assert a.resolution == "fsaverage5"  # no full fsaverage in this test environment


def test_auto_falls_back_but_explicit_full_fails_clearly():
    assert S.find_full_fsaverage() is None
    assert "using fsaverage5" in S.fsaverage_status().message
    with pytest.raises(S.SurfaceError, match="full fsaverage not found"):
        S.load_surface("pial", "lh", "fsaverage")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mesh="curved"), "unknown mesh 'curved'"),
        (dict(hemi="left"), "unknown hemisphere 'left'"),
        (dict(resolution="fsaverage6"), "unknown resolution 'fsaverage6'"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(S.SurfaceError, match=match):
        S.load_surface(**kwargs)


def test_user_dir_that_is_not_fsaverage(tmp_path):
    missing = tmp_path / "nowhere"
    status = S.fsaverage_status(missing)
    assert status.path is None and f"{missing}: directory not found" in status.message
    with pytest.raises(S.SurfaceError, match="directory not found"):
        S.load_surface("pial", "lh", "fsaverage", fsaverage_dir=missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no pial_left.gii.gz" in S.fsaverage_status(empty).message
    assert S.load_surface("pial", "lh", "auto", fsaverage_dir=empty).resolution == "fsaverage5"


def test_wrong_vertex_count_in_user_dir_is_reported(tmp_path):
    """A directory holding fsaverage5 files under the full mesh's names is refused, naming the file."""
    fake = tmp_path / "fake"
    fake.mkdir()
    src = Path(S.load_surface("pial", "lh", "fsaverage5").source)
    for name in ("pial_left.gii.gz", "sulc_left.gii.gz"):
        shutil.copy(src / name, fake / name)
    with pytest.raises(S.SurfaceError, match=r"pial_left\.gii\.gz: expected 163842 vertices"):
        S.load_surface("pial", "lh", "auto", fsaverage_dir=fake)
    (fake / "pial_left.gii.gz").write_bytes(gzip.compress(b"not a gifti"))
    with pytest.raises(S.SurfaceError, match="unreadable surface"):
        S.load_surface("pial", "lh", "auto", fsaverage_dir=fake)


# -- full fsaverage (local directory set by the user) ----------------------------------------------
@needs_full
def test_full_fsaverage_from_env_var(monkeypatch):
    monkeypatch.setenv(S.FSAVERAGE_DIR_ENV, str(FULL_DIR))
    s = S.load_surface("inflated", "lh")
    assert s.resolution == "fsaverage" and s.n_vertices == S.N_FSAVERAGE and s.n_faces == 327_680
    assert s.sulc.shape == (S.N_FSAVERAGE,)
    assert Path(s.source).resolve() == FULL_DIR.resolve()
    # this directory has no flat map: auto falls back for that mesh only, explicit full says which file
    assert S.load_surface("flat", "lh").resolution == "fsaverage5"
    with pytest.raises(S.SurfaceError, match=r"flat_left\.gii\.gz: missing file"):
        S.load_surface("flat", "lh", "fsaverage")
    # fsaverage5 on request
    assert S.load_surface("inflated", "lh", "fsaverage5").n_vertices == S.N_FSAVERAGE5


@needs_full
def test_full_fsaverage_parameter_wins_over_env(monkeypatch, tmp_path):
    monkeypatch.setenv(S.FSAVERAGE_DIR_ENV, str(tmp_path / "nowhere"))
    assert S.load_surface("pial", "rh", "auto").resolution == "fsaverage5"
    assert S.load_surface("pial", "rh", "auto", fsaverage_dir=FULL_DIR).resolution == "fsaverage"


@needs_full
def test_full_fsaverage_in_nilearn_data_dir(monkeypatch, tmp_path):
    """Where nilearn's fetch_surf_fsaverage('fsaverage') would have put it (links, nothing copied)."""
    d = tmp_path / "nilearn_data" / "fsaverage"
    d.mkdir(parents=True)
    for f in FULL_DIR.iterdir():
        os.symlink(f, d / f.name)
    status = S.fsaverage_status()
    assert status.path == d and "nilearn's data directory" in status.message
    assert S.load_surface("white", "rh").n_vertices == S.N_FSAVERAGE


@needs_full
def test_decimation_rebuilds_the_coarser_icosahedra():
    full = S.load_surface("sphere", "lh", "fsaverage", fsaverage_dir=FULL_DIR)
    ico6 = full.decimate(S.N_FSAVERAGE6)
    assert ico6.n_vertices == 40_962 and ico6.n_faces == 81_920
    assert np.array_equal(ico6.coords, full.coords[: S.N_FSAVERAGE6])
    check_closed_oriented(ico6.faces, ico6.n_vertices)
    assert full.decimate(S.N_FSAVERAGE6) is ico6  # cached
    # two levels down gives exactly nilearn's fsaverage5 triangles, same orientation
    ico5 = full.decimate(S.N_FSAVERAGE5)
    assert oriented_faces(ico5.faces) == oriented_faces(S.load_surface("sphere", "lh", "fsaverage5").faces)
    # display_surface decimates the full mesh unless asked for all of it
    assert S.display_surface("inflated", "lh", "fsaverage", "decimated", FULL_DIR).n_vertices == S.N_FSAVERAGE6
    assert S.display_surface("inflated", "lh", "fsaverage", "full", FULL_DIR).n_vertices == S.N_FSAVERAGE
    assert S.display_surface("inflated", "lh", "fsaverage5", "decimated").n_vertices == S.N_FSAVERAGE5


def test_decimation_of_fsaverage5_and_its_flat_map():
    sphere = S.load_surface("sphere", "rh", "fsaverage5")
    ico4 = sphere.decimate(2562)
    assert ico4.n_faces == 5120
    check_closed_oriented(ico4.faces, 2562)
    # outward normals everywhere (orientation kept from the parent mesh)
    v = ico4.coords[ico4.faces]
    normals = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    assert ((normals * v.mean(axis=1)).sum(axis=1) > 0).all()
    # the flat map (cut at the medial wall) coarsens to a subset of the closed mesh's faces
    flat4 = S.load_surface("flat", "rh", "fsaverage5").decimate(2562)
    assert 0.8 * 5120 < flat4.n_faces < 5120
    assert oriented_faces(flat4.faces) <= oriented_faces(ico4.faces)
    with pytest.raises(S.SurfaceError, match="cannot decimate"):
        sphere.decimate(5000)
    with pytest.raises(S.SurfaceError, match="cannot decimate"):
        ico4.decimate(S.N_FSAVERAGE5)
    assert sphere.decimate(S.N_FSAVERAGE5) is sphere


# -- challenge space -> surface -------------------------------------------------------------------
def test_to_surface_with_mask_indices_and_prefix():
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(S.N_FSAVERAGE, 500, replace=False))
    mask = np.zeros(S.N_FSAVERAGE, dtype=bool)
    mask[idx] = True
    values = rng.standard_normal(500).astype(np.float32)

    full = S.to_surface(values, mask)
    assert full.shape == (S.N_FSAVERAGE,) and full.dtype == np.float32
    assert np.array_equal(full[idx], values) and np.isnan(np.delete(full, idx)).all()
    # a float 0/1 mask (as the files are stored) and plain indices give the same
    assert np.array_equal(S.to_surface(values, mask.astype(np.float32)), full, equal_nan=True)
    assert np.array_equal(S.to_surface(values, idx), full, equal_nan=True)
    # on fsaverage5: the first 10,242 vertices
    fs5 = S.to_surface(values, mask, S.N_FSAVERAGE5)
    assert np.array_equal(fs5, full[: S.N_FSAVERAGE5], equal_nan=True)
    keep = idx < S.N_FSAVERAGE5
    assert np.array_equal(fs5[idx[keep]], values[keep])
    assert np.array_equal(S.to_surface(values, mask, S.N_FSAVERAGE5, fill=0.0)[~np.isin(np.arange(10242), idx)], np.zeros(10242 - keep.sum()))


def test_to_surface_errors():
    mask = np.zeros(S.N_FSAVERAGE, dtype=bool)
    mask[:10] = True
    with pytest.raises(S.SurfaceError, match="11 values but the fsaverage mask has 10 challenge vertices"):
        S.to_surface(np.zeros(11), mask)
    with pytest.raises(S.SurfaceError, match="an fsaverage mask needs 163842 values"):
        S.to_surface(np.zeros(3), np.ones(100, dtype=bool)[:50])
    with pytest.raises(S.SurfaceError, match="1-D"):
        S.to_surface(np.zeros((2, 10)), mask)
    with pytest.raises(S.SurfaceError, match="must lie in"):
        S.to_surface(np.zeros(2), np.array([0, S.N_FSAVERAGE]))
    with pytest.raises(S.SurfaceError, match="n_mesh_vertices"):
        S.to_surface(np.zeros(10), mask, 0)


def test_to_surface_with_a_dataset_subject(tmp_path):
    subj = open_dataset(make_tiny_dataset(tmp_path / "data")).subject(1)
    row = np.asarray(subj.fmri("lh")[2])
    out = S.to_surface(row, subj.fsaverage_mask("lh"), S.N_FSAVERAGE5)
    assert np.array_equal(out[subj.fsaverage_indices("lh")], row)
    assert np.isfinite(out).sum() == subj.n_vertices["lh"]


# -- ROIs -----------------------------------------------------------------------------------------
def test_roi_overlay_present_absent_and_whole_class(tmp_path):
    subj = open_dataset(make_tiny_dataset(tmp_path / "data")).subject(1)
    v1v = S.roi_overlay(subj, "lh", "prf-visualrois", "V1v")
    assert v1v.message is None and v1v.names == ("V1v",)
    assert np.array_equal(np.isfinite(v1v.values), subj.roi_mask("lh", "V1v"))
    absent = S.roi_overlay(subj, "lh", "prf-visualrois", "V2d")
    assert absent.values is None
    assert absent.message == (
        "V2d does not exist in subj01's left hemisphere. ROIs of prf-visualrois that exist there: V1v, hV4."
    )
    whole = S.roi_overlay(subj, "rh", "prf-visualrois")
    assert whole.names == ("V1v", "hV4") and whole.labels == {1: "V1v", 2: "hV4"}
    assert np.array_equal(whole.values[:9], [1, 1, 1, 1, 1, 2, 2, 2, 2])
    assert np.isnan(whole.values[9:]).all()
    no_files = S.roi_overlay(subj, "lh", "floc-faces", "FFA-1")
    assert no_files.values is None and "floc-faces has no files for subj01's left hemisphere" in no_files.message


def test_roi_overlays_share_one_coding(tmp_path):
    root = make_tiny_dataset(tmp_path / "data")
    # remove hV4 from the right hemisphere only
    labels = np.load(root / "subj01/roi_masks/rh.prf-visualrois_challenge_space.npy")
    labels[labels == 7] = 0
    np.save(root / "subj01/roi_masks/rh.prf-visualrois_challenge_space.npy", labels)
    subj = open_dataset(root).subject(1)
    ovs, names = S.roi_overlays(subj, ["lh", "rh"], "prf-visualrois")
    assert names == ("V1v", "hV4")
    assert ovs["rh"].names == names and set(np.unique(ovs["rh"].values[np.isfinite(ovs["rh"].values)])) == {1.0}
    ovs, names = S.roi_overlays(subj, ["lh", "rh"], "prf-visualrois", "hV4")
    assert ovs["lh"].values is not None and ovs["rh"].values is None
    assert ovs["rh"].message.startswith("hV4 does not exist in subj01's right hemisphere")


# -- per-vertex maps ----------------------------------------------------------------------------
def test_vertex_maps_noise_ceiling_extra_and_providers(tmp_path):
    root = make_tiny_dataset(tmp_path / "data")
    subj = open_dataset(root).subject(1)
    assert S.vertex_maps(subj, "lh") == {}  # no noise-ceiling file
    nc_dir = root / "noise_ceiling" / "subj01"
    nc_dir.mkdir(parents=True)
    np.save(nc_dir / "lh.npy", np.linspace(0, 80, 30, dtype=np.float32))
    maps = S.vertex_maps(subj, "lh")
    assert list(maps) == ["Noise ceiling"]
    nc = maps["Noise ceiling"]
    assert nc.unit == "%" and nc.kind == "positive" and nc.values.shape == (30,) and nc.vmin == 0

    errors: list[str] = []
    extra = {"Encoding accuracy (run 1)": np.linspace(-0.2, 0.6, 30), "bad": np.zeros(29)}
    maps = S.vertex_maps(subj, "lh", extra=extra, errors=errors)
    assert list(maps) == ["Noise ceiling", "Encoding accuracy (run 1)"]
    assert maps["Encoding accuracy (run 1)"].kind == "symmetric"
    assert any(e.startswith("bad:") for e in errors)

    def runs(subject, hemi):
        return {"Encoding accuracy (demo run)": S.VertexMap("Encoding accuracy (demo run)", np.full(30, 0.3, np.float32), unit="r")}

    def broken(subject, hemi):
        raise RuntimeError("run store unreadable")

    S.register_map_provider("test_runs", runs)
    S.register_map_provider("test_broken", broken)
    try:
        errors = []
        maps = S.vertex_maps(subj, "lh", errors=errors)
        assert "Encoding accuracy (demo run)" in maps and "Noise ceiling" in maps
        assert errors == ["test_broken: run store unreadable"]
    finally:
        S.unregister_map_provider("test_runs")
        S.unregister_map_provider("test_broken")
    assert list(S.vertex_maps(subj, "lh")) == ["Noise ceiling"]


def test_real_noise_ceiling_values_fit_a_vertex_map():
    """The public noise-ceiling files (percent, challenge space) are what the map expects."""
    path = REALDATA / "uark-cviu+Algonauts2023" / "data" / "noise_ceiling" / "subj01" / "lh.npy"
    if not path.is_file():
        pytest.skip("no real noise-ceiling file")
    nc = np.load(path)
    assert nc.shape == (19004,) and nc.dtype == np.float32 and 0 <= nc.min() and nc.max() <= 100
    mask = np.zeros(S.N_FSAVERAGE, dtype=bool)
    mask[np.linspace(0, S.N_FSAVERAGE - 1, nc.size).astype(int)] = True
    out = S.to_surface(nc, mask, S.N_FSAVERAGE5)
    assert np.isfinite(out).sum() == (np.flatnonzero(mask) < S.N_FSAVERAGE5).sum()
