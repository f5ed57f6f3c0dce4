"""pytorch-grad-cam's smoothing options: ``eigen_smooth`` and ``aug_smooth``.

* ``eigen_smooth``: the raw map is the first principal component of the weighted activations
  ``T_bk = w_bk A_bk`` (B x K x h x w) instead of their channel sum ``sum_k T_bk``
  (grad-cam's ``get_2d_projection``; camwall fixes the SVD sign so that the map correlates
  positively with the channel mean of ``T``, as for eigencam).
* ``aug_smooth``: test-time augmentation, the mean of the de-augmented final maps over the six
  transforms of grad-cam's default ``ttach`` pipeline: horizontal flip (no, yes) x
  multiplication of the input by (0.9, 1, 1.1). The mean is not normalized again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from camwall.cams._base import CamContext, CamMethod
from camwall.cams._eigen import first_component
from camwall.errors import CamwallError

__all__ = [
    "AUG_FACTORS",
    "SMOOTH_OPTIONS",
    "augmentations",
    "eigen_raw",
    "eigen_smoothable",
    "smooth_options",
]

#: The call options of this module and their defaults.
SMOOTH_OPTIONS: dict[str, bool] = {"eigen_smooth": False, "aug_smooth": False}
#: grad-cam's default ``tta.Multiply(factors=[0.9, 1, 1.1])``.
AUG_FACTORS = (0.9, 1.0, 1.1)


def smooth_options(options: dict[str, Any]) -> tuple[bool, bool]:
    """Pop ``eigen_smooth`` and ``aug_smooth`` from ``options`` (booleans, default False)."""
    found = []
    for name, default in SMOOTH_OPTIONS.items():
        value = options.pop(name, default)
        if not isinstance(value, bool):
            raise CamwallError(f"option {name} must be True or False, got {value!r}.")
        found.append(value)
    return found[0], found[1]


def eigen_smoothable(cls: type[CamMethod]) -> bool:
    """Whether the raw map is a channel sum of weighted activations (``weights``/``weighted``)."""
    return cls.weights is not CamMethod.weights or cls.weighted is not CamMethod.weighted


def eigen_raw(method: CamMethod, ctx: CamContext) -> Tensor:
    """The eigen-smoothed raw map: first principal component of ``method.weighted(ctx)``.

    Decompositions (eigencam, eigengradcam, kpcacam) already are one; their raw map is kept, as
    grad-cam ignores the flag for them. A method with its own ``eigen_raw(ctx)`` decides.
    """
    own = getattr(method, "eigen_raw", None)
    if callable(own):  # a method over a base method smooths as its base (finercam)
        return own(ctx)
    if not eigen_smoothable(type(method)):
        return method.raw_map(ctx)
    terms = method.weighted(ctx)
    return first_component(terms).to(terms.dtype)


def augmentations() -> Iterator[tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]]:
    """``(augment, deaugment)`` pairs in ttach's order: flip outer, factor inner."""
    for flip in (False, True):
        for factor in AUG_FACTORS:

            def augment(x: Tensor, flip: bool = flip, factor: float = factor) -> Tensor:
                x = torch.flip(x, dims=[-1]) if flip else x
                return x * factor

            def deaugment(maps: Tensor, flip: bool = flip) -> Tensor:
                return torch.flip(maps, dims=[-1]) if flip else maps

            yield augment, deaugment
