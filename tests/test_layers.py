"""The house's layering, read from the source (ast): what each package may import.

* The shared packages (``core.util``, ``core.features``, ``core.encoding``, ``core.viz``,
  ``core.runs``) import no challenge package (``core.algonauts2023``, ``core.algonauts2021``):
  a challenge builds on them, never the reverse (``core.runs.kinds`` names run kinds by string).
* No module imports a private name (``_x``) of another project module.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ("core.util", "core.features", "core.encoding", "core.viz", "core.runs")
CHALLENGES = ("core.algonauts2023", "core.algonauts2021")
PROJECT = ("core", "ui")  # packages whose private names stay private


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, imported module, names)`` of every import in ``path`` (function-level ones too),
    relative imports resolved against the module's package."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [a.name for a in node.names]
            # ``from core import algonauts2023`` imports the submodule
            out.append((node.lineno, base, names))
            out += [(node.lineno, f"{base}.{n}", []) for n in names]
    return out


def _within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def challenge_imports(path: Path) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line} imports {name}" for line, name, _ in imports(path)
            if _within(name, CHALLENGES)]


def private_imports(path: Path) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line} imports {n} from {name}" for line, name, names in imports(path)
            if _within(name, PROJECT) for n in names if n.startswith("_") and not n.startswith("__")]


SHARED_FILES = [p for p in _sources("core") if _within(_module_name(p), SHARED)]
ALL_FILES = _sources("core", "ui", "app_pages", "benchmarks") + [ROOT / "app.py"]


def test_every_shared_package_is_checked():
    assert {_module_name(p).rsplit(".", 1)[0] for p in SHARED_FILES if p.name != "__init__.py"} >= set(SHARED)


@pytest.mark.parametrize("path", SHARED_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shared_packages_import_no_challenge(path):
    assert challenge_imports(path) == []


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_names_imported_across_modules(path):
    assert private_imports(path) == []


def test_the_checks_catch_what_they_forbid(tmp_path, monkeypatch):
    """The parser sees absolute, relative, aliased and function-level imports."""
    pkg = tmp_path / "core" / "viz"
    pkg.mkdir(parents=True)
    bad = pkg / "bad.py"
    bad.write_text("import numpy\n"
                   "from .. import algonauts2021\n"
                   "def f():\n"
                   "    import core.algonauts2023.dataset as d\n"
                   "    from core.util.fileio import _hidden, json_safe\n"
                   "    from ..encoding.metrics import _private\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert [m.split(" imports ")[1] for m in challenge_imports(bad)] == ["core.algonauts2021",
                                                                         "core.algonauts2023.dataset"]
    assert sorted(m.split(" imports ")[1] for m in private_imports(bad)) == [
        "_hidden from core.util.fileio", "_private from core.encoding.metrics"]
