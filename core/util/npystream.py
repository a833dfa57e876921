"""Stream rows into and out of ``.npy`` files without holding (or memory-mapping) them whole.

:class:`NpyWriter` writes the header for a known shape, then appends rows as they
come; :func:`read_rows` reads a row range with ``pread`` into fresh memory. Neither
maps the file, so reading a large file chunk by chunk does not grow the process's
resident memory (a memory map's touched pages would count towards it). The files
are ordinary ``.npy`` files: ``np.load(path, mmap_mode="r")`` opens them too.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numpy.lib import format as npformat


class NpyWriter:
    """Append rows to a ``.npy`` file of shape ``(n, *row_shape)`` declared up front."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], dtype=np.float32):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.row_shape = self.shape[1:]
        self.rows_written = 0
        self._fh = open(self.path, "wb")
        npformat.write_array_header_1_0(
            self._fh, {"descr": npformat.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        )

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path}: rows of shape {rows.shape[1:]} do not fit {self.row_shape}")
        if self.rows_written + rows.shape[0] > self.shape[0]:
            raise ValueError(f"{self.path}: more than the declared {self.shape[0]} rows")
        self._fh.write(memoryview(rows).cast("B"))
        self.rows_written += rows.shape[0]

    def close(self, fsync: bool = True) -> Path:
        if self._fh.closed:
            return self.path
        if self.rows_written != self.shape[0]:
            self._fh.close()
            raise ValueError(f"{self.path}: {self.rows_written} rows written, {self.shape[0]} declared")
        self._fh.flush()
        if fsync:
            os.fsync(self._fh.fileno())
        self._fh.close()
        return self.path

    def abort(self) -> None:
        """Close without raising: on a full disk the buffered rows cannot be flushed, and need not be
        (the caller removes the partial file)."""
        if not self._fh.closed:
            try:
                self._fh.close()
            except OSError:
                pass  # the raw file is closed even when the final flush fails

    def __enter__(self) -> "NpyWriter":
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def npy_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of a C-order ``.npy`` file."""
    with open(path, "rb") as fh:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(fh)
        else:  # (3, 0): utf-8 header; no public reader
            from numpy.lib import _format_impl

            shape, fortran, dtype = _format_impl._read_array_header(fh, version)  # noqa: SLF001
        if fortran:
            raise ValueError(f"{path}: Fortran-order arrays are not supported here")
        return tuple(shape), dtype, fh.tell()


def npy_complete(path: str | os.PathLike, shape: tuple[int, ...] | None = None, dtype=None) -> bool:
    """Whether ``path`` is a ``.npy`` file whose header parses and whose data are all there
    (and, if given, of ``shape`` / ``dtype``): the check a cache runs before trusting an entry."""
    try:
        found_shape, found_dtype, offset = npy_header(path)
        size = os.stat(path).st_size
    except (OSError, ValueError, SyntaxError, TypeError):
        return False
    if shape is not None and tuple(found_shape) != tuple(shape):
        return False
    if dtype is not None and found_dtype != np.dtype(dtype):
        return False
    return size == offset + int(np.prod(found_shape, dtype=np.int64)) * found_dtype.itemsize


class NpyReader:
    """Read row ranges of a ``.npy`` file with ``pread`` (no memory map)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.shape, self.dtype, self._offset = npy_header(self.path)
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        stop = min(stop, self.shape[0])
        n = max(0, stop - start)
        if out is None:
            out = np.empty((n, *self.shape[1:]), dtype=self.dtype)
        else:
            out = out[:n]
        view = memoryview(out.reshape(-1).view(np.uint8))
        pos, done, total = self._offset + start * self._row_bytes, 0, n * self._row_bytes
        while done < total:
            got = os.preadv(self._fd, [view[done:]], pos + done)
            if got <= 0:
                raise OSError(f"{self.path}: file ends early (truncated?)")
            done += got
        return out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "NpyReader":
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def fsync_dir(path: str | os.PathLike) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
