"""timm and open_clip trunks beside torchvision's: names, weights, layers, token maps, extraction."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from core.features import backbones
from core.features.extraction import ExtractionConfig, extract_features
from core.util.errors import UserError
from tests.conftest import make_tiny_dataset

VIT = "timm:vit_tiny_patch16_224"
CLIP = "open_clip:ViT-B-16"


def test_unknown_timm_model_suggests_close_names():
    with pytest.raises(UserError, match="did you mean timm:vit_tiny_patch16_224"):
        backbones.check_model("timm:vit_tiny_patch16_22")
    with pytest.raises(UserError, match="unknown open_clip model"):
        backbones.check_model("open_clip:ViT-B-99")


def test_layers_are_blocks_and_unknown_layer_lists_them():
    assert {"blocks.0", "blocks.11", "patch_embed"} <= set(backbones.list_layers(VIT))
    assert "transformer.resblocks.11" in backbones.list_layers(CLIP)
    assert "transformer.resblocks.0.mlp.c_fc" not in backbones.list_layers(CLIP)
    with pytest.raises(UserError, match="did you mean blocks.4"):
        backbones.check_layers(VIT, ["blocks.40"])


def test_pretrained_weights_not_cached_fail_fast_with_where_to_put_them(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for model, spec, repo in [("timm:eva02_base_patch14_224.mim_in22k", "DEFAULT", "timm/eva02_base_patch14_224.mim_in22k"),
                              (CLIP, "openai", "timm/vit_base_patch16_clip_224.openai")]:
        t0 = time.perf_counter()
        with pytest.raises(UserError) as err:
            backbones.resolve_weights(model, spec)
        assert time.perf_counter() - t0 < 5  # no download attempt
        msg = str(err.value)
        assert "\n" not in msg and repo in msg and "--weights" in msg
    with pytest.raises(UserError, match="valid: DEFAULT, openai"):
        backbones.resolve_weights(CLIP, "nonsense-tag")


@pytest.mark.slow
def test_cached_hub_weights_load_from_the_cache(monkeypatch, tmp_path):
    """A file in the hub cache's layout is found and loaded (no network)."""
    net, _ = backbones.load_backbone(VIT, "random", seed=5)
    from safetensors.torch import save_file

    snap = tmp_path / "hub" / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap.parents[1] / "refs").mkdir()
    (snap.parents[1] / "refs" / "main").write_text("abc")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(snap / "model.safetensors"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    info = backbones.resolve_weights(VIT, "DEFAULT")
    assert info.kind == "hub" and not info.is_random and info.path.endswith("model.safetensors")
    loaded, _ = backbones.load_backbone(VIT, info)
    x = torch.randn(1, 3, 224, 224)
    torch.testing.assert_close(loaded(x), net(x))


def test_local_file_and_corrupt_file(tmp_path):
    net, info = backbones.load_backbone(VIT, "random", resolution=64, seed=3)
    assert info.is_random and "random" in info.label
    torch.save(net.state_dict(), tmp_path / "vit.pth")
    again, info2 = backbones.load_backbone(VIT, str(tmp_path / "vit.pth"), resolution=64)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(again(x), net(x))
    assert info2.kind == "file"
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(UserError, match="bad.pth: does not load"):
        backbones.load_backbone(VIT, str(tmp_path / "bad.pth"), resolution=64)


@pytest.mark.slow
def test_open_clip_tower_file_round_trip(tmp_path):
    net, info = backbones.load_backbone(CLIP, "random", resolution=32, seed=1)
    assert info.mean[0] == pytest.approx(0.48145466)
    torch.save(net.state_dict(), tmp_path / "tower.pth")
    again, _ = backbones.load_backbone(CLIP, str(tmp_path / "tower.pth"), resolution=32)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(again(x), net(x))


def test_tokens_become_patch_maps_and_blocks_are_listed():
    net, _ = backbones.load_backbone(VIT, "random", resolution=64)
    ex = backbones.feature_extractor(net, VIT, ["blocks.1", "blocks.3"])
    out = ex(torch.randn(2, 3, 64, 64))
    assert out["blocks.1"].shape == (2, 192, 4, 4)  # CLS dropped, 16 patches as 4 x 4
    # the map is the block's patch tokens, in raster order
    tokens = {}
    net.blocks[3].register_forward_hook(lambda m, i, o: tokens.setdefault("t", o), prepend=True)
    x = torch.randn(1, 3, 64, 64)
    mapped = ex(x)["blocks.3"]
    torch.testing.assert_close(mapped[0, :, 1, 2], tokens["t"][0, 1 + 1 * 4 + 2])
    assert backbones.trunk_blocks(net)[-1] == "blocks.11"
    mob, _ = backbones.load_backbone("mobilenet_v2", None)
    assert backbones.trunk_blocks(mob)[-1] == "features.18"


@pytest.mark.parametrize("model,layers", [(VIT, ["blocks.2", "blocks.5"]), (CLIP, ["transformer.resblocks.1"])])
def test_ridge_extraction_accepts_timm_and_open_clip(tmp_path, model, layers):
    ds = make_tiny_dataset(tmp_path / "data", n_train=8, n_test=2)
    subj = ds / "subj01"
    train = sorted((subj / "training_split" / "training_images").glob("*.png"))
    test = sorted((subj / "test_split" / "test_images").glob("*.png"))
    cfg = ExtractionConfig(model=model, weights="random", layers=layers, resolution=32, reduction="pool", pool_size=1)
    entries = extract_features(train, test, cfg, cache_dir=tmp_path / "cache", device="cpu")
    for layer in layers:
        tr, te = entries[layer].load()
        assert tr.shape[0] == 8 and te.shape[0] == 2 and np.isfinite(tr).all()
        assert entries[layer].meta["random_weights"] is True
