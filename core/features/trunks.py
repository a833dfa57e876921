"""timm and open_clip trunks beside torchvision's: names, weights, layers, and token outputs as feature maps.

Model names carry their library as a prefix (no prefix: torchvision, as before)::

    timm:<name>[.<tag>]      e.g. timm:eva02_base_patch14_224.mim_in22k, timm:vit_base_patch14_dinov2,
                             timm:convnext_tiny, timm:vit_tiny_patch16_224
    open_clip:<name>         e.g. open_clip:ViT-B-16 (the image tower)

Weights specs for these families:

``DEFAULT`` (timm) / ``DEFAULT`` or a pretrained tag such as ``openai`` (open_clip)
    The library's pretrained weights, read from its download cache (the Hugging Face hub cache, or
    ``~/.cache/clip`` for open_clip URLs). Nothing is downloaded here: if the file is not cached, a
    one-line ``UserError`` names the file, where to put it, and ``--weights PATH``.
a path to a ``.safetensors`` / ``.pth`` / ``.bin`` / ``.pt`` file
    A local checkpoint, loaded by the library's own loader (timm's ``pretrained_cfg_overlay``
    file, open_clip's ``pretrained=PATH``).
``random``
    Random initialisation (seeded), labelled ``random`` everywhere.

Layers are module names (``blocks.11``, ``stages.2``; for open_clip those of the image tower,
``transformer.resblocks.11``). A transformer block outputs tokens ``(B, prefix + h*w, C)``: the
prefix tokens (CLS, registers) are dropped and the patch tokens are laid out as a ``(B, C, h, w)``
map, so every consumer (PCA / pooling of the ridge pipeline, the trained spatial readout) treats
them like a convolutional feature map.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
from pathlib import Path
from typing import Any

from core.util.errors import UserError

FAMILIES = ("timm", "open_clip")
HF_CACHE_HINT = "the Hugging Face hub cache (HF_HOME, default ~/.cache/huggingface/hub)"
# Suggested layers of the featured non-torchvision trunks.
SUGGESTED_LAYERS: dict[str, list[str]] = {
    "timm:eva02_base_patch14_224.mim_in22k": [f"blocks.{i}" for i in (3, 5, 7, 9, 11)],
    "timm:vit_base_patch14_dinov2": [f"blocks.{i}" for i in (3, 5, 7, 9, 11)],
    "open_clip:ViT-B-16": [f"transformer.resblocks.{i}" for i in (3, 5, 7, 9, 11)],
}


def split_name(model: str) -> tuple[str | None, str]:
    """``("timm", "vit_tiny_patch16_224")`` for ``timm:vit_tiny_patch16_224``; ``(None, name)`` for torchvision."""
    family, sep, name = model.partition(":")
    return (family, name) if sep and family in FAMILIES else (None, model)


def check_model(model: str) -> str:
    family, name = split_name(model)
    if family == "timm":
        import timm

        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=3)
            hint = f" (did you mean {', '.join('timm:' + c for c in close)}?)" if close else ""
            raise UserError(f"unknown timm model '{name}'{hint}; see timm.list_models()")
    else:
        import open_clip

        names = open_clip.list_models()
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = f" (did you mean {', '.join('open_clip:' + c for c in close)}?)" if close else ""
            raise UserError(f"unknown open_clip model '{name}'{hint}; valid: {', '.join(names)}")
    return f"{family}:{name}"


# --------------------------------------------------------------------------- weights


def _timm_cached(name: str) -> tuple[Path | None, str, str]:
    """(cached file or None, where it belongs, where it comes from) for timm's pretrained weights."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise UserError(f"timm has no pretrained weights for '{name}'; use a local file (--weights PATH) or 'random'")
    if cfg.hf_hub_id:
        for fname in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(cfg.hf_hub_id, fname)
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit), "", ""
        return None, f"{HF_CACHE_HINT} as repo {cfg.hf_hub_id}", f"https://huggingface.co/{cfg.hf_hub_id}"
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)
    return (path if path.is_file() else None), str(path.parent), cfg.url


def _open_clip_cached(name: str, tag: str) -> tuple[Path | None, str, str]:
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, fname = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        for f in ([fname] if fname else []) + ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]:
            hit = try_to_load_from_cache(repo, f)
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit), "", ""
        return None, f"{HF_CACHE_HINT} as repo {repo}", f"https://huggingface.co/{repo}"
    url = cfg.get("url", "")
    path = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
    return (path if path.is_file() else None), str(path.parent), url


def resolve(model: str, spec: str, *, looks_like_path, file_identity, weights_info_cls):
    """The ``WeightsInfo`` of ``spec`` for a timm / open_clip ``model`` (checks the cache; loads nothing)."""
    family, name = split_name(model)
    low = spec.lower()
    if low == "random":
        return weights_info_cls(model, "random", "random", f"{model} random init (untrained)", True, "random",
                                **_norm(family, name, None))
    if looks_like_path(spec) or Path(spec).expanduser().is_file():
        path = Path(spec).expanduser()
        if not path.is_file():
            raise UserError(f"{path}: weights file not found")
        tag = None if family == "timm" else _default_tag(name)
        return weights_info_cls(model, str(path), "file", f"{model} weights from {path.name}", False,
                                file_identity(path), path=str(path.resolve()), **_norm(family, name, tag))
    if family == "timm":
        if low not in ("default", "pretrained"):
            raise UserError(f"unknown weights '{spec}' for {model}: use DEFAULT (timm's pretrained weights; put a "
                            f"tag in the model name, e.g. timm:{name.split('.')[0]}.<tag>), a local file, or random")
        tag = None
        path, where, source = _timm_cached(name)
        hub_id = f"timm:{name}"
    else:
        import open_clip

        tags = open_clip.list_pretrained_tags_by_model(name)
        tag = _default_tag(name) if low in ("default", "pretrained") else spec
        if tag not in tags:
            raise UserError(f"unknown weights '{spec}' for {model}; valid: DEFAULT, {', '.join(tags) or '(none)'}, "
                            "a local file, or random")
        path, where, source = _open_clip_cached(name, tag)
        hub_id = f"open_clip:{name}:{tag}"
    if path is None:
        raise UserError(
            f"the pretrained weights of {model} are not in the cache and cannot be downloaded here: "
            f"get them from {source} and put them in {where}, or pass --weights /path/to/the/file "
            f"(or --weights random for untrained features)")
    return weights_info_cls(model, "DEFAULT" if family == "timm" else tag, "hub", f"{hub_id} (pretrained)", False,
                            hub_id, path=str(path), **_norm(family, name, tag))


def _default_tag(name: str) -> str | None:
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(name)
    return tags[0] if tags else None


def _norm(family: str, name: str, tag: str | None) -> dict:
    """Normalisation mean / std of the trunk's pretrained preprocessing."""
    if family == "timm":
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
        if cfg is not None and cfg.mean:
            return {"mean": tuple(float(v) for v in cfg.mean), "std": tuple(float(v) for v in cfg.std)}
        return {}
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag) if tag else {}
    mean = cfg.get("mean") or open_clip.OPENAI_DATASET_MEAN
    std = cfg.get("std") or open_clip.OPENAI_DATASET_STD
    return {"mean": tuple(float(v) for v in mean), "std": tuple(float(v) for v in std)}


# --------------------------------------------------------------------------- building and loading


def build(model: str, *, resolution: int | None = None, weights_file: str | None = None, device: Any = None):
    """The trunk as an ``nn.Module`` (open_clip: its image tower), random or loaded from ``weights_file``."""
    import torch

    family, name = split_name(model)
    ctx = torch.device(device) if device is not None else torch.device("cpu")
    try:
        with ctx:
            if family == "timm":
                import timm

                kwargs: dict[str, Any] = {"pretrained": weights_file is not None, "num_classes": 0}
                if weights_file is not None:
                    kwargs["pretrained_cfg_overlay"] = {"file": weights_file}
                try:
                    return timm.create_model(name, img_size=resolution, **kwargs) if resolution else \
                        timm.create_model(name, **kwargs)
                except TypeError:  # a convnet: no img_size
                    return timm.create_model(name, **kwargs)
            import open_clip

            net = open_clip.create_model(name, force_image_size=resolution, load_weights=False, device=ctx)
            if weights_file is not None:
                _load_open_clip_file(net, weights_file)
            return net.visual
    except UserError:
        raise
    except Exception as exc:
        if weights_file is None:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{weights_file}: does not load into {model} ({first[:200]})") from None


def _load_open_clip_file(net, path: str) -> None:
    """A full CLIP checkpoint or an image-tower state dict into ``net.visual`` (position embedding resized)."""
    import torch
    from open_clip.model import resize_pos_embed

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(path)
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise UserError(f"{path}: expected a state dict (name -> tensor), found {type(sd).__name__}")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    if not any(k.startswith("visual.") for k in sd):
        sd = {f"visual.{k}": v for k, v in sd.items()}
    resize_pos_embed(sd, net)
    net.visual.load_state_dict({k.removeprefix("visual."): v for k, v in sd.items() if k.startswith("visual.")})


@functools.lru_cache(maxsize=32)
def module_names(model: str) -> tuple[str, ...]:
    """Extractable layers, in registration (forward) order: modules up to two levels deep, and every block of
    a block list (``transformer.resblocks.7``)."""
    import torch

    net = build(model, device="meta")
    modules = dict(net.named_modules())
    lists = {n for n, m in modules.items()
             if n.count(".") <= 1 and isinstance(m, (torch.nn.Sequential, torch.nn.ModuleList))}
    return tuple(n for n in modules if n and (n.count(".") <= 1 or n.rpartition(".")[0] in lists)
                 and not n.startswith(("head", "fc_norm", "pos_drop", "patch_drop", "head_drop")))


def prefix_tokens(net) -> int:
    """How many non-patch tokens lead a transformer's token sequence (CLS, registers)."""
    if hasattr(net, "num_prefix_tokens"):
        return int(net.num_prefix_tokens)
    return 1 if getattr(net, "class_embedding", None) is not None else 0


def tokens_to_map(out, n_prefix: int):
    """``(B, prefix + h*w, C)`` tokens -> ``(B, C, h, w)`` patch map; other outputs unchanged."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if out.ndim == 3:
        n_patch = out.shape[1] - n_prefix
        side = math.isqrt(max(n_patch, 0))
        if side > 0 and side * side == n_patch:
            return out[:, n_prefix:].transpose(1, 2).reshape(out.shape[0], out.shape[2], side, side)
    return out
