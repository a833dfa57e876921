"""Feature extraction: images -> backbone layers -> reduction -> cached feature entries.

``extract_features(train_images, test_images, config)`` returns one
:class:`FeatureEntry` per layer: a folder ``<cache>/features/<key>/`` with
``train.npy`` ``(n_train, d)`` float32, ``test.npy`` ``(n_test, d)`` float32 and
``meta.json``. The key covers everything that changes the numbers (image lists'
fingerprints, model, weights identity, layer, preprocessing, reduction, precision);
an entry is built in a staging folder and renamed into place when complete, so an
interrupted or failed run leaves none. Entries are reused across runs; a run with
all entries cached loads neither images nor model.

One forward pass serves all requested layers. Images come from the uint8 image cache
(:mod:`core.features.images`); on a GPU the batches go through DataLoader workers into pinned
memory, the model runs channels-last under autocast. PCA is fitted on the training
images only (:mod:`core.features.reduction`), then applied to train and test.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from core.util import paths
from core.util.atomicdir import clean_stale, set_aside, staging_dir
from core.util.fsaccess import check_free, disk_full_error, is_disk_full
from core.features.backbones import check_layers, check_model, feature_extractor, load_backbone, resolve_weights
from core.util.errors import UserError
from core.util.fileio import write_json
from core.features.images import (
    ImageCache, build_image_cache, fingerprint_images, max_image_pixels, preprocessing_spec,
)
from core.util.npystream import NpyReader, NpyWriter, npy_complete
from core.util.progress import Progress, report, scaled
from core.features.reduction import (
    DEFAULT_MEMORY_BUDGET_MB, MB, ColumnSpill, check_n_components, check_poolable, fit_pca, oversampling,
    plan_blocks, pool_features,
)

FEATURES_VERSION = 1
REDUCTIONS = ("pca", "pool", "none")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class ExtractionConfig:
    """What to extract. ``weights=None`` means the model's default (offline bundle for mobilenet_v2)."""

    model: str = "mobilenet_v2"
    weights: Optional[str] = None
    layers: list[str] = field(default_factory=list)
    resolution: int = 224
    reduction: str = "pca"  # "pca" | "pool" | "none"
    n_components: int = 100  # pca
    pool_size: int = 2  # pool: k x k per channel
    batch_size: Optional[int] = None  # None: from free memory
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB  # PCA working memory (and batch sizing on CPU)
    seed: int = 0
    pca_solver: str = "auto"  # "auto" | "randomized" | "exact"
    power_iterations: int = 1
    oversample: Optional[int] = None  # None: max(10, n_components // 10)
    precision: str = "auto"  # "auto" (bf16/fp16 autocast on GPU, fp32 on CPU) | "fp32" | "bf16" | "fp16"
    num_workers: Optional[int] = None
    channels_last: Optional[bool] = None  # None: on for convolutional models

    def validated(self) -> "ExtractionConfig":
        model = check_model(self.model)
        if isinstance(self.layers, str):
            layers = [self.layers]
        else:
            layers = list(self.layers)
        if self.reduction not in REDUCTIONS:
            raise UserError(f"unknown reduction '{self.reduction}'; valid: {', '.join(REDUCTIONS)}")
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision '{self.precision}'; valid: {', '.join(PRECISIONS)}")
        if self.pca_solver not in ("auto", "randomized", "exact"):
            raise UserError(f"unknown PCA solver '{self.pca_solver}'; valid: auto, randomized, exact")
        if self.reduction == "pca" and self.n_components < 1:
            raise UserError(f"--n-components must be at least 1 (got {self.n_components})")
        if self.reduction == "pool" and not 1 <= self.pool_size <= 64:
            raise UserError(f"--pool-size must be between 1 and 64 (got {self.pool_size})")
        if self.batch_size is not None and self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.memory_budget_mb < 64:
            raise UserError(f"--memory-budget-mb must be at least 64 (got {self.memory_budget_mb})")
        if not 16 <= int(self.resolution) <= 4096:
            raise UserError(f"--resolution must be between 16 and 4096 (got {self.resolution})")
        if self.power_iterations < 0 or self.power_iterations > 20:
            raise UserError(f"--power-iterations must be between 0 and 20 (got {self.power_iterations})")
        return replace(self, model=model, layers=layers, resolution=int(self.resolution))

    def reduction_spec(self) -> dict:
        if self.reduction == "pca":
            return {
                "kind": "pca", "n_components": int(self.n_components), "solver": self.pca_solver,
                "power_iterations": int(self.power_iterations),
                "oversample": int(self.oversample if self.oversample is not None else oversampling(self.n_components)),
                "seed": int(self.seed), "fit_on": "train",
            }
        if self.reduction == "pool":
            return {"kind": "pool", "pool_size": int(self.pool_size), "op": "adaptive_avg_pool2d"}
        return {"kind": "none"}


@dataclass
class FeatureEntry:
    """One cached layer: ``train.npy``, ``test.npy``, ``meta.json`` in ``path``."""

    path: Path
    layer: str
    meta: dict

    @property
    def train_file(self) -> Path:
        return self.path / "train.npy"

    @property
    def test_file(self) -> Path:
        return self.path / "test.npy"

    def load(self, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
        mode = "r" if mmap else None
        return np.load(self.train_file, mmap_mode=mode), np.load(self.test_file, mmap_mode=mode)

    @classmethod
    def open(cls, path: str | os.PathLike) -> "FeatureEntry":
        path = Path(path)
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"{path}: not a feature entry (meta.json unreadable: {exc})") from None
        for name in ("train.npy", "test.npy"):
            if not (path / name).is_file():
                raise UserError(f"{path}: not a feature entry ({name} missing)")
        return cls(path, meta.get("layer", ""), meta)


def entry_intact(path: Path, n_train: int, n_test: int) -> bool:
    """Whether the feature entry at ``path`` is whole: ``meta.json`` readable, ``train.npy`` / ``test.npy``
    complete float32 arrays of ``n_train`` / ``n_test`` rows and the entry's ``n_components`` columns."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        k = int(meta["n_components"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return (npy_complete(path / "train.npy", (n_train, k), np.float32)
            and npy_complete(path / "test.npy", (n_test, k), np.float32))


# --------------------------------------------------------------------------- keys


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "_", text).strip("_")[:60] or "x"


def resolve_precision(precision: str, device) -> str:
    import torch

    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise UserError(f"--precision {precision} is for GPUs; on CPU extraction runs in fp32")
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


def entry_key(cfg: ExtractionConfig, weights_info, layer: str, fp_train: str, fp_test: str, precision: str,
              n_train: int, n_test: int) -> tuple[str, dict]:
    """``(folder name, key dict)`` of the entry for ``layer``."""
    key = {
        "version": FEATURES_VERSION,
        "dataset": {"train": fp_train, "test": fp_test, "n_train": n_train, "n_test": n_test},
        "model": cfg.model,
        "weights": weights_info.identity + (f":seed={int(cfg.seed)}" if weights_info.is_random else ""),
        "layer": layer,
        "preprocessing": {**preprocessing_spec(cfg.resolution), "mean": list(weights_info.mean),
                          "std": list(weights_info.std)},
        "reduction": cfg.reduction_spec(),
        "precision": precision,
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    wtag = {"offline": "imagenet_offline", "random": "RANDOM", "file": "file"}.get(
        weights_info.kind, weights_info.spec)
    red = cfg.reduction_spec()
    rtag = {"pca": f"pca{red.get('n_components')}", "pool": f"pool{red.get('pool_size')}", "none": "raw"}[red["kind"]]
    name = f"{slug(cfg.model)}-{slug(wtag)}-{slug(layer)}-{rtag}-{digest[:16]}"
    key["digest"] = digest
    return name, key


def features_root(cache_dir: str | os.PathLike | None = None) -> Path:
    return (Path(cache_dir) if cache_dir is not None else paths.cache_dir()) / "features"


def list_entries(cache_dir: str | os.PathLike | None = None) -> list[FeatureEntry]:
    """All published feature entries, newest first."""
    root = features_root(cache_dir)
    out = []
    for p in sorted(root.glob("*/meta.json")) if root.is_dir() else []:
        try:
            out.append(FeatureEntry.open(p.parent))
        except UserError:
            continue
    return sorted(out, key=lambda e: e.meta.get("created", ""), reverse=True)


# --------------------------------------------------------------------------- device and batches


def pick_device(device=None):
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{device}' asked for, but no CUDA GPU is available here (use --device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise UserError(f"unsupported device '{device}' (cpu or cuda)")
    return dev


def _mem_available_bytes() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def release_memory() -> None:
    """Give freed heap back to the OS (glibc keeps it otherwise), so the next stage starts lean."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def is_convnet(model: str) -> bool:
    return not model.startswith(("vit_", "swin", "maxvit"))


class Normalizer:
    """uint8 NHWC batch -> normalised float NCHW (channels-last strides) on the device."""

    def __init__(self, mean, std, device, channels_last: bool):
        import torch

        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.scale = 1.0 / (255.0 * std_t)
        self.neg_shift = -mean_t / std_t
        self.device = device
        self.channels_last = channels_last

    def __call__(self, batch):
        import torch

        if batch.dtype != torch.uint8:  # already normalised (CPU: by the loader's worker)
            return batch
        x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).to(torch.float32)
        x = torch.addcmul(self.neg_shift, x, self.scale)  # NHWC storage == channels-last NCHW
        return x if self.channels_last else x.contiguous()


class _CacheBatches:
    """A torch Dataset over an image cache: item i is batch i.

    Yields ``(b, R, R, 3)`` uint8 (normalised on the device: GPU), or, given a CPU
    ``normalizer``, the normalised float batch, so a CPU worker process does that work
    while the main process runs the forward pass.
    """

    def __init__(self, cache: ImageCache, batch_size: int, normalizer: "Normalizer | None" = None):
        self.file, self.n, self.bs = cache.file, cache.n, batch_size
        self.normalizer = normalizer
        self._reader: NpyReader | None = None

    def __len__(self) -> int:
        return (self.n + self.bs - 1) // self.bs

    def __getitem__(self, i: int):
        import torch

        if self._reader is None:  # opened lazily: one descriptor per worker process
            self._reader = NpyReader(self.file)
        batch = torch.from_numpy(self._reader.read(i * self.bs, (i + 1) * self.bs))
        return batch if self.normalizer is None else self.normalizer(batch)

    def __getstate__(self):
        return {**self.__dict__, "_reader": None}


def batch_loader(cache: ImageCache, batch_size: int, device, num_workers: Optional[int], normalizer: "Normalizer"):
    """GPU: workers read uint8 batches into pinned memory. CPU: read and normalise in line by default
    (the forward pass already keeps every core busy; a worker only competes with it), or in
    ``num_workers`` worker processes if asked."""
    from torch.utils.data import DataLoader

    cuda = device.type == "cuda"
    if num_workers is None:
        num_workers = min(4, os.cpu_count() or 1) if cuda else 0
    return DataLoader(_CacheBatches(cache, batch_size, None if cuda else normalizer), batch_size=None,
                      shuffle=False, num_workers=num_workers, pin_memory=cuda,
                      prefetch_factor=2 if num_workers else None)


def autocast(device, precision: str):
    import contextlib

    import torch

    if device.type == "cuda" and precision in ("bf16", "fp16"):
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
    return contextlib.nullcontext()


def _probe(extractor, layers, resolution, mean, std, device, channels_last, precision):
    """Per-layer output shapes and a per-image activation memory estimate (bytes)."""
    import torch

    sizes = []

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            sizes.append(out.numel())

    handles = [m.register_forward_hook(hook) for m in extractor.modules() if not list(m.children())]
    norm = Normalizer(mean, std, device, channels_last)
    x = norm(torch.zeros(2, resolution, resolution, 3, dtype=torch.uint8))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    with torch.inference_mode(), autocast(device, precision):
        out = extractor(x)
    for h in handles:
        h.remove()
    shapes = {layer: tuple(out[layer].shape[1:]) for layer in layers}
    kept = sum(int(np.prod(s)) for s in shapes.values())
    act = max(sizes) // 2 if sizes else kept
    per_image = 4 * (3 * act + 2 * kept + 3 * resolution * resolution)
    if device.type == "cuda":
        per_image = max(per_image, (torch.cuda.max_memory_allocated(device) - base) // 2)
    return shapes, per_image


def auto_batch_size(per_image_bytes: int, device, memory_budget_mb: float) -> int:
    """Batch size from free memory: 60% of free GPU memory, or a share of the budget/free RAM on CPU."""
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        bs, cap = int(0.6 * free // max(per_image_bytes, 1)), 512
    else:
        avail = min(_mem_available_bytes(), memory_budget_mb * MB)
        bs, cap = int(0.5 * avail // max(per_image_bytes, 1)), 32  # CPU throughput is flat beyond ~32
    bs = max(1, min(cap, bs))
    return bs if bs < 8 else bs - bs % 8


# --------------------------------------------------------------------------- per-layer sinks


class _LayerJob:
    """Receives one layer's activations batch by batch and produces its entry."""

    def __init__(self, layer: str, cfg: ExtractionConfig, name: str, key: dict, root: Path, shape: tuple,
                 n_train: int, n_test: int):
        self.layer, self.cfg, self.name, self.key = layer, cfg, name, key
        self.shape, self.n_train, self.n_test = shape, n_train, n_test
        self.raw_dim = int(np.prod(shape))
        self.final = root / name
        self.done = False
        self.timings: dict[str, float] = {}
        kind = cfg.reduction
        plan = None
        if kind == "pca":  # checks first, before anything is created
            check_n_components(cfg.n_components, n_train, self.raw_dim, layer)
            plan = plan_blocks(n_train, self.raw_dim, cfg.n_components, cfg.memory_budget_mb,
                               cfg.power_iterations)
            dim = self.raw_dim
        elif kind == "pool":
            check_poolable(shape, layer)
            dim = shape[0] * cfg.pool_size ** 2
        else:
            dim = self.raw_dim
        self.need = (n_train + n_test) * dim * 4
        self._need_disk(root, self.need)
        self._ctx = staging_dir(self.final, valid=lambda e: entry_intact(e, n_train, n_test))
        self.tmp = self._ctx.__enter__()
        try:
            if kind == "pca":
                self.spill = ColumnSpill(self.tmp / "spill", plan)
                self.test_raw = NpyWriter(self.tmp / "spill" / "test_raw.npy", (n_test, self.raw_dim))
            else:
                self.train_w = NpyWriter(self.tmp / "train.npy", (n_train, dim))
                self.test_w = NpyWriter(self.tmp / "test.npy", (n_test, dim))
        except BaseException as exc:
            self.abort(exc)
            raise

    def _need_disk(self, root: Path, nbytes: int) -> None:
        check_free(root, nbytes, f"layer {self.layer}'s features",
                   "set BES_CACHE_DIR to a bigger disk, or pool / pick a smaller layer")

    def add(self, out, split: str) -> None:
        cfg = self.cfg
        if cfg.reduction == "pool":
            rows = pool_features(out, cfg.pool_size, self.layer)
        else:
            rows = out.flatten(1)
        rows = rows.float().cpu().numpy()
        if cfg.reduction == "pca":
            (self.spill.write if split == "train" else self.test_raw.write)(rows)
        else:
            (self.train_w if split == "train" else self.test_w).write(rows)

    def finish(self, device, progress: Optional[Progress], common_meta: dict) -> "FeatureEntry":
        import torch

        cfg = self.cfg
        meta: dict = {"layer": self.layer, "layer_shape": list(self.shape), "raw_dim": self.raw_dim}
        if cfg.reduction == "pca":
            self.spill.finish()
            self.test_raw.close(fsync=False)
            t0 = time.perf_counter()
            pca, T = fit_pca(self.spill, cfg.n_components, solver=cfg.pca_solver,
                             power_iterations=cfg.power_iterations, oversample=cfg.oversample, seed=cfg.seed,
                             device=device, memory_budget_mb=cfg.memory_budget_mb, progress=progress)
            self.timings["pca_fit_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            np.save(self.tmp / "train.npy", T.cpu().numpy().astype(np.float32, copy=False))
            del T
            chunk = max(1, int(cfg.memory_budget_mb * MB * 0.25) // (self.raw_dim * 4))
            with NpyReader(self.tmp / "spill" / "test_raw.npy") as r, \
                    NpyWriter(self.tmp / "test.npy", (self.n_test, pca.n_components)) as w:
                for s in range(0, self.n_test, chunk):
                    x = torch.from_numpy(r.read(s, s + chunk))
                    w.write(pca.transform(x).cpu().numpy())
            self.timings["pca_transform_s"] = time.perf_counter() - t0
            self.spill.remove()
            meta.update({
                "n_components": pca.n_components,
                "explained_variance": pca.explained_variance.tolist(),
                "explained_variance_ratio": pca.explained_variance_ratio.tolist(),
                "explained_variance_ratio_total": float(pca.explained_variance_ratio.sum()),
                "total_variance": pca.total_variance,
                "pca": {"solver": pca.solver, **pca.info},
            })
            del pca
            release_memory()
        else:
            self.train_w.close()
            self.test_w.close()
            meta["n_components"] = self.train_w.shape[1]
            meta["explained_variance_ratio_total"] = None
        meta.update(common_meta)
        meta["timings"] = {**common_meta.get("timings", {}), **{k: round(v, 3) for k, v in self.timings.items()}}
        meta["key"] = self.key
        meta["entry"] = self.name
        write_json(self.tmp / "meta.json", meta)
        self._ctx.__exit__(None, None, None)  # publish
        self.done = True
        return FeatureEntry(self.final, self.layer, meta)

    def abort(self, exc: BaseException | None) -> None:
        if self.done:
            return
        for attr in ("spill", "test_raw", "train_w", "test_w"):
            obj = getattr(self, attr, None)
            if obj is not None:
                with contextlib.suppress(OSError):  # a full disk must not fail the cleanup too
                    obj.abort()
        try:
            self._ctx.__exit__(type(exc) if exc else RuntimeError, exc or RuntimeError("aborted"), None)
        except BaseException:
            pass
        self.done = True


# --------------------------------------------------------------------------- main entry point


def _lookup(cfg, info, layers, fp_train, fp_test, precision, n_train, n_test, root):
    names, keys, found = {}, {}, {}
    for layer in layers:
        names[layer], keys[layer] = entry_key(cfg, info, layer, fp_train, fp_test, precision, n_train, n_test)
        entry = root / names[layer]
        if not entry.exists():
            continue
        if entry_intact(entry, n_train, n_test):
            found[layer] = FeatureEntry.open(entry)
        else:  # published entries are whole, so this one was damaged since: rebuild it
            set_aside(entry, "incomplete or unreadable train.npy / test.npy / meta.json")
    return names, keys, found


def find_cached(train_images: Sequence[str | os.PathLike], test_images: Sequence[str | os.PathLike],
                config: ExtractionConfig, *, cache_dir: str | os.PathLike | None = None,
                device=None) -> dict[str, Optional[FeatureEntry]]:
    """Which layers of ``config`` are already in the cache (entry, or None), without loading anything."""
    cfg = config.validated()
    info = resolve_weights(cfg.model, cfg.weights)
    layers = check_layers(cfg.model, cfg.layers, info)
    precision = resolve_precision(cfg.precision, pick_device(device))
    _names, _keys, found = _lookup(cfg, info, layers, fingerprint_images(train_images),
                                   fingerprint_images(test_images), precision, len(train_images),
                                   len(test_images), features_root(cache_dir))
    return {layer: found.get(layer) for layer in layers}


def extract_for_subject(subject, config: ExtractionConfig, **kwargs) -> dict[str, FeatureEntry]:
    """:func:`extract_features` on a dataset subject (anything with ``train_images`` / ``test_images``)."""
    return extract_features(list(subject.train_images), list(subject.test_images), config, **kwargs)


@dataclass
class Stimuli:
    """The training and test stimuli of one extraction, and how to decode them into a pixel cache.

    ``decode(items, fingerprint, progress)`` returns the :class:`~core.features.images.ImageCache` of
    ``items`` with ``frames_per_item`` consecutive rows per item; each layer's activations are
    averaged over an item's rows (a clip's frames) before the reduction.
    """

    kind: str  # "images" | "videos": in messages and metadata
    train: list[Path]
    test: list[Path]
    fingerprint: Callable[[Sequence[Path]], str]
    decode: Callable[[list[Path], str, Optional[Progress]], ImageCache]
    frames_per_item: int = 1
    meta: dict = field(default_factory=dict)  # more entry metadata (frame sampling)


def extract_features(
    train_images: Sequence[str | os.PathLike],
    test_images: Sequence[str | os.PathLike],
    config: ExtractionConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    device=None,
    progress: Optional[Progress] = None,
) -> dict[str, FeatureEntry]:
    """Extract (or reuse) one feature entry per layer of ``config``. See the module docstring."""
    cfg = config.validated()

    def decode(items, fingerprint, sub_progress):
        return build_image_cache(items, cfg.resolution, cache_dir=cache_dir, fingerprint=fingerprint,
                                 num_workers=cfg.num_workers, progress=sub_progress)

    stimuli = Stimuli("images", [Path(p) for p in train_images], [Path(p) for p in test_images],
                      fingerprint_images, decode)
    return run_extraction(stimuli, cfg, cache_dir=cache_dir, device=device, progress=progress)


def run_extraction(
    stimuli: Stimuli,
    config: ExtractionConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    device=None,
    progress: Optional[Progress] = None,
) -> dict[str, FeatureEntry]:
    """The engine behind :func:`extract_features` and the video features: look the entries up; for the
    missing layers load the model, decode the stimuli once, run one forward pass for all layers
    (averaging each item's frames), reduce and publish."""
    import torch

    t_start = time.perf_counter()
    cfg = config.validated()
    max_image_pixels()  # a malformed $BES_MAX_IMAGE_PIXELS stops the run before the model loads
    info = resolve_weights(cfg.model, cfg.weights)
    layers = check_layers(cfg.model, cfg.layers, info)
    kind, k = stimuli.kind, int(stimuli.frames_per_item)
    if len(stimuli.train) < 2:
        raise UserError(f"need at least 2 training {kind} (got {len(stimuli.train)})")
    dev = pick_device(device)
    precision = resolve_precision(cfg.precision, dev)
    root = features_root(cache_dir)
    fp_train, fp_test = stimuli.fingerprint(stimuli.train), stimuli.fingerprint(stimuli.test)
    n_train, n_test = len(stimuli.train), len(stimuli.test)

    names, keys, found = _lookup(cfg, info, layers, fp_train, fp_test, precision, n_train, n_test, root)
    missing = [layer for layer in layers if layer not in found]
    if not missing:
        report(progress, 1.0, "features cached")
        return {layer: found[layer] for layer in layers}
    root.mkdir(parents=True, exist_ok=True)
    clean_stale(root)

    # 1. model first (a failed weights download stops the run before any decoding)
    t0 = time.perf_counter()
    net, info = load_backbone(cfg.model, info, resolution=cfg.resolution, seed=cfg.seed)
    extractor = feature_extractor(net, cfg.model, missing).eval()
    del net
    channels_last = is_convnet(cfg.model) if cfg.channels_last is None else bool(cfg.channels_last)
    extractor = extractor.to(dev)
    if channels_last:
        extractor = extractor.to(memory_format=torch.channels_last)
    shapes, per_image = _probe(extractor, missing, cfg.resolution, info.mean, info.std, dev, channels_last, precision)
    items_per_batch = max(1, (cfg.batch_size or auto_batch_size(per_image, dev, cfg.memory_budget_mb)) // k)
    batch_size = items_per_batch * k  # backbone inputs per forward call
    t_model = time.perf_counter() - t0
    report(progress, 0.02, f"{cfg.model} on {dev.type}, batch {batch_size}" + (f" ({items_per_batch} x {k} frames)"
                                                                               if k > 1 else ""))

    jobs: dict[str, _LayerJob] = {}
    try:
        for layer in missing:
            jobs[layer] = _LayerJob(layer, cfg, names[layer], keys[layer], root, shapes[layer], n_train, n_test)

        # 2. pixels (decoded once per list and resolution)
        t0 = time.perf_counter()
        decode_end = 0.15 if k == 1 else 0.3  # video decoding is the slower part
        caches = {"train": stimuli.decode(stimuli.train, fp_train, scaled(progress, 0.02, 0.9 * decode_end))}
        if n_test:
            caches["test"] = stimuli.decode(stimuli.test, fp_test, scaled(progress, 0.9 * decode_end, decode_end))
        t_decode = time.perf_counter() - t0

        # 3. one forward pass over train then test (all layers at once)
        t0 = time.perf_counter()
        norm = Normalizer(info.mean, info.std, dev, channels_last)
        total_batches = sum(-(-n // items_per_batch) for n in (n_train, n_test))
        fwd_progress = scaled(progress, decode_end, 0.85 if cfg.reduction == "pca" else 0.98)
        done_batches, t_compute = 0, 0.0
        # On a GPU every batch has one shape: cuDNN picks its kernels by timing them once per input shape
        # (benchmark mode), so a short last batch would cost more than the whole pass; it is padded instead.
        cudnn_benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = cudnn_benchmark or dev.type == "cuda"
        with torch.inference_mode():
            for split, cache in caches.items():
                n_split = n_train if split == "train" else n_test
                for i, batch in enumerate(batch_loader(cache, batch_size, dev, cfg.num_workers, norm)):
                    tc = time.perf_counter()
                    n_rows = batch.shape[0]
                    if dev.type == "cuda" and n_rows < batch_size:
                        batch = torch.cat([batch, batch.new_zeros((batch_size - n_rows, *batch.shape[1:]))])
                    with autocast(dev, precision):
                        out = extractor(norm(batch))
                    t_compute += time.perf_counter() - tc  # on a GPU: launch time only (asynchronous)
                    for layer in missing:
                        act = out[layer][:n_rows]
                        if k > 1:
                            act = act.float().reshape(-1, k, *act.shape[1:]).mean(dim=1)
                        jobs[layer].add(act, split)
                    del out
                    done_batches += 1
                    report(fwd_progress, done_batches / total_batches,
                           f"{split}: {min((i + 1) * items_per_batch, n_split)}/{n_split} {kind}")
        torch.backends.cudnn.benchmark = cudnn_benchmark
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t_forward = time.perf_counter() - t0
        del extractor
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        release_memory()

        # 4. reduce and publish, layer by layer
        common = {
            "model": cfg.model,
            "weights": info.to_meta(),
            "weights_label": info.label,
            "random_weights": info.is_random,
            "preprocessing": keys[missing[0]]["preprocessing"],
            **stimuli.meta,
            "reduction": cfg.reduction_spec(),
            "dataset": {
                "kind": kind, "train_fingerprint": fp_train, "test_fingerprint": fp_test,
                "n_train": n_train, "n_test": n_test, "train_dir": str(stimuli.train[0].parent),
                "test_dir": str(stimuli.test[0].parent) if n_test else None,
                "train_names_sha256": hashlib.sha256("\n".join(p.name for p in stimuli.train).encode()).hexdigest(),
            },
            "n_train": n_train,
            "n_test": n_test,
            "device": str(dev),
            "precision": precision,
            "batch_size": batch_size,
            "channels_last": channels_last,
            "layers_in_same_pass": missing,
            "versions": {"torch": torch.__version__, "torchvision": __import__("torchvision").__version__,
                         "numpy": np.__version__, "features": FEATURES_VERSION},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "timings": {"decode_s": round(t_decode, 3), "model_s": round(t_model, 3),
                        "forward_s": round(t_forward, 3),
                        "forward_images_per_s": round((n_train + n_test) * k / max(t_forward, 1e-9), 2),
                        "forward_compute_s": round(t_compute, 3) if dev.type == "cpu" else None},
        }
        result = dict(found)
        for i, layer in enumerate(missing):
            sub = scaled(progress, 0.85 + 0.15 * i / len(missing), 0.85 + 0.15 * (i + 1) / len(missing)) \
                if cfg.reduction == "pca" else None
            result[layer] = jobs[layer].finish(dev, sub, common)
            del jobs[layer]
        report(progress, 1.0, f"done in {time.perf_counter() - t_start:.1f} s")
        return {layer: result[layer] for layer in layers}
    except BaseException as exc:
        for job in jobs.values():
            job.abort(exc)
        if isinstance(exc, OSError) and is_disk_full(exc, root):
            need = sum(job.need for job in jobs.values())
            raise disk_full_error(root, need or None, "the feature cache", "set BES_CACHE_DIR to a bigger disk") \
                from None
        raise
