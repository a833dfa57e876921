"""The Algonauts 2021 reader (core.algonauts2021.dataset) on the video demo and on hand-made layouts, and the demo."""

from __future__ import annotations

import csv
import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

import core.algonauts2021.dataset as d21
from core.util import safe_pickle
from core.cli import main as cli_main
from core.algonauts2021.dataset import (
    MINI_ROIS, VOLUME_SHAPE, WB, is_2021_layout, open_dataset2021, split_half_noise_ceiling,
)
from core.algonauts2021.demo import DemoConfig, generate_demo2021, is_demo2021
from core.util.errors import DatasetError, UserError
from core.features.video import write_video



@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    d21._open_roi_file.cache_clear()
    return tmp_path / "cache"


def _voxel_table(root: Path, subject: str) -> list[dict]:
    with open(root / "demo_metadata" / f"{subject}_voxels.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------------------------- demo
def test_demo_layout_split_and_shapes(demo2021_root, cache):
    assert is_demo2021(demo2021_root) and is_2021_layout(demo2021_root)
    ds = open_dataset2021(demo2021_root)
    assert (ds.n_train, ds.n_test, ds.subjects) == (40, 8, [1, 2])
    names = [p.name for p in ds.videos]
    assert names == sorted(names) and ds.train_videos == ds.videos[:40] and ds.test_videos == ds.videos[40:]
    clips = list(csv.DictReader(open(demo2021_root / "demo_metadata" / "clips.csv")))
    assert [c["video"] for c in clips if c["split"] == "test"] == [p.name for p in ds.test_videos]
    s = ds.subject("sub02")
    assert s.name == "sub02" and s.rois() == [*MINI_ROIS, WB] and s.rois("full_track") == [WB]
    mask = s.voxel_mask()
    assert mask.shape == VOLUME_SHAPE and mask.dtype == bool and int(mask.sum()) == s.n_voxels(WB)
    raw = safe_pickle.load(demo2021_root / "participants_data_v2021" / "full_track" / "sub02" / "WB.pkl")
    assert raw["train"].shape == (40, 3, s.n_voxels(WB))
    np.testing.assert_allclose(s.fmri(WB), raw["train"].mean(1), rtol=1e-5, atol=1e-6)
    rois = json.loads((demo2021_root / "demo_metadata" / "sub02_rois.json").read_text())
    for roi in MINI_ROIS:  # mini-track voxels are the whole-brain voxels of that ROI, same responses
        assert s.n_voxels(roi) == len(rois[roi]) >= 20
        np.testing.assert_array_equal(s.fmri(roi), s.fmri(WB)[:, rois[roi]])
    assert s.summary()["n_reps"] == {r: 3 for r in [*MINI_ROIS, WB]}


def test_split_half_noise_ceiling_recovers_the_demos_truth(demo2021_root, cache):
    s = open_dataset2021(demo2021_root, ["sub01"]).subject(1)
    truth = np.array([float(r["noise_ceiling"]) for r in _voxel_table(demo2021_root, "sub01")])
    nc = s.noise_ceiling(WB)
    assert nc.shape == truth.shape and nc.min() >= 0 and nc.max() <= 100
    assert np.corrcoef(nc, truth)[0, 1] > 0.75
    v1 = json.loads((demo2021_root / "demo_metadata" / "sub01_rois.json").read_text())["V1"]
    assert abs(np.median(nc[v1]) - np.median(truth[v1])) < 8 and np.median(truth[v1]) > 50


@pytest.mark.parametrize("reps", [2, 3, 4])
def test_split_half_noise_ceiling_formula(reps):
    rng = np.random.default_rng(reps)
    snr = np.array([0.0, 0.3, 0.7, 1.5])
    signal = rng.standard_normal((20000, 1))
    data = snr * signal[:, None, :] + rng.standard_normal((20000, reps, 4))
    expected = 100 * snr**2 / (snr**2 + 1 / reps)
    np.testing.assert_allclose(split_half_noise_ceiling(data), expected, atol=2.0)


def test_reader_caches_the_averaged_arrays(demo2021_root, cache, monkeypatch):
    first = open_dataset2021(demo2021_root, [1]).subject(1)
    d21._open_roi_file.cache_clear()
    monkeypatch.setattr(d21.safe_pickle, "load", lambda *a, **k: pytest.fail("unpickled again"))
    again = open_dataset2021(demo2021_root, [1]).subject(1)
    assert again.file("V1").cached == first.file("V1").cached
    assert isinstance(again.fmri("V1"), np.memmap)


def test_demo_is_deterministic_and_the_cli_writes_it(tmp_path):
    tiny = ["--subjects", "3", "--n-train", "10", "--n-test", "1", "--size", "32", "--fps", "4", "--seconds", "1"]
    assert cli_main(["demo2021", "--out", str(tmp_path / "a"), *tiny]) == 0
    b = generate_demo2021(tmp_path / "b", DemoConfig(subjects=(3,), n_train=10, n_test=1, size=32, fps=4, seconds=1))

    def digest(root):
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    assert digest(tmp_path / "a") == digest(b) and len(digest(b)) > 14
    assert cli_main(["demo2021", "--out", str(tmp_path / "a"), *tiny]) == 2  # refuses to overwrite
    assert cli_main(["demo2021", "--out", str(tmp_path / "c"), "--reps", "1"]) == 2


# ---------------------------------------------------------------------------------------------- layouts
def make_tiny_2021(root: Path, n_train: int = 6, n_test: int = 2, reps: int = 2, subjects=(1,)) -> Path:
    """A minimal Algonauts 2021 layout written by hand (independent of the demo generator)."""
    rng = np.random.default_rng(0)
    vdir = root / "AlgonautsVideos268_All_30fpsmax"
    vdir.mkdir(parents=True)
    for i in range(n_train + n_test):
        write_video(vdir / f"{i + 1:04d}_x.mp4", np.full((3, 16, 16, 3), 20 * i, np.uint8), fps=3)
    mask = np.zeros(VOLUME_SHAPE)
    mask[40, 20:30, 30] = 1
    for s in subjects:
        for track, files in (("mini_track", {"V1": 4, "FFA": 3}), ("full_track", {"WB": 10})):
            folder = root / "participants_data_v2021" / track / f"sub{s:02d}"
            folder.mkdir(parents=True)
            for roi, n in files.items():
                obj = {"train": rng.standard_normal((n_train, reps, n))}
                if roi == "WB":
                    obj["voxel_mask"] = mask
                (folder / f"{roi}.pkl").write_bytes(pickle.dumps(obj))
    return root


def _rewrite(root: Path, rel: str, obj) -> Path:
    path = root / "participants_data_v2021" / rel
    path.write_bytes(pickle.dumps(obj))
    return path


def test_tiny_layout_reads(tmp_path, cache):
    ds = open_dataset2021(make_tiny_2021(tmp_path / "d"), n_test=2)
    s = ds.subject(1)
    assert s.rois() == ["FFA", "V1", WB] and s.n_voxels(WB) == 10 and s.fmri("V1").shape == (6, 4)
    assert s.fmri("V1").dtype == np.float32 and s.noise_ceiling("FFA").shape == (3,)


@pytest.mark.parametrize("rel, obj, message", [
    ("mini_track/sub01/V1.pkl", {"test": np.zeros(3)}, "V1.pkl: expected a dict with a 'train' array"),
    ("mini_track/sub01/V1.pkl", {"train": np.zeros((6, 4), int)}, "'train' must be a float array"),
    ("mini_track/sub01/V1.pkl", {"train": np.zeros((6, 2, 2, 2))}, r"must be \(clips x repetitions x voxels\)"),
    ("mini_track/sub01/V1.pkl", {"train": np.full((6, 2, 4), np.nan)}, r"NaN or infinite values \(first at index"),
    ("mini_track/sub01/V1.pkl", {"train": np.zeros((7, 2, 4))}, "V1.pkl: has 7 training clips but .* has 6"),
    ("full_track/sub01/WB.pkl", {"train": np.zeros((6, 2, 10))}, "WB.pkl: missing 'voxel_mask'"),
    ("full_track/sub01/WB.pkl", {"train": np.zeros((6, 2, 9)), "voxel_mask": np.ones(VOLUME_SHAPE)},
     "'voxel_mask' marks 515034 voxels but 'train' has 9"),
    ("full_track/sub01/WB.pkl", {"train": np.zeros((6, 2, 1)), "voxel_mask": np.ones((2, 2))},
     r"'voxel_mask' must be a \(78, 93, 71\) array"),
    ("full_track/sub01/V1.pkl", {"train": np.zeros((6, 2, 4))}, "unexpected file in the full track"),
])  # fmt: skip
def test_bad_files_give_one_line_errors(tmp_path, cache, rel, obj, message):
    root = make_tiny_2021(tmp_path / "d")
    _rewrite(root, rel, obj)
    with pytest.raises(DatasetError, match=message) as exc:
        open_dataset2021(root)
    assert "\n" not in str(exc.value)


def test_code_in_a_pickle_is_refused(tmp_path, cache):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    root = make_tiny_2021(tmp_path / "d")
    _rewrite(root, "mini_track/sub01/FFA.pkl", {"train": Evil()})
    with pytest.raises(DatasetError, match=r"FFA\.pkl: refused to unpickle 'builtins.print'"):
        open_dataset2021(root)


def test_layout_problems(tmp_path, cache):
    root = make_tiny_2021(tmp_path / "d")
    with pytest.raises(DatasetError, match="leave 2 test clips, not 3"):
        open_dataset2021(root, n_test=3)
    with pytest.raises(DatasetError, match=r"unknown subject 4 \(available: 1\)"):
        open_dataset2021(root, ["sub04"])
    for p in sorted((root / "AlgonautsVideos268_All_30fpsmax").iterdir())[5:]:
        p.unlink()
    with pytest.raises(DatasetError, match="5 videos, but the responses cover 6 training clips"):
        open_dataset2021(root)
    with pytest.raises(DatasetError, match="data directory not found"):
        open_dataset2021(tmp_path / "nowhere")
    assert not is_2021_layout(tmp_path)


def test_ensure_demo_generates_once(tmp_path, monkeypatch):
    import core.algonauts2021.demo as demo2021

    tiny = DemoConfig(subjects=(1,), n_train=10, n_test=1, size=32, fps=4, seconds=1)
    path = demo2021.ensure_demo2021(tmp_path / "demo2021", tiny)
    assert is_demo2021(path) and len(list((path / "AlgonautsVideos268_All_30fpsmax").iterdir())) == 11
    monkeypatch.setattr(demo2021, "generate_demo2021", lambda *a, **k: pytest.fail("generated again"))
    assert demo2021.ensure_demo2021(path, tiny) == path
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("x")
    with pytest.raises(UserError, match="exists but is not a video demo"):
        demo2021.ensure_demo2021(tmp_path / "other", tiny)
    monkeypatch.setattr(demo2021, "GENERATOR_VERSION", 99)  # an older demo is replaced
    monkeypatch.setattr(demo2021, "generate_demo2021", lambda p, *a: p.mkdir() or p)
    assert demo2021.ensure_demo2021(path, tiny) == path and not any(path.iterdir())
