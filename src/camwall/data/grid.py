"""``fashion-grid``: 2 x 2 mosaics of four Fashion-MNIST items of four *different* classes (the
DiFull grid of Rao, Böhle and Schiele, CVPR 2022, on the embedded data).

A mosaic is ``1 x S x S`` (``S`` = 64 by default) made of four ``S/2 x S/2`` cells numbered
row-major: cell 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right. Cell ``k`` holds one
item scaled to ``28 * S / 64`` pixels; in the fixed (evaluation) layout it sits at offset
``2 * S / 64`` from the cell's top-left corner (centred); the training layout jitters the
offset by up to ``+-2 * S / 64`` pixels per axis and mirrors items at random. Labels are
``N x 4`` (``labels[i, k]`` = class of cell ``k``); the four classes of a mosaic are distinct.

Sampling (deterministic for a seed): one ``torch.Generator`` seeded with ``seed``; per mosaic,
the first four classes of a random permutation of the ten; per class, its items in a random
order, each used once until the class runs out (then the order starts again). The evaluation
dataset (``DATASETS.get("fashion-grid").build(n, seed)``) reads the test split; training reads
the train split through :func:`fashion_grids` (fresh mosaics every epoch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from camwall import __version__
from camwall.data.canvas import place_items
from camwall.data.canvases import CANVAS
from camwall.data.composites import DATASETS, CompositeBuilder, Composites
from camwall.data.fashion import FASHION_CLASSES, load_fashion_mnist
from camwall.errors import CamwallError

__all__ = [
    "CELLS",
    "GRID_VERSION",
    "FashionGrids",
    "GridBuilder",
    "cell_masks",
    "fashion_grids",
    "sample_grid",
]

CELLS = 4
"""Cells per mosaic (2 x 2, row-major)."""
GRID_VERSION = 1
"""Design version of ``fashion-grid`` (``meta["version"]``)."""


def cell_masks(size: int = CANVAS) -> Tensor:
    """Bool ``[4, size, size]``: ``masks[k]`` is True on cell ``k`` (row-major 2 x 2)."""
    half = size // 2
    masks = torch.zeros(CELLS, size, size, dtype=torch.bool)
    for k in range(CELLS):
        r, c = divmod(k, 2)
        masks[k, r * half : (r + 1) * half, c * half : (c + 1) * half] = True
    return masks


def sample_grid(pool: Tensor, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(labels N x 4, item indices N x 4)``: four distinct classes per mosaic, items drawn
    per class in a random order without reuse until the class runs out."""
    k = len(FASHION_CLASSES)
    labels = torch.stack([torch.randperm(k, generator=g)[:CELLS] for _ in range(n)])
    index = torch.empty(n, CELLS, dtype=torch.int64)
    for c in range(k):
        where = labels == c
        members = (pool == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        count = int(where.sum())
        index[where] = members[torch.arange(count) % len(members)]
    return labels, index


def _offsets(n: int, g: torch.Generator, size: int, augment: bool) -> dict[str, Tensor]:
    """Item side, top/left offset inside the cell and mirror flag per item (``N x 4`` each)."""
    side = round(28 * size / CANVAS)
    base = round(2 * size / CANVAS)
    shape = (n, CELLS)
    if augment:
        top = torch.randint(0, 2 * base + 1, shape, generator=g)
        left = torch.randint(0, 2 * base + 1, shape, generator=g)
        flip = torch.rand(shape, generator=g) < 0.5
    else:
        top = torch.full(shape, base)
        left = torch.full(shape, base)
        flip = torch.zeros(shape, dtype=torch.bool)
    return {"size": torch.full(shape, side), "top": top, "left": left, "flip": flip}


def render_grid(items: Tensor, index: Tensor, p: dict[str, Tensor], size: int) -> Tensor:
    """Mosaics ``N x 1 x size x size`` from item indices ``N x 4`` and placements ``N x 4``."""
    n = index.shape[0]
    half = size // 2
    cells = place_items(
        items[index.reshape(-1)],
        p["size"].reshape(-1),
        p["top"].reshape(-1),
        p["left"].reshape(-1),
        p["flip"].reshape(-1),
        canvas=half,
    ).reshape(n, 2, 2, half, half)
    return cells.permute(0, 1, 3, 2, 4).reshape(n, 1, size, size)


def _sources(
    index: Tensor, labels: Tensor, p: dict[str, Tensor], size: int
) -> list[dict[str, Any]]:
    keys = ("size", "top", "left")
    return [
        {
            "labels": labels[i].tolist(),
            "classes": [FASHION_CLASSES[int(c)] for c in labels[i]],
            "cells": [
                {"index": int(index[i, k]), **{key: int(p[key][i, k]) for key in keys}}
                for k in range(CELLS)
            ],
            "size": size,
        }
        for i in range(len(labels))
    ]


def _check_size(size: int) -> None:
    if size < 8 or size % 2:
        raise CamwallError(f"size must be an even number of pixels >= 8, got {size}.")


@dataclass(frozen=True)
class GridBuilder(CompositeBuilder):
    """The ``fashion-grid`` builder (``labels`` are ``N x 4``; see the module docstring)."""

    def build(
        self,
        n: int = 100,
        seed: int = 0,
        size: int = CANVAS,
        root: str | os.PathLike[str] | None = None,
        **kw: Any,
    ) -> Composites:
        """``n`` mosaics from the test split (``split="train"`` for the train split).

        Returns:
            :class:`Composites`: ``images`` float32 ``n x 1 x size x size``, ``labels`` int64
            ``n x 4``, ``meta["task"] == "grid"``, ``meta["cells"] == [2, 2]``.
        """
        split = kw.pop("split", "test")
        if kw:
            raise CamwallError(f"{self.name}: unknown option(s) {sorted(kw)}; known: split.")
        if split not in ("train", "test"):
            raise CamwallError(f"{self.name}: split must be 'train' or 'test', got {split!r}.")
        if n < 1:
            raise CamwallError(f"n must be at least 1, got {n}.")
        _check_size(size)
        items, pool = load_fashion_mnist(split, root)
        if n > len(pool):  # like fashion-stackmix's limit: bounded by the split, not by memory
            raise CamwallError(
                f"{self.name}: n={n} mosaics would hold {n * size * size * 4 / 2**30:.1f} GiB "
                f"and reuse each {split} item {CELLS * n // len(pool)} times; use n <= {len(pool)}."
            )
        g = torch.Generator().manual_seed(int(seed))
        labels, index = sample_grid(pool, n, g)
        p = _offsets(n, g, size, augment=False)
        meta = {
            "dataset": self.name,
            "version": self.version,
            "task": "grid",
            "cells": [2, 2],
            "n": n,
            "seed": int(seed),
            "size": size,
            "source_split": split,
            "class_names": list(FASHION_CLASSES),
            "camwall": __version__,
            "torch": torch.__version__,
        }
        images = render_grid(items, index, p, size)
        return Composites(images, labels, _sources(index, labels, p, size), meta)

    __call__ = build

    def render(self, source: dict[str, Any], root: str | os.PathLike[str] | None = None) -> Tensor:
        """Rebuild one mosaic from its ``sources`` entry (test split): ``1 x size x size``."""
        items, _ = load_fashion_mnist("test", root)
        cells = source["cells"]
        index = torch.tensor([[c["index"] for c in cells]])
        p = {k: torch.tensor([[c[k] for c in cells]]) for k in ("size", "top", "left")}
        p["flip"] = torch.zeros(1, CELLS, dtype=torch.bool)
        return render_grid(items, index, p, int(source["size"]))[0]


DATASETS.add(
    GridBuilder(
        "fashion-grid",
        "2 x 2 mosaics of four items of different classes; labels per cell (N x 4)",
        lambda *args: [],  # unused: build() samples with sample_grid
        lambda sources, items, size: torch.empty(0),  # unused: build() renders the cells
        version=GRID_VERSION,
    ),
)


class FashionGrids(Dataset[tuple[Tensor, Tensor]]):
    """Training/evaluation mosaics: ``len(split) // 4`` per epoch, ``(1 x 64 x 64, labels 4)``.

    With ``augment`` the grouping, offsets and mirrors are re-drawn every epoch
    (:meth:`set_epoch`); without it they are drawn once from ``seed`` (fixed offsets).
    """

    def __init__(
        self,
        split: str,
        seed: int = 0,
        augment: bool = True,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.split, self.seed, self.augment = split, int(seed), augment
        self.items, self.pool = load_fashion_mnist(split, root)
        self.class_names = FASHION_CLASSES
        self.epoch = 0
        self._draw()

    def _draw(self) -> None:
        epoch = self.epoch if self.augment else 0
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 7_919)
        self.labels, self.index = sample_grid(self.pool, len(self.pool) // CELLS, g)
        self.params = _offsets(len(self.labels), g, CANVAS, self.augment)

    def set_epoch(self, epoch: int) -> None:
        """Re-draw the mosaics for ``epoch`` (no effect when ``augment=False``)."""
        self.epoch = int(epoch)
        self._draw()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, Tensor]]:
        idx = torch.as_tensor(indices, dtype=torch.int64)
        p = {k: v[idx] for k, v in self.params.items()}
        images = render_grid(self.items, self.index[idx], p, CANVAS)
        return [(images[i], self.labels[j]) for i, j in enumerate(indices)]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.__getitems__([index])[0]


def fashion_grids(
    split: str, seed: int = 0, augment: bool = True, root: str | os.PathLike[str] | None = None
) -> FashionGrids:
    """2 x 2 mosaics of a Fashion-MNIST split for training (``augment``) or evaluation."""
    return FashionGrids(split, seed=seed, augment=augment, root=root)
