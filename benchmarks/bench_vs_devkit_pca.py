"""Our extraction + PCA against the Algonauts 2023 devkit recipe, same layer and components.

    python benchmarks/bench_vs_devkit_pca.py [--quick] [--model alexnet --layer features.2 --n-components 100]

The devkit recipe, as in its tutorial: a DataLoader (batch 100) that decodes each
PNG with PIL and applies ``Resize((224, 224)) / ToTensor / Normalize``; a
``create_feature_extractor`` of the model (called as the tutorial does, without
``no_grad``); ``IncrementalPCA(n_components, batch_size=100)`` ``partial_fit`` batch by
batch over the training images; then the features are extracted a second time to
``transform`` the training images, and once for the test images.

Ours: ``core.features.extraction.extract_features`` (one forward pass, randomized PCA fitted
on the training images), timed with an empty cache ("cold": PNG decoding included)
and with the image cache of an earlier run ("warm": the case when a user tries
another model, layer or number of components).

Quality: the share of the training features' variance captured by each method's
components, against an exact PCA (float64 eigendecomposition) of the same raw
features. Both models get the same seeded random weights (labelled: official
weights cannot be downloaded offline; speed and the PCA comparison do not depend on
them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_extraction import load_avg, make_pngs  # noqa: E402


def devkit_recipe(model_name, layer, train, test, k, seed=0, no_grad=False):
    """The tutorial's code path; returns (seconds, train features, test features, IncrementalPCA).

    ``no_grad``: run the extractor under ``torch.no_grad()`` (the tutorial does not; without it a
    ResNet-50 batch of 100 keeps its whole autograd graph, >10 GB). Only makes the baseline faster.
    """
    import contextlib

    import torch
    from PIL import Image
    from sklearn.decomposition import IncrementalPCA
    from torch.utils.data import DataLoader, Dataset
    from torchvision import transforms
    from torchvision.models.feature_extraction import create_feature_extractor

    from core.features.backbones import IMAGENET_MEAN, IMAGENET_STD, build_model

    t0 = time.perf_counter()
    transform = transforms.Compose([
        transforms.Resize((224, 224)), transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])

    class ImageDataset(Dataset):
        def __init__(self, paths):
            self.paths = paths

        def __len__(self):
            return len(self.paths)

        def __getitem__(self, i):
            return transform(Image.open(self.paths[i]).convert("RGB"))

    batch_size = 100
    train_loader = DataLoader(ImageDataset(train), batch_size=batch_size)
    test_loader = DataLoader(ImageDataset(test), batch_size=batch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(model_name).eval()  # same random weights as ours ("random", seed 0)
    fe = create_feature_extractor(model, return_nodes=[layer])

    grad_ctx = torch.no_grad if no_grad else contextlib.nullcontext
    pca = IncrementalPCA(n_components=k, batch_size=batch_size)
    with grad_ctx():
        f_train, f_test = _devkit_passes(fe, pca, train_loader, test_loader)
    return time.perf_counter() - t0, f_train, f_test, pca


def _devkit_passes(fe, pca, train_loader, test_loader):
    import torch

    for d in train_loader:
        ft = fe(d)
        ft = torch.hstack([torch.flatten(v, start_dim=1) for v in ft.values()])
        pca.partial_fit(ft.detach().cpu().numpy())

    def extract(loader):
        feats = []
        for d in loader:
            ft = fe(d)
            ft = torch.hstack([torch.flatten(v, start_dim=1) for v in ft.values()])
            feats.append(pca.transform(ft.detach().cpu().numpy()))
        return np.vstack(feats)

    return extract(train_loader), extract(test_loader)


def captured(X, comps, mean=None):
    """Share of the centred rows' variance captured by orthonormal ``comps`` (k, d)."""
    Xc = X.astype(np.float64) - (X.astype(np.float64).mean(0) if mean is None else mean)
    P = Xc @ np.asarray(comps, dtype=np.float64).T
    return float((P ** 2).sum() / (Xc ** 2).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="300 training images instead of 1000")
    ap.add_argument("--n-train", type=int, default=None, help="a multiple of 100 (the devkit's IPCA batch)")
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--model", default="alexnet")
    ap.add_argument("--layer", default="features.2", help="the devkit tutorial's AlexNet layer by default")
    ap.add_argument("--n-components", type=int, default=100)
    ap.add_argument("--power-iterations", type=int, default=1)
    ap.add_argument("--workdir", default="/tmp/bes-bench")
    ap.add_argument("--skip-devkit", action="store_true")
    ap.add_argument("--devkit-no-grad", action="store_true",
                    help="run the devkit's extractor under no_grad (needed for big models: >10 GB otherwise)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import sklearn.decomposition  # noqa: F401  (imports are not part of any timing)
    import torch
    import torchvision  # noqa: F401

    from core.features.extraction import ExtractionConfig, extract_features
    from core.features.reduction import exact_pca_reference

    n_train = args.n_train or (300 if args.quick else 1000)
    work = Path(args.workdir)
    train = make_pngs(work / "pngs" / "train", n_train, seed=0)[:n_train]
    test = make_pngs(work / "pngs" / "test", args.n_test, seed=1)[: args.n_test]
    k = args.n_components
    print(f"# {args.model} {args.layer}, {n_train} train + {len(test)} test PNGs (425x425), PCA {k}; "
          f"cpu, torch threads {torch.get_num_threads()}, load {load_avg()}")

    # ours, cold then warm (fresh feature cache each time)
    root = work / "devkit-cmp"
    shutil.rmtree(root, ignore_errors=True)
    cfg = ExtractionConfig(model=args.model, weights="random", layers=[args.layer], n_components=k,
                           power_iterations=args.power_iterations)
    t = time.perf_counter()
    entry = extract_features(train, test, cfg, cache_dir=root)[args.layer]
    t_cold = time.perf_counter() - t
    print(f"ours cold  {t_cold:7.1f} s  {entry.meta['timings']}  load {load_avg()}")
    shutil.rmtree(root / "features")
    t = time.perf_counter()
    entry = extract_features(train, test, cfg, cache_dir=root)[args.layer]
    t_warm = time.perf_counter() - t
    print(f"ours warm  {t_warm:7.1f} s  {entry.meta['timings']}  PCA {entry.meta['pca']}  load {load_avg()}")

    t_dev = None
    if not args.skip_devkit:
        t_dev, dev_train, dev_test, ipca = devkit_recipe(args.model, args.layer, train, test, k,
                                                         no_grad=args.devkit_no_grad)
        print(f"devkit     {t_dev:7.1f} s  (IncrementalPCA batch 100, features extracted twice"
              f"{', under no_grad' if args.devkit_no_grad else ''})  load {load_avg()}")
        # ours warm once more after the devkit run: the machine's load drifts, so bracket the devkit run
        shutil.rmtree(root / "features")
        t = time.perf_counter()
        entry = extract_features(train, test, cfg, cache_dir=root)[args.layer]
        t_warm2 = time.perf_counter() - t
        print(f"ours warm  {t_warm2:7.1f} s  (again, after the devkit run)  load {load_avg()}")
        t_warm = (t_warm + t_warm2) / 2

    # quality against an exact PCA of the same raw training features
    raw = extract_features(train, test, ExtractionConfig(model=args.model, weights="random", layers=[args.layer],
                                                         reduction="none"), cache_dir=root)[args.layer]
    X, _ = raw.load(mmap=True)
    X = np.asarray(X)
    comps_exact, ev, total = exact_pca_reference(X, k)
    ev_exact = captured(X, comps_exact)
    ours_tr = np.load(entry.train_file)
    # our components, recovered from our projections: captured variance = |projections|^2 / |Xc|^2
    ev_ours = float((ours_tr.astype(np.float64) ** 2).sum() / ((X - X.mean(0)) ** 2).sum(dtype=np.float64))
    print(f"explained variance, {k} components on the training features: exact {ev_exact:.4f}  "
          f"ours {ev_ours:.4f} ({(ev_ours - ev_exact) / ev_exact:+.2%})  meta {entry.meta['explained_variance_ratio_total']:.4f}")
    result = {"n_train": n_train, "n_test": len(test), "model": args.model, "layer": args.layer, "k": k,
              "ours_cold_s": t_cold, "ours_warm_s": t_warm, "ev_exact": ev_exact, "ev_ours": ev_ours,
              "load_avg": load_avg()}
    if t_dev is not None:
        ev_dev = captured(X, ipca.components_)
        print(f"  devkit IncrementalPCA {ev_dev:.4f} ({(ev_dev - ev_exact) / ev_exact:+.2%})")
        print(f"speed-up vs devkit: cold {t_dev / t_cold:.1f}x, warm {t_dev / t_warm:.1f}x")
        # same features? (up to component signs, the devkit recipe's test projections vs ours)
        result.update({"devkit_s": t_dev, "ev_devkit": ev_dev, "speedup_cold": t_dev / t_cold,
                       "speedup_warm": t_dev / t_warm})
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
