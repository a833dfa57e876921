"""Extraction throughput against the bare forward pass, and the 10,000-image PCA scale test.

Overhead (default)::

    python benchmarks/bench_extraction.py [--quick] [--device cpu|cuda] [--models alexnet resnet50]

For each model: the backbone's bare forward throughput (``model(x)`` on a ready,
normalised batch, inference mode, same device and batch size, best of NCHW and
channels-last) against ``extract_features`` end to end (images -> forward -> PCA to
100 components fitted on the training images -> entries written), with the image
cache warm (images decoded by an earlier run: the product's normal case when
trying models/layers) and cold (PNG decoding included). Throughput = images / wall
time of the whole call, model loading and PCA included.

Scale::

    python benchmarks/bench_extraction.py --scale 10000 [--n-components 1000] [--memory-budget-mb 2048]

ResNet-50 ``layer3`` (200,704 values per image) on N synthetic images (procedural
uint8 arrays written straight into the image cache), PCA to 1,000 components;
reports wall time and the process's peak resident memory (VmHWM).

Weights are random (labelled so): speed does not depend on them, and official
weights cannot be downloaded offline.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# per model: one deep layer, then three layers from the same forward pass
LAYER_SETS = {
    "alexnet": [["features.12"], ["features.5", "features.12", "classifier.5"]],
    "resnet50": [["layer4"], ["layer3", "layer4", "avgpool"]],
}
N_IMAGES = {"alexnet": 1200, "resnet50": 360}


# --------------------------------------------------------------------------- synthetic stimuli


def _sources():
    from sklearn.datasets import load_sample_images

    return load_sample_images().images  # two 427x640 photographs shipped with scikit-learn


def natural_image(rng, srcs, size):
    """A random crop / flip / colour jitter of a real photograph, ``size x size`` uint8 RGB."""
    from PIL import Image

    a = srcs[int(rng.integers(len(srcs)))]
    s = int(rng.integers(120, 427))
    y, x = int(rng.integers(0, a.shape[0] - s + 1)), int(rng.integers(0, a.shape[1] - s + 1))
    img = a[y:y + s, x:x + s].astype(np.float32)
    img = img * rng.uniform(0.7, 1.3, 3) + rng.uniform(-20, 20, 3)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = Image.fromarray(img.clip(0, 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    return np.asarray(img)


def make_pngs(folder: Path, n: int, seed: int, size: int = 425) -> list[Path]:
    """``n`` 425x425 PNGs like the NSD stimuli (reused if already there)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img-{i:05d}.png" for i in range(n)]
    if all(p.exists() for p in paths):
        return paths
    rng, srcs = np.random.default_rng(seed), _sources()
    for p in paths:
        if not p.exists():
            Image.fromarray(natural_image(rng, srcs, size)).save(p)
    return paths


# --------------------------------------------------------------------------- helpers


def load_avg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM), MB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (DataLoader workers), all threads."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bare_forward(model_name: str, layers: list[str] | None, batch: int, n_images: int, res: int, device,
                 channels_last: bool):
    """``(images/s wall, images per CPU-second)`` of the bare forward pass on a ready, normalised batch.

    ``layers``: the backbone's graph up to those layers (``create_feature_extractor``, what the extraction
    runs); None: the whole classifier ``model(x)``.
    """
    import torch
    from torchvision.models.feature_extraction import create_feature_extractor

    from core.features.backbones import load_backbone

    net, _ = load_backbone(model_name, "random")
    if layers:
        net = create_feature_extractor(net, return_nodes={layer: layer for layer in layers}).eval()
    net = net.to(device)
    x = torch.randn(batch, 3, res, res, device=device)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    n_batches = max(2, n_images // batch)
    with torch.inference_mode(), ctx:
        net(x)  # warm-up (kernel selection)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t, c = time.perf_counter(), cpu_seconds()
        for _ in range(n_batches):
            net(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    n = n_batches * batch
    return n / (time.perf_counter() - t), n / (cpu_seconds() - c)


def e2e(model_name, layers, train, test, root: Path, device, batch_size, k, *, cold: bool):
    """``(images/s wall, images per CPU-second, meta of the first entry)`` of one ``extract_features`` call."""
    from core.features.extraction import ExtractionConfig, extract_features

    shutil.rmtree(root / "features", ignore_errors=True)
    if cold:
        shutil.rmtree(root / "images", ignore_errors=True)
    cfg = ExtractionConfig(model=model_name, weights="random", layers=layers, resolution=224,
                           reduction="pca", n_components=k, batch_size=batch_size)
    t, c = time.perf_counter(), cpu_seconds()
    out = extract_features(train, test, cfg, cache_dir=root, device=device)
    wall, cpu = time.perf_counter() - t, cpu_seconds() - c
    n = len(train) + len(test)
    meta = dict(next(iter(out.values())).meta)
    meta["wall_s"] = wall
    meta["pca_fit_all_s"] = sum(e.meta["timings"].get("pca_fit_s", 0) + e.meta["timings"].get("pca_transform_s", 0)
                                for e in out.values())
    return n / wall, n / cpu, meta


def run_overhead(args) -> None:
    import torch
    import torchvision  # noqa: F401  (imports are not part of any timing)

    from core.features.extraction import pick_device

    device = pick_device(args.device)
    work = Path(args.workdir)
    print(f"# device {device}, torch threads {torch.get_num_threads()}, cores {os.cpu_count()}, load {load_avg()}")
    print("# throughput = images / wall time of the whole call (model load, forward, PCA fit+transform, writes);"
          " bare = model(x) on a ready batch, best of channels-last / NCHW; medians of interleaved repeats")
    results = {}
    for model_name in args.models:
        n = args.n_images or (N_IMAGES[model_name] // (4 if args.quick else 1))
        n_test = max(8, n // 12)
        train = make_pngs(work / "pngs" / "train", n - n_test, seed=0)[: n - n_test]
        test = make_pngs(work / "pngs" / "test", n_test, seed=1)[:n_test]
        root = work / f"cache-{model_name}"
        layer_sets = LAYER_SETS[model_name] if args.layers is None else [args.layers]
        # cold runs (PNG decoding into the image cache included) and warm runs interleaved with bare forwards;
        # a throw-away bare pass first, so that no timed run pays the process's first-call warm-up
        bare_forward(model_name, layer_sets[0], args.batch_size or 32, 64, 224, device, True)
        bs = e2e(model_name, layer_sets[0], train, test, root, device, args.batch_size, args.n_components,
                 cold=True)[2]["batch_size"]
        keys = ["full", "cold"] + [k for i in range(len(layer_sets)) for k in (f"bare_cl{i}", f"bare_nchw{i}", f"warm{i}")]
        runs, cpu, metas = {k: [] for k in keys}, {k: [] for k in keys}, {}
        for _rep in range(args.repeats):
            for key in keys:
                i = int(key[-1]) if key[-1].isdigit() else 0
                if key == "full":
                    r = bare_forward(model_name, None, bs, n, 224, device, True)
                elif key == "cold":
                    r = e2e(model_name, layer_sets[0], train, test, root, device, bs, args.n_components, cold=True)
                elif key.startswith("bare_cl"):
                    r = bare_forward(model_name, layer_sets[i], bs, n, 224, device, True)
                elif key.startswith("bare_nchw"):
                    r = bare_forward(model_name, layer_sets[i], bs, n, 224, device, False)
                else:
                    r = e2e(model_name, layer_sets[i], train, test, root, device, bs, args.n_components, cold=False)
                    metas[key] = r[2]
                runs[key].append(round(r[0], 2))
                cpu[key].append(round(r[1], 3))
        med = {k: statistics.median(v) for k, v in runs.items()}
        med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
        print(f"{model_name}: {n} images ({n - n_test} train + {n_test} test), batch {bs}, PCA {args.n_components}; "
              f"load {load_avg()}")
        print(f"  whole classifier model(x), channels-last: {med['full']:.1f} img/s (runs {runs['full']})")
        res = {"images": n, "batch_size": bs, "n_components": args.n_components, "runs": runs, "runs_cpu": cpu,
               "configs": {}}
        for i, layers in enumerate(layer_sets):
            best = f"bare_cl{i}" if med[f"bare_cl{i}"] >= med[f"bare_nchw{i}"] else f"bare_nchw{i}"
            bare, bare_cpu = med[best], med_cpu[best]
            key = f"warm{i}"
            m = metas[key]
            t = m["timings"]
            share = t["forward_compute_s"] / m["wall_s"] if t.get("forward_compute_s") else None
            name = "+".join(layers)
            print(f"  [{name}] bare forward to these layers {bare:.1f} img/s ({'channels-last' if 'cl' in best else 'NCHW'}"
                  f"; runs CL {runs[f'bare_cl{i}']}, NCHW {runs[f'bare_nchw{i}']})")
            print(f"  [{name}] end-to-end (image cache warm) {med[key]:.1f} img/s = {med[key] / bare:.1%} of bare "
                  f"(wall), {med_cpu[key] / bare_cpu:.1%} (CPU time); runs {runs[key]}")
            if share is not None:
                print(f"      last run: model calls {t['forward_compute_s']:.1f}s = {share:.1%} of its "
                      f"{m['wall_s']:.1f}s; loop {t['forward_s']:.1f}s, model load {t['model_s']:.2f}s, "
                      f"PCA fit+transform (all layers) {m['pca_fit_all_s']:.2f}s")
            res["configs"][name] = {"bare_images_per_s": bare, "median_images_per_s": med[key],
                                    "ratio_wall": med[key] / bare, "ratio_cpu": med_cpu[key] / bare_cpu,
                                    "model_call_share": share, "timings": t}
            if i == 0:
                cold, cold_cpu = med["cold"], med_cpu["cold"]
                print(f"  [{name}] end-to-end cold (PNG decoding included) {cold:.1f} img/s = {cold / bare:.1%} of "
                      f"bare (wall), {cold_cpu / bare_cpu:.1%} (CPU time); runs {runs['cold']}")
                res["cold"] = {"images_per_s": cold, "ratio_wall": cold / bare, "ratio_cpu": cold_cpu / bare_cpu}
        results[model_name] = res
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


# --------------------------------------------------------------------------- scale test


def synth_cache(images: list[Path], res: int, root: Path, seed: int = 0) -> None:
    """Write procedural uint8 images straight into the image cache entry for ``images``."""
    from core.util.atomicdir import staging_dir
    from core.util.fileio import write_json
    from core.features.images import fingerprint_images, image_cache_key, preprocessing_spec
    from core.util.npystream import NpyWriter

    fp = fingerprint_images(images)
    entry = root / "images" / image_cache_key(fp, res)
    if (entry / "meta.json").is_file():
        return
    rng, srcs = np.random.default_rng(seed), _sources()
    with staging_dir(entry) as tmp:
        with NpyWriter(tmp / "images.npy", (len(images), res, res, 3), np.uint8) as w:
            for _ in images:
                w.write(natural_image(rng, srcs, res)[None])
        write_json(tmp / "meta.json", {"fingerprint": fp, "n": len(images), **preprocessing_spec(res),
                                       "names": [p.name for p in images], "synthetic": True})


def run_scale(args) -> None:
    from core.features.extraction import ExtractionConfig, extract_features
    from core.util.progress import TqdmProgress

    n, n_test = args.scale, max(10, args.scale // 40)
    work = Path(args.workdir) / f"scale-{n}"
    names = work / "names"
    names.mkdir(parents=True, exist_ok=True)
    train = [names / f"train-{i:05d}.png" for i in range(n)]
    test = [names / f"test-{i:05d}.png" for i in range(n_test)]
    for p in train + test:  # placeholders: their names/sizes/mtimes key the synthetic image cache
        if not p.exists():
            p.touch()
    t = time.perf_counter()
    synth_cache(train, 224, work, seed=0)
    synth_cache(test, 224, work, seed=1)
    print(f"# synthetic image cache ready ({time.perf_counter() - t:.0f} s); peak RSS so far {peak_rss_mb():.0f} MB")
    shutil.rmtree(work / "features", ignore_errors=True)
    cfg = ExtractionConfig(model="resnet50", weights="random", layers=["layer3"], resolution=224, reduction="pca",
                           n_components=args.n_components, memory_budget_mb=args.memory_budget_mb,
                           batch_size=args.batch_size, power_iterations=args.power_iterations)
    print(f"# resnet50 layer3, {n} train + {n_test} test images, PCA {args.n_components}, budget "
          f"{args.memory_budget_mb} MB, load {load_avg()}")
    rss0 = peak_rss_mb()
    t = time.perf_counter()
    bar = TqdmProgress("scale") if not args.quiet else None
    entry = extract_features(train, test, cfg, cache_dir=work, device=args.device, progress=bar)["layer3"]
    if bar:
        bar.close()
    wall = time.perf_counter() - t
    m = entry.meta
    tr_shape = np.load(entry.train_file, mmap_mode="r").shape
    print(f"resnet50 layer3 raw dim {m['raw_dim']:,} -> {m['n_components']} components on {n} images: "
          f"{wall:.0f} s wall ({(n + n_test) / wall:.1f} img/s)")
    print(f"  timings {m['timings']}")
    print(f"  PCA {m['pca']}; explained variance {m['explained_variance_ratio_total']:.4f}")
    print(f"  train.npy {tr_shape}; peak RSS {peak_rss_mb():.0f} MB (before extraction {rss0:.0f} MB); "
          f"load {load_avg()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"n": n, "wall_s": wall, "peak_rss_mb": peak_rss_mb(),
                                               "timings": m["timings"], "pca": m["pca"],
                                               "ev_total": m["explained_variance_ratio_total"]}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="quarter-size runs")
    ap.add_argument("--models", nargs="+", default=["alexnet", "resnet50"])
    ap.add_argument("--layers", nargs="+", default=None, help="one layer set instead of the built-in ones")
    ap.add_argument("--n-images", type=int, default=None)
    ap.add_argument("--n-components", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=None, help="default: automatic")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default=None)
    ap.add_argument("--workdir", default="/tmp/bes-bench")
    ap.add_argument("--scale", type=int, default=0, help="run the scale test on this many images instead")
    ap.add_argument("--memory-budget-mb", type=float, default=2048)
    ap.add_argument("--power-iterations", type=int, default=1)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    if args.scale:
        args.n_components = args.n_components or 1000
        run_scale(args)
    else:
        args.n_components = args.n_components or 100
        run_overhead(args)


if __name__ == "__main__":
    main()
