"""Video decoding and frame sampling (core.features.video) on small clips written here."""

from __future__ import annotations

import hashlib
import json

import av
import numpy as np
import pytest

import core.features.video as video
from core.util.errors import DatasetError
from core.features.video import (
    build_frame_cache, fingerprint_videos, frame_indices, probe_video, read_frames, write_video,
)


def _ramp(n_frames: int, size: int = 32) -> np.ndarray:
    """Frame t is uniformly grey at level 10 + 12 t (decodes back to within a few levels)."""
    levels = (10 + 12 * np.arange(n_frames)).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (n_frames, size, size, 3)).copy()


def _level(frames: np.ndarray) -> np.ndarray:
    return np.rint((frames.reshape(len(frames), -1).mean(1) - 10) / 12).astype(int)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    out = []
    for i, n in enumerate((20, 15, 7)):
        out.append(write_video(root / f"{i + 1:04d}_clip.mp4", np.roll(_ramp(n), i, axis=0), fps=10))
    return out


@pytest.mark.parametrize("total, n", [(90, 16), (75, 8), (15, 4), (7, 7), (3, 8), (1, 3)])
def test_frame_indices_are_the_devkits(total, n):
    idx = frame_indices(total, n)
    assert np.array_equal(idx, np.linspace(0, total - 1, n, dtype=int))  # sample_video_from_mp4
    assert idx[0] == 0 and idx[-1] == total - 1 and np.all(np.diff(idx) >= 0)


def test_probe_and_read_evenly_spaced_frames(clips):
    info = probe_video(clips[0])
    assert (info.n_frames, info.fps, info.width, info.height) == (20, 10.0, 32, 32)
    assert info.duration_s == pytest.approx(2.0)
    frames = read_frames(clips[0], 5)
    assert frames.shape == (5, 32, 32, 3) and frames.dtype == np.uint8
    assert list(_level(frames)) == list(frame_indices(20, 5))
    small = read_frames(clips[0], 3, resolution=16)
    assert small.shape == (3, 16, 16, 3) and list(_level(small)) == [0, 9, 19]
    assert list(_level(read_frames(clips[2], 10))) == list(np.roll(np.arange(7), 2)[frame_indices(7, 10)])


def test_decoding_stops_after_the_last_wanted_frame(clips, monkeypatch):
    converted = []
    real = video._to_rgb
    monkeypatch.setattr(video, "_to_rgb", lambda f, r: converted.append(1) or real(f, r))
    with av.open(str(clips[0])) as container:
        stream = container.streams.video[0]
        frames, decoded = video._decode(container, stream, np.array([0, 3, 3, 6]), None)
    assert decoded == 7 and len(frames) == 4 and len(converted) == 3
    assert list(_level(np.stack(frames))) == [0, 3, 3, 6]


def test_write_video_is_deterministic_and_checks_input(tmp_path):
    a = write_video(tmp_path / "a.mp4", _ramp(6), fps=5)
    b = write_video(tmp_path / "b.mp4", _ramp(6), fps=5)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", _ramp(3, size=31), fps=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]


def test_unreadable_videos_name_the_file(tmp_path):
    bad = tmp_path / "0001_bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    for fn in (lambda: read_frames(bad, 4), lambda: probe_video(bad)):
        with pytest.raises(DatasetError, match=r"0001_bad\.mp4: unreadable video"):
            fn()
    with pytest.raises(DatasetError, match="missing video file"):
        read_frames(tmp_path / "nope.mp4", 2)


def test_frame_cache_is_clip_major_and_reused(clips, tmp_path, monkeypatch):
    cache = build_frame_cache(clips, 4, 16, cache_dir=tmp_path, num_workers=2)
    frames = cache.array()
    assert frames.shape == (12, 16, 16, 3) and cache.n == 12
    for i, clip in enumerate(clips):
        assert np.array_equal(frames[4 * i : 4 * (i + 1)], read_frames(clip, 4, 16))
    meta = json.loads((cache.path / "meta.json").read_text())
    assert meta["n_frames"] == 4 and meta["sampling"] == "linspace-floor" and meta["n_videos"] == 3
    assert cache.fingerprint == fingerprint_videos(clips, 4) != fingerprint_videos(clips, 5)

    monkeypatch.setattr(video, "read_frames", lambda *a: pytest.fail("decoded again"))
    assert build_frame_cache(clips, 4, 16, cache_dir=tmp_path).path == cache.path


def test_a_bad_clip_publishes_no_frame_cache(clips, tmp_path):
    bad = tmp_path / "0009_bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(DatasetError, match="0009_bad.mp4"):
        build_frame_cache([*clips, bad], 2, 16, cache_dir=tmp_path / "cache", num_workers=2)
    assert list((tmp_path / "cache" / "frames").iterdir()) == []


def test_video_features_are_the_frame_average_of_image_features(clips, tmp_path):
    from PIL import Image

    from core.features.extraction import ExtractionConfig, extract_features
    from core.features.clips import extract_video_features

    cfg = ExtractionConfig(model="mobilenet_v2", weights="imagenet-offline", layers=["features.6"], resolution=32,
                           reduction="none", batch_size=4)
    entry = extract_video_features(clips[:2], clips[2:], cfg, n_frames=3, cache_dir=tmp_path,
                                   device="cpu")["features.6"]
    train, test = entry.load()
    assert train.shape[0] == 2 and test.shape[0] == 1 and entry.meta["frames"]["n_frames"] == 3
    pngs = []
    for clip in clips:
        for j, frame in enumerate(read_frames(clip, 3)):
            pngs.append(tmp_path / "png" / f"{clip.stem}-{j}.png")
            pngs[-1].parent.mkdir(exist_ok=True)
            Image.fromarray(frame).save(pngs[-1])
    per_frame = extract_features(pngs[:6], pngs[6:], cfg, cache_dir=tmp_path, device="cpu")["features.6"].load()
    np.testing.assert_allclose(train, per_frame[0].reshape(2, 3, -1).mean(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(test, per_frame[1].reshape(1, 3, -1).mean(1), rtol=1e-4, atol=1e-5)
    again = extract_video_features(clips[:2], clips[2:], cfg, n_frames=3, cache_dir=tmp_path)["features.6"]
    other = extract_video_features(clips[:2], clips[2:], cfg, n_frames=2, cache_dir=tmp_path)["features.6"]
    assert again.path == entry.path != other.path


def test_motion_energy_sees_the_direction_of_motion(tmp_path):
    moten = pytest.importorskip("moten", reason="pymoten is optional")
    from core.features.motion_energy import MotionEnergyConfig, extract_motion_energy

    bar = np.zeros((12, 32, 32, 3), np.uint8)
    for t in range(12):
        bar[t, :, 2 * t : 2 * t + 6] = 255  # a bar drifting rightwards
    still = np.repeat(bar[5:6], 12, axis=0)
    clips = [write_video(tmp_path / f"{i:04d}.mp4", c, fps=12) for i, c in enumerate((bar, bar[::-1], still))]
    cfg = MotionEnergyConfig(size=32, fps=12, temporal_frequencies=(0, 4), spatial_frequencies=(0, 2, 4),
                             spatial_directions=(0, 180))
    entry = extract_motion_energy(clips[:2], clips[2:], cfg, cache_dir=tmp_path)
    train, test = entry.load()
    assert train.shape[0] == 2 and test.shape == (1, train.shape[1]) and np.isfinite(train).all()
    assert entry.meta["model"] == "motion_energy" and entry.meta["n_components"] == train.shape[1]
    filters = moten.pyramids.MotionEnergyPyramid(stimulus_vhsize=(32, 32), stimulus_fps=12, temporal_frequencies=[0, 4],
                                                 spatial_frequencies=[0, 2, 4], spatial_directions=[0, 180]).filters
    pick = [[f["temporal_freq"] == 4 and f["spatial_freq"] == 4 and f["direction"] == d for f in filters]
            for d in (0, 180)]
    asymmetry = [float(e[pick[0]].sum() - e[pick[1]].sum()) for e in (train[0], train[1], test[0])]
    assert asymmetry[0] * asymmetry[1] < 0 and min(map(abs, asymmetry[:2])) > 1 and abs(asymmetry[2]) < 0.1
    assert extract_motion_energy(clips[:2], clips[2:], cfg, cache_dir=tmp_path).path == entry.path
    with open(entry.train_file, "r+b") as f:  # a cache entry damaged since (a disk that filled up): rebuilt
        f.truncate(entry.train_file.stat().st_size - 8)
    repaired = extract_motion_energy(clips[:2], clips[2:], cfg, cache_dir=tmp_path)
    assert repaired.path == entry.path
    np.testing.assert_array_equal(repaired.load()[0], train)
