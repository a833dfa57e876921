"""The one rule for every command that writes an output folder (``--out``).

``--out`` must be new or empty; a folder that already holds files (earlier results) is refused
unless ``--force`` is given, and then only the files of the same names are replaced (other
files are left alone). Commands build their results in a work folder beside ``--out``
(:func:`work_dir`) and move them in at the end (:func:`publish`), so a failed or killed run
changes nothing in ``--out``; work folders of killed runs are removed by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

from core.util.atomicdir import clean_dead_workdirs, workdir_name
from core.util.errors import UserError
from core.util.fsaccess import describe, disk_full_error, is_disk_full

RULE = ("--out must be a new or empty folder; one holding earlier results is refused unless --force is given "
        "(then files of the same names are replaced, others kept)")
FORCE_HELP = "write into a non-empty --out, replacing the files this command writes (others are kept)"


def prepare_out(path: str | os.PathLike, force: bool = False) -> Path:
    """``path`` as a Path once it passes the rule; creates nothing. ``UserError`` (one line) otherwise."""
    out = Path(path).expanduser()
    try:
        if out.exists() and not out.is_dir():
            raise UserError(f"{out}: exists and is not a folder")
        if out.is_dir() and not force and any(out.iterdir()):
            raise UserError(f"{out}: not empty (earlier results?); choose a new --out, or pass --force to replace "
                            "the files this command writes")
    except OSError as exc:
        raise UserError(describe(out, exc)) from None
    return out


def make_dir(folder: str | os.PathLike, out: str | os.PathLike) -> Path:
    """``folder`` (and its parents) created for ``out``'s results; a one-line ``UserError`` if it cannot be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot write the output here ({describe(folder, exc)})") from None
    return folder


def _work_prefix(out: Path, what: str) -> str:
    return f".{out.name}.{what}"


@contextlib.contextmanager
def work_dir(out: str | os.PathLike, what: str = "work", needed: float | None = None) -> Iterator[Path]:
    """A fresh folder beside ``out`` (``.<out>.<what>-<host>-<pid>``), removed on exit whatever happens.

    Work folders of dead processes beside ``out`` are removed first. A full disk while inside
    becomes a one-line ``UserError`` naming the folder (with ``needed``, the space the results
    take, when the caller knows it).
    """
    out = Path(out).expanduser()
    prefix = _work_prefix(out, what)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_dead_workdirs(out.parent, prefix)
        work = out.parent / workdir_name(prefix)
        work.mkdir()
    except OSError as exc:
        raise UserError(f"{out}: cannot write the output here ({describe(out.parent, exc)})") from None
    try:
        yield work
    except OSError as exc:
        if is_disk_full(exc, work):
            written = _tree_bytes(work)
            raise disk_full_error(out.parent, max(needed or 0, written) or None, "the results",
                                  "free some space or choose another --out") from None
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tree_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_size
    return total


def publish(work: Path, out: str | os.PathLike, names: Iterable[str]) -> None:
    """Move ``work/<name>`` into ``out`` for each name (files or folders), replacing what is there.

    Same file system (``work`` is beside ``out``): each move is a rename; a replaced folder is
    renamed into ``work`` first and removed with it.
    """
    out = Path(out).expanduser()
    out.mkdir(exist_ok=True)
    for name in names:
        src, dst = work / name, out / name
        if dst.is_dir() and not dst.is_symlink():
            os.replace(dst, work / f".replaced-{name}")
        try:
            os.replace(src, dst)
        except OSError as exc:
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.ENOTDIR):
                raise UserError(f"{dst}: cannot replace it ({exc.strerror})") from None
            raise


def generate_into(out: Path, generate) -> None:
    """``generate(folder)`` writes a whole new folder's content; it lands in ``out`` (new, empty, or
    replacing the same names with ``--force``) through a work folder, so a failure leaves ``out`` as it was."""
    with work_dir(out) as work:
        generate(work / "new")
        publish(work / "new", out, sorted(p.name for p in (work / "new").iterdir()))
