"""The ``camwall`` command line: a thin layer over the library.

Each area of the library that offers commands is a sub-package ``camwall.<area>`` with a ``cli``
module; :func:`build_parser` finds them with :mod:`pkgutil` (no list to keep up to date). A
``cli`` module defines ``ORDER`` (its place in ``--help``; lower first, then by name) and
``register(subparsers)``, which adds its sub-commands; each sub-command sets
``func=run_<command>(args) -> int``. Choices come from the library's registries; option types and
helpers come from :mod:`camwall._cliargs`.

Errors the user can fix are :class:`camwall.errors.CamwallError` (and bad arguments, and
:class:`OSError` on the paths the user gave); they are printed as one line ``camwall: error: ...``
without a traceback, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

import camwall
from camwall import __version__
from camwall._cliargs import CliParser
from camwall.errors import CamwallError

__all__ = ["build_parser", "cli_modules", "main"]

_DEFAULT_ORDER = 100


def cli_modules() -> list[ModuleType]:
    """Every ``camwall.<area>.cli`` module, sorted by its ``ORDER`` attribute, then by name."""
    found = []
    for info in pkgutil.iter_modules(camwall.__path__):
        if not info.ispkg or info.name.startswith("_"):
            continue
        if importlib.util.find_spec(f"camwall.{info.name}.cli") is None:
            continue
        found.append(importlib.import_module(f"camwall.{info.name}.cli"))
    return sorted(found, key=lambda m: (getattr(m, "ORDER", _DEFAULT_ORDER), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every area's sub-commands."""
    parser = CliParser(
        prog="camwall",
        description="Test whether saliency maps are faithful, with walled models.",
    )
    parser.add_argument("--version", action="version", version=f"camwall {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in cli_modules():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 on success, 2 on a user error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # a bad argument (2) is returned; --help and --version exit
        if stop.code == 2:
            return 2
        raise
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CamwallError as err:
        print(f"camwall: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a path given by the user: unreadable, full disk, ...
        where = f": {err.filename}" if err.filename else ""
        print(f"camwall: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("camwall: interrupted; results written so far are kept.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
