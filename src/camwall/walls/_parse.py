"""A command-line form of a wall: ``LAYER:AXIS=START:STOP[,AXIS=START:STOP]``.

Grammar (whitespace around the parts is ignored)::

    wall   := LAYER ":" region
    LAYER  := dotted module name, e.g. layer3, features.29, layer2.0.0
    region := part [ "," part ]*
    part   := axis "=" range | "outside"
    axis   := "rows" | "cols"          (each at most once)
    range  := [START] ":" [STOP]       (integers, negative from the end, empty = open end)

``range`` has Python slice semantics in the coordinates of the layer's *output* map (stop
excluded). Examples: ``layer3:rows=4:`` (rows 4 to the end), ``layer3:rows=4:8,cols=0:2``
(a 4 x 2 rectangle), ``features.29:rows=-3:`` (the bottom 3 rows), ``layer4:cols=:2``
(the 2 leftmost columns), ``layer4:rows=0:4,cols=0:4,outside`` (everything but a 4 x 4 box).
"""

from __future__ import annotations

import re

from camwall.errors import CamwallError
from camwall.walls._spec import Span, WallSpec

__all__ = ["format_wall", "parse_wall"]

_LAYER = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
_BOUND = re.compile(r"-?\d+")
_EXAMPLE = "e.g. layer3:rows=4: (rows 4 to the end) or layer3:rows=4:8,cols=0:2 (a rectangle)"


def _error(text: str, why: str) -> CamwallError:
    return CamwallError(
        f"wall {text!r}: {why}. A wall is LAYER:AXIS=START:STOP[,AXIS=START:STOP] with AXIS "
        f"rows or cols, {_EXAMPLE}."
    )


def _bound(text: str, value: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not _BOUND.fullmatch(value):
        raise _error(text, f"bound {value!r} is not an integer")
    return int(value)


def parse_wall(text: str) -> tuple[str, WallSpec]:
    """Parse ``"layer3:rows=4:"`` into ``("layer3", WallSpec(rows=(4, None)))``.

    See the module docstring for the grammar. The layer name is not checked here (it is
    checked when the wall is inserted into a model).

    Raises:
        CamwallError: on bad syntax, with the grammar and an example.
    """
    if not isinstance(text, str):
        raise CamwallError(f"wall {text!r} is not a string; {_EXAMPLE}.")
    layer, sep, region = text.partition(":")
    layer = layer.strip()
    if not sep:
        raise _error(text, "no ':' after the layer name")
    if not _LAYER.fullmatch(layer):
        raise _error(text, f"{layer!r} is not a layer name (a dotted module name)")
    if not region.strip():
        raise _error(text, "no region after the layer name")
    spans: dict[str, Span] = {}
    outside = False
    for part in region.split(","):
        if part.strip() == "outside":
            outside = True
            continue
        axis, eq, rng = part.partition("=")
        axis = axis.strip()
        if not eq:
            raise _error(text, f"{part.strip()!r} has no '='")
        if axis not in ("rows", "cols"):
            raise _error(text, f"unknown axis {axis!r} (rows or cols)")
        if axis in spans:
            raise _error(text, f"{axis} is given twice")
        start, colon, stop = rng.partition(":")
        if not colon:
            raise _error(
                text,
                f"{axis}={rng.strip()} is not a range START:STOP (write {axis}={rng.strip()}: "
                f"for 'to the end' or {axis}=N:N+1 for one index)",
            )
        if ":" in stop:
            raise _error(text, f"{axis}={rng.strip()} has more than one ':' (no step allowed)")
        spans[axis] = (_bound(text, start), _bound(text, stop))
    if not spans:
        raise _error(text, "'outside' needs rows=... and/or cols=... (the box left open)")
    return layer, WallSpec(rows=spans.get("rows"), cols=spans.get("cols"), outside=outside)


def format_wall(layer: str, spec: WallSpec) -> str:
    """The :func:`parse_wall` form of a wall, e.g. ``"layer3:rows=4:"`` (its inverse)."""

    def fmt(span: Span) -> str:
        a, b = span
        return f"{'' if a is None else a}:{'' if b is None else b}"

    if spec.mask is not None:
        raise CamwallError("a mask wall has no command-line form; build it in Python.")
    kept = [
        f"{axis}={fmt(span)}"
        for axis, span in (("rows", spec.rows), ("cols", spec.cols))
        if span is not None
    ]
    return f"{layer}:{','.join([*kept, *(['outside'] if spec.outside else [])])}"
