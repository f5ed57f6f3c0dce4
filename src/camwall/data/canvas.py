"""Placing 28 x 28 Fashion-MNIST items on larger canvases, batched.

One call of :func:`place_items` renders a whole batch: each item is scaled to ``size x size``
pixels with bilinear interpolation, optionally mirrored left-right, and pasted with its top-left
corner at ``(top, left)`` on a black ``canvas x canvas`` background. It is one
``torch.nn.functional.grid_sample`` call, and it equals ``F.interpolate(mode="bilinear",
align_corners=False)`` followed by a paste (tested), for any mix of sizes in one batch.

For a canvas pixel ``(r, c)`` inside the item, the local position is ``(r - top, c - left)`` and
the source coordinate in the 28-pixel item is ``src = (dst + 0.5) * 28 / size - 0.5`` (clamped to
the item, like ``F.interpolate``); pixels outside the item are 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["place_items"]


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
    b, h, w = items.shape
    device = items.device
    src = items.to(torch.float32)
    if items.dtype == torch.uint8:
        src = src / 255.0
    size_f = size.to(device=device, dtype=torch.float32).view(b, 1)
    grid_r = torch.arange(canvas, device=device, dtype=torch.float32).view(1, canvas)
    local_r = grid_r - top.to(device=device, dtype=torch.float32).view(b, 1)  # B x canvas
    local_c = grid_r - left.to(device=device, dtype=torch.float32).view(b, 1)
    inside_r = (local_r >= 0) & (local_r < size_f)
    inside_c = (local_c >= 0) & (local_c < size_f)
    if flip is not None:
        flip_b = flip.to(device=device, dtype=torch.bool).view(b, 1)
        local_c = torch.where(flip_b, size_f - 1 - local_c, local_c)
    # normalized grid coordinate for align_corners=False: g = (2 * dst + 1) / size - 1
    gy = (2 * local_r + 1) / size_f - 1  # B x canvas
    gx = (2 * local_c + 1) / size_f - 1
    grid = torch.stack(
        (
            gx.view(b, 1, canvas).expand(b, canvas, canvas),
            gy.view(b, canvas, 1).expand(b, canvas, canvas),
        ),
        dim=-1,
    )
    out = F.grid_sample(
        src.view(b, 1, h, w), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    mask = (inside_r.view(b, canvas, 1) & inside_c.view(b, 1, canvas)).view(b, 1, canvas, canvas)
    return (out * mask).clamp_(0.0, 1.0)
