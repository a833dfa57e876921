"""Backbones: model names, layer lists, weights specs (offline bundle, official, file, random)."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from core.features import backbones
from core.util.errors import UserError


def test_featured_models_are_known_and_have_layers():
    models = backbones.available_models()
    for name in ["alexnet", "vgg16", "resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0", "vit_b_16",
                 "convnext_tiny"]:
        assert name in models
        layers = backbones.list_layers(name)
        for suggested in backbones.SUGGESTED_LAYERS[name]:
            assert suggested in layers, (name, suggested)


def test_unknown_model_lists_valid_ones():
    with pytest.raises(UserError) as exc:
        backbones.check_model("resnet5")
    msg = str(exc.value)
    assert "\n" not in msg and "unknown model 'resnet5'" in msg and "resnet50" in msg and "alexnet" in msg


def test_unknown_layer_lists_valid_ones():
    with pytest.raises(UserError) as exc:
        backbones.check_layers("alexnet", ["features.99"])
    msg = str(exc.value)
    assert "\n" not in msg and "features.99" in msg and "features.12" in msg and "classifier.5" in msg


def test_module_prefixes_are_layers():
    layers = backbones.list_layers("resnet50")
    assert {"layer1", "layer3", "layer4", "avgpool", "layer3.5.relu_2"} <= set(layers)


def test_offline_weights_only_for_mobilenet_v2():
    with pytest.raises(UserError, match="only for mobilenet_v2"):
        backbones.resolve_weights("alexnet", "imagenet-offline")
    assert backbones.default_weights("mobilenet_v2") == "imagenet-offline"
    assert backbones.default_weights("resnet50") == "DEFAULT"


def test_offline_weights_are_imagenet_trained_and_cover_features_only():
    net, info = backbones.load_backbone("mobilenet_v2", "imagenet-offline")
    assert info.kind == "offline" and not info.is_random and "random" not in info.label.lower()
    src = torch.load(backbones.offline_weights_path(), map_location="cpu", weights_only=True)
    assert len(src) == 312
    # loaded in order: first conv and last BN match the file
    first, last_var = list(src.values())[0], list(src.values())[-2]
    assert torch.equal(net.features[0][0].weight, first)
    assert torch.equal(net.features[18][1].running_var, last_var)
    # trained BatchNorm statistics, not the init values (mean 0, var 1)
    bn = net.features[1].conv[0][1]
    assert bn.running_mean.abs().mean() > 1e-2 and (bn.running_var - 1).abs().mean() > 1e-2
    layers = backbones.list_layers("mobilenet_v2", info)
    assert "features.18" in layers and not any(x.startswith("classifier") for x in layers)
    with pytest.raises(UserError, match="not covered by the offline weights"):
        backbones.check_layers("mobilenet_v2", ["classifier.1"], info)


def test_random_weights_are_explicit_labelled_and_seeded():
    info = backbones.resolve_weights("resnet18", "random")
    assert info.is_random and "random" in info.label and info.identity == "random"
    assert info.to_meta()["random"] is True
    a, _ = backbones.load_backbone("resnet18", "random", seed=3)
    b, _ = backbones.load_backbone("resnet18", "random", seed=3)
    assert torch.equal(a.conv1.weight, b.conv1.weight)


def test_official_weights_resolve_default_to_enum():
    info = backbones.resolve_weights("resnet50", "DEFAULT")
    assert info.kind == "official" and info.enum == "ResNet50_Weights.IMAGENET1K_V2"
    assert backbones.resolve_weights("resnet50", "IMAGENET1K_V2").identity == info.identity
    with pytest.raises(UserError, match="unknown weights 'IMAGENET9K'"):
        backbones.resolve_weights("resnet50", "IMAGENET9K")


def test_failed_download_is_a_clear_error_not_random(monkeypatch, tmp_path):
    import torchvision.models._api as api

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*_a, **_k):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(api, "load_state_dict_from_url", offline)
    with pytest.raises(UserError) as exc:
        backbones.load_backbone("resnet18", "DEFAULT")
    msg = str(exc.value)
    assert "\n" not in msg and "refusing to fall back to random" in msg and "resnet18-f37072fd.pth" in msg
    assert "imagenet-offline" in msg
    opts = {o.spec: o for o in backbones.weights_options("resnet18")}
    assert opts["IMAGENET1K_V1"].available_offline is False and opts["random"].is_random


def test_local_weights_file(tmp_path):
    src, _ = backbones.load_backbone("resnet18", "random", seed=7)
    path = tmp_path / "mine.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, path)
    net, info = backbones.load_backbone("resnet18", str(path))
    assert info.kind == "file" and not info.is_random and info.identity.startswith("file-sha256:")
    assert torch.equal(net.fc.weight, src.fc.weight)
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bad)
    with pytest.raises(UserError, match="does not fit resnet18"):
        backbones.load_backbone("resnet18", str(bad))
    with pytest.raises(UserError, match="not found"):
        backbones.resolve_weights("resnet18", str(tmp_path / "missing.pth"))


def test_catalog_for_ui():
    cat = {m.name: m for m in backbones.model_catalog()}
    assert cat["mobilenet_v2"].default_weights == "imagenet-offline"
    specs = [o.spec for o in cat["mobilenet_v2"].weights]
    assert specs[0] == "imagenet-offline" and "random" in specs and "IMAGENET1K_V1" in specs
    assert cat["vit_b_16"].suggested_layers
