"""The embedded demo dataset: layout, determinism, and that its simulated responses carry real structure."""

from __future__ import annotations

import csv
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.algonauts2023 import demo

from core.util import safe_pickle
from core.cli import main
from core.algonauts2023.dataset import open_dataset
from core.util.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
N_FS = 163_842


def _hashes(root: Path) -> dict[str, str]:
    """sha256 of every file."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _vertex_table(root: Path, subj: str, hemi: str) -> dict[str, np.ndarray]:
    with open(root / "demo_metadata" / f"{subj}_{hemi}_vertices.csv") as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([r[k] for r in rows], dtype=object if k == "area" else float) for k in rows[0]}


def _labels(root: Path, subj: str, split: str = "train") -> list[dict]:
    with open(root / "demo_metadata" / f"{subj}_{split}_labels.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def contrast(demo_root):
    """Local-contrast maps of every training image, per subject (flattened)."""
    ds = open_dataset(demo_root)
    return {s.name: np.stack([demo.local_contrast_map(p).ravel() for p in s.train_images]) for s in ds}


# -- layout ---------------------------------------------------------------------------------------
def test_layout_matches_algonauts_and_validates(demo_root):
    ds = open_dataset(demo_root)  # the product's own reader and validator
    assert ds.subjects == [1, 2]
    assert (demo_root / demo.MARKER).read_text().count("seed: 0") == 1
    counts = {}
    for s in ds:
        d = demo_root / s.name
        assert s.n_train == 120 and s.n_test == 12
        train = sorted(p.name for p in (d / "training_split" / "training_images").iterdir())
        test = sorted(p.name for p in (d / "test_split" / "test_images").iterdir())
        assert all(re.fullmatch(r"train-\d{4}_nsd-\d{5}\.png", n) for n in train)
        assert all(re.fullmatch(r"test-\d{4}_nsd-\d{5}\.png", n) for n in test)
        assert train[0].startswith("train-0001_") and test[-1].startswith("test-0012_")
        ids = [int(n[-9:-4]) for n in train + test]
        assert len(set(ids)) == len(ids) and all(0 <= i < 73_000 for i in ids)
        assert [int(n[-9:-4]) for n in train] == sorted(int(n[-9:-4]) for n in train)
        with Image.open(d / "training_split" / "training_images" / train[0]) as im:
            assert im.mode == "RGB" and im.size == (425, 425)
        labels = _labels(demo_root, s.name)
        assert [r["image"] for r in labels] == train
        for hemi in ("lh", "rh"):
            y = np.load(s.fmri_path(hemi))
            n = y.shape[1]
            counts[(s.name, hemi)] = n
            assert y.dtype == np.float32 and y.shape == (120, n) and 500 < n < 4000
            np.testing.assert_allclose(y.mean(0), 0, atol=1e-4)
            np.testing.assert_allclose(y.std(0), 1, atol=1e-3)
            mask = np.load(d / "roi_masks" / f"{hemi}.all-vertices_fsaverage_space.npy")
            assert mask.dtype == np.float32 and mask.shape == (N_FS,) and set(np.unique(mask)) == {0.0, 1.0}
            idx = np.flatnonzero(mask)
            assert len(idx) == n and idx.max() < 10_242  # fsaverage5 vertices (nested in fsaverage)
            vt = _vertex_table(demo_root, s.name, hemi)
            np.testing.assert_array_equal(vt["fsaverage_index"].astype(int), idx)
            for cls, names in demo.ROI_CLASSES.items():
                chal = np.load(d / "roi_masks" / f"{hemi}.{cls}_challenge_space.npy")
                full = np.load(d / "roi_masks" / f"{hemi}.{cls}_fsaverage_space.npy")
                assert chal.dtype == np.float32 and chal.shape == (n,) and full.shape == (N_FS,)
                assert np.array_equal(chal, np.rint(chal)) and chal.min() >= 0 and chal.max() <= len(names)
                np.testing.assert_array_equal(full[idx], chal)
                assert not full[mask == 0].any()
            nc = np.load(demo_root / "noise_ceiling" / s.name / f"{hemi}.npy")
            assert nc.dtype == np.float32 and nc.shape == (n,)
            assert nc.min() >= 0 and nc.max() < 100 and 20 < np.median(nc) < 60 and (nc < 10).any()
            np.testing.assert_allclose(nc, demo.noise_ceiling(vt["ncsnr"]), atol=0.05)
            assert set(s.rois(hemi)) == set(demo.ROI_CLASSES)
        for cls, names in demo.ROI_CLASSES.items():
            mapping = safe_pickle.load_object_npy(d / "roi_masks" / f"mapping_{cls}.npy")
            assert mapping == {0: "Unknown", **{i + 1: name for i, name in enumerate(names)}}
            assert s.roi_mapping(cls) == mapping
    assert counts[("subj01", "lh")] != counts[("subj01", "rh")]
    assert counts[("subj01", "lh")] != counts[("subj02", "lh")]
    # like real data, some ROIs are missing in some subject/hemisphere
    assert "mTL-words" not in ds.subject(2).rois("rh")["floc-words"]
    assert "mTL-words" in ds.subject(2).rois("lh")["floc-words"]
    # test images are shared between subjects (same NSD id, same picture), like NSD's shared images
    a, b = ds.subject(1).test_images, ds.subject(2).test_images
    assert [p.name for p in a] == [p.name for p in b] and a[0].read_bytes() == b[0].read_bytes()


def test_roi_placement_is_anatomically_plausible(demo_root):
    from nilearn import datasets

    fs = datasets.load_fsaverage("fsaverage5")
    ds = open_dataset(demo_root)
    for s in ds:
        for hemi, side in (("lh", "left"), ("rh", "right")):
            xyz = np.asarray(fs["pial"].parts[side].coordinates)[s.fsaverage_indices(hemi)]
            x, y, z = np.abs(xyz[:, 0]), xyz[:, 1], xyz[:, 2]
            assert y.max() < 0 and np.median(y) < -60  # posterior cortex (aTL-faces reaches furthest)
            center = lambda roi: xyz[s.roi_mask(hemi, roi)].mean(0)  # noqa: E731
            v1 = s.roi_mask(hemi, "V1v") | s.roi_mask(hemi, "V1d")
            assert y[v1].mean() < -75 and x[v1].mean() < 25  # occipital pole / calcarine
            assert center("V1d")[2] > center("V1v")[2]  # dorsal bank above the ventral one
            assert z[s.roi_mask(hemi, "hV4")].mean() < center("V1v")[2]  # hV4 ventral
            ffa, ppa = center("FFA-1"), center("PPA")
            assert ffa[2] < -5 and abs(ffa[0]) > 28 and abs(ppa[0]) < abs(ffa[0])  # PPA medial to FFA
            assert abs(center("EBA")[0]) > 38 and abs(center("RSC")[0]) < 22
            early = s.roi_labels(hemi, "streams") == 1
            assert (early & v1).sum() == v1.sum()
            # retinotopy: ventral = upper field (image top is rf_y < 0), each hemisphere sees the
            # opposite visual field, eccentricity grows from the pole along the calcarine
            vt = _vertex_table(demo_root, s.name, hemi)
            v1v, v1d = vt["rf_y"][s.roi_mask(hemi, "V1v")], vt["rf_y"][s.roi_mask(hemi, "V1d")]
            assert np.mean(v1v <= 0) > 0.95 and np.mean(v1v) < -0.05
            assert np.mean(v1d >= 0) > 0.95 and np.mean(v1d) > 0.05
            assert np.mean(vt["rf_x"][v1] * (1 if hemi == "lh" else -1) >= 0) > 0.95
            assert np.corrcoef(y[v1], vt["ecc_deg"][v1])[0, 1] > 0.6


# -- determinism ----------------------------------------------------------------------------------
def test_same_seed_gives_identical_files_whatever_the_other_subjects(tmp_path):
    calls: list[tuple[float, str]] = []
    a = demo.generate_demo(tmp_path / "a", subjects=(1, 2), n_train=30, n_test=2, seed=3,
                           progress=lambda f, m: calls.append((f, m)))
    b = demo.generate_demo(tmp_path / "b", subjects=(2,), n_train=30, n_test=2, seed=3)
    c = demo.generate_demo(tmp_path / "c", subjects=(2,), n_train=30, n_test=2, seed=4)
    ha, hb, hc = _hashes(a), _hashes(b), _hashes(c)
    subj2 = {k: v for k, v in ha.items() if "subj02" in k}
    assert len(subj2) > 40 and subj2 == {k: v for k, v in hb.items() if "subj02" in k}
    assert (a / demo.MARKER).read_text() != (b / demo.MARKER).read_text()  # lists the subjects
    fmri = "subj02/training_split/training_fmri/lh_training_fmri.npy"
    assert not np.array_equal(np.load(a / fmri), np.load(c / fmri)) and ha[fmri] != hc[fmri]
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] == 1.0 and len(fractions) > 4
    assert not list(tmp_path.glob(".*tmp*"))


# -- the responses carry real structure -----------------------------------------------------------
def test_early_visual_vertices_follow_local_contrast_in_their_receptive_field(demo_root, contrast):
    ds = open_dataset(demo_root)
    for s in ds:
        for hemi in ("lh", "rh"):
            y = np.asarray(s.fmri(hemi))
            vt = _vertex_table(demo_root, s.name, hemi)
            v1 = s.roi_mask(hemi, "V1v") | s.roi_mask(hemi, "V1d")
            nc = s.noise_ceiling(hemi)
            on_image = (np.abs(vt["rf_x"]) < 0.7) & (np.abs(vt["rf_y"]) > 0.25) & (np.abs(vt["rf_y"]) < 0.7)
            sel = np.flatnonzero(v1 & (nc > 30) & on_image)
            assert len(sel) >= 10

            def corr(rf_y):
                pred = contrast[s.name] @ demo.prf_weights(vt["rf_x"][sel], rf_y, vt["rf_sigma"][sel])
                return np.array([np.corrcoef(pred[:, k], y[:, v])[0, 1] for k, v in enumerate(sel)])

            own = corr(vt["rf_y"][sel])
            mirrored = corr(-vt["rf_y"][sel])  # same eccentricity, opposite (upper/lower) field
            assert np.median(own) > 0.5, (s.name, hemi, np.median(own))
            assert np.median(own - mirrored) > 0.1, (s.name, hemi, np.median(own), np.median(mirrored))
            # a vertex's predictability follows its noise ceiling
            all_v1 = np.flatnonzero(v1 & on_image)
            pred = contrast[s.name] @ demo.prf_weights(vt["rf_x"][all_v1], vt["rf_y"][all_v1], vt["rf_sigma"][all_v1])
            r = np.array([np.corrcoef(pred[:, k], y[:, v])[0, 1] for k, v in enumerate(all_v1)])
            assert np.corrcoef(r, nc[all_v1])[0, 1] > 0.4


@pytest.mark.parametrize(
    "roi, category, hemis",
    [("FFA-1", "face", "lh rh"), ("OFA", "face", "lh rh"), ("EBA", "body", "lh rh"), ("PPA", "place", "lh rh"),
     ("OPA", "place", "lh rh"), ("VWFA-1", "word", "lh")],  # words are left-lateralised (weak on the right)
)
def test_category_rois_prefer_their_category(demo_root, roi, category, hemis):
    ds = open_dataset(demo_root)
    for s in ds:
        has = np.array([int(r[f"n_{category}"]) > 0 for r in _labels(demo_root, s.name)])
        assert 10 < has.sum() < len(has) - 10
        for hemi in hemis.split():
            mask = s.roi_mask(hemi, roi)
            if mask.sum() == 0:
                continue
            y = np.asarray(s.fmri(hemi))[:, mask].mean(1)
            diff = y[has].mean() - y[~has].mean()
            t = diff / np.sqrt(y[has].var(ddof=1) / has.sum() + y[~has].var(ddof=1) / (~has).sum())
            assert diff > 0.4 and t > 4, (s.name, hemi, roi, diff, t)
            # ...more than early visual cortex does
            v1 = np.asarray(s.fmri(hemi))[:, s.roi_mask(hemi, "V1d")].mean(1)
            assert diff > 2 * abs(v1[has].mean() - v1[~has].mean())


# -- ensure_demo and the CLI ----------------------------------------------------------------------
SMALL = dict(subjects=(1,), n_train=10, n_test=1)


def test_ensure_demo_generates_once_and_atomically(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "demo"
    assert demo.ensure_demo(path, **SMALL) == path and demo.is_demo(path)
    open_dataset(path)
    monkeypatch.setattr(demo, "generate_demo", lambda *a, **k: pytest.fail("regenerated an existing demo"))
    assert demo.ensure_demo(path, **SMALL) == path
    monkeypatch.undo()

    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "file.txt").write_text("x")
    with pytest.raises(UserError, match="not a demo dataset"):
        demo.ensure_demo(junk, **SMALL)

    # an interrupted generation leaves nothing behind
    real_render, n = demo.render_image, [0]

    def failing(*a, **k):
        n[0] += 1
        if n[0] > 4:
            raise KeyboardInterrupt
        return real_render(*a, **k)

    monkeypatch.setattr(demo, "render_image", failing)
    with pytest.raises(KeyboardInterrupt):
        demo.ensure_demo(tmp_path / "cache" / "other", **SMALL)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["demo"]


def test_ensure_demo_replaces_a_demo_of_an_older_generator(tmp_path):
    path = demo.ensure_demo(tmp_path / "demo", **SMALL)
    marker = path / demo.MARKER
    marker.write_text(marker.read_text().replace(f"generator_version: {demo.GENERATOR_VERSION}", "generator_version: 0"))
    (path / "stale.txt").write_text("old")
    assert demo.ensure_demo(path, **SMALL) == path and demo.is_demo(path) and not (path / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_cli_demo(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["demo", "--out", str(out), "--subjects", "1", "--n-train", "10", "--n-test", "1", "--seed", "2"]) == 0
    assert open_dataset(out).subjects == [1] and "seed: 2" in (out / demo.MARKER).read_text()
    capsys.readouterr()
    assert main(["demo", "--out", str(out)]) == 2  # refuses to overwrite
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not empty" in err and str(out) in err
    assert main(["demo", "--out", str(tmp_path / "e"), "--n-train", "2"]) == 2
    assert not (tmp_path / "e").exists()
    r = subprocess.run([sys.executable, "-m", "core", "demo", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "--out" in r.stdout and "--n-train" in r.stdout
