"""The figures (matplotlib, Agg), one set per walled model:

- ``leakage-MODEL.png``: per-image mu box plots per method and dataset, coloured by verdict
  (green respects the wall, orange leaks, red no better than uniform, grey controls), the
  uniform map's mu as a dashed line and the paper's values as black diamonds.
- ``maps-MODEL-DATASET.png``: the paper's Figure 7 layout: rows = methods, columns = the stored
  images; each map (jet) over its image, the dead zone hatched and the wall drawn in red.
- ``dead-zone-MODEL.png``: the dead zone, and an example image of up to two datasets with it.

Incomplete results are drawn as they are and marked ``(done/expected)``; a method with no rows
has an empty box and dimmed map cells.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from camwall.bench._results import DatasetResult, ModelResult
from camwall.bench._store import png_to_array
from camwall.bench._summary import PAPER, paper_column
from camwall.bench._tables import dead_text, pct, progress
from camwall.bench._verdict import Verdict, classify
from camwall.metrics import CONTROLS

__all__ = ["boxplots", "dead_zone_picture", "figure_grid", "row_labels"]

COLORS = {
    Verdict.CONTROL: "#9e9e9e",
    Verdict.NO_DATA: "#9e9e9e",
    Verdict.RESPECTS: "#2e7d32",
    Verdict.LEAKS: "#ef6c00",
    Verdict.UNIFORM: "#c62828",
}


def _mpl() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


# -- box plots ----------------------------------------------------------------------------------


def boxplots(
    model: ModelResult,
    methods: list[str],
    path: Path,
    families: Mapping[str, str] | None = None,
) -> bool:
    """Write ``leakage-MODEL.png`` at ``path``: one panel per dataset. False if nothing to draw.

    With ``families`` (method -> family; ``methods`` grouped by family), a dotted line
    separates the families and each is named above its boxes."""
    plt = _mpl()
    if not model.datasets or not methods:
        return False
    n = len(model.datasets)
    fig, axes = plt.subplots(1, n, figsize=(6.2 * n, 4.2), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, ds in zip(axes[0], model.datasets.values()):
        _box_panel(ax, ds, methods, model.dead_zone.uniform_mu, rng)
        if families:
            _family_marks(ax, methods, families)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _family_marks(ax: Any, methods: list[str], families: Mapping[str, str]) -> None:
    """Dotted separators between consecutive families, and each family's name above it."""
    from camwall.explainers import FAMILIES

    start = 0
    for i in range(1, len(methods) + 1):
        if i < len(methods) and families.get(methods[i]) == families.get(methods[start]):
            continue
        family = families.get(methods[start], "other")
        ax.text((start + i + 1) / 2, 101, FAMILIES.get(family, family), ha="center", fontsize=7)
        if i < len(methods):
            ax.axvline(i + 0.5, ls=":", color="#888", lw=1)
        start = i


def _box_panel(
    ax: Any, ds: DatasetResult, methods: list[str], uni: float, rng: np.random.Generator
) -> None:
    """One dataset's panel: a box and the jittered points per method."""
    results = [ds.methods[m] for m in methods]
    data = [[100 * v for v in r.leakage if not np.isnan(v)] for r in results]
    colors = [COLORS[classify(r)] for r in results]
    pos = np.arange(1, len(methods) + 1)
    bp = ax.boxplot(data, positions=pos, widths=0.6, showfliers=False, patch_artist=True)
    for patch, color in zip(bp["boxes"], colors):
        patch.set_facecolor(color)
        patch.set_alpha(0.35)
        patch.set_edgecolor(color)
    for p, vals, color in zip(pos, data, colors):
        ax.scatter(p + rng.uniform(-0.18, 0.18, len(vals)), vals, s=5, color=color, alpha=0.7)
    ax.axhline(100 * uni, ls="--", color="#555", lw=1)
    ax.text(0.55, 100 * uni + 1, "uniform map", va="bottom", fontsize=8, color="#555")
    col = paper_column(ds.dataset)
    if col:
        px = [p for p, m in zip(pos, methods) if m in PAPER and m != "uniform"]
        py = [100 * PAPER[m][col][0] for m in methods if m in PAPER and m != "uniform"]
        ax.scatter(px, py, marker="D", s=28, color="black", zorder=5, label=f"paper {col}")
        ax.legend(loc="upper right", fontsize=8, frameon=True)
    ax.set_xticks(pos)
    ax.set_xticklabels(
        [m + progress(r) for m, r in zip(methods, results)], rotation=35, ha="right", fontsize=8
    )
    if not ds.stored:
        ax.text(0.5, 0.5, f"no results yet{progress(ds)}", transform=ax.transAxes, ha="center")
    ax.set_ylabel("wall leakage μ (%)")
    ax.set_ylim(-3, 103)
    title = f"{ds.dataset}: green respects the wall, orange leaks, red ≥ uniform"
    if ds.incomplete:
        title = (
            f"{ds.dataset} (incomplete{progress(ds)}): green respects, orange leaks, red ≥ uniform"
        )
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)


# -- Figure 7 grids -----------------------------------------------------------------------------


def _upscale(a: np.ndarray, s: int) -> np.ndarray:
    return a if s == 1 else np.repeat(np.repeat(a, s, axis=0), s, axis=1)


def _decorate(rgb: np.ndarray, dead: np.ndarray) -> np.ndarray:
    """Hatch the dead zone (white diagonals) and draw the wall (red) on an RGB cell."""
    h, w = dead.shape
    yy, xx = np.mgrid[0:h, 0:w]
    hatch = dead & (((xx + yy) % 10) < 2)
    out = rgb.copy()
    out[hatch] = 0.45 * out[hatch] + 0.55
    edge = np.zeros_like(dead)
    edge[1:] |= dead[1:] & ~dead[:-1]
    edge[:-1] |= dead[:-1] & ~dead[1:]
    edge[:, 1:] |= dead[:, 1:] & ~dead[:, :-1]
    edge[:, :-1] |= dead[:, :-1] & ~dead[:, 1:]
    thick = edge.copy()
    thick[1:] |= edge[:-1]
    thick[:-1] |= edge[1:]
    out[thick] = (1.0, 0.1, 0.1)
    return out


def _column(
    ds: DatasetResult, i: int, methods: list[str], dead: np.ndarray, scale: int
) -> list[np.ndarray]:
    """The cells of image ``i``: the image, then each method's map (jet) over it; a missing map
    is the image dimmed. Each ``(H s) x (W s) x 3``, dead zone hatched and wall drawn."""
    from matplotlib import colormaps

    jet = colormaps["jet"]
    img = png_to_array(ds.figures[(i, "image")])
    gray = img if img.ndim == 2 else img.mean(axis=2)
    base = np.repeat(_upscale(gray, scale)[..., None], 3, axis=2)
    cells = [base if img.ndim == 2 else _upscale(img, scale)]
    for meth in methods:
        blob = ds.figures.get((i, meth))
        if blob is None:
            cells.append(0.5 * base)
        else:
            cells.append(0.45 * base + 0.55 * jet(_upscale(png_to_array(blob), scale))[..., :3])
    return [_decorate(c.astype(np.float32), dead) for c in cells]


def _canvas(
    ds: DatasetResult, images: list[int], methods: list[str], dead: np.ndarray
) -> tuple[np.ndarray, int, int, int]:
    """All cells on one white canvas: ``(canvas, cell height, cell width, padding)``. Each
    image is drawn with its own dead zone when the store holds one (``(i, "dead_zone")``, a
    per-output wall: the explained cell's), else with the model's ``dead``."""
    h, w = dead.shape
    scale = max(1, round(112 / max(h, w)))
    ch, cw, pad = h * scale, w * scale, 6
    canvas = np.ones(
        ((len(methods) + 1) * (ch + pad), len(images) * (cw + pad), 3), dtype=np.float32
    )
    for c, i in enumerate(images):
        own = ds.figures.get((i, "dead_zone"))
        zone = png_to_array(own) > 0.5 if own is not None else dead
        for r, rgb in enumerate(_column(ds, i, methods, _upscale(zone, scale), scale)):
            y, x = r * (ch + pad), c * (cw + pad)
            canvas[y : y + ch, x : x + cw] = rgb
    return canvas, ch, cw, pad


def row_labels(
    ds: DatasetResult, methods: list[str], families: Mapping[str, str] | None = None
) -> list[str]:
    """The grid's row labels: ``image``, then each method with its mu (and progress); with
    ``families``, the family's name in brackets above the first method of each family."""
    from camwall.explainers import FAMILIES

    fams = families or {}
    labels = ["image"]
    for k, meth in enumerate(methods):
        res = ds.methods[meth]
        label = f"{meth}\nμ = {pct(res.headline.mean)}%{progress(res)}"
        family = fams.get(meth)
        if family and (k == 0 or fams.get(methods[k - 1]) != family):
            label = f"[{FAMILIES.get(family, family)}]\n{label}"
        labels.append(label)
    return labels


def figure_grid(
    model: ModelResult,
    ds: DatasetResult,
    methods: list[str],
    classes: list[str],
    path: Path,
    families: Mapping[str, str] | None = None,
) -> bool:
    """Write ``maps-MODEL-DATASET.png``: the paper's Figure 7 layout (rows = methods, columns =
    the stored images, map over image, wall drawn). Row labels carry mu (and progress), column
    labels the predicted class and whether it is right. False if there is nothing to draw.

    The cells are composed in numpy into one picture (fast), then labelled with matplotlib.
    """
    plt = _mpl()
    methods = [m for m in methods if m not in CONTROLS]
    images = sorted(i for (i, k) in ds.figures if k == "image")
    if not images or not methods:
        return False
    canvas, ch, cw, pad = _canvas(ds, images, methods, model.dead_zone.mask)
    dpi, left, top = 100, 130, 40
    fig_w, fig_h = (canvas.shape[1] + left + 10) / dpi, (canvas.shape[0] + top + 10) / dpi
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    box = (
        left / dpi / fig_w,
        10 / dpi / fig_h,
        canvas.shape[1] / dpi / fig_w,
        canvas.shape[0] / dpi / fig_h,
    )
    ax = fig.add_axes(box)
    ax.imshow(canvas, interpolation="nearest")
    ax.set_axis_off()
    for r, label in enumerate(row_labels(ds, methods, families)):
        ax.text(-8, r * (ch + pad) + ch / 2, label, ha="right", va="center", fontsize=9)
    for c, i in enumerate(images):
        if i not in ds.predictions:
            continue
        true, pred = ds.predictions[i]
        name = classes[pred] if pred < len(classes) else str(pred)
        mark = "✓" if true == pred else "✗"
        ax.text(
            c * (cw + pad) + cw / 2, -4, f"#{i} {name} {mark}", ha="center", va="bottom", fontsize=8
        )
    state = f" (incomplete{progress(ds)})" if ds.incomplete else ""
    fig.suptitle(
        f"{ds.dataset}{state} — {model.name}: CAM (jet) over the image; dead zone hatched, "
        "wall in red",
        fontsize=10,
        y=1 - 4 / dpi / fig_h,
        va="top",
    )
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return True


# -- the dead zone ------------------------------------------------------------------------------


def _dead_overlay(ax: Any, dead: np.ndarray, lw: float = 1.2) -> None:
    """Hatch the dead zone and draw the wall line on an image axis."""
    if not dead.any():
        return
    ax.contourf(
        dead.astype(float), levels=[0.5, 1.5], colors="none", hatches=["////"], extend="neither"
    )
    ax.contour(dead.astype(float), levels=[0.5], colors=["#ff2a2a"], linewidths=lw)


def dead_zone_picture(model: ModelResult, path: Path) -> None:
    """Write ``dead-zone-MODEL.png``: the mask, then image 0 of up to two datasets with it."""
    plt = _mpl()
    dead = model.dead_zone.mask
    examples = [
        (d, ds.figures[(0, "image")])
        for d, ds in model.datasets.items()
        if (0, "image") in ds.figures
    ][:2]
    n = 1 + len(examples)
    with plt.rc_context({"hatch.color": "white", "hatch.linewidth": 0.8}):
        fig, axes = plt.subplots(1, n, figsize=(2.8 * n, 3.2), squeeze=False)
        ax = axes[0][0]
        ax.imshow(dead, cmap="Greys", vmin=0, vmax=1.4)
        ax.contour(dead.astype(float), levels=[0.5], colors=["#ff2a2a"], linewidths=1.5)
        ax.set_title("dead zone (dark)", fontsize=9)
        for ax, (d, blob) in zip(axes[0][1:], examples):
            ax.imshow(png_to_array(blob), cmap="gray", vmin=0, vmax=1)
            _dead_overlay(ax, dead, lw=1.5)
            ax.set_title(f"{d} image 0", fontsize=9)
        for ax in axes[0]:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(f"dead zone: {dead_text(model.dead_zone)}", fontsize=9)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
