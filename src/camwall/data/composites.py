"""Embedded composite datasets from the Fashion-MNIST test split: the analogues of the paper's
STACK-MIX and STACK-GEN, at 64 x 64 grayscale.

* ``fashion-stackmix``: two *different* test items ``x1, x2`` of the same class, each scaled to
  the whole canvas; rows ``< split_row`` come from ``x1``, rows ``>= split_row`` from ``x2``
  (the paper's cutmix-style STACK-MIX).
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
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from camwall import __version__
from camwall.data.canvas import place_items
from camwall.data.canvases import CANVAS, Layout
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

RenderFn = Callable[[list[dict[str, Any]], Tensor, int], Tensor]


@dataclass(frozen=True)
class CompositeBuilder:
    """A registered composite dataset: ``builder(n=100, seed=0, size=64, root=None, **kw)``.

    Attributes:
        name: registry name.
        description: one line for ``--help`` and the docs.
        sample: ``(labels, idx1, idx2, generator, size, kw) -> sources`` (one dict per image).
        render_fn: ``(sources, test_items, size) -> N x 1 x size x size`` images.
    """

    name: str
    description: str
    sample: Callable[..., list[dict[str, Any]]]
    render_fn: RenderFn

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


def _sample_stackmix(
    labels: Tensor, idx1: Tensor, idx2: Tensor, g: torch.Generator, size: int, kw: dict[str, Any]
) -> list[dict[str, Any]]:
    split_row = kw.pop("split_row", None)
    if kw:
        raise CamwallError(f"fashion-stackmix: unknown option(s) {sorted(kw)}; known: split_row.")
    split_row = size // 2 if split_row is None else int(split_row)
    if not 0 < split_row < size:
        raise CamwallError(f"split_row must be in 1..{size - 1}, got {split_row}.")
    return [
        {
            "label": int(c),
            "class": FASHION_CLASSES[int(c)],
            "x1": int(a),
            "x2": int(b),
            "split_row": split_row,
            "size": size,
        }
        for c, a, b in zip(labels, idx1, idx2)
    ]


def _render_stackmix(sources: list[dict[str, Any]], items: Tensor, size: int) -> Tensor:
    n = len(sources)
    idx = [src["x1"] for src in sources] + [src["x2"] for src in sources]
    full = torch.full((2 * n,), size, dtype=torch.int64)
    zero = torch.zeros(2 * n, dtype=torch.int64)
    both = place_items(items[idx], full, zero, zero, canvas=size)
    rows = torch.arange(size).view(1, 1, size, 1)
    split = torch.tensor([int(src["split_row"]) for src in sources]).view(n, 1, 1, 1)
    return torch.where(rows < split, both[:n], both[n:])


def _sample_stackpair(
    labels: Tensor, idx1: Tensor, idx2: Tensor, g: torch.Generator, size: int, kw: dict[str, Any]
) -> list[dict[str, Any]]:
    lower_top = kw.pop("lower_top", None)
    if kw:
        raise CamwallError(f"fashion-stackpair: unknown option(s) {sorted(kw)}; known: lower_top.")
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
    out = []
    for i in range(n):
        out.append(
            {
                "label": int(labels[i]),
                "class": FASHION_CLASSES[int(labels[i])],
                "upper": {
                    "index": int(idx1[i]),
                    **{k: _scale(int(up[k][i]), size) for k in ("size", "top", "left")},
                },
                "lower": {
                    "index": int(idx2[i]),
                    **{k: _scale(int(lo[k][i]), size) for k in ("size", "top", "left")},
                },
                "lower_top": _scale(lower.top[0], size),
                "size": size,
            }
        )
    return out


def _render_stackpair(sources: list[dict[str, Any]], items: Tensor, size: int) -> Tensor:
    n = len(sources)
    parts = [src["upper"] for src in sources] + [src["lower"] for src in sources]

    def col(key: str) -> Tensor:
        return torch.tensor([p[key] for p in parts], dtype=torch.int64)

    both = place_items(items[col("index")], col("size"), col("top"), col("left"), canvas=size)
    return torch.maximum(both[:n], both[n:])


DATASETS: Registry[CompositeBuilder] = Registry("dataset")
"""Composite dataset builders by name; ``DATASETS.get(name)(n=100, seed=0)``."""

DATASETS.add(
    CompositeBuilder(
        "fashion-stackmix",
        "STACK-MIX: top rows of one test item over the bottom rows of another of the same class",
        _sample_stackmix,
        _render_stackmix,
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
