"""Phase 1's trunk activations: computed once per (image list, trunk, layers), kept on disk as fp16.

An entry ``<cache>/activations/<key>/`` holds one ``<i>.npy`` per tapped layer, shape
``(n_images, C, S)`` float16 (``S`` = spatial positions / patch tokens; 1 for a vector output),
and ``meta.json``. The key covers the image list's fingerprint, the trunk and its weights identity,
the layers and the preprocessing (as feature entries do, :mod:`core.features.extraction`); the
pixels come from the decoded-image cache (:mod:`core.features.images`); entries are built in a
staging folder and published by a rename, so a killed build leaves nothing. Training then reads
batches from the memory-mapped arrays and never reruns the trunk.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from core.features.backbones import WeightsInfo
from core.features.extraction import (
    autocast, batch_loader, is_convnet, Normalizer, slug, auto_batch_size, features_root, resolve_precision,
)
from core.features.images import build_image_cache, fingerprint_images, preprocessing_spec
from core.util.atomicdir import clean_stale, staging_dir
from core.util.errors import UserError
from core.util.fileio import write_json
from core.util.progress import Progress, report, scaled

ACTIVATIONS_VERSION = 1


@dataclass
class Activations:
    """A published entry: per layer a memory-mapped ``(n, C, S)`` float16 array."""

    path: Path
    layers: list[str]
    arrays: list[np.ndarray]

    @property
    def n(self) -> int:
        return int(self.arrays[0].shape[0])

    def batch(self, rows: np.ndarray) -> list[np.ndarray]:
        """The rows ``rows`` (sorted indices read fastest) of every layer, as float32."""
        return [np.asarray(a[rows], dtype=np.float32) for a in self.arrays]


def flatten_map(act):
    """A layer output as ``(B, C, S)``: spatial maps flattened, vectors as ``S = 1``."""
    if act.ndim == 2:
        return act[:, :, None]
    return act.flatten(2)


def activation_key(fingerprint: str, n: int, model: str, info: WeightsInfo, layers: Sequence[str], resolution: int,
                   precision: str, seed: int) -> tuple[str, dict]:
    key = {
        "version": ACTIVATIONS_VERSION, "images": fingerprint, "n": n, "model": model,
        "weights": info.identity + (f":seed={int(seed)}" if info.is_random else ""), "layers": list(layers),
        "preprocessing": {**preprocessing_spec(resolution), "mean": list(info.mean), "std": list(info.std)},
        "precision": precision, "storage": "float16",
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return f"{slug(model)}-{'RANDOM' if info.is_random else slug(info.kind)}-{n}-{digest[:16]}", key


def activations_root(cache_dir: str | os.PathLike | None = None) -> Path:
    return features_root(cache_dir).parent / "activations"


def _open(path: Path, layers: Sequence[str]) -> Activations | None:
    try:
        meta = json.loads((path / "meta.json").read_text())
        arrays = [np.load(path / f"{i}.npy", mmap_mode="r") for i in range(len(layers))]
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    if meta.get("layers") != list(layers) or len({a.shape[0] for a in arrays}) != 1:
        return None
    return Activations(path, list(layers), arrays)


def cached_activations(images: Sequence[str | os.PathLike], trunk, info: WeightsInfo, layers: Sequence[str], *,
                       resolution: int, device, seed: int = 0, cache_dir: str | os.PathLike | None = None,
                       batch_size: int | None = None, progress: Optional[Progress] = None) -> Activations:
    """The activation entry of ``images`` (built with ``trunk()`` -> ``(extractor, shapes)`` if missing)."""
    import torch

    images = [Path(p) for p in images]
    fingerprint = fingerprint_images(images)
    precision = resolve_precision("auto", device)
    name, key = activation_key(fingerprint, len(images), info.model, info, layers, resolution, precision, seed)
    root = activations_root(cache_dir)
    found = _open(root / name, layers) if (root / name / "meta.json").is_file() else None
    if found is not None:
        report(progress, 1.0, "activations cached")
        return found
    root.mkdir(parents=True, exist_ok=True)
    clean_stale(root)
    t0 = time.perf_counter()
    pixels = build_image_cache(images, resolution, cache_dir=cache_dir, fingerprint=fingerprint,
                               progress=scaled(progress, 0.0, 0.2))
    extractor = trunk()
    channels_last = is_convnet(info.model)
    norm = Normalizer(info.mean, info.std, device, channels_last)
    with torch.inference_mode(), autocast(device, precision):
        probe = extractor(norm(torch.zeros(2, resolution, resolution, 3, dtype=torch.uint8)))
    shapes = [tuple(flatten_map(probe[layer]).shape[1:]) for layer in layers]
    per_image = 4 * 4 * sum(int(np.prod(s)) for s in shapes)
    bs = batch_size or auto_batch_size(per_image, device, 2048)
    with staging_dir(root / name) as tmp:
        outs = [np.lib.format.open_memmap(tmp / f"{i}.npy", mode="w+", dtype=np.float16, shape=(len(images), *s))
                for i, s in enumerate(shapes)]
        done = 0
        with torch.inference_mode():
            for batch in batch_loader(pixels, bs, device, None, norm):
                with autocast(device, precision):
                    out = extractor(norm(batch))
                n = out[layers[0]].shape[0]
                for i, layer in enumerate(layers):
                    outs[i][done:done + n] = flatten_map(out[layer]).float().clamp(-65504, 65504).cpu().numpy()
                done += n
                report(scaled(progress, 0.2, 1.0), done / len(images), f"trunk activations {done}/{len(images)}")
        for a in outs:
            a.flush()
        del outs
        write_json(tmp / "meta.json", {**key, "layers": list(layers), "shapes": [list(s) for s in shapes],
                                       "seconds": round(time.perf_counter() - t0, 3)})
    found = _open(root / name, layers)
    if found is None:
        raise UserError(f"{root / name}: the activation cache entry could not be read back")
    return found
