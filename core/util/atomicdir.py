"""Cache entries that appear whole or not at all: build in a staging folder, then rename.

``with staging_dir(final, valid) as tmp:`` yields an empty ``.tmp-*`` folder beside
``final``; on success it is renamed onto ``final``. If another process published the same
entry first, that one is kept and ours is dropped, unless ``valid(final)`` says it is
damaged: then it is set aside (:func:`set_aside`) and ours takes its place. On any
exception, including KeyboardInterrupt, the staging folder is removed. Staging and
set-aside folders left by a killed process (its pid gone) are removed by
:func:`clean_stale`; work folders of dead processes by :func:`clean_dead_workdirs`.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import socket
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional

from core.util.npystream import fsync_dir

HOST = socket.gethostname().replace("-", "_")
_STAGING_PREFIXES = (".tmp-", ".broken-")
log = logging.getLogger(__name__)


def _tmp_name(final: Path, prefix: str = ".tmp-") -> str:
    return f"{prefix}{final.name}-{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def staging_dir(final: str | os.PathLike, valid: Optional[Callable[[Path], bool]] = None) -> Iterator[Path]:
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
            if valid is None or valid(final):
                shutil.rmtree(tmp, ignore_errors=True)  # someone else published it first: keep theirs
            else:
                set_aside(final, "failed its check")
                os.rename(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def set_aside(entry: str | os.PathLike, reason: str) -> None:
    """Move a damaged cache entry out of the way (one warning line naming it), then delete it.

    The rename is atomic, so readers see either the old entry or none; a rebuild can then
    publish a fresh one. If another process set it aside first, nothing happens.
    """
    entry = Path(entry)
    aside = entry.parent / _tmp_name(entry, ".broken-")
    try:
        os.rename(entry, aside)
    except FileNotFoundError:
        return
    log.warning("%s: damaged cache entry (%s); set aside and rebuilt", entry, reason)
    shutil.rmtree(aside, ignore_errors=True)


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
    """Remove staging and set-aside folders in ``parent`` whose process (on this host) no longer exists."""
    removed = []
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    for prefix in _STAGING_PREFIXES:
        for p in parent.glob(f"{prefix}*"):
            parts = p.name.rsplit("-", 3)
            if len(parts) != 4 or parts[1] != HOST or not parts[2].isdigit():
                continue
            if not pid_exists(int(parts[2])):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def workdir_name(prefix: str) -> str:
    """``<prefix>-<host>-<pid>``: a work folder that :func:`clean_dead_workdirs` can attribute to this process."""
    return f"{prefix}-{HOST}-{os.getpid()}"


def clean_dead_workdirs(parent: str | os.PathLike, prefix: str) -> list[Path]:
    """Remove ``parent/<prefix>-<host>-<pid>`` (and the older ``<prefix>-<pid>``) folders whose process is gone.

    Folders of other hosts are left alone (their pids mean nothing here).
    """
    removed = []
    parent = Path(parent)
    try:
        candidates = list(parent.glob(f"{glob.escape(prefix)}-*"))
    except OSError:
        return removed
    for p in candidates:
        tail = p.name[len(prefix) + 1:]
        host, _, pid = tail.rpartition("-")
        if not pid.isdigit() or (host and host != HOST) or int(pid) == os.getpid() or pid_exists(int(pid)):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed
