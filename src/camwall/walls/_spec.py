"""The wall region: a band, a box, the outside of a box, or a mask of a feature map
(:class:`WallSpec`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from camwall.errors import CamwallError

__all__ = ["WallSpec"]

Span = tuple[int | None, int | None]


def _span(value: object, axis: str) -> Span | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise CamwallError(
            f"WallSpec {axis}={value!r} is not a (start, stop) pair; give e.g. {axis}=(5, None) "
            "for 'from index 5 to the end' (Python slice semantics, negative indices allowed)."
        )
    out: list[int | None] = []
    for v in value:
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise CamwallError(f"WallSpec {axis}={value!r}: bounds must be integers or None.")
        out.append(v)
    return (out[0], out[1])


def _mask(value: object) -> tuple[str, ...] | None:
    """``mask`` as a tuple of equal-length strings of ``0`` (open) and ``1`` (blocked)."""
    if value is None:
        return None
    rows = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if (
        not rows
        or not all(isinstance(r, str) and r and set(r) <= {"0", "1"} for r in rows)
        or len({len(r) for r in rows}) != 1
    ):
        raise CamwallError(
            f"WallSpec mask={str(value)[:60]!r}: give one string of 0 (open) and 1 (blocked) "
            "per feature-map row, all of the same length, e.g. ('0011', '0011')."
        )
    if "1" not in "".join(rows):
        raise CamwallError("WallSpec mask blocks nothing; mark blocked cells with 1.")
    return tuple(rows)


@dataclass(frozen=True)
class WallSpec:
    """The *blocked* region of a feature map, in feature-map coordinates.

    ``rows`` and ``cols`` are ``(start, stop)`` pairs with Python slice semantics (``stop``
    excluded, ``None`` for an open end, negative indices count from the end). A missing axis
    means "all of it". They select a *box*; with ``outside=True`` everything but the box is
    blocked. A ``mask`` (one string of ``0``/``1`` per row, ``1`` = blocked) names any set of
    cells of a map of exactly that size instead. So:

    * ``WallSpec(rows=(5, None))``: rows 5.. of every column (the paper's wall, 14-row map);
      ``WallSpec.bottom(9)``, ``top(n)``, ``left(n)``, ``right(n)``: a band on any side;
    * ``WallSpec(rows=(2, 4), cols=(2, 4))``: a 2 x 2 box;
    * ``WallSpec(rows=(0, 8), cols=(0, 8), outside=True)``: all but the top-left 8 x 8 box
      (a grid cell's per-output wall);
    * ``WallSpec(mask=("01", "10"))``: the anti-diagonal of a 2 x 2 map.

    JSON round trip: :meth:`to_dict` / :meth:`from_dict` (``outside`` and ``mask`` are written
    only when used, so the JSON of a band or a box is unchanged).
    """

    rows: Span | None = None
    cols: Span | None = None
    outside: bool = False
    mask: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        rows = _span(self.rows, "rows")
        cols = _span(self.cols, "cols")
        mask = _mask(self.mask)
        if not isinstance(self.outside, bool):
            raise CamwallError(f"WallSpec outside={self.outside!r} must be true or false.")
        if mask is not None and (rows is not None or cols is not None or self.outside):
            raise CamwallError("WallSpec: give either a mask or rows/cols (a box), not both.")
        if rows is None and cols is None and mask is None:
            raise CamwallError(
                "WallSpec needs rows, cols or both, or a mask; a wall over the whole map would "
                "block everything. Example: WallSpec(rows=(5, None))."
            )
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "cols", cols)
        object.__setattr__(self, "mask", mask)

    @classmethod
    def bottom(cls, n: int) -> WallSpec:
        """The bottom ``n`` rows, all columns."""
        return cls(rows=(-cls._band(n, "bottom"), None))

    @classmethod
    def top(cls, n: int) -> WallSpec:
        """The top ``n`` rows, all columns."""
        return cls(rows=(0, cls._band(n, "top")))

    @classmethod
    def left(cls, n: int) -> WallSpec:
        """The ``n`` leftmost columns, all rows."""
        return cls(cols=(0, cls._band(n, "left")))

    @classmethod
    def right(cls, n: int) -> WallSpec:
        """The ``n`` rightmost columns, all rows."""
        return cls(cols=(-cls._band(n, "right"), None))

    @staticmethod
    def _band(n: int, side: str) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise CamwallError(f"WallSpec.{side}(n={n!r}): n must be an integer >= 1.")
        return n

    @classmethod
    def from_mask(cls, blocked: Tensor) -> WallSpec:
        """The wall blocking exactly the True cells of a bool ``[H, W]`` tensor."""
        if blocked.dim() != 2:
            shape = tuple(blocked.shape)
            raise CamwallError(f"WallSpec.from_mask needs an [H, W] mask, got {shape}.")
        rows = ["".join("1" if v else "0" for v in row) for row in blocked.bool().tolist()]
        return cls(mask=tuple(rows))

    def blocked(self, height: int, width: int, device: torch.device | None = None) -> Tensor:
        """Bool ``[height, width]``: True inside the wall (blocked), False where data passes.

        Raises:
            CamwallError: when the region is empty on a ``height x width`` map, or a mask is
            not of that size.
        """
        if self.mask is not None:
            if (len(self.mask), len(self.mask[0])) != (height, width):
                raise CamwallError(
                    f"wall mask is {len(self.mask)} x {len(self.mask[0])} but the feature map "
                    f"is {height} x {width}; give a mask of the map's size."
                )
            flat = [c == "1" for row in self.mask for c in row]
            return torch.tensor(flat, dtype=torch.bool, device=device).reshape(height, width)
        out = torch.zeros(height, width, dtype=torch.bool, device=device)
        rs = slice(*self.rows) if self.rows is not None else slice(None)
        cs = slice(*self.cols) if self.cols is not None else slice(None)
        out[rs, cs] = True
        if self.outside:
            out = ~out
        if not bool(out.any()):
            raise CamwallError(
                f"wall {self.describe()} blocks nothing on a {height} x {width} feature map; "
                "check the rows/cols against the feature-map size."
            )
        return out

    def describe(self) -> str:
        """Human-readable form, e.g. ``rows 5: x all cols`` or ``outside rows 0:8 x cols 0:8``."""
        if self.mask is not None:
            blocked = sum(row.count("1") for row in self.mask)
            return f"mask {len(self.mask)} x {len(self.mask[0])} ({blocked} blocked)"

        def fmt(span: Span | None) -> str:
            if span is None:
                return "all"
            a, b = span
            return f"{'' if a is None else a}:{'' if b is None else b}"

        box = f"rows {fmt(self.rows)} x cols {fmt(self.cols)}"
        return f"outside {box}" if self.outside else box

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"rows": [start, stop] | None, "cols": [start, stop] | None}``,
        plus ``"outside": true`` when set; ``{"mask": [...]}`` for a mask."""
        if self.mask is not None:
            return {"mask": list(self.mask)}
        out: dict[str, Any] = {
            "rows": list(self.rows) if self.rows is not None else None,
            "cols": list(self.cols) if self.cols is not None else None,
        }
        if self.outside:
            out["outside"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WallSpec:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        extra = set(data) - {"rows", "cols", "outside", "mask"}
        if extra:
            raise CamwallError(
                f"WallSpec: unknown keys {sorted(extra)}; expected rows, cols, outside, mask."
            )
        return cls(
            rows=data.get("rows"),
            cols=data.get("cols"),
            outside=data.get("outside", False),
            mask=data.get("mask"),
        )
