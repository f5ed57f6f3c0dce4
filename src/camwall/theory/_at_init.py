"""The companion notebook's at-initialization experiment, on Fashion-MNIST items.

A walled simple CNN with random ``N(0, 1)`` weights (``K = 256`` filters 2x2, max-pool 2x2,
``Linear(K * 14 * 14 -> 10)`` masked on the bottom 7 of the 14 pooled rows) reads 28x28 items
zero-padded to 29x29 (one zero row on top, one zero column on the right). Then:

- the dead input rows follow from the structure (:func:`camwall.walls.dead_zone`): pooled row
  ``p`` reads activation rows ``2p, 2p+1``, which read input rows ``2p .. 2p+k``. The last live
  pooled row 6 reaches padded row 14, so padded rows 15..28 (the item's bottom 14 rows, 14..27)
  are dead;
- zeroing them leaves the output bit-identical, while changing the last live row does not;
- GradCAM at the ReLU (autograd, ``alpha_v = GAP(dy/dB_v)``) is still positive below the wall.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from camwall.errors import CamwallError
from camwall.theory._gradcam import gradcam_autograd
from camwall.theory._model import SimpleCNN

__all__ = ["AtInitResult", "at_init_experiment", "pad_to_29"]

FILTERS = 256
KERNEL = 2
WALL_ROWS = tuple(range(7, 14))  # bottom 7 of the 14 pooled rows


def pad_to_29(items: Tensor) -> Tensor:
    """28x28 items (``N x 28 x 28``, uint8 0..255 or float) -> ``N x 1 x 29 x 29`` float in [0, 1].

    One zero row on top and one zero column on the right, as in the companion notebook.
    """
    if items.dim() != 3 or tuple(items.shape[1:]) != (28, 28):
        raise CamwallError(f"items have shape {tuple(items.shape)}; expected N x 28 x 28")
    x = items.to(torch.float32) / 255.0 if items.dtype == torch.uint8 else items.float()
    return F.pad(x, (0, 1, 1, 0))[:, None]


@dataclass(frozen=True)
class AtInitResult:
    """Outcome of :func:`at_init_experiment`.

    Attributes:
        images: padded inputs, ``N x 1 x 29 x 29`` float32 in [0, 1].
        indices: Fashion-MNIST test indices of the items.
        labels: their true classes, int64 ``N``.
        targets: the outputs explained (argmax of the random model), int64 ``N``.
        cams: GradCAM at the ReLU, ``N x 28 x 28`` (activation resolution, not normalized).
        dead_rows: padded input rows that no output depends on (from the structure).
        wall_row: first activation row the head never reads (``2 * min(wall_rows)`` = 14).
        outputs_identical: zeroing the dead rows left every output bit-identical.
        last_live_row_matters: changing the last live input row changed some output.
        mass_below_wall: per item, the share of the GradCAM map's sum on rows ``>= wall_row``.
        max_below_wall: per item, the largest GradCAM value on rows ``>= wall_row``.
        max_below_dead: per item, the largest GradCAM value on activation rows whose whole
            receptive field is dead.
        model: the random walled CNN (eval mode, on the CPU).
    """

    images: Tensor
    indices: tuple[int, ...]
    labels: Tensor
    targets: Tensor
    cams: Tensor
    dead_rows: tuple[int, ...]
    wall_row: int
    outputs_identical: bool
    last_live_row_matters: bool
    mass_below_wall: Tensor
    max_below_wall: Tensor
    max_below_dead: Tensor
    model: SimpleCNN


def _select(
    items: tuple[Tensor, Tensor] | None, indices: Sequence[int], root: str | None
) -> tuple[Tensor, Tensor, list[int]]:
    """The images, labels and checked indices of the items (the test split unless given)."""
    if items is None:
        from camwall.data import load_fashion_mnist

        items = load_fashion_mnist("test", root=root)
    all_images, all_labels = items
    idx = [int(i) for i in indices]
    if not idx or any(not 0 <= i < len(all_images) for i in idx):
        raise CamwallError(
            f"indices {idx} must be non-empty and within 0..{len(all_images) - 1} "
            "(Fashion-MNIST test items)"
        )
    return all_images, all_labels, idx


def _random_walled_cnn(filters: int, seed: int, device: torch.device) -> SimpleCNN:
    """The notebook's walled CNN with ``N(0, 1)`` weights drawn from ``seed``, in eval mode."""
    model = SimpleCNN(filters, KERNEL, (29, 29), outputs=10, wall_rows=WALL_ROWS).to(device)
    model.reset_gaussian_(1.0, torch.Generator().manual_seed(seed))
    return model.eval()


@torch.no_grad()
def _wall_checks(
    model: SimpleCNN, x: Tensor, dead: tuple[int, ...], seed: int
) -> tuple[bool, bool]:
    """Whether zeroing the ``dead`` rows keeps every output bit-identical, and whether
    redrawing the last live row (``U[0, 1)`` from ``seed + 1``) changes some output."""
    out = model(x)
    zeroed = x.clone()
    zeroed[:, :, list(dead), :] = 0
    identical = torch.equal(model(zeroed), out)
    live = [r for r in range(x.shape[-2]) if r not in dead]
    changed = x.clone()
    changed[:, :, max(live), :] = torch.rand(
        changed.shape[-1], generator=torch.Generator().manual_seed(seed + 1)
    ).to(x.device)
    return identical, not torch.equal(model(changed), out)


def at_init_experiment(
    indices: Sequence[int] = (0, 1, 2, 3, 4, 5),
    seed: int = 0,
    *,
    filters: int = FILTERS,
    root: str | None = None,
    items: tuple[Tensor, Tensor] | None = None,
    device: torch.device | str | None = None,
) -> AtInitResult:
    """Run the at-initialization experiment on Fashion-MNIST test items.

    Args:
        indices: test-set indices of the items to explain.
        seed: seed of the ``N(0, 1)`` weights.
        filters: ``K`` (256 in the notebook).
        root: Fashion-MNIST folder, passed to :func:`camwall.data.load_fashion_mnist`.
        items: ``(images uint8 N x 28 x 28, labels)`` to use instead of loading the test split.
        device: where to run (default CPU).

    Returns:
        :class:`AtInitResult`.
    """
    all_images, all_labels, idx = _select(items, indices, root)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    x = pad_to_29(all_images[idx]).to(dev)
    model = _random_walled_cnn(filters, seed, dev)
    dead = model.dead_input_rows()
    identical, matters = _wall_checks(model, x, dead, seed)
    res = gradcam_autograd(model, x)
    wall_row = 2 * min(WALL_ROWS)
    below = res.cam[:, wall_row:, :]
    first_blind = min(dead)  # activation row i reads input rows i..i+k-1; dead is a suffix
    return AtInitResult(
        images=x.cpu(),
        indices=tuple(idx),
        labels=all_labels[idx].clone(),
        targets=res.target.cpu(),
        cams=res.cam.detach().cpu(),
        dead_rows=dead,
        wall_row=wall_row,
        outputs_identical=identical,
        last_live_row_matters=matters,
        mass_below_wall=(below.sum(dim=(1, 2)) / res.cam.sum(dim=(1, 2))).cpu(),
        max_below_wall=below.amax(dim=(1, 2)).cpu(),
        max_below_dead=res.cam[:, first_blind:, :].amax(dim=(1, 2)).cpu(),
        model=model.cpu(),
    )
