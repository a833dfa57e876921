"""Motion-energy features of clips (pymoten's spatio-temporal Gabor pyramid), as a feature entry.

Each clip is resampled to ``fps`` (evenly spaced frames, :func:`core.features.video.read_frames`) and
squashed to ``size x size``; its luminance goes through pymoten's default motion-energy
pyramid (log-compressed quadrature energy per filter and frame), averaged over frames. The
result is a :class:`core.features.extraction.FeatureEntry` in the feature cache
(``features/motion_energy-<size>px-<digest>/``: ``train.npy``, ``test.npy``, ``meta.json``), so it
joins backbone layers in ``core.encoding.fitting`` (concatenated, or as its own band with ``banded``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from core.util.atomicdir import set_aside, staging_dir
from core.util.errors import UserError
from core.features.extraction import entry_intact, FeatureEntry, features_root
from core.util.fileio import write_json
from core.features.images import fingerprint_images
from core.util.npystream import NpyWriter
from core.util.progress import Progress, report
from core.features.video import probe_video, read_frames

VERSION = 1


@dataclass(frozen=True)
class MotionEnergyConfig:
    """Frame size and rate the clips are brought to, and the pyramid's frequencies (pymoten's defaults)."""

    size: int = 64
    fps: int = 15
    temporal_frequencies: tuple[float, ...] = (0, 2, 4)
    spatial_frequencies: tuple[float, ...] = (0, 2, 4, 8, 16)
    spatial_directions: tuple[float, ...] = (0, 45, 90, 135, 180, 225, 270, 315)

    def checked(self) -> "MotionEnergyConfig":
        if not 16 <= int(self.size) <= 512:
            raise UserError(f"motion energy: frame size must be between 16 and 512 pixels (got {self.size})")
        if int(self.fps) != self.fps or not 1 <= self.fps <= 120:
            raise UserError(f"motion energy: frame rate must be a whole number of fps, 1 to 120 (got {self.fps})")
        return self


def _pyramid(cfg: MotionEnergyConfig):
    try:
        import moten
    except ImportError:
        raise UserError("motion-energy features need pymoten (python -m pip install pymoten==0.1.3)") from None
    return moten.pyramids.MotionEnergyPyramid(
        stimulus_vhsize=(cfg.size, cfg.size), stimulus_fps=int(cfg.fps),
        temporal_frequencies=list(cfg.temporal_frequencies), spatial_frequencies=list(cfg.spatial_frequencies),
        spatial_directions=list(cfg.spatial_directions))


def clip_motion_energy(path: str | os.PathLike, cfg: MotionEnergyConfig, pyramid) -> np.ndarray:
    """Mean motion energy of one clip per filter of ``pyramid``: float32 ``(n_filters,)``."""
    from moten import core as moten_core, io as moten_io

    info = probe_video(path)
    n = max(2, int(round(info.n_frames * cfg.fps / info.fps))) if info.fps else info.n_frames
    luminance = moten_io.imagearray2luminance(read_frames(path, n, cfg.size), size=None)
    energy = moten_core.project_stimulus_batched(luminance, pyramid.filters, vhsize=(cfg.size, cfg.size),
                                                 batch_size=512)
    return np.asarray(energy, dtype=np.float64).mean(axis=0).astype(np.float32)


def extract_motion_energy(train_videos: Sequence[str | os.PathLike], test_videos: Sequence[str | os.PathLike],
                          config: MotionEnergyConfig = MotionEnergyConfig(), *,
                          cache_dir: str | os.PathLike | None = None,
                          progress: Optional[Progress] = None) -> FeatureEntry:
    """The (cached) motion-energy entry of the clips: ``train.npy`` ``(n_train, n_filters)``, ``test.npy``."""
    import moten

    cfg = config.checked()
    train, test = [Path(p) for p in train_videos], [Path(p) for p in test_videos]
    if len(train) < 2:
        raise UserError(f"need at least 2 training videos (got {len(train)})")
    key = {"kind": "motion_energy", "version": VERSION, "pymoten": moten.__version__, "config": asdict(cfg),
           "train": fingerprint_images(train), "test": fingerprint_images(test)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    final = features_root(cache_dir) / f"motion_energy-{cfg.size}px-{digest[:16]}"
    if final.exists():
        if entry_intact(final, len(train), len(test)):
            report(progress, 1.0, "motion energy cached")
            return FeatureEntry.open(final)
        set_aside(final, "incomplete or unreadable train.npy / test.npy / meta.json")  # damaged since: rebuild
    pyramid = _pyramid(cfg)
    n_filters = len(pyramid.filters)
    with staging_dir(final) as tmp:
        done, total = 0, len(train) + len(test)
        for split, videos in (("train", train), ("test", test)):
            with NpyWriter(tmp / f"{split}.npy", (len(videos), n_filters)) as writer:
                for path in videos:
                    writer.write(clip_motion_energy(path, cfg, pyramid)[None])
                    done += 1
                    report(progress, done / total, f"motion energy {done}/{total} clips")
        write_json(tmp / "meta.json", {
            "model": "motion_energy", "layer": "pymoten", "n_components": n_filters, "n_train": len(train),
            "n_test": len(test), "explained_variance_ratio_total": None, "config": asdict(cfg),
            "key": {**key, "digest": digest}, "entry": final.name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
    return FeatureEntry.open(final)
