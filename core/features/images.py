"""Decode and preprocess stimulus images once per (image list, resolution); cache them.

The cache holds the images resized to ``resolution x resolution`` (squashed, as the
Algonauts devkit's ``Resize((224, 224))``: bilinear with antialiasing, done by torch on
uint8, which equals PIL's result up to 1/255 on ~0.1% of pixels at 3x the speed) as one
uint8 ``images.npy`` of shape ``(n, R, R, 3)`` (RGB, channels last), beside a
``meta.json``. It lives in ``cache_dir()/images/<key>/``, where the key covers the
image list's fingerprint (names, sizes, modification times), the resolution and the
preprocessing version, and is published atomically. Trying another model or layer
then costs only forward passes: batches are read with ``pread`` (or memory-mapped via
:meth:`ImageCache.array`), normalised on the device.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from core.util import paths
from core.util.atomicdir import clean_stale, set_aside, staging_dir
from core.util.errors import DatasetError, UserError
from core.util.fileio import write_json
from core.util.fsaccess import disk_full_error
from core.util.npystream import NpyReader, npy_complete
from core.util.progress import Progress, report

PREPROCESS_VERSION = 2
RESIZE = "squash-bilinear-antialias"  # torchvision Resize((R, R), antialias=True) on a uint8 tensor
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS_ENV = "BES_MAX_IMAGE_PIXELS"
# 50 megapixels: above any camera a stimulus set plausibly comes from (48 MP phones, 45 MP DSLRs) and
# ~280x NSD's 425 x 425, yet one decoded RGB image stays at 150 MB, so each decoding worker's peak is
# bounded; a "decompression bomb" (a small file whose header claims 30000 x 30000) is refused unread.
DEFAULT_MAX_PIXELS = 50_000_000


def max_image_pixels() -> int:
    """The largest image (width x height) decoded: ``$BES_MAX_IMAGE_PIXELS``, else 50 million."""
    env = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not env:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(env))
    except ValueError:
        raise UserError(f"{MAX_PIXELS_ENV}={env!r}: not a number of pixels") from None
    if value < 1:
        raise UserError(f"{MAX_PIXELS_ENV}={env!r}: must be at least 1")
    return value


def check_pixels(path: str | os.PathLike, width: int, height: int, what: str = "image") -> None:
    """``DatasetError`` naming ``path`` if a ``width x height`` picture exceeds :func:`max_image_pixels`
    (read from the file's header, before anything is decoded)."""
    limit = max_image_pixels()
    if width * height > limit:
        raise DatasetError(f"{path}: {what} of {width} x {height} pixels ({width * height / 1e6:.0f} MP) exceeds "
                           f"the limit of {limit / 1e6:g} MP (a decompression bomb?); raise {MAX_PIXELS_ENV} "
                           "if it is genuine")


def preprocessing_spec(resolution: int) -> dict:
    return {"resolution": int(resolution), "resize": RESIZE, "color": "RGB", "version": PREPROCESS_VERSION}


def fingerprint_images(images: Sequence[str | os.PathLike]) -> str:
    """sha256 over the ordered image list: file names, sizes and modification times."""
    h = hashlib.sha256()
    for p in images:
        p = Path(p)
        try:
            st = p.stat()
        except OSError as exc:
            raise DatasetError(f"{p}: image not readable ({exc.strerror or exc})") from None
        h.update(f"{p.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def resize_rgb(arr: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 ``(H, W, 3)`` -> ``(R, R, 3)``: squashed, bilinear with antialiasing (torch's uint8 kernel)."""
    if arr.shape[:2] == (resolution, resolution):
        return arr
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.require(arr, np.uint8, ["C", "W"])).permute(2, 0, 1)[None]  # channels-last NCHW view
    y = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return np.ascontiguousarray(y[0].permute(1, 2, 0).numpy())


def _decode_rgb(path: str | os.PathLike) -> np.ndarray:
    """The whole file as uint8 RGB. 8-bit (or lower) PNGs go through libspng (pyspng, ~2x faster than
    PIL, pixel-identical to PIL's ``convert("RGB")``); other formats and 16-bit PNGs through PIL. The
    size in the header is checked against :func:`max_image_pixels` first."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data[:8] == PNG_SIGNATURE and len(data) > 25:
        # IHDR is the first chunk: width and height (big-endian) at bytes 16-23, bit depth at 24
        check_pixels(path, int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big"))
        if data[24] <= 8:
            import pyspng

            return pyspng.load(data, format="RGB")
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:  # reads the header only
        check_pixels(path, *im.size)
        return np.array(im.convert("RGB"), dtype=np.uint8)  # decodes the whole file: truncation shows here


def decode_image(path: str | os.PathLike, resolution: int) -> np.ndarray:
    """One image as uint8 ``(R, R, 3)`` RGB; a DatasetError naming the file if it is unreadable."""
    try:
        arr = resize_rgb(_decode_rgb(path), resolution)
    except DatasetError:
        raise
    except Exception as exc:  # OSError, RuntimeError (libspng), PIL's SyntaxError/ValueError, zlib errors...
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetError(f"{path}: unreadable or truncated image ({msg[:200]})") from None
    if arr.shape != (resolution, resolution, 3):
        raise DatasetError(f"{path}: decoded to an unexpected shape {arr.shape}")
    return arr


class _DecodeChunks:
    """A torch Dataset: item j decodes images ``j * chunk ...`` straight into the staging cache file
    (memory-mapped, so no pixels travel between processes) and returns ``(start, stop, error or None)``,
    ``stop`` being where it stopped; it never raises in a worker."""

    def __init__(self, images: Sequence[Path], resolution: int, target: Path, chunk: int = 16):
        self.images, self.resolution, self.target, self.chunk = [str(p) for p in images], resolution, target, chunk
        self._out: np.ndarray | None = None

    def __len__(self) -> int:
        return -(-len(self.images) // self.chunk)

    def __getitem__(self, j: int):
        if self._out is None:  # opened lazily: one mapping per worker process
            self._out = np.load(self.target, mmap_mode="r+")
        start, stop = j * self.chunk, min(len(self.images), (j + 1) * self.chunk)
        for i in range(start, stop):
            try:
                self._out[i] = decode_image(self.images[i], self.resolution)
            except DatasetError as exc:
                return start, i, str(exc)
        return start, stop, None

    def __getstate__(self):
        return {**self.__dict__, "_out": None}


@dataclass
class ImageCache:
    """A published image cache entry."""

    path: Path  # the entry folder
    n: int
    resolution: int
    fingerprint: str

    @property
    def file(self) -> Path:
        return self.path / "images.npy"

    def reader(self) -> NpyReader:
        return NpyReader(self.file)

    def array(self) -> np.ndarray:
        """The whole cache, memory-mapped read-only: ``(n, R, R, 3)`` uint8."""
        return np.load(self.file, mmap_mode="r")

    @property
    def meta(self) -> dict:
        return json.loads((self.path / "meta.json").read_text())


def image_cache_key(fingerprint: str, resolution: int) -> str:
    spec = json.dumps({"fingerprint": fingerprint, **preprocessing_spec(resolution)}, sort_keys=True)
    return f"{fingerprint[:16]}-{resolution}px-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


def _open_existing(entry: Path, n: int, resolution: int, fingerprint: str) -> ImageCache | None:
    """The entry if it is complete and matches (header, size, fingerprint); ``None`` otherwise."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if (isinstance(meta, dict) and meta.get("fingerprint") == fingerprint
            and npy_complete(entry / "images.npy", (n, resolution, resolution, 3), np.uint8)):
        return ImageCache(entry, n, resolution, fingerprint)
    return None


def default_workers(n_images: int) -> int:
    if n_images < 64:
        return 0
    return max(0, min(16, (os.cpu_count() or 1)))


def cached_or_built(
    entry: Path,
    n_rows: int,
    resolution: int,
    fingerprint: str,
    fill: Callable[[Path], Iterator[int]],
    meta: dict,
    *,
    label: str = "images",
    rows_per_item: int = 1,
    progress: Progress | None = None,
) -> ImageCache:
    """The published entry at ``entry`` if it is complete; else preallocate its ``images.npy`` in a
    staging folder, let ``fill(path)`` write the uint8 rows into it (yielding the rows done so far),
    and publish it with ``meta``. A decoding error leaves nothing; a damaged entry (truncated, or its
    ``meta.json`` unreadable) is set aside and rebuilt."""
    found = _open_existing(entry, n_rows, resolution, fingerprint)
    if found is not None:
        report(progress, 1.0, f"{label} cached")
        return found
    if entry.exists():  # published entries are complete, so this one was damaged since
        set_aside(entry, "incomplete or unreadable images.npy / meta.json")
    clean_stale(entry.parent)
    t0 = time.perf_counter()
    n_items = n_rows // rows_per_item
    with staging_dir(entry, valid=lambda e: _open_existing(e, n_rows, resolution, fingerprint) is not None) as tmp:
        target = tmp / "images.npy"
        np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=(n_rows, resolution, resolution, 3))
        _allocate(target)
        with contextlib.closing(fill(target)) as rows_done:  # a failure here stops the decoders first
            for done in rows_done:
                report(progress, done / n_rows, f"decoding {label} {done // rows_per_item}/{n_items}")
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)  # whichever process wrote the pages
        finally:
            os.close(fd)
        write_json(tmp / "meta.json", {"fingerprint": fingerprint, "n": n_rows, **meta,
                                       "decode_seconds": round(time.perf_counter() - t0, 3)})
    return ImageCache(entry, n_rows, resolution, fingerprint)


def _allocate(path: Path) -> None:
    """Reserve the (sparse) file's blocks now: a full disk is then a clear error here, not a SIGBUS when a
    decoder writes through the memory map."""
    fd = os.open(path, os.O_RDWR)
    try:
        size = os.fstat(fd).st_size
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            raise disk_full_error(path.parent.parent, size, "the pixel cache", "set BES_CACHE_DIR to a bigger disk") \
                from None
    finally:
        os.close(fd)


def check_resolution(resolution: int) -> None:
    if not 16 <= resolution <= 4096:
        raise UserError(f"resolution must be between 16 and 4096 pixels (got {resolution})")


def build_image_cache(
    images: Sequence[str | os.PathLike],
    resolution: int,
    *,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
    progress: Progress | None = None,
    fingerprint: str | None = None,
) -> ImageCache:
    """The cache entry for ``images`` at ``resolution``; decodes (in DataLoader workers) only if missing.

    An unreadable or truncated image stops the build with a one-line DatasetError
    naming the file; nothing is published.
    """
    images = [Path(p) for p in images]
    if not images:
        raise UserError("no images given")
    check_resolution(resolution)
    max_image_pixels()  # a malformed $BES_MAX_IMAGE_PIXELS stops here, not in a decoding worker
    fingerprint = fingerprint or fingerprint_images(images)
    root = Path(cache_dir) if cache_dir is not None else paths.cache_dir()
    workers = default_workers(len(images)) if num_workers is None else num_workers

    def fill(target: Path) -> Iterator[int]:
        from torch.utils.data import DataLoader

        loader = DataLoader(_DecodeChunks(images, resolution, target), batch_size=None, shuffle=False,
                            num_workers=workers, prefetch_factor=4 if workers else None)
        for _start, stop, err in loader:  # in order
            if err is not None:
                raise DatasetError(err)
            yield stop

    import torch

    meta = {**preprocessing_spec(resolution), "names": [p.name for p in images],
            "source_dir": str(images[0].parent), "torch": torch.__version__}
    return cached_or_built(root / "images" / image_cache_key(fingerprint, resolution), len(images), resolution,
                           fingerprint, fill, meta, progress=progress)
