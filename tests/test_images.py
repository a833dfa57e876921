"""Image cache: decode once per (image list, resolution), reuse, fail cleanly on a bad file."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from core.features import images as images_mod
from core.util.errors import DatasetError, UserError
from core.features.images import build_image_cache, decode_image, fingerprint_images
from tests.conftest import write_pngs as _pngs


def test_cache_built_once_and_reused(tmp_path, monkeypatch):
    paths = _pngs(tmp_path / "imgs", 5)
    cache = build_image_cache(paths, 48, cache_dir=tmp_path / "c")
    arr = cache.array()
    assert arr.shape == (5, 48, 48, 3) and arr.dtype == np.uint8
    assert np.array_equal(arr[2], decode_image(paths[2], 48))
    with cache.reader() as r:
        assert np.array_equal(r.read(1, 4), arr[1:4])
    assert cache.meta["names"] == [p.name for p in paths]

    def boom(*_a, **_k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(images_mod, "decode_image", boom)
    again = build_image_cache(paths, 48, cache_dir=tmp_path / "c")
    assert again.path == cache.path
    with pytest.raises(AssertionError):  # another resolution is another entry
        build_image_cache(paths, 32, cache_dir=tmp_path / "c", num_workers=0)


def test_every_format_decodes_to_pils_rgb_pixels(tmp_path):
    """libspng (8-bit PNGs) and PIL (the rest) give PIL's ``convert("RGB")`` pixels exactly."""
    for mode in ("RGB", "L", "RGBA", "P", "LA", "1", "I;16"):
        (p,) = _pngs(tmp_path / mode.replace(";", ""), 1, size=40, mode=mode)
        assert np.array_equal(decode_image(p, 40), np.asarray(Image.open(p).convert("RGB"))), mode
    (p,) = _pngs(tmp_path / "jpg", 1, size=40)
    Image.open(p).save(tmp_path / "x.jpg", quality=90)
    assert np.array_equal(decode_image(tmp_path / "x.jpg", 40), np.asarray(Image.open(tmp_path / "x.jpg")))


def test_resize_matches_pil_bilinear_antialias(tmp_path):
    (p,) = _pngs(tmp_path / "imgs", 1)
    ours = decode_image(p, 224).astype(int)
    pil = np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR)).astype(int)
    assert np.abs(ours - pil).max() <= 1 and (ours != pil).mean() < 0.01


def test_fingerprint_tracks_names_sizes_mtimes(tmp_path):
    paths = _pngs(tmp_path / "imgs", 3)
    fp = fingerprint_images(paths)
    assert fp == fingerprint_images(paths)
    assert fp != fingerprint_images(paths[::-1])
    st = paths[0].stat()
    os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert fp != fingerprint_images(paths)
    with pytest.raises(DatasetError, match="missing.png"):
        fingerprint_images([tmp_path / "missing.png"])


@pytest.mark.parametrize("workers,ext", [(0, "png"), (2, "png"), (0, "jpg")])
def test_truncated_image_names_the_file_and_leaves_nothing(tmp_path, workers, ext):
    paths = _pngs(tmp_path / "imgs", 70 if workers else 4)
    if ext != "png":
        for p in paths:
            Image.open(p).save(p.with_suffix(f".{ext}"))
        paths = [p.with_suffix(f".{ext}") for p in paths]
    bad = paths[len(paths) // 2]
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(DatasetError) as exc:
        build_image_cache(paths, 32, cache_dir=tmp_path / "c", num_workers=workers)
    msg = str(exc.value)
    assert str(bad) in msg and "\n" not in msg and "truncated" in msg
    assert not any((tmp_path / "c" / "images").iterdir())


def test_a_full_disk_is_a_clear_error_before_decoding(tmp_path, monkeypatch):
    import errno

    paths = _pngs(tmp_path / "imgs", 3)

    def full(*_a):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images_mod.os, "posix_fallocate", full)
    monkeypatch.setattr(images_mod, "decode_image", lambda *a: pytest.fail("decoded on a full disk"))
    with pytest.raises(UserError, match="no room for the pixel cache on this disk .needs about .* free.*BES_CACHE_DIR"):
        build_image_cache(paths, 32, cache_dir=tmp_path / "c", num_workers=0)
    assert not any((tmp_path / "c" / "images").iterdir())
