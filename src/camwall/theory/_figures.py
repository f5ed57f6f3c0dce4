"""Figures of the theory (matplotlib, Agg backend): numpy lives only here and in the CLI."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from torch import Tensor

__all__ = ["plot_at_init", "plot_expectation"]

_WALL = {"color": "#00e5ff", "linewidth": 1.6, "linestyle": "--"}
_DEAD = {"color": "#ff4081", "linewidth": 1.6, "linestyle": ":"}


def _hline(ax: Axes, row: int, style: dict[str, object], label: str) -> None:
    """Horizontal line between rows ``row - 1`` and ``row`` of an ``imshow`` image."""
    ax.axhline(row - 0.5, label=label, **style)  # type: ignore[arg-type]


def _clean(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def plot_expectation(
    image: Tensor,
    mc_mean: Tensor,
    exact: Tensor,
    bound: Tensor | None,
    *,
    wall_row: int,
    dead_row: int,
    title: str,
    path: Path,
) -> Path:
    """The Figure-3-style picture: image, Monte Carlo mean GradCAM, exact map, bound map.

    The three maps share one color scale. The dashed line is the wall on the activation maps
    (rows ``>= wall_row`` are never read by the head); the dotted line on the image marks the
    first dead input row.
    """
    maps = [("Monte Carlo mean GradCAM", mc_mean), ("exact E[GC] (closed form)", exact)]
    if bound is not None:
        maps.append(("Theorem 3 lower bound", bound))
    vmax = float(max(m.max() for _, m in maps))
    fig, axes = plt.subplots(1, 1 + len(maps), figsize=(3.3 * (1 + len(maps)), 3.8))
    axes[0].imshow(image.detach().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
    _hline(axes[0], dead_row, _DEAD, f"dead zone (input rows >= {dead_row})")
    axes[0].set_title("input (29x29)", fontsize=10)
    _clean(axes[0])
    images = []
    for ax, (name, m) in zip(axes[1:], maps):
        im = ax.imshow(m.detach().cpu().numpy(), cmap="jet", vmin=0, vmax=vmax)
        _hline(ax, wall_row, _WALL, f"wall (activation rows >= {wall_row})")
        ax.set_title(name, fontsize=10)
        _clean(ax)
        images.append(im)
    fig.colorbar(images[-1], ax=list(axes[1:]), fraction=0.025, pad=0.02)
    handles = [*axes[0].get_legend_handles_labels()[0], *axes[1].get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.02, right=0.9, top=0.83, bottom=0.12, wspace=0.08)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_at_init(
    images: Tensor,
    cams: Tensor,
    captions: list[str],
    *,
    wall_row: int,
    dead_row: int,
    title: str,
    path: Path,
) -> Path:
    """The at-initialization figure: items (top row) and their GradCAM maps (bottom row).

    Each GradCAM map has its own color scale (raw values, not normalized); the dashed line is
    the wall, the dotted line on the items the first dead input row.
    """
    n = images.shape[0]
    fig, axes = plt.subplots(2, n, figsize=(2.3 * n, 5.4), squeeze=False)
    for j in range(n):
        top, bottom = axes[0, j], axes[1, j]
        top.imshow(images[j, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        _hline(top, dead_row, _DEAD, f"dead zone (input rows >= {dead_row})")
        top.set_title(captions[j], fontsize=9)
        cam = cams[j].cpu().numpy()
        bottom.imshow(cam, cmap="jet", vmin=0, vmax=max(float(cam.max()), 1e-12))
        _hline(bottom, wall_row, _WALL, f"wall (activation rows >= {wall_row})")
        below = cams[j, wall_row:]
        bottom.set_title(
            f"below wall: {100 * float(below.sum() / cams[j].sum().clamp_min(1e-30)):.0f}% of sum\n"
            f"max {float(below.max()):.3g}",
            fontsize=8,
        )
        _clean(top)
        _clean(bottom)
    handles = [
        *axes[0, 0].get_legend_handles_labels()[0],
        *axes[1, 0].get_legend_handles_labels()[0],
    ]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.84, bottom=0.08, wspace=0.08, hspace=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
