"""Checks of method option values: ``check(name, value) -> value`` or a CamwallError naming it.

A method lists one check per option in ``CamMethod.checks``; the engine runs them once, when it
builds the method for a call, before any pass through the model. A check returns the value
unchanged (the method reads it as given).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from camwall.errors import CamwallError

__all__ = [
    "Check",
    "as_given",
    "boolean",
    "generator",
    "non_negative",
    "number",
    "one_of",
    "optional",
    "positive",
    "positive_int",
    "seed",
]

#: ``check(option_name, value) -> value``; raises a CamwallError naming the option.
Check = Callable[[str, Any], Any]


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def as_given(name: str, value: Any) -> Any:
    """Any value: checked where it is used (against the model or the logits)."""
    return value


def positive_int(name: str, value: Any) -> int:
    """A positive int (chunk sizes, sample and iteration counts)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CamwallError(f"option {name} must be a positive integer, got {value!r}.")
    return value


def number(name: str, value: Any) -> float:
    """A finite int or float."""
    if not _is_number(value) or not math.isfinite(value):
        raise CamwallError(f"option {name} must be a finite number, got {value!r}.")
    return value


def non_negative(name: str, value: Any) -> float:
    """A finite int or float, at least 0."""
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise CamwallError(f"option {name} must be a finite non-negative number, got {value!r}.")
    return value


def positive(name: str, value: Any) -> float:
    """A finite int or float, above 0 (a learning rate)."""
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise CamwallError(f"option {name} must be a finite positive number, got {value!r}.")
    return value


def boolean(name: str, value: Any) -> bool:
    """True or False."""
    if not isinstance(value, bool):
        raise CamwallError(f"option {name} must be True or False, got {value!r}.")
    return value


#: The seeds ``torch.Generator.manual_seed`` takes.
SEED_RANGE = (-(2**63), 2**64 - 1)


def seed(name: str, value: Any) -> int | None:
    """An integer seed that torch's generators take, or None (the method's default seed)."""
    if value is None:
        return value
    lo, hi = SEED_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CamwallError(
            f"option {name} must be an integer in [-2**63, 2**64 - 1] or None, got {value!r}."
        )
    return value


def generator(name: str, value: Any) -> torch.Generator | None:
    """A CPU ``torch.Generator``, or None."""
    if value is not None and not isinstance(value, torch.Generator):
        raise CamwallError(f"option {name} must be a torch.Generator, got {type(value).__name__}.")
    return value


def one_of(*choices: str) -> Check:
    """One of the given strings."""

    def check(name: str, value: Any) -> str:
        if value not in choices:
            listed = " or ".join(repr(c) for c in choices)
            raise CamwallError(f"option {name} must be {listed}, got {value!r}.")
        return value

    return check


def optional(inner: Check) -> Check:
    """None, or what ``inner`` accepts."""

    def check(name: str, value: Any) -> Any:
        return None if value is None else inner(name, value)

    return check


def base_options(name: str, value: Any) -> dict[str, Any]:
    """``None`` or a dict of a base method's own options (checked when the base is built)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CamwallError(
            f"option {name} must be a dict of the base method's options (e.g. "
            f"{{'scorecam_chunk': 8}}), got {type(value).__name__}."
        )
    return dict(value)
