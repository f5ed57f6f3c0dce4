"""Reshape transforms: turn a target layer's raw output into a B x C x h x w feature map.

A transform is any callable ``reshape(raw_output) -> B x C x h x w`` (as pytorch-grad-cam's
``reshape_transform``). Methods that re-run the model from modified activations (ablationcam,
finercam) also need its inverse, given as an attribute
``reshape.inverse(grid, original_raw_output) -> raw_output``.
:func:`camwall.tokens.token_grid` builds such a pair for vision-transformer tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from camwall.errors import CamwallError

__all__ = ["ReshapeTransform", "inverse_of"]

#: ``reshape(raw_output) -> B x C x h x w`` (optionally with an ``inverse`` attribute).
ReshapeTransform = Callable[[Any], Tensor]


def inverse_of(reshape: Any, method: str) -> Callable[[Tensor, Tensor], Tensor]:
    """``reshape.inverse``, or a CamwallError naming ``method`` and the fix."""
    inverse = getattr(reshape, "inverse", None)
    if not callable(inverse):
        raise CamwallError(
            f"{method} re-runs the model from modified target-layer activations, which needs "
            f"the inverse of reshape_transform: give it an attribute inverse(grid, "
            f"original_raw_output) -> raw output, or use camwall.cams.token_grid(...) for "
            f"transformer tokens."
        )
    return inverse
