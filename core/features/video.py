"""Video files: probe, sample evenly spaced frames (PyAV), write clips, and cache sampled frames.

Frame sampling follows the Algonauts 2021 devkit: of a clip's ``T`` frames, frames
``floor(linspace(0, T - 1, n))`` are used (first and last included; indices repeat when
``n > T``). Decoding goes through the clip once and stops after the last frame wanted; only
the wanted frames are converted to RGB and resized (squashed to ``R x R``, bilinear with antialiasing,
as :mod:`core.features.images` does for still images).

``build_frame_cache(videos, n_frames, resolution)`` decodes a list of clips once into an
:class:`core.features.images.ImageCache`-compatible entry (``cache_dir()/frames/<key>/images.npy`` of
shape ``(n_videos * n_frames, R, R, 3)``, clip-major), published atomically, so the feature
engine's batch reader works on it unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from core.util import paths
from core.util.errors import DatasetError, UserError
from core.util.fileio import atomic_path
from core.features.images import (
    ImageCache, cached_or_built, check_pixels, check_resolution, default_workers, fingerprint_images, max_image_pixels,
    preprocessing_spec, resize_rgb,
)
from core.util.progress import Progress

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
SAMPLING = "linspace-floor"  # the devkit's np.linspace(0, T - 1, n, dtype=int)
FRAMES_VERSION = 1


@dataclass(frozen=True)
class VideoInfo:
    """What a clip's container says about its first video stream."""

    n_frames: int
    fps: float
    width: int
    height: int

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps if self.fps else float("nan")


def frame_indices(n_total: int, n_frames: int) -> np.ndarray:
    """Indices of ``n_frames`` evenly spaced frames among ``n_total`` (first and last included)."""
    if n_total < 1:
        raise ValueError(f"a clip needs at least one frame (got {n_total})")
    if n_frames < 1:
        raise UserError(f"the number of frames per clip must be at least 1 (got {n_frames})")
    return np.floor(np.linspace(0, n_total - 1, n_frames)).astype(np.int64)


def _fail(path: Path, exc: Exception) -> DatasetError:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatasetError(f"{path}: unreadable video ({msg[:200]})")


def _open(path: Path):
    import av

    if not path.is_file():
        raise DatasetError(f"{path}: missing video file")
    try:
        container = av.open(str(path))
    except Exception as exc:  # av.error.FFmpegError and friends
        raise _fail(path, exc) from None
    if not container.streams.video:
        container.close()
        raise DatasetError(f"{path}: no video stream")
    ctx = container.streams.video[0].codec_context
    try:
        check_pixels(path, int(ctx.width or 0), int(ctx.height or 0), "video frames")
    except DatasetError:
        container.close()
        raise
    return container


def _count_frames(container, stream) -> int:
    """Frames of ``stream``: the container's count, else its packets (demuxed, not decoded)."""
    if stream.frames:
        return int(stream.frames)
    n = sum(1 for packet in container.demux(stream) if packet.size)
    container.seek(0)
    return n


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, frame rate and size of a clip (``DatasetError`` naming the file if unreadable)."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        try:
            n = _count_frames(container, stream)
        except Exception as exc:
            raise _fail(path, exc) from None
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(n, float(rate) if rate else 0.0, int(stream.codec_context.width),
                         int(stream.codec_context.height))


def _to_rgb(frame, resolution: int | None) -> np.ndarray:
    arr = frame.to_ndarray(format="rgb24")
    return arr if resolution is None else resize_rgb(arr, resolution)


def _decode(container, stream, wanted: np.ndarray, resolution: int | None) -> tuple[list[np.ndarray], int]:
    """Decode up to the last wanted index; returns the wanted frames found and the frames decoded."""
    last, wanted_set = int(wanted[-1]), set(wanted.tolist())
    picked: dict[int, np.ndarray] = {}
    n = 0
    for n, frame in enumerate(container.decode(stream), start=1):
        if n - 1 in wanted_set:
            picked[n - 1] = _to_rgb(frame, resolution)
        if n - 1 >= last:
            break
    return [picked[i] for i in wanted.tolist() if i in picked], n


def read_frames(path: str | os.PathLike, n_frames: int, resolution: int | None = None) -> np.ndarray:
    """``n_frames`` evenly spaced frames of a clip as uint8 ``(n_frames, H, W, 3)`` RGB.

    ``resolution`` squashes every frame to ``R x R`` (PIL bilinear); ``None`` keeps the size.
    """
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            total = _count_frames(container, stream)
            if total < 1:
                raise DatasetError(f"{path}: the video has no frames")
            wanted = frame_indices(total, n_frames)
            frames, decoded = _decode(container, stream, wanted, resolution)
            if len(frames) < len(wanted):  # the container over-counted: sample what is really there
                if decoded < 1:
                    raise DatasetError(f"{path}: the video has no decodable frames")
                container.seek(0)
                wanted = frame_indices(decoded, n_frames)
                frames, _ = _decode(container, stream, wanted, resolution)
        except DatasetError:
            raise
        except Exception as exc:
            raise _fail(path, exc) from None
    return np.stack(frames)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int, *, crf: int = 20) -> Path:
    """Write uint8 ``(T, H, W, 3)`` RGB frames as an H.264 ``.mp4`` (even sides), atomically."""
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"H.264 needs even frame sides, got {frames.shape[2]}x{frames.shape[1]}")
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=int(fps))
            stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
            stream.pix_fmt = "yuv420p"
            stream.codec_context.thread_count = 1  # deterministic bytes
            stream.options = {"crf": str(int(crf)), "preset": "veryfast"}
            for array in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
            container.mux(stream.encode(None))
    return path


# ---------------------------------------------------------------------------------------------
# The frame cache
# ---------------------------------------------------------------------------------------------
def frames_spec(n_frames: int, resolution: int) -> dict:
    """Everything about frame sampling and preprocessing that changes the pixels."""
    return {"n_frames": int(n_frames), "sampling": SAMPLING, "frames_version": FRAMES_VERSION,
            **preprocessing_spec(resolution)}


def fingerprint_videos(videos: Sequence[str | os.PathLike], n_frames: int) -> str:
    """sha256 over the ordered clip list (names, sizes, times) and the frame sampling."""
    spec = json.dumps({"n_frames": int(n_frames), "sampling": SAMPLING, "version": FRAMES_VERSION}, sort_keys=True)
    return hashlib.sha256(f"{fingerprint_images(videos)}|{spec}".encode()).hexdigest()


def frame_cache_key(fingerprint: str, n_frames: int, resolution: int) -> str:
    spec = json.dumps({"fingerprint": fingerprint, **frames_spec(n_frames, resolution)}, sort_keys=True)
    return f"{fingerprint[:16]}-{n_frames}f-{resolution}px-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


def _map_ordered(fn: Callable, items: Sequence, workers: int) -> Iterator:
    """``map(fn, items)`` on ``workers`` threads (PyAV decodes without the GIL), in order, at most
    ``2 * workers`` results ahead; pending work is cancelled when the consumer stops early."""
    if workers <= 1:
        yield from map(fn, items)
        return
    pool = ThreadPoolExecutor(workers)
    try:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def build_frame_cache(
    videos: Sequence[str | os.PathLike],
    n_frames: int,
    resolution: int,
    *,
    cache_dir: str | os.PathLike | None = None,
    num_workers: int | None = None,
    progress: Progress | None = None,
    fingerprint: str | None = None,
) -> ImageCache:
    """The cached ``(n_videos * n_frames, R, R, 3)`` uint8 frames of ``videos``; decodes only if missing.

    Clip ``i``'s frames are rows ``i * n_frames ... (i + 1) * n_frames - 1``. An unreadable clip
    stops the build with a one-line ``DatasetError`` naming the file; nothing is published.
    """
    videos = [Path(p) for p in videos]
    if not videos:
        raise UserError("no videos given")
    check_resolution(resolution)
    frame_indices(1, n_frames)  # checks n_frames
    max_image_pixels()  # checks $BES_MAX_IMAGE_PIXELS
    fingerprint = fingerprint or fingerprint_videos(videos, n_frames)
    parent = (Path(cache_dir) if cache_dir is not None else paths.cache_dir()) / "frames"
    workers = max(1, default_workers(len(videos)) if num_workers is None else num_workers)
    meta = {"n_videos": len(videos), **frames_spec(n_frames, resolution), "names": [p.name for p in videos],
            "source_dir": str(videos[0].parent)}
    return cached_or_built(
        parent / frame_cache_key(fingerprint, n_frames, resolution), len(videos) * n_frames, resolution, fingerprint,
        partial(_fill_frames, videos, n_frames, resolution, workers), meta,
        label="videos", rows_per_item=n_frames, progress=progress)


def _fill_frames(videos: list[Path], n_frames: int, resolution: int, workers: int, target: Path) -> Iterator[int]:
    """Decode the clips (``workers`` threads) into the preallocated cache file; yields the rows done."""
    out = np.load(target, mmap_mode="r+")
    for i, frames in enumerate(_map_ordered(lambda p: read_frames(p, n_frames, resolution), videos, workers)):
        out[i * n_frames:(i + 1) * n_frames] = frames
        yield (i + 1) * n_frames
