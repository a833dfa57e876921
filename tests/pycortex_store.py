"""pycortex filestores for tests: an empty one, or a copy of the S1 subject bundled with pycortex.

Used by the flat-map, Flatmaps-page and WebGL-viewer tests, so no test depends on the user's filestore.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import shutil
import sys
from pathlib import Path

import pytest

from core.viz import flatmaps


def require_pycortex():
    reason = flatmaps.pycortex_unavailable_reason()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"pycortex must be installed in CI: {reason}")
        pytest.skip(reason)
    return flatmaps.import_cortex()


@contextlib.contextmanager
def use_filestore(path: Path):
    """Point pycortex (``cortex.db``) at the filestore ``path`` for the duration, caches included."""
    cortex = require_pycortex()
    db, config = cortex.db, cortex.options.config
    old_store = db.filestore
    old_cache = config.get("basic", "cache") if config.has_option("basic", "cache") else None
    config.remove_option("basic", "cache")  # a user's cache setting would send caches elsewhere
    db.filestore = str(path)
    db.__dict__.pop("_memocache", None)
    db.reload_subjects()
    try:
        yield cortex
    finally:
        db.filestore = old_store
        db.__dict__.pop("_memocache", None)
        db.reload_subjects()
        if old_cache is not None:
            config.set("basic", "cache", old_cache)


_CACHED = ("cache", "surface-info")  # where pycortex puts what it builds for a subject on first use


def s1_filestore(request, tmp_path_factory) -> Path:
    """A filestore holding a copy of the S1 subject bundled with pycortex, made once per test session.

    The caches pycortex builds for S1 (about a minute of work here) are kept in pytest's cache between
    sessions: they only save time.
    """
    cortex = require_pycortex()
    store = tmp_path_factory.getbasetemp() / "pycortex-s1"
    if store.is_dir():
        return store
    defaults = configparser.ConfigParser()
    defaults.read(Path(cortex.options.cwd) / "defaults.cfg")
    bundled = Path(defaults.get("basic", "filestore", fallback=str(Path(sys.prefix) / "share/pycortex/db"))) / "S1"
    if not (bundled / "surfaces" / "flat_lh.gii").is_file():
        pytest.fail(f"pycortex's bundled S1 subject is missing ({bundled})")
    building = tmp_path_factory.mktemp("pycortex-s1-building")
    shutil.copytree(bundled, building / "S1", ignore=shutil.ignore_patterns("cache", "views"))
    kept = request.config.cache.mkdir("pycortex-S1") if request.config.cache else None
    if kept is not None:
        for name in _CACHED:
            if (kept / name).is_dir():
                shutil.copytree(kept / name, building / "S1" / name, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
        request.config.add_cleanup(lambda: _keep_caches(store / "S1", kept))
    building.rename(store)
    return store


def _keep_caches(subject: Path, kept: Path) -> None:
    """Copy the cache files pycortex built in this session into pytest's cache, each one atomically."""
    for name in _CACHED:
        for src in (subject / name).glob("*"):
            dst = kept / name / src.name
            if src.is_file() and not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                partial = dst.with_name(f".{dst.name}.{os.getpid()}")
                shutil.copy2(src, partial)
                os.replace(partial, dst)
