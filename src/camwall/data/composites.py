"""Embedded composite datasets from the Fashion-MNIST test split: the analogues of the paper's
STACK-MIX and STACK-GEN, at 64 x 64 grayscale.

* ``fashion-stackmix`` (version 2): two *different* test items ``x1, x2`` of the same class;
  rows ``< split_row`` (default 36) come from a canvas with ``x1`` placed like a training item
  (side 28..36, top row 0..4, shift -6..6), rows ``>= split_row`` from a canvas with ``x2`` at
  the same scale but lower (top row 28..64 - side), so the lower part of ``x2`` fills the dead
  zone (the paper's cutmix-style STACK-MIX: a top slice of ``x1`` over a bottom slice of ``x2``).
  Version 1 (camwall 0.1.0) scaled both items to the whole canvas and split at row 32.
* ``fashion-stackpair``: two whole items of the same class stacked: the upper one placed like a
  training item (side 28..32, top row 0..3, so it ends by row 34), the lower one (side 22..26)
  with its top row in ``lower_top..64 - side`` (``lower_top`` = 38 by default), i.e. inside
  ``fashion-resnet``'s dead zone (rows 37..63) and, but for row 38, ``fashion-vgg``'s (39..63).

Classes are spread evenly: ``n`` images hold ``n // 10`` or ``n // 10 + 1`` images of each class.
No test item is used twice in one dataset. Everything comes from one ``torch.Generator`` seeded
with ``seed``, so a build is byte-identical for a seed, and every image can be rebuilt from its
``sources`` entry with ``DATASETS.get(name).render(source)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from camwall import __version__
from camwall.data.canvas import place_items
from camwall.data.canvases import CANVAS, TRAIN_LAYOUT, Layout
from camwall.data.fashion import FASHION_CLASSES, load_fashion_mnist
from camwall.errors import CamwallError
from camwall.registry import Registry

__all__ = [
    "DATASETS",
    "LOWER_LAYOUT",
    "UPPER_LAYOUT",
    "CompositeBuilder",
    "Composites",
    "build_dataset",
]


@dataclass(frozen=True)
class Composites:
    """A built composite dataset.

    Attributes:
        images: float32 ``N x 1 x H x W`` in [0, 1].
        labels: int64 ``N`` (indices into ``meta["class_names"]``).
        sources: one dict per image with the source test indices and placement parameters.
        meta: dataset name, seed, size, split row, class names, versions.
    """

    images: Tensor
    labels: Tensor
    sources: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return list(self.meta.get("class_names", []))

    def __len__(self) -> int:
        return len(self.labels)


UPPER_LAYOUT = Layout(size=(28, 32), top=(0, 3), dx=4, flip_p=0.0)
"""Upper item of ``fashion-stackpair``: like a training item, ending by row 34."""
LOWER_LAYOUT = Layout(size=(22, 26), top=(38, None), dx=4, flip_p=0.0)
"""Lower item of ``fashion-stackpair``: top row from 38 down to the canvas bottom."""
MIX_TOP_LAYOUT = replace(TRAIN_LAYOUT, flip_p=0.0)
"""``x1`` of ``fashion-stackmix``: placed exactly like an evaluation canvas's item."""
MIX_BOTTOM_LAYOUT = replace(TRAIN_LAYOUT, top=(28, None), flip_p=0.0)
"""``x2`` of ``fashion-stackmix``: training scale, top row from 28 down to the canvas bottom."""
MIX_SPLIT_ROW = 36
"""Default ``split_row`` of ``fashion-stackmix`` on the 64-pixel canvas."""

RenderFn = Callable[[list[dict[str, Any]], Tensor, int], Tensor]


@dataclass(frozen=True)
class CompositeBuilder:
    """A registered composite dataset: ``builder(n=100, seed=0, size=64, root=None, **kw)``.

    Attributes:
        name: registry name.
        description: one line for ``--help`` and the docs.
        sample: ``(labels, idx1, idx2, generator, size, kw) -> sources`` (one dict per image).
        render_fn: ``(sources, test_items, size) -> N x 1 x size x size`` images.
        version: the design's version, recorded as ``meta["version"]``; bumped whenever the
            images of a ``(n, seed)`` change, so stores of different versions are not mixed.
    """

    name: str
    description: str
    sample: Callable[..., list[dict[str, Any]]]
    render_fn: RenderFn
    version: int = 1

    def build(
        self,
        n: int = 100,
        seed: int = 0,
        size: int = CANVAS,
        root: str | os.PathLike[str] | None = None,
        **kw: Any,
    ) -> Composites:
        """Build ``n`` composites from the Fashion-MNIST test split (see the module docstring).

        Returns:
            :class:`Composites` with ``images`` float32 ``n x 1 x size x size``.
        """
        if n < 1:
            raise CamwallError(f"n must be at least 1, got {n}.")
        if size < 8:
            raise CamwallError(f"size must be at least 8 pixels, got {size}.")
        items, pool = load_fashion_mnist("test", root)
        g = torch.Generator().manual_seed(int(seed))
        labels, idx1, idx2 = _sample_pairs(pool, n, g)
        sources = self.sample(labels, idx1, idx2, g, size, kw)
        images = self.render_fn(sources, items, size)
        meta = {
            "dataset": self.name,
            "version": self.version,
            "n": n,
            "seed": int(seed),
            "size": size,
            "source_split": "test",
            "class_names": list(FASHION_CLASSES),
            "camwall": __version__,
            "torch": torch.__version__,
            **{k: v for k, v in sources[0].items() if k in ("split_row", "lower_top")},
        }
        return Composites(images=images, labels=labels, sources=sources, meta=meta)

    __call__ = build

    def render(self, source: dict[str, Any], root: str | os.PathLike[str] | None = None) -> Tensor:
        """Rebuild one image from its ``sources`` entry: float32 ``1 x size x size``."""
        items, _ = load_fashion_mnist("test", root)
        return self.render_fn([source], items, int(source["size"]))[0]


def _sample_pairs(pool: Tensor, n: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Even class spread and two different, never reused test indices per image."""
    k = len(FASHION_CLASSES)
    labels = (torch.arange(n) % k)[torch.randperm(n, generator=g)]
    idx1 = torch.empty(n, dtype=torch.int64)
    idx2 = torch.empty(n, dtype=torch.int64)
    for c in range(k):
        where = (labels == c).nonzero().flatten()
        members = (pool == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        if 2 * len(where) > len(members):
            raise CamwallError(
                f"n={n} needs {2 * len(where)} test items of class {FASHION_CLASSES[c]!r} but "
                f"the test split has {len(members)}; use n <= {k * (len(members) // 2)}."
            )
        idx1[where] = members[0 : 2 * len(where) : 2]
        idx2[where] = members[1 : 2 * len(where) : 2]
    return labels, idx1, idx2


def _scale(v: int, size: int) -> int:
    return round(v * size / CANVAS)


def _check_options(name: str, kw: dict[str, Any], known: str) -> Any:
    value = kw.pop(known, None)
    if kw:
        raise CamwallError(f"{name}: unknown option(s) {sorted(kw)}; known: {known}.")
    return value


def _placement(index: int, p: dict[str, Tensor], i: int, size: int) -> dict[str, int]:
    return {"index": index, **{k: _scale(int(p[k][i]), size) for k in ("size", "top", "left")}}


def _sample_stackmix(
    labels: Tensor, idx1: Tensor, idx2: Tensor, g: torch.Generator, size: int, kw: dict[str, Any]
) -> list[dict[str, Any]]:
    split_row = _check_options("fashion-stackmix", kw, "split_row")
    split_row = _scale(MIX_SPLIT_ROW, size) if split_row is None else int(split_row)
    if not 0 < split_row < size:
        raise CamwallError(f"split_row must be in 1..{size - 1}, got {split_row}.")
    n = len(labels)
    top = MIX_TOP_LAYOUT.draw(n, g, flip=False)
    bottom = MIX_BOTTOM_LAYOUT.draw(n, g, flip=False)
    return [
        {
            "label": int(labels[i]),
            "class": FASHION_CLASSES[int(labels[i])],
            "x1": _placement(int(idx1[i]), top, i, size),
            "x2": _placement(int(idx2[i]), bottom, i, size),
            "split_row": split_row,
            "size": size,
        }
        for i in range(n)
    ]


def _render_placed(parts: list[dict[str, Any]], items: Tensor, size: int) -> Tensor:
    """Render placed items (dicts with ``index, size, top, left``): ``len x 1 x size x size``."""

    def col(key: str) -> Tensor:
        return torch.tensor([p[key] for p in parts], dtype=torch.int64)

    return place_items(items[col("index")], col("size"), col("top"), col("left"), canvas=size)


def _render_stackmix(sources: list[dict[str, Any]], items: Tensor, size: int) -> Tensor:
    n = len(sources)
    both = _render_placed([s["x1"] for s in sources] + [s["x2"] for s in sources], items, size)
    rows = torch.arange(size).view(1, 1, size, 1)
    split = torch.tensor([int(src["split_row"]) for src in sources]).view(n, 1, 1, 1)
    return torch.where(rows < split, both[:n], both[n:])


def _sample_stackpair(
    labels: Tensor, idx1: Tensor, idx2: Tensor, g: torch.Generator, size: int, kw: dict[str, Any]
) -> list[dict[str, Any]]:
    lower_top = _check_options("fashion-stackpair", kw, "lower_top")
    lower = LOWER_LAYOUT
    if lower_top is not None:
        lower_top = int(lower_top)
        if not 0 <= lower_top <= CANVAS - lower.size[0]:
            raise CamwallError(
                f"lower_top must be in 0..{CANVAS - lower.size[0]} (64-pixel canvas), "
                f"got {lower_top}."
            )
        lower = Layout(size=lower.size, top=(lower_top, None), dx=lower.dx, flip_p=0.0)
    n = len(labels)
    up = UPPER_LAYOUT.draw(n, g, flip=False)
    lo = lower.draw(n, g, flip=False)
    return [
        {
            "label": int(labels[i]),
            "class": FASHION_CLASSES[int(labels[i])],
            "upper": _placement(int(idx1[i]), up, i, size),
            "lower": _placement(int(idx2[i]), lo, i, size),
            "lower_top": _scale(lower.top[0], size),
            "size": size,
        }
        for i in range(n)
    ]


def _render_stackpair(sources: list[dict[str, Any]], items: Tensor, size: int) -> Tensor:
    n = len(sources)
    parts = [src["upper"] for src in sources] + [src["lower"] for src in sources]
    both = _render_placed(parts, items, size)
    return torch.maximum(both[:n], both[n:])


DATASETS: Registry[CompositeBuilder] = Registry("dataset")
"""Composite dataset builders by name; ``DATASETS.get(name)(n=100, seed=0)``."""

DATASETS.add(
    CompositeBuilder(
        "fashion-stackmix",
        "STACK-MIX: top rows of a training-like item over the bottom rows of a lower one of the "
        "same class",
        _sample_stackmix,
        _render_stackmix,
        version=2,
    ),
)
DATASETS.add(
    CompositeBuilder(
        "fashion-stackpair",
        "STACK-GEN analogue: one whole item above, another of the same class in the dead zone",
        _sample_stackpair,
        _render_stackpair,
    ),
)


def build_dataset(
    name: str,
    n: int = 100,
    seed: int = 0,
    size: int = CANVAS,
    root: str | os.PathLike[str] | None = None,
    **kw: Any,
) -> Composites:
    """``DATASETS.get(name).build(n, seed, size, root, **kw)``."""
    return DATASETS.get(name).build(n=n, seed=seed, size=size, root=root, **kw)
