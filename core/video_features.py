"""Video features: sampled frames -> backbone layers -> mean over frames -> reduction -> cached entries.

``extract_video_features(train_videos, test_videos, config, n_frames=8)`` is the video
counterpart of :func:`core.features.extract_features` and returns the same
:class:`~core.features.FeatureEntry` per layer (``train.npy`` ``(n_train_videos, d)``,
``test.npy``, ``meta.json``) in the same feature cache, so ``core.evaluate`` and the pages use
them unchanged. Each clip's ``n_frames`` evenly spaced frames (:mod:`core.video`, decoded once
into a frame cache) go through the backbone in one forward pass for all layers; each layer's
activations are averaged over the clip's frames before pooling or PCA (PCA fitted on the
training clips). The frame sampling is part of the clips' fingerprint and so of the cache key.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from core.atomicdir import clean_stale
from core.backbones import check_layers, load_backbone, resolve_weights
from core.errors import UserError
from core.features import (
    FEATURES_VERSION, ExtractionConfig, FeatureEntry, _autocast, _batch_loader, _is_convnet, _LayerJob, _Normalizer,
    _probe, auto_batch_size, entry_key, features_root, pick_device, resolve_precision,
)
from core.progress import Progress, report, scaled
from core.video import build_frame_cache, fingerprint_videos, frames_spec

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
    import torch
    from torchvision.models.feature_extraction import create_feature_extractor

    t_start = time.perf_counter()
    cfg = config.validated()
    if not 1 <= int(n_frames) <= 256:
        raise UserError(f"frames per clip must be between 1 and 256 (got {n_frames})")
    k = int(n_frames)
    info = resolve_weights(cfg.model, cfg.weights)
    layers = check_layers(cfg.model, cfg.layers, info)
    train_videos, test_videos = [Path(p) for p in train_videos], [Path(p) for p in test_videos]
    if len(train_videos) < 2:
        raise UserError(f"need at least 2 training videos (got {len(train_videos)})")
    dev = pick_device(device)
    precision = resolve_precision(cfg.precision, dev)
    root = features_root(cache_dir)
    fp_train, fp_test = fingerprint_videos(train_videos, k), fingerprint_videos(test_videos, k)
    n_train, n_test = len(train_videos), len(test_videos)

    names, keys, found = {}, {}, {}
    for layer in layers:
        names[layer], keys[layer] = entry_key(cfg, info, layer, fp_train, fp_test, precision, n_train, n_test)
        if (root / names[layer] / "meta.json").is_file():
            try:
                found[layer] = FeatureEntry.open(root / names[layer])
            except UserError:
                pass
    missing = [layer for layer in layers if layer not in found]
    if not missing:
        report(progress, 1.0, "features cached")
        return {layer: found[layer] for layer in layers}
    root.mkdir(parents=True, exist_ok=True)
    clean_stale(root)

    t0 = time.perf_counter()
    net, info = load_backbone(cfg.model, info, resolution=cfg.resolution, seed=cfg.seed)
    extractor = create_feature_extractor(net, return_nodes={layer: layer for layer in missing}).eval()
    del net
    channels_last = _is_convnet(cfg.model) if cfg.channels_last is None else bool(cfg.channels_last)
    extractor = extractor.to(dev)
    if channels_last:
        extractor = extractor.to(memory_format=torch.channels_last)
    shapes, per_frame = _probe(extractor, missing, cfg.resolution, info.mean, info.std, dev, channels_last, precision)
    clips_per_batch = max(1, (cfg.batch_size or auto_batch_size(per_frame, dev, cfg.memory_budget_mb)) // k)
    t_model = time.perf_counter() - t0
    report(progress, 0.02, f"{cfg.model} on {dev.type}, {clips_per_batch} clips x {k} frames per batch")

    jobs: dict[str, _LayerJob] = {}
    try:
        for layer in missing:
            jobs[layer] = _LayerJob(layer, cfg, names[layer], keys[layer], root, shapes[layer], n_train, n_test)
        t0 = time.perf_counter()
        caches = {"train": build_frame_cache(train_videos, k, cfg.resolution, cache_dir=cache_dir, fingerprint=fp_train,
                                             num_workers=cfg.num_workers, progress=scaled(progress, 0.02, 0.25))}
        if n_test:
            caches["test"] = build_frame_cache(test_videos, k, cfg.resolution, cache_dir=cache_dir, fingerprint=fp_test,
                                               num_workers=cfg.num_workers, progress=scaled(progress, 0.25, 0.3))
        t_frames = time.perf_counter() - t0

        t0 = time.perf_counter()
        norm = _Normalizer(info.mean, info.std, dev, channels_last)
        total = -(-n_train // clips_per_batch) + -(-n_test // clips_per_batch)
        fwd = scaled(progress, 0.3, 0.85 if cfg.reduction == "pca" else 0.98)
        done = 0
        with torch.inference_mode():
            for split, cache in caches.items():
                for batch in _batch_loader(cache, clips_per_batch * k, dev, cfg.num_workers, norm):
                    with _autocast(dev, precision):
                        out = extractor(norm(batch))
                    for layer in missing:
                        act = out[layer].float()
                        jobs[layer].add(act.reshape(-1, k, *act.shape[1:]).mean(dim=1), split)
                    del out
                    done += 1
                    report(fwd, done / total, f"{split} clips: batch {done}/{total}")
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t_forward = time.perf_counter() - t0
        del extractor

        common = {
            "model": cfg.model,
            "weights": info.to_meta(),
            "weights_label": info.label,
            "random_weights": info.is_random,
            "preprocessing": keys[missing[0]]["preprocessing"],
            "frames": frames_spec(k, cfg.resolution),
            "reduction": cfg.reduction_spec(),
            "dataset": {
                "kind": "videos", "train_fingerprint": fp_train, "test_fingerprint": fp_test,
                "n_train": n_train, "n_test": n_test, "train_dir": str(train_videos[0].parent),
                "test_dir": str(test_videos[0].parent) if n_test else None,
                "train_names_sha256": hashlib.sha256("\n".join(p.name for p in train_videos).encode()).hexdigest(),
            },
            "n_train": n_train,
            "n_test": n_test,
            "device": str(dev),
            "precision": precision,
            "batch_size": clips_per_batch * k,
            "channels_last": channels_last,
            "layers_in_same_pass": missing,
            "versions": {"torch": torch.__version__, "torchvision": __import__("torchvision").__version__,
                         "numpy": np.__version__, "features": FEATURES_VERSION},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "timings": {"frames_s": round(t_frames, 3), "model_s": round(t_model, 3), "forward_s": round(t_forward, 3),
                        "forward_frames_per_s": round((n_train + n_test) * k / max(t_forward, 1e-9), 2)},
        }
        result = dict(found)
        for i, layer in enumerate(missing):
            sub = (scaled(progress, 0.85 + 0.15 * i / len(missing), 0.85 + 0.15 * (i + 1) / len(missing))
                   if cfg.reduction == "pca" else None)
            result[layer] = jobs[layer].finish(dev, sub, common)
            del jobs[layer]
        report(progress, 1.0, f"done in {time.perf_counter() - t_start:.1f} s")
        return {layer: result[layer] for layer in layers}
    except BaseException as exc:
        for job in jobs.values():
            job.abort(exc)
        raise
