"""A grid of example images with their labels (matplotlib, Agg backend)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["preview_grid"]


def preview_grid(
    images: Tensor,
    labels: Tensor | Sequence[int] | Sequence[Sequence[int]],
    class_names: Sequence[str],
    out: str | os.PathLike[str],
    title: str = "",
    mark_rows: Sequence[int] = (),
    ncols: int | None = None,
) -> Path:
    """Save a grid of ``images`` (``N x C x H x W`` in [0, 1], C = 1 or 3) as a PNG.

    Args:
        images: the images; grayscale ones are drawn with a gray colormap.
        labels: one class index per image (or one per grid cell: ``N x cells``, names joined
            with ``|`` in row-major cell order), shown above the image.
        class_names: names indexed by label.
        out: output path (``.png``).
        title: figure title.
        mark_rows: rows to mark with a dashed red line (e.g. the dead zone's first row).
        ncols: columns; default ``ceil(sqrt(N))``.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 2.1 * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= n:
            continue
        img = images[k].detach().to("cpu", torch.float32).clamp(0, 1)
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
        for r in mark_rows:
            ax.axhline(r - 0.5, color="red", linestyle="--", linewidth=0.8)
        values = torch.as_tensor(labels[k]).reshape(-1).tolist()  # one, or one per grid cell
        names = [class_names[v] if 0 <= v < len(class_names) else str(v) for v in values]
        ax.set_title(f"{k}: {' | '.join(names)}", fontsize=8 if len(names) == 1 else 5)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
