"""Where the product keeps its files: a per-user cache (demo data, image and feature caches, runs)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$BES_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/brain-encoding-studio`` (default ``~/.cache``)."""
    env = os.environ.get("BES_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "brain-encoding-studio"


def demo_dir() -> Path:
    """Where the dashboard generates the embedded demo dataset on first start."""
    return cache_dir() / "demo"


def demo2021_dir() -> Path:
    """Where the video demo (Algonauts 2021 layout) is generated on first use."""
    return cache_dir() / "demo2021"
