"""File-system checks that fail in one line: a folder this user cannot read, a symbolic-link loop,
an I/O error, a full disk, each named with the path it concerns (``pathlib``'s ``is_file()``
raises ``PermissionError`` for an unreadable parent and answers False for a link loop, which
then reads as "missing file")."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from core.util.errors import DatasetError, UserError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
ONE_LINE_ERRNOS = (*DISK_FULL, errno.EACCES, errno.EPERM, errno.ELOOP, errno.EIO, errno.EROFS, errno.ENAMETOOLONG)
_REASONS = {
    errno.EACCES: "permission denied (this user may not read it; check its permissions)",
    errno.EPERM: "permission denied (this user may not read it; check its permissions)",
    errno.ELOOP: "symbolic link loop (a link that points back at itself)",
    errno.ENAMETOOLONG: "path too long",
    errno.EIO: "input/output error (a failing disk or network share?)",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.EROFS: "read-only file system",
}


def human_bytes(n: float) -> str:
    """``1536 -> '1.5 kB'``, ``3.2e9 -> '3.2 GB'``: two significant digits below 10, whole numbers above."""
    n = float(n)
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            if unit == "bytes":
                return f"{int(n)} bytes"
            return f"{n:.1f} {unit}" if abs(n) < 10 else f"{n:.0f} {unit}"
        n /= 1000
    raise AssertionError


def _blamed(path: Path, exc: OSError) -> Path:
    """The path to name: for a permission error, the first folder on the way that cannot be entered."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        for parent in reversed(path.parents):
            if parent.is_dir() and not os.access(parent, os.X_OK | os.R_OK):
                return parent
    return path


def describe(path: str | os.PathLike, exc: OSError) -> str:
    """One line: the path (or the folder on its way that is to blame) and what is wrong."""
    path = Path(path)
    if exc.errno in DISK_FULL:
        return disk_full_message(path if path.is_dir() else path.parent, None)
    reason = _REASONS.get(exc.errno or 0, exc.strerror or type(exc).__name__)
    return f"{_blamed(path, exc)}: {reason}"


def fs_error(path: str | os.PathLike, exc: OSError) -> DatasetError:
    return DatasetError(describe(path, exc))


def _mode(path: str | os.PathLike) -> int | None:
    try:
        return os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise fs_error(path, exc) from None


def is_file(path: str | os.PathLike) -> bool:
    """True for a regular file, False if nothing is there; ``DatasetError`` if it cannot be checked."""
    mode = _mode(path)
    return mode is not None and stat.S_ISREG(mode)


def is_dir(path: str | os.PathLike) -> bool:
    """True for a folder, False if nothing is there; ``DatasetError`` if it cannot be checked."""
    mode = _mode(path)
    return mode is not None and stat.S_ISDIR(mode)


def list_dir(folder: str | os.PathLike) -> list[Path]:
    """The entries of ``folder``; ``DatasetError`` naming it if it cannot be listed."""
    folder = Path(folder)
    try:
        return list(folder.iterdir())
    except OSError as exc:
        raise fs_error(folder, exc) from None


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Free space for this user on ``folder``'s file system (its nearest existing ancestor)."""
    folder = Path(folder)
    for p in (folder, *folder.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def is_disk_full(exc: OSError, folder: str | os.PathLike) -> bool:
    """Whether ``exc`` means the disk holding ``folder`` is full: ENOSPC / EDQUOT, or the errno-less
    "N requested and M written" that numpy's writers raise on a short write, with under 1 MB left."""
    if exc.errno in DISK_FULL:
        return True
    if exc.errno is None and "requested and" in str(exc):
        free = free_bytes(folder)
        return free is not None and free < (1 << 20)
    return False


def disk_full_message(folder: str | os.PathLike, needed: float | None, what: str = "the files",
                      hint: str = "") -> str:
    """``"<folder>: no room for <what> (needs about 1.2 GB, 300 MB free); <hint>"``."""
    free = free_bytes(folder)
    parts = []
    if needed is not None:
        parts.append(f"needs about {human_bytes(needed)}")
    if free is not None:
        parts.append(f"{human_bytes(free)} free")
    detail = f" ({', '.join(parts)})" if parts else ""
    return f"{folder}: no room for {what} on this disk{detail}{'; ' + hint if hint else ''}"


def disk_full_error(folder: str | os.PathLike, needed: float | None, what: str = "the files",
                    hint: str = "") -> UserError:
    return UserError(disk_full_message(folder, needed, what, hint))


def check_free(folder: str | os.PathLike, needed: float, what: str = "the files", hint: str = "",
               margin: float = 1.05) -> None:
    """``UserError`` (one line) unless ``folder`` has ``needed`` bytes free (with a small margin)."""
    free = free_bytes(folder)
    if free is not None and needed * margin > free:
        raise disk_full_error(folder, needed, what, hint)
