"""Single-item Fashion-MNIST canvases (1 x 64 x 64) for training and evaluating the small models.

The walled small models see only the top of a 64 x 64 canvas: their dead zone is a bottom band
of rows (``fashion-vgg``: rows 39..63, ``fashion-resnet``: rows 37..63; see ``docs/walls.md``).
So single items are placed in the *upper* part:

* item side ``size`` uniform in ``28..36`` pixels (scale 1.0 .. 1.29 of the 28-pixel original);
* top row ``top`` uniform in ``0..4``, so the item's last row ``top + size - 1`` is at most 39
  and 33 on average: the whole item is visible to the walled models, except at worst its last
  three rows (which are mostly black background in Fashion-MNIST);
* horizontally centred, shifted by ``dx`` uniform in ``-6..6`` (clamped to the canvas);
* with ``augment=True`` each item is mirrored left-right with probability 1/2, and all draws are
  redone for each epoch (:meth:`FashionCanvases.set_epoch`).

With ``augment=False`` (evaluation) the same placement distribution is drawn once from ``seed``
(so the evaluation set is fixed and reproducible) and nothing is mirrored.

Draws depend only on ``(seed, epoch, split)``, never on batch order or worker count.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import Dataset

from camwall.data.canvas import place_items
from camwall.data.fashion import FASHION_CLASSES, load_fashion_mnist

__all__ = ["CANVAS", "TRAIN_LAYOUT", "FashionCanvases", "Layout", "fashion_canvases"]

CANVAS = 64
"""Side of the embedded canvases, in pixels."""


@dataclass(frozen=True)
class Layout:
    """A placement distribution for items on a ``CANVAS x CANVAS`` canvas (pixels, inclusive).

    Attributes:
        size: (min, max) side of the scaled item.
        top: (min, max) row of its top edge; ``None`` for max means ``CANVAS - size``.
        dx: maximal horizontal shift from the centre (uniform in ``-dx..dx``).
        flip_p: probability of a left-right mirror.
    """

    size: tuple[int, int] = (28, 36)
    top: tuple[int, int | None] = (0, 4)
    dx: int = 6
    flip_p: float = 0.5

    def draw(self, n: int, generator: torch.Generator, flip: bool = True) -> dict[str, Tensor]:
        """Draw ``n`` placements; returns int64 tensors ``size, top, left`` and bool ``flip``.

        The draws always consume the generator in the same order (size, top, dx, flip), so a
        placement does not depend on ``flip``.
        """
        lo, hi = self.size
        size = torch.randint(lo, hi + 1, (n,), generator=generator)
        t_lo, t_hi = self.top
        top_max = CANVAS - size if t_hi is None else torch.full((n,), t_hi, dtype=torch.int64)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        span = (top_max - t_lo + 1).clamp(min=1)
        top = t_lo + torch.minimum((u * span).floor().to(torch.int64), span - 1)
        shift = torch.randint(-self.dx, self.dx + 1, (n,), generator=generator)
        left = ((CANVAS - size) // 2 + shift).clamp(min=0)
        left = torch.minimum(left, (CANVAS - size).clamp(min=0))
        coin = torch.rand(n, generator=generator) < self.flip_p
        return {"size": size, "top": top, "left": left, "flip": coin & flip}


TRAIN_LAYOUT = Layout()
"""Placement of single items for training and evaluation canvases."""


def _seed_for(seed: int, epoch: int, split: str) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + (0 if split == "train" else 104_729)) % (2**62)


class FashionCanvases(Dataset[tuple[Tensor, int]]):
    """Fashion-MNIST items placed on 1 x 64 x 64 canvases (see the module docstring).

    Use it with a ``DataLoader``: ``__getitems__`` renders a whole batch in one call. Or call
    :meth:`batch` directly, which also renders on a chosen device.

    Args:
        split: ``"train"`` or ``"test"``.
        seed: seed of the placement draws.
        augment: re-draw placements every epoch and mirror at random (training); ``False``
            draws once from ``seed`` and never mirrors (evaluation).
        root: Fashion-MNIST folder (see :func:`load_fashion_mnist`).
        layout: the placement distribution.
    """

    def __init__(
        self,
        split: str,
        seed: int = 0,
        augment: bool = True,
        root: str | os.PathLike[str] | None = None,
        layout: Layout = TRAIN_LAYOUT,
    ) -> None:
        self.split = split
        self.seed = seed
        self.augment = augment
        self.layout = layout
        self.items, self.labels = load_fashion_mnist(split, root)
        self.class_names = FASHION_CLASSES
        self.epoch = 0
        self._params: dict[str, Tensor] = {}
        self._draw()

    def _draw(self) -> None:
        epoch = self.epoch if self.augment else 0
        g = torch.Generator().manual_seed(_seed_for(self.seed, epoch, self.split))
        self._params = self.layout.draw(len(self.labels), g, flip=self.augment)

    def set_epoch(self, epoch: int) -> None:
        """Re-draw the placements for ``epoch`` (no effect on draws when ``augment=False``)."""
        self.epoch = int(epoch)
        self._draw()

    @property
    def params(self) -> dict[str, Tensor]:
        """The current placements: int64 ``size, top, left`` and bool ``flip``, each ``N``."""
        return self._params

    def __len__(self) -> int:
        return len(self.labels)

    def batch(
        self, indices: Tensor | Sequence[int], device: torch.device | str | None = None
    ) -> tuple[Tensor, Tensor]:
        """Render the canvases of ``indices``.

        Returns:
            ``(images, labels)``: float32 ``B x 1 x 64 x 64`` in [0, 1] and int64 ``B``, on
            ``device`` (default: CPU).
        """
        idx = torch.as_tensor(indices, dtype=torch.int64).cpu()
        p = {k: v[idx] for k, v in self._params.items()}
        items = self.items[idx]
        if device is not None:
            items = items.to(device)
        images = place_items(items, p["size"], p["top"], p["left"], p["flip"], canvas=CANVAS)
        return images, self.labels[idx].to(images.device)

    def __getitems__(self, indices: list[int]) -> list[tuple[Tensor, int]]:
        images, labels = self.batch(indices)
        return [(images[i], int(labels[i])) for i in range(len(indices))]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        images, labels = self.batch([index])
        return images[0], int(labels[0])

    def tensors(self, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """All canvases at once: float32 ``N x 1 x 64 x 64`` (16 KiB per item) and labels."""
        chunks = [
            self.batch(torch.arange(s, min(s + 4096, len(self))), device)
            for s in range(0, len(self), 4096)
        ]
        return torch.cat([c[0] for c in chunks]), torch.cat([c[1] for c in chunks])


def fashion_canvases(
    split: str,
    seed: int = 0,
    augment: bool = True,
    root: str | os.PathLike[str] | None = None,
) -> FashionCanvases:
    """Single-item canvases of a Fashion-MNIST split; see :class:`FashionCanvases`.

    Training: ``fashion_canvases("train", seed, augment=True)`` and ``set_epoch(e)`` each epoch.
    Evaluation: ``fashion_canvases("test", seed=0, augment=False)`` (fixed placements, no flips).
    """
    return FashionCanvases(split, seed=seed, augment=augment, root=root)
