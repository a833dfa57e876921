"""Feature extraction end to end: entries, cache reuse, labels, atomicity, bad input, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import core.features.extraction as features_mod
from core.cli import main as cli_main
from core.util.errors import DatasetError, UserError
from core.features.extraction import ExtractionConfig, FeatureEntry, extract_features, list_entries
from core.features.reduction import exact_pca_reference
from tests.conftest import write_pngs

RES = 64


def _noisy_pngs(folder, n, seed=0):
    return write_pngs(folder, n, seed=seed, noise=8.0)


@pytest.fixture(scope="module")
def imgs(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    return _noisy_pngs(root / "train", 14, seed=1), _noisy_pngs(root / "test", 4, seed=2)


def _staging_left(cache):
    root = cache / "features"
    return [p for p in root.iterdir() if p.name.startswith(".tmp-")] if root.is_dir() else []


def test_extract_two_layers_pca_then_reuse(imgs, tmp_path, monkeypatch):
    train, test = imgs
    cfg = ExtractionConfig(model="mobilenet_v2", weights="imagenet-offline", layers=["features.6", "features.18"],
                           resolution=RES, n_components=5, batch_size=8)
    calls = []
    progress = lambda f, m: calls.append((f, m))  # noqa: E731
    out = extract_features(train, test, cfg, cache_dir=tmp_path, progress=progress)
    assert list(out) == ["features.6", "features.18"]
    for layer, entry in out.items():
        tr, te = entry.load()
        assert tr.shape == (14, 5) and te.shape == (4, 5) and tr.dtype == np.float32 == te.dtype
        meta = json.loads((entry.path / "meta.json").read_text())
        assert meta["layer"] == layer and meta["model"] == "mobilenet_v2"
        assert meta["weights"]["spec"] == "imagenet-offline" and meta["random_weights"] is False
        assert meta["reduction"]["kind"] == "pca" and meta["n_components"] == 5
        assert 0 < meta["explained_variance_ratio_total"] <= 1 and len(meta["explained_variance"]) == 5
        assert meta["dataset"]["n_train"] == 14 and len(meta["dataset"]["train_fingerprint"]) == 64
        assert meta["preprocessing"]["resolution"] == RES and "forward_s" in meta["timings"]
        assert meta["layers_in_same_pass"] == ["features.6", "features.18"]
    fractions = [f for f, _ in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    # reused across runs: no model, no images needed
    def boom(*_a, **_k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(features_mod, "load_backbone", boom)
    monkeypatch.setattr(features_mod, "build_image_cache", boom)
    again = extract_features(train, test, cfg, cache_dir=tmp_path)
    assert {k: v.path for k, v in again.items()} == {k: v.path for k, v in out.items()}
    assert len(list_entries(tmp_path)) == 2
    cached = features_mod.find_cached(train, test, cfg, cache_dir=tmp_path)
    assert {k: v.path for k, v in cached.items()} == {k: v.path for k, v in out.items()}
    other = ExtractionConfig(**{**cfg.__dict__, "n_components": 4})
    assert features_mod.find_cached(train, test, other, cache_dir=tmp_path) == {"features.6": None,
                                                                                 "features.18": None}


def test_pca_is_fitted_on_train_and_applied_to_test(imgs, tmp_path):
    train, test = imgs
    base = dict(model="mobilenet_v2", layers=["features.13"], resolution=RES, batch_size=16)
    raw = extract_features(train, test, ExtractionConfig(**base, reduction="none"), cache_dir=tmp_path)["features.13"]
    pca = extract_features(train, test, ExtractionConfig(**base, n_components=6), cache_dir=tmp_path)["features.13"]
    assert raw.path != pca.path
    Xtr, Xte = raw.load()
    Ptr, Pte = pca.load()
    comps, ev, total = exact_pca_reference(Xtr, 6)
    mean = Xtr.astype(np.float64).mean(0)
    ref_tr, ref_te = (Xtr - mean) @ comps.T, (Xte - mean) @ comps.T
    signs = np.sign((Ptr * ref_tr).sum(0))
    assert np.allclose(Ptr * signs, ref_tr, atol=1e-2 * np.abs(ref_tr).max())
    assert np.allclose(Pte * signs, ref_te, atol=1e-2 * np.abs(ref_te).max())
    assert abs(pca.meta["explained_variance_ratio_total"] - ev.sum() / total) < 1e-3


def test_random_weights_are_labelled_everywhere(imgs, tmp_path):
    train, test = imgs
    cfg = ExtractionConfig(model="alexnet", weights="random", layers=["features.5"], resolution=RES,
                           reduction="pool", pool_size=2)
    entry = extract_features(train, test, cfg, cache_dir=tmp_path)["features.5"]
    assert "RANDOM" in entry.path.name
    assert entry.meta["random_weights"] is True and entry.meta["weights"]["random"] is True
    assert "random" in entry.meta["weights_label"]
    tr, te = entry.load()
    assert tr.shape == (14, 192 * 4) and te.shape == (4, 192 * 4)
    with pytest.raises(UserError, match="pooling needs a convolutional layer"):
        extract_features(train, test, ExtractionConfig(model="alexnet", weights="random", layers=["classifier.5"],
                                                       resolution=RES, reduction="pool"), cache_dir=tmp_path)
    assert not _staging_left(tmp_path)


def test_key_covers_settings(imgs, tmp_path):
    train, test = imgs
    info = features_mod.resolve_weights("mobilenet_v2", None)
    base = ExtractionConfig(model="mobilenet_v2", layers=["features.6"], resolution=RES, n_components=5)
    name = lambda c, tr=train: features_mod.entry_key(c.validated(), info, "features.6",  # noqa: E731
                                                       features_mod.fingerprint_images(tr), "t", "fp32", 1, 1)[0]
    n0 = name(base)
    assert n0 == name(base)
    for change in (dict(resolution=RES + 32), dict(n_components=6), dict(power_iterations=3), dict(seed=1),
                   dict(reduction="pool"), dict(reduction="none")):
        assert name(ExtractionConfig(**{**base.__dict__, **change})) != n0, change
    assert name(base, tr=train[:-1]) != n0
    rnd = features_mod.resolve_weights("alexnet", "random")
    pool = ExtractionConfig(model="alexnet", weights="random", layers=["features.5"], reduction="pool")
    key = lambda c: features_mod.entry_key(c.validated(), rnd, "features.5", "a", "b", "fp32", 1, 1)[0]  # noqa: E731
    assert key(pool) != key(ExtractionConfig(**{**pool.__dict__, "seed": 1}))  # other random weights


def test_truncated_image_stops_cleanly_and_names_the_file(tmp_path):
    train = _noisy_pngs(tmp_path / "train", 6, seed=3)
    test = _noisy_pngs(tmp_path / "test", 2, seed=4)
    data = train[3].read_bytes()
    train[3].write_bytes(data[: len(data) // 2])
    cfg = ExtractionConfig(model="mobilenet_v2", layers=["features.6"], resolution=RES, n_components=3)
    with pytest.raises(DatasetError) as exc:
        extract_features(train, test, cfg, cache_dir=tmp_path / "cache")
    msg = str(exc.value)
    assert str(train[3]) in msg and "\n" not in msg
    assert list_entries(tmp_path / "cache") == [] and not _staging_left(tmp_path / "cache")
    assert not list((tmp_path / "cache" / "images").glob("*"))


def test_interrupted_extraction_leaves_no_entry(imgs, tmp_path, monkeypatch):
    train, test = imgs
    real_add = features_mod._LayerJob.add
    seen = []

    def add(self, out, split):
        seen.append(split)
        if len(seen) == 2:
            raise KeyboardInterrupt
        return real_add(self, out, split)

    monkeypatch.setattr(features_mod._LayerJob, "add", add)
    cfg = ExtractionConfig(model="mobilenet_v2", layers=["features.6"], resolution=RES, n_components=3, batch_size=4)
    with pytest.raises(KeyboardInterrupt):
        extract_features(train, test, cfg, cache_dir=tmp_path)
    assert list_entries(tmp_path) == [] and not _staging_left(tmp_path)
    monkeypatch.setattr(features_mod._LayerJob, "add", real_add)
    entry = extract_features(train, test, cfg, cache_dir=tmp_path)["features.6"]
    assert FeatureEntry.open(entry.path).meta["n_train"] == 14


def test_bad_config_errors(imgs, tmp_path):
    train, test = imgs
    with pytest.raises(UserError, match="unknown model"):
        extract_features(train, test, ExtractionConfig(model="nope", layers=["x"]), cache_dir=tmp_path)
    with pytest.raises(UserError, match="unknown layer 'features.99'.*features.18"):
        extract_features(train, test, ExtractionConfig(layers=["features.99"]), cache_dir=tmp_path)
    with pytest.raises(UserError, match="at most 13 components"):
        extract_features(train, test, ExtractionConfig(layers=["features.18"], resolution=RES, n_components=50),
                         cache_dir=tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            extract_features(train, test, ExtractionConfig(layers=["features.6"], resolution=RES), device="cuda",
                             cache_dir=tmp_path)
    assert not _staging_left(tmp_path)


def test_cli_extract(imgs, tmp_path, capsys):
    train, test = imgs
    rc = cli_main(["extract", "--train-dir", str(train[0].parent), "--test-dir", str(test[0].parent),
                   "--model", "mobilenet_v2", "--weights", "imagenet-offline", "--layers", "features.10",
                   "--resolution", str(RES), "--n-components", "4", "--cache-dir", str(tmp_path), "--quiet"])
    out = capsys.readouterr()
    assert rc == 0
    (line,) = out.out.strip().splitlines()
    entry = FeatureEntry.open(line)
    assert entry.load()[0].shape == (14, 4)
    rc = cli_main(["extract", "--train-dir", str(train[0].parent), "--model", "alexnet", "--weights",
                   "imagenet-offline", "--layers", "features.2", "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1


def test_cli_extract_from_dataset_subject(tiny_dataset, tmp_path, capsys):
    rc = cli_main(["extract", "--data", str(tiny_dataset), "--subject", "1", "--model", "mobilenet_v2",
                   "--layers", "features.6", "--resolution", "32", "--reduction", "pool", "--pool-size", "1",
                   "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert rc == 0
    entry = FeatureEntry.open(capsys.readouterr().out.strip())
    tr, te = entry.load()
    assert tr.shape == (6, 32) and te.shape == (2, 32)
    assert entry.meta["dataset"]["train_dir"].endswith("training_images")
