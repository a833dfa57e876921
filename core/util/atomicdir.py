"""Cache entries that appear whole or not at all: build in a staging folder, then rename.

``with staging_dir(final) as tmp:`` yields an empty ``.tmp-*`` folder beside
``final``; on success it is renamed onto ``final`` (if another process published
the same entry first, that one is kept and ours is dropped); on any exception,
including KeyboardInterrupt, the staging folder is removed. Staging folders left by
a killed process (its pid gone) are removed by :func:`clean_stale`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Iterator

from core.util.npystream import fsync_dir

_HOST = socket.gethostname().replace("-", "_")


def _tmp_name(final: Path) -> str:
    return f".tmp-{final.name}-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def staging_dir(final: str | os.PathLike) -> Iterator[Path]:
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / _tmp_name(final)
    tmp.mkdir()
    try:
        yield tmp
        fsync_dir(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # someone else published it first: keep theirs
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def pid_exists(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one of another user counts; a zombie too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(parent: str | os.PathLike) -> list[Path]:
    """Remove staging folders in ``parent`` whose process (on this host) no longer exists."""
    removed = []
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    for p in parent.glob(".tmp-*"):
        parts = p.name.rsplit("-", 3)
        if len(parts) != 4 or parts[1] != _HOST or not parts[2].isdigit():
            continue
        if not pid_exists(int(parts[2])):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed
