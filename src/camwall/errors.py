"""User-facing errors.

Every error that a user can fix (bad path, bad shape, unknown name, NaN input, ...) is raised as a
:class:`CamwallError` whose message names the offending file or argument and says how to fix it.
The CLI prints the message without a traceback and exits with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["CamwallError", "did_you_mean"]


class CamwallError(ValueError):
    """An error caused by user input; its message is meant to be read by the user."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""`` when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""
