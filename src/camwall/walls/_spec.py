"""The wall region: rows, columns or a rectangle of a feature map (:class:`WallSpec`)."""

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


@dataclass(frozen=True)
class WallSpec:
    """The *blocked* region of a feature map, in feature-map coordinates.

    ``rows`` and ``cols`` are ``(start, stop)`` pairs with Python slice semantics (``stop``
    excluded, ``None`` for an open end, negative indices count from the end). A missing axis
    means "all of it", so:

    * ``WallSpec(rows=(5, None))``: rows 5.. of every column (the paper's wall, 14-row map);
    * ``WallSpec(cols=(0, 3))``: the 3 leftmost columns;
    * ``WallSpec(rows=(2, 4), cols=(2, 4))``: a 2 x 2 rectangle.

    JSON round trip: :meth:`to_dict` / :meth:`from_dict`.
    """

    rows: Span | None = None
    cols: Span | None = None

    def __post_init__(self) -> None:
        rows = _span(self.rows, "rows")
        cols = _span(self.cols, "cols")
        if rows is None and cols is None:
            raise CamwallError(
                "WallSpec needs rows, cols or both; a wall over the whole map would block "
                "everything. Example: WallSpec(rows=(5, None))."
            )
        object.__setattr__(self, "rows", rows)
        object.__setattr__(self, "cols", cols)

    @classmethod
    def bottom(cls, n: int) -> WallSpec:
        """The bottom ``n`` rows, all columns."""
        if n < 1:
            raise CamwallError(f"WallSpec.bottom(n={n}): n must be >= 1.")
        return cls(rows=(-n, None))

    def blocked(self, height: int, width: int, device: torch.device | None = None) -> Tensor:
        """Bool ``[height, width]``: True inside the wall (blocked), False where data passes.

        Raises:
            CamwallError: when the region is empty on a ``height x width`` map.
        """
        out = torch.zeros(height, width, dtype=torch.bool, device=device)
        rs = slice(*self.rows) if self.rows is not None else slice(None)
        cs = slice(*self.cols) if self.cols is not None else slice(None)
        out[rs, cs] = True
        if not bool(out.any()):
            raise CamwallError(
                f"wall {self.describe()} blocks nothing on a {height} x {width} feature map; "
                "check the rows/cols against the feature-map size."
            )
        return out

    def describe(self) -> str:
        """Human-readable form, e.g. ``rows 5: x all cols``."""

        def fmt(span: Span | None) -> str:
            if span is None:
                return "all"
            a, b = span
            return f"{'' if a is None else a}:{'' if b is None else b}"

        return f"rows {fmt(self.rows)} x cols {fmt(self.cols)}"

    def to_dict(self) -> dict[str, list[int | None] | None]:
        """JSON-ready form: ``{"rows": [start, stop] | None, "cols": [start, stop] | None}``."""
        return {
            "rows": list(self.rows) if self.rows is not None else None,
            "cols": list(self.cols) if self.cols is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WallSpec:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        extra = set(data) - {"rows", "cols"}
        if extra:
            raise CamwallError(f"WallSpec: unknown keys {sorted(extra)}; expected rows, cols.")
        return cls(rows=data.get("rows"), cols=data.get("cols"))
