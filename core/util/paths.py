"""Where the product keeps its files (a per-user cache: demo data, image and feature caches, runs), the
default data directory, and which folders a dashboard user may open (``BES_DATA_ROOTS``)."""

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


DATA_DIR_ENV = "BES_DATA_DIR"
DATA2021_DIR_ENV = "BES_DATA2021_DIR"
DATA_ROOTS_ENV = "BES_DATA_ROOTS"


def default_data_dir() -> Path:
    """The data directory used when none is given, by the dashboard and ``python -m core info`` alike:
    ``$BES_DATA_DIR`` when set, else the embedded demo (:func:`demo_dir`, generated on first use)."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else demo_dir()


def default_data2021_dir() -> Path:
    """``$BES_DATA2021_DIR`` when set, else the embedded video demo."""
    env = os.environ.get(DATA2021_DIR_ENV)
    return Path(env).expanduser() if env else demo2021_dir()


def allowed_data_roots() -> list[Path]:
    """The folders a dashboard (browser) user may open, with everything under them.

    ``$BES_DATA_ROOTS`` (folders separated by ``os.pathsep``) when set; else the two demos and
    ``$BES_DATA_DIR`` / ``$BES_DATA2021_DIR`` when set. The command line is not restricted.
    """
    env = os.environ.get(DATA_ROOTS_ENV)
    if env:
        roots = [Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    else:
        roots = [demo_dir(), demo2021_dir(), default_data_dir(), default_data2021_dir()]
    out: list[Path] = []
    for r in roots:
        r = Path(os.path.realpath(r))
        if r not in out:
            out.append(r)
    return out


def check_browsable(path: str | os.PathLike) -> Path:
    """``path`` (user-expanded) if it lies within :func:`allowed_data_roots` after resolving links and
    ``..``; else ``UserError`` with one message that is the same whether or not the path exists."""
    given = Path(path).expanduser()
    real = Path(os.path.realpath(given))
    roots = allowed_data_roots()
    if any(real == r or r in real.parents for r in roots):
        return given
    from core.util.errors import UserError

    raise UserError(f"{path}: outside the folders this dashboard may open ({os.pathsep.join(map(str, roots))}); "
                    f"the server's administrator can add folders with {DATA_ROOTS_ENV}")
