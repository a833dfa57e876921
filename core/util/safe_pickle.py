"""Restricted unpickling for the pickled files our users' datasets ship.

The Algonauts 2023 ``mapping_<class>.npy`` files are ``np.save``'d dicts: a 0-d
object array whose payload is a pickle. The Algonauts 2021 ROI files are pickled
dicts of arrays. A plain ``pickle.load`` would run whatever code such a file asks
for; these loaders accept only the few globals that plain data needs (numpy's array
and scalar reconstruction, dtypes) and refuse anything else with a clear error.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npformat

from core.util.errors import DatasetError
from core.util.fsaccess import describe

# Globals that rebuild numpy arrays and scalars, and nothing else.
_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}
_BUILTIN_GLOBALS = {("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("collections", "OrderedDict")}


class UnsafePickleError(DatasetError):
    """A pickled file asked for something other than plain data, or is unreadable."""


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, fh, source: str, allow_arrays: bool):
        super().__init__(fh, encoding="latin1")
        self._source = source
        self._allowed = _BUILTIN_GLOBALS | (_NUMPY_GLOBALS if allow_arrays else set())

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._source}: refused to unpickle '{module}.{name}' (only plain dicts, lists, numbers, "
            "strings and numpy arrays are accepted)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source}: refused a persistent id in the pickle")


def loads(data: bytes, source: str = "<bytes>", allow_arrays: bool = True) -> Any:
    """Unpickle ``data`` accepting plain data only; ``source`` names it in errors."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data), source, allow_arrays).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or corrupt stream
        raise UnsafePickleError(f"{source}: not a readable pickle ({type(exc).__name__}: {exc})") from None


def load(path: str | Path, allow_arrays: bool = True) -> Any:
    """Restricted-unpickle the file at ``path`` (a ``.pkl``)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnsafePickleError(describe(path, exc)) from None
    return loads(data, str(path), allow_arrays)


def load_object_npy(path: str | Path) -> Any:
    """Read an ``np.save``'d object array (e.g. a pickled dict) without ``allow_pickle=True``.

    Returns the array's single item for a 0-d array (the usual ``np.load(...).item()``),
    else the array.
    """
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise UnsafePickleError(describe(path, exc)) from None
    with fh:
        try:
            major, _minor = npformat.read_magic(fh)
            read_header = npformat.read_array_header_1_0 if major == 1 else npformat.read_array_header_2_0
            _shape, _fortran, dtype = read_header(fh, max_header_size=1 << 20)
        except Exception as exc:
            raise UnsafePickleError(f"{path}: not a valid .npy file ({exc})") from None
        if not dtype.hasobject:
            raise UnsafePickleError(f"{path}: expected a pickled object array, found dtype {dtype}")
        array = loads(fh.read(), str(path))
    if not isinstance(array, np.ndarray):
        raise UnsafePickleError(f"{path}: payload is a {type(array).__name__}, not an array")
    return array.item() if array.shape == () else array
