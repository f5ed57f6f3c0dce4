"""The ``camwall`` command line: a thin layer over the library.

Each area of the library that offers commands has a ``camwall.<area>.cli`` module with a
``register(subparsers)`` function that adds its sub-commands. Each sub-command sets
``func=callable(args) -> int``. Choices come from the library's registries.

Errors the user can fix are :class:`camwall.errors.CamwallError`; they are printed as
``camwall: error: ...`` without a traceback, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from camwall import __version__
from camwall.errors import CamwallError

__all__ = ["build_parser", "main"]

# Areas whose ``cli`` module adds sub-commands, in the order they appear in ``--help``.
_AREAS = ("bench", "cams", "walls", "data", "train", "theory")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every area's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="camwall",
        description="Test whether saliency maps are faithful, with walled models.",
    )
    parser.add_argument("--version", action="version", version=f"camwall {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for area in _AREAS:
        name = f"camwall.{area}.cli"
        if importlib.util.find_spec(f"camwall.{area}") is None:
            continue
        if importlib.util.find_spec(name) is None:
            continue
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 on success, 2 on a user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except CamwallError as err:
        print(f"camwall: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("camwall: interrupted; results written so far are kept.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
