"""Video features: sampled frames -> backbone layers -> mean over frames -> reduction -> cached entries.

``extract_video_features(train_videos, test_videos, config, n_frames=8)`` is the video
counterpart of :func:`core.features.extraction.extract_features` and returns the same
:class:`~core.features.extraction.FeatureEntry` per layer (``train.npy`` ``(n_train_videos, d)``,
``test.npy``, ``meta.json``) in the same feature cache, so ``core.encoding.fitting`` and the pages use
them unchanged. Each clip's ``n_frames`` evenly spaced frames (:mod:`core.features.video`, decoded once
into a frame cache) go through the backbone in one forward pass for all layers; each layer's
activations are averaged over the clip's frames before pooling or PCA (PCA fitted on the
training clips). The frame sampling is part of the clips' fingerprint and so of the cache key.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Optional, Sequence

from core.util.errors import UserError
from core.features.extraction import ExtractionConfig, FeatureEntry, Stimuli, run_extraction
from core.util.progress import Progress
from core.features.video import build_frame_cache, fingerprint_videos, frames_spec

DEFAULT_N_FRAMES = 8


def extract_video_features(
    train_videos: Sequence[str | os.PathLike],
    test_videos: Sequence[str | os.PathLike],
    config: ExtractionConfig,
    *,
    n_frames: int = DEFAULT_N_FRAMES,
    cache_dir: str | os.PathLike | None = None,
    device=None,
    progress: Optional[Progress] = None,
) -> dict[str, FeatureEntry]:
    """Extract (or reuse) one feature entry per layer of ``config`` for clips. See the module docstring."""
    if not 1 <= int(n_frames) <= 256:
        raise UserError(f"frames per clip must be between 1 and 256 (got {n_frames})")
    cfg, k = config.validated(), int(n_frames)

    def decode(items, fingerprint, sub_progress):
        return build_frame_cache(items, k, cfg.resolution, cache_dir=cache_dir, fingerprint=fingerprint,
                                 num_workers=cfg.num_workers, progress=sub_progress)

    stimuli = Stimuli("videos", [Path(p) for p in train_videos], [Path(p) for p in test_videos],
                      partial(fingerprint_videos, n_frames=k), decode, frames_per_item=k,
                      meta={"frames": frames_spec(k, cfg.resolution)})
    return run_extraction(stimuli, cfg, cache_dir=cache_dir, device=device, progress=progress)
