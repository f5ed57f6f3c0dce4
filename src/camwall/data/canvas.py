"""Placing small items (28 x 28 Fashion-MNIST) on larger canvases, batched.

One call of :func:`place_items` renders a whole batch: each item is scaled to ``size x size``
pixels with bilinear interpolation, optionally mirrored left-right, and pasted with its top-left
corner at ``(top, left)`` on a black ``canvas x canvas`` background. It equals
``F.interpolate(mode="bilinear", align_corners=False)`` followed by a paste (tested to 1e-5),
for any mix of sizes and positions in one batch.

Bilinear resizing is separable, so each canvas is ``R_b @ item_b @ C_b^T`` with two sparse
interpolation matrices ``R_b`` (``canvas x h``) and ``C_b`` (``canvas x w``): two batched
matrix products, fast on CPU and GPU alike. For canvas row ``r`` the item row is
``d = r - top``; if ``0 <= d < size`` the source coordinate is
``s = max(0, (d + 0.5) * h / size - 0.5)`` (``F.interpolate``'s rule) and ``R_b[r]`` holds
``1 - (s - floor(s))`` at ``floor(s)`` and ``s - floor(s)`` at ``min(floor(s) + 1, h - 1)``;
otherwise the row of ``R_b`` is 0. Columns likewise, with ``d -> size - 1 - d`` when mirrored.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["interpolation_matrix", "place_items"]


def interpolation_matrix(
    n_in: int, size: Tensor, offset: Tensor, canvas: int, flip: Tensor | None = None
) -> Tensor:
    """Bilinear scale-and-shift matrices along one axis.

    Args:
        n_in: length of the item along the axis.
        size: int tensor ``B``: scaled length.
        offset: int tensor ``B``: canvas position of the item's first pixel.
        canvas: canvas length.
        flip: optional bool tensor ``B``: mirror the item along the axis.

    Returns:
        float32 ``B x canvas x n_in`` on ``size.device``; row ``i`` gives the weights of the
        item pixels that make canvas pixel ``i``.
    """
    b = size.shape[0]
    dev = size.device
    size_f = size.to(torch.float32).view(b, 1)
    pos = torch.arange(canvas, device=dev, dtype=torch.float32).view(1, canvas)
    local = pos - offset.to(device=dev, dtype=torch.float32).view(b, 1)
    inside = ((local >= 0) & (local < size_f)).to(torch.float32)
    if flip is not None:
        local = torch.where(
            flip.to(device=dev, dtype=torch.bool).view(b, 1), size_f - 1 - local, local
        )
    src = ((local + 0.5) * (n_in / size_f) - 0.5).clamp(min=0.0)
    i0 = src.floor().clamp(max=n_in - 1)
    frac = src - i0
    lo = i0.to(torch.int64).clamp(min=0)
    hi = (lo + 1).clamp(max=n_in - 1)
    w = torch.zeros(b, canvas, n_in, device=dev, dtype=torch.float32)
    w.scatter_add_(2, lo.unsqueeze(2), ((1 - frac) * inside).unsqueeze(2))
    w.scatter_add_(2, hi.unsqueeze(2), (frac * inside).unsqueeze(2))
    return w


def place_items(
    items: Tensor,
    size: Tensor,
    top: Tensor,
    left: Tensor,
    flip: Tensor | None = None,
    canvas: int = 64,
) -> Tensor:
    """Render items on canvases.

    Args:
        items: uint8 (0..255) or float (0..1) tensor ``B x h x w`` (Fashion-MNIST: 28 x 28).
        size: int tensor ``B``: the side of each scaled item, in pixels (square items).
        top: int tensor ``B``: row of the item's top edge on the canvas (may be negative or run
            past the canvas; the part outside is cut off).
        left: int tensor ``B``: column of the item's left edge.
        flip: optional bool tensor ``B``: mirror the item left-right.
        canvas: the canvas side, in pixels.

    Returns:
        float32 ``B x 1 x canvas x canvas`` in ``[0, 1]`` on ``items.device``.
    """
    if items.dim() != 3:
        raise ValueError(f"items must be B x h x w, got shape {tuple(items.shape)}")
    _, h, w = items.shape
    dev = items.device
    src = items.to(torch.float32)
    if items.dtype == torch.uint8:
        src = src / 255.0
    rows = interpolation_matrix(h, size.to(dev), top.to(dev), canvas)
    cols = interpolation_matrix(w, size.to(dev), left.to(dev), canvas, flip)
    out = torch.bmm(torch.bmm(rows, src), cols.transpose(1, 2))
    return out.unsqueeze(1).clamp_(0.0, 1.0)
