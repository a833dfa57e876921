"""One-shot GPU benchmark (issue #16), self-contained: synthetic data, random weights, about 3 minutes on one H200.

    python benchmarks/gpu_oneshot.py            # all four; prints a table (and JSON)
    python benchmarks/gpu_oneshot.py --only phase1 phase2

1. phase1     A phase-1 epoch of the multi-subject encoder over 10,000 cached images (3 subjects,
              MobileNetV2 ``features.6 / .10 / .17`` activation shapes at 224 px, fp16 cache resident on
              the GPU, 20,000 vertices each, ``TrainConfig``'s defaults): ``run_epoch`` and the validation
              pass. Target < 10 s.
2. phase2     Phase-2 images/s (timm ``vit_base_patch16_224``, last 4 blocks unfrozen, readouts on blocks
              5/8/11, the trunk under bf16 autocast, pixels gathered on the GPU) vs the trunk's bare training
              throughput (the same unfrozen blocks, loss on the final features), at batch 32 (the default)
              and 64. Target >= 80%.
3. ridge      Ridge at NSD scale (9,841 images x 39,548 vertices x 1,000 features, 5-fold CV over 10
              alphas, per-vertex alpha) with the ``torch_cuda`` backend (``benchmarks/bench_ridge.py``).
4. extract    ``extract_features`` (decoded-image cache -> MobileNetV2 -> 3 layers pooled) on 4,000
              synthetic images vs a bare forward pass of the same model at the same batch size, and its
              input pipeline alone.

Measured on one H200 (2026-11-30): phase 1 1.25 s an epoch; phase 2 79% at batch 32, 85-94% at 64;
ridge 1.8 s; extraction's forward phase 7,100 images/s (input pipeline 11,500, bare forward 29,500).

Without CUDA it stops at once with one line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

SHAPES_224 = [(32, 784), (64, 196), (320, 49)]  # MobileNetV2 features.6 / .10 / .17 at 224 px: (C, S)


def _read_loss(_batch: int, _loss: float) -> None:
    """``train`` reports each batch's loss (read off the GPU) to the progress bar; the benchmark reads it too."""


def _sync():
    import torch

    torch.cuda.synchronize()


def bench_phase1(device, n_images: int = 10_000, n_subjects: int = 3, n_vertices: int = 20_000) -> dict:
    """``train``'s phase-1 epoch with its defaults (:class:`TrainConfig`): ``run_epoch`` over the fit rows
    (90%), then the validation pass over the held-out 10%, so the epoch touches all ``n_images``."""
    import torch

    from core.encoding.splits import holdout_split
    from core.training.activations import Activations
    from core.training.model import GroupEncoder
    from core.training.trainer import validate, epoch_batches, on_device, run_epoch, Source, Subject, TrainConfig

    cfg = TrainConfig(data=".", subjects=[1])  # the defaults only; nothing is read
    rng = np.random.default_rng(0)
    per = n_images // n_subjects
    acts, targets, subjects, index = [], [], [], []
    group = 2 * n_vertices
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(n_subjects):
            arrays = []
            for i, (c, sp) in enumerate(SHAPES_224):
                path = Path(tmp) / f"{s}_{i}.npy"
                a = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(per, c, sp))
                a[:] = rng.standard_normal((per, c, sp), dtype=np.float32).astype(np.float16)
                a.flush()
                arrays.append(np.load(path, mmap_mode="r"))
            acts.append(Activations(Path(tmp), ["a", "b", "c"], arrays))
            responses = rng.standard_normal((per, n_vertices), dtype=np.float32)
            targets.append(torch.from_numpy(responses).to(device))
            idx = np.sort(rng.choice(group, n_vertices, replace=False))
            index.append(idx)
            fit, val = holdout_split(per, cfg.val_fraction, cfg.seed)
            subjects.append(Subject(s, f"s{s}", responses, None, None, n_vertices // 2, fit, val, idx, None))
        sources = [Source(a, device, r) for a, r in zip(acts, on_device([a.arrays for a in acts], device))]
        embedding = np.linalg.qr(rng.standard_normal((group, cfg.embedding_dim)).astype(np.float32))[0].T
        model = GroupEncoder(SHAPES_224, embedding, index, latents=cfg.latents, subject_rank=cfg.subject_rank,
                             dropout=cfg.dropout, max_positions=cfg.max_positions).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        epochs, steps = [], []
        for epoch in range(3):  # the first one warms up kernels and the allocator
            batches = epoch_batches(subjects, cfg.batch_size, cfg.seed, 1, epoch)
            _sync()
            t0 = time.perf_counter()
            run_epoch(model, opt, scaler, sources, targets, batches, device, _read_loss)
            _sync()
            t1 = time.perf_counter()
            validate(model, sources, subjects, cfg.batch_size, device)
            _sync()
            steps.append(t1 - t0)
            epochs.append(time.perf_counter() - t0)
    return {"images": per * n_subjects, "batch_size": cfg.batch_size, "resident": sources[0].resident is not None,
            "epoch_s": min(epochs[1:]), "train_steps_s": min(steps[1:]), "first_epoch_s": epochs[0],
            "target_s": 10.0}


def bench_phase2(device, n_images: int = 4096, batch_sizes: tuple[int, ...] = (32, 64), n_vertices: int = 20_000,
                 rounds: int = 3) -> dict:
    """``train``'s phase-2 step (``run_epoch``, the trunk under bf16 autocast, batches read through ``TrunkSource``
    from a memory-mapped uint8 pixel cache) against the bare trunk's training step on a batch already on
    the GPU (the same unfrozen blocks, loss on the final features), images/s at each batch size."""
    import torch

    from core.features.backbones import feature_extractor, load_backbone, trunk_blocks
    from core.features.extraction import Normalizer, resolve_precision
    from core.training.model import GroupEncoder
    from core.training.trainer import TrunkSource, on_device, run_epoch, TrainConfig

    cfg = TrainConfig(data=".", subjects=[1])
    model_name, layers, n_blocks = "timm:vit_base_patch16_224", ["blocks.5", "blocks.8", "blocks.11"], 4
    precision = resolve_precision("auto", device)
    net, info = load_backbone(model_name, "random", resolution=224)
    blocks = trunk_blocks(net)[-n_blocks:]
    for name, p in net.named_parameters():
        p.requires_grad_(any(name.startswith(b + ".") for b in blocks))
    net = net.to(device).eval()  # as train(): the trunk's normalisation statistics stay frozen
    ex = feature_extractor(net, model_name, layers).to(device)
    rng = np.random.default_rng(0)
    result = {"trunk": model_name, "unfrozen_blocks": n_blocks, "precision": precision, "target_ratio": 0.8}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pixels.npy"
        px = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n_images, 224, 224, 3))
        px[:] = rng.integers(0, 256, px.shape, dtype=np.uint8)
        px.flush()
        pixels = np.load(path, mmap_mode="r")
        source = TrunkSource(ex, layers, pixels, Normalizer(info.mean, info.std, device, False), device, precision,
                             on_device([[pixels]], device)[0])
        with torch.no_grad():
            shapes = [tuple(a.shape[1:]) for a in source(np.arange(2))]
        idx = np.arange(n_vertices)
        embedding = np.linalg.qr(rng.standard_normal((n_vertices, cfg.embedding_dim)).astype(np.float32))[0].T
        head = GroupEncoder(shapes, embedding, [idx], latents=cfg.latents, dropout=cfg.dropout,
                            max_positions=cfg.max_positions).to(device)
        targets = [torch.randn(n_images, n_vertices, device=device)]
        trunk_params = [p for p in net.parameters() if p.requires_grad]
        opt_full = torch.optim.AdamW([{"params": list(head.parameters()), "weight_decay": cfg.weight_decay},
                                      {"params": trunk_params, "weight_decay": 0.01}], lr=cfg.finetune_lr)
        opt_bare = torch.optim.AdamW(trunk_params, lr=cfg.finetune_lr, weight_decay=0.01)
        scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        for batch in batch_sizes:
            x = torch.randn(batch, 3, 224, 224, device=device)

            def bare_step():
                with torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16):
                    loss = net.forward_features(x).float().pow(2).mean()
                opt_bare.zero_grad(set_to_none=True)
                loss.backward()
                opt_bare.step()

            order = rng.permutation(n_images)
            batches = [(0, np.sort(order[i:i + batch])) for i in range(0, n_images - batch + 1, batch)]
            run_epoch(head, opt_full, scaler, [source], targets, batches[:5], device, _read_loss)
            for _ in range(5):  # warm-up
                bare_step()
            encoder = bare = 0.0
            for _ in range(rounds):  # alternated, the best round of each: clocks and neighbours drift
                _sync()
                t0 = time.perf_counter()
                run_epoch(head, opt_full, scaler, [source], targets, batches, device, _read_loss)
                _sync()
                encoder = max(encoder, len(batches) * batch / (time.perf_counter() - t0))
                t0 = time.perf_counter()
                for _ in batches:
                    bare_step()
                _sync()
                bare = max(bare, len(batches) * batch / (time.perf_counter() - t0))
            result[f"batch_{batch}"] = {"encoder_images_per_s": encoder, "bare_images_per_s": bare,
                                        "ratio": encoder / bare}
    default = result[f"batch_{batch_sizes[0]}"]
    result.update(batch_size=batch_sizes[0], **default)
    return result


def bench_ridge() -> dict:
    from bench_ridge import FULL, child, generate

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate(Path(tmp), **FULL)
        gen = time.perf_counter() - t0
        res = child(Path(tmp), "torch_cuda", 5, 10, 0)
    return {"shape": FULL, "generate_s": gen, "fit_s": res["seconds"], "median_val_r": res["median_val_r"]}


def _write_pngs(folder: Path, n: int, side: int = 425) -> list[Path]:
    """``n`` distinct synthetic PNGs (written by a thread pool: the encoder releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    base = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    paths = [folder / f"{i:05d}.png" for i in range(n)]

    def write(i: int) -> None:
        Image.fromarray(np.roll(base, i, axis=0)).resize((side, side)).save(paths[i], compress_level=1)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(write, range(n)))
    return paths


def bench_extract(device, n_images: int = 4000, batch: int = 256) -> dict:
    """``extract_features``'s forward phase (reading the decoded-image cache, the forward pass, pooling, the
    writes) against the bare forward pass of the same model at the same batch size, and its input
    pipeline alone (``batch_loader`` to normalised batches on the GPU)."""
    import torch

    from core.features.backbones import feature_extractor, load_backbone, resolve_weights
    from core.features.extraction import batch_loader, ExtractionConfig, extract_features, Normalizer
    from core.features.images import build_image_cache

    layers = ["features.6", "features.10", "features.17"]
    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "img"
        img.mkdir()
        paths = _write_pngs(img, n_images)
        cfg = ExtractionConfig(model="mobilenet_v2", weights="imagenet-offline", layers=layers, reduction="pool",
                               pool_size=2, batch_size=batch)
        extract_features(paths[:n_images // 2], paths[n_images // 2:n_images // 2 + 10], cfg, cache_dir=Path(tmp) / "warm", device=device)
        entries = extract_features(paths, paths[:10], cfg, cache_dir=Path(tmp) / "cache", device=device)
        t = entries[layers[0]].meta["timings"]
        info = resolve_weights("mobilenet_v2", "imagenet-offline")
        norm = Normalizer(info.mean, info.std, device, True)
        cache = build_image_cache(paths, 224, cache_dir=Path(tmp) / "cache")
        _sync()
        t0 = time.perf_counter()
        for b in batch_loader(cache, batch, device, None, norm):
            norm(b)
        _sync()
        loader = n_images / (time.perf_counter() - t0)
        net, _ = load_backbone("mobilenet_v2", info)
        ex = feature_extractor(net, "mobilenet_v2", layers).eval().to(device).to(memory_format=torch.channels_last)
        x = torch.randn(batch, 3, 224, 224, device=device).to(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            for _ in range(3):
                ex(x)
            _sync()
            t0 = time.perf_counter()
            n = 0
            while n < n_images:
                ex(x)
                n += batch
            _sync()
        bare = n / (time.perf_counter() - t0)
    return {"images": n_images, "extract_forward_images_per_s": t["forward_images_per_s"],
            "decode_s": t["decode_s"], "loader_images_per_s": loader, "bare_forward_images_per_s": bare,
            "ratio": t["forward_images_per_s"] / bare}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=("phase1", "phase2", "ridge", "extract"),
                   default=["phase1", "phase2", "ridge", "extract"])
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("error: gpu_oneshot.py needs a CUDA GPU (torch.cuda.is_available() is False here)", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}", flush=True)
    benches = {"phase1": lambda: bench_phase1(device), "phase2": lambda: bench_phase2(device),
               "ridge": bench_ridge, "extract": lambda: bench_extract(device)}
    results = {}
    t_all = time.perf_counter()
    for name in args.only:
        t0 = time.perf_counter()
        try:
            results[name] = benches[name]()
        except Exception as exc:  # one failing bench still leaves the others' numbers
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["bench_s"] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {json.dumps(results[name])}", flush=True)
    rows = []
    if "phase1" in results and "epoch_s" in results["phase1"]:
        r = results["phase1"]
        rows.append(("phase-1 epoch, 10k cached images", f"{r['epoch_s']:.2f} s", "< 10 s", r["epoch_s"] < 10))
    if "phase2" in results and "ratio" in results["phase2"]:
        r = results["phase2"]
        rows.append(("phase-2 images/s vs bare trunk training",
                     f"{r['encoder_images_per_s']:.0f} / {r['bare_images_per_s']:.0f} = {100 * r['ratio']:.0f}%",
                     ">= 80%", r["ratio"] >= 0.8))
    if "ridge" in results and "fit_s" in results["ridge"]:
        r = results["ridge"]
        rows.append(("ridge at NSD scale (torch_cuda)", f"{r['fit_s']:.1f} s (median r {r['median_val_r']:.3f})",
                     "-", None))
    if "extract" in results and "ratio" in results["extract"]:
        r = results["extract"]
        rows.append(("extraction vs bare forward (images/s)",
                     f"{r['extract_forward_images_per_s']:.0f} / {r['bare_forward_images_per_s']:.0f} = "
                     f"{100 * r['ratio']:.0f}%", "-", None))
    print(f"\n{'benchmark':42s} {'measured':40s} {'target':8s} ok")
    for name, value, target, ok in rows:
        print(f"{name:42s} {value:40s} {target:8s} {'' if ok is None else ('yes' if ok else 'NO')}")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:42s} FAILED: {r['error']}")
    print(f"total {time.perf_counter() - t_all:.0f} s")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
