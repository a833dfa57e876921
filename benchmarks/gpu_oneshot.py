"""One-shot GPU benchmark (issue #16), self-contained: synthetic data, random weights, < 8 minutes on one H200.

    python benchmarks/gpu_oneshot.py            # all four; prints a table (and JSON)
    python benchmarks/gpu_oneshot.py --only phase1 phase2

1. phase1     A phase-1 epoch of the multi-subject encoder over 10,000 cached images (3 subjects,
              MobileNetV2 ``features.6 / .10 / .17`` activation shapes at 224 px, fp16 cache resident on
              the GPU, 20,000 vertices each): ``core.training.trainer.run_epoch``. Target < 10 s.
2. phase2     Phase-2 images/s (timm ``vit_base_patch16_224``, last 4 blocks unfrozen, readouts on blocks
              5/8/11, bf16 autocast) vs the trunk's bare training throughput (the same unfrozen blocks,
              loss on the final features). Target >= 80%.
3. ridge      Ridge at NSD scale (9,841 images x 39,548 vertices x 1,000 features, 5-fold CV over 10
              alphas, per-vertex alpha) with the ``torch_cuda`` backend (``benchmarks/bench_ridge.py``).
4. extract    ``extract_features`` (decoded-image cache -> MobileNetV2 -> 3 layers pooled) on 4,000
              synthetic images vs a bare forward pass of the same model at the same batch size.

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


def _sync():
    import torch

    torch.cuda.synchronize()


def bench_phase1(device, n_images: int = 10_000, n_subjects: int = 3, n_vertices: int = 20_000) -> dict:
    import torch

    from core.training.activations import Activations
    from core.training.model import GroupEncoder
    from core.training.trainer import epoch_batches, Source, Subject, run_epoch

    rng = np.random.default_rng(0)
    per = n_images // n_subjects
    sources, targets, subjects, index = [], [], [], []
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
            sources.append(Source(Activations(Path(tmp), ["a", "b", "c"], arrays), device))
            targets.append(torch.randn(per, n_vertices, device=device))
            idx = np.sort(rng.choice(group, n_vertices, replace=False))
            index.append(idx)
            subjects.append(Subject(s, f"s{s}", None, None, None, 0, np.arange(per), np.arange(0), idx))
        embedding = np.linalg.qr(rng.standard_normal((group, 512)).astype(np.float32))[0].T
        model = GroupEncoder(SHAPES_224, embedding, index).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.5)
        scaler = torch.amp.GradScaler("cuda", enabled=False)
        times = []
        for epoch in range(3):  # the first one warms up kernels and the allocator
            batches = epoch_batches(subjects, 64, 0, 1, epoch)
            _sync()
            t0 = time.perf_counter()
            run_epoch(model, opt, scaler, sources, targets, batches, device, "fp32")
            _sync()
            times.append(time.perf_counter() - t0)
    return {"images": per * n_subjects, "epoch_s": min(times[1:]), "first_epoch_s": times[0], "target_s": 10.0}


def bench_phase2(device, n_steps: int = 30, batch: int = 64) -> dict:
    import torch

    from core.features.backbones import feature_extractor, load_backbone, trunk_blocks
    from core.training.model import GroupEncoder

    model_name, layers, n_blocks = "timm:vit_base_patch16_224", ["blocks.5", "blocks.8", "blocks.11"], 4
    net, _ = load_backbone(model_name, "random", resolution=224)
    blocks = trunk_blocks(net)[-n_blocks:]
    for name, p in net.named_parameters():
        p.requires_grad_(any(name.startswith(b + ".") for b in blocks))
    net = net.to(device).eval()
    ex = feature_extractor(net, model_name, layers).to(device)
    x = torch.randn(batch, 3, 224, 224, device=device)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        shapes = [tuple(v.flatten(2).shape[1:]) for v in ex(x).values()]
    rng = np.random.default_rng(0)
    idx = np.arange(20_000)
    head = GroupEncoder(shapes, np.linalg.qr(rng.standard_normal((20_000, 512)).astype(np.float32))[0].T,
                        [idx]).to(device)
    y = torch.randn(batch, 20_000, device=device)
    trunk_params = [p for p in net.parameters() if p.requires_grad]
    opt_full = torch.optim.AdamW([*head.parameters(), *trunk_params], lr=1e-5)
    opt_bare = torch.optim.AdamW(trunk_params, lr=1e-5)

    def full_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            acts = [a.flatten(2).float() for a in ex(x).values()]
            pred = head(acts, 0)
        loss = torch.nn.functional.mse_loss(pred.float(), y)
        opt_full.zero_grad(set_to_none=True)
        loss.backward()
        opt_full.step()

    def bare_step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = net.forward_features(x).float().pow(2).mean()
        opt_bare.zero_grad(set_to_none=True)
        loss.backward()
        opt_bare.step()

    def rate(step) -> float:
        for _ in range(5):
            step()
        _sync()
        t0 = time.perf_counter()
        for _ in range(n_steps):
            step()
        _sync()
        return n_steps * batch / (time.perf_counter() - t0)

    head.train()
    encoder, bare = rate(full_step), rate(bare_step)
    return {"trunk": model_name, "unfrozen_blocks": n_blocks, "encoder_images_per_s": encoder,
            "bare_images_per_s": bare, "ratio": encoder / bare, "target_ratio": 0.8}


def bench_ridge() -> dict:
    from bench_ridge import FULL, child, generate

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate(Path(tmp), **FULL)
        gen = time.perf_counter() - t0
        res = child(Path(tmp), "torch_cuda", 5, 10, 0)
    return {"shape": FULL, "generate_s": gen, "fit_s": res["seconds"], "median_val_r": res["median_val_r"]}


def bench_extract(device, n_images: int = 4000, batch: int = 256) -> dict:
    import torch
    from PIL import Image

    from core.features.backbones import feature_extractor, load_backbone
    from core.features.extraction import ExtractionConfig, extract_features

    rng = np.random.default_rng(0)
    layers = ["features.6", "features.10", "features.17"]
    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "img"
        img.mkdir()
        base = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        paths = []
        for i in range(n_images):
            p = img / f"{i:05d}.png"
            Image.fromarray(np.roll(base, i, axis=0)).resize((425, 425)).save(p, compress_level=1)
            paths.append(p)
        cfg = ExtractionConfig(model="mobilenet_v2", weights="imagenet-offline", layers=layers, reduction="pool",
                               pool_size=2, batch_size=batch)
        extract_features(paths[:n_images // 2], paths[n_images // 2:n_images // 2 + 10], cfg, cache_dir=Path(tmp) / "warm", device=device)
        entries = extract_features(paths, paths[:10], cfg, cache_dir=Path(tmp) / "cache", device=device)
        t = entries[layers[0]].meta["timings"]
        net, _ = load_backbone("mobilenet_v2", "imagenet-offline")
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
            "decode_s": t["decode_s"], "bare_forward_images_per_s": bare,
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
