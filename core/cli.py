"""``python -m core`` (installed: ``bes``): one subcommand per module in ``core/commands``.

Each command module defines ``add_parser(subparsers)``, which registers its parser and
sets ``func`` (``func(args) -> int``). Errors the user can fix (``DatasetError`` and any
other ``UserError``, and a full disk, missing permission or I/O error on a named file) print as
one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import core.commands
from core.util import fsaccess
from core.util.errors import UserError


def build_parser(prog: str = "python -m core") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Brain Encoding Studio: fMRI encoding models for NSD / Algonauts data.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(core.commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"core.commands.{info.name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command (``argv``: the command line without the program; default ``sys.argv[1:]``)."""
    installed = argv is None and os.path.basename(sys.argv[0]) == "bes"  # the console script
    args = build_parser("bes" if installed else "python -m core").parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in fsaccess.ONE_LINE_ERRNOS or not exc.filename:
            raise
        # a full disk, a permission or I/O problem that no command turned into a UserError: still one line
        print(f"error: {fsaccess.describe(exc.filename, exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
