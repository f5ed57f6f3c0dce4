"""Reshape transforms: turn a target layer's raw output into a B x C x h x w feature map.

A transform is any callable ``reshape(raw_output) -> B x C x h x w`` (as pytorch-grad-cam's
``reshape_transform``). Methods that re-run the model from modified activations (ablationcam,
finercam) also need its inverse, given as an attribute
``reshape.inverse(grid, original_raw_output) -> raw_output``.
:func:`camwall.tokens.token_grid` builds such a pair for vision-transformer tokens.
A transform whose grid channel k comes from one raw channel alone may instead give
``reshape.ablate(original_raw_output, channels, value) -> raw_output`` (ablationcam sets the
raw channel, :class:`FpnGrid`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from camwall.errors import CamwallError

__all__ = ["FpnGrid", "ReshapeTransform", "fpn_ablate", "inverse_of"]

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


class FpnGrid:
    """A feature pyramid's dict of levels (each B x C_l x h_l x w_l) as one feature map:
    ``cat_l interpolate(|A_l|, size)`` along channels, bilinear (align_corners=False), at the
    size of level ``size_key`` (default: the last level, ``'pool'`` for torchvision's FPN
    backbones). The same as pytorch-grad-cam's ``fasterrcnn_reshape_transform`` (which always
    takes ``'pool'``). Gradients of the levels are mapped the same way (as grad-cam does for
    tensors). :meth:`ablate` lets ablationcam set a level's channel itself (grad-cam's
    ``AblationLayerFasterRCNN`` sets it to -1000: ``ablation_value=-1000``).
    """

    def __init__(self, size_key: str | None = None) -> None:
        self.size_key = size_key

    def __call__(self, levels: Mapping[str, Tensor]) -> Tensor:
        if not isinstance(levels, Mapping) or not levels:
            raise CamwallError(
                f"FpnGrid maps a dict of feature-pyramid levels, got {type(levels).__name__}."
            )
        key = self.size_key if self.size_key is not None else list(levels)[-1]
        if key not in levels:
            raise CamwallError(f"FpnGrid(size_key={key!r}): the levels are {list(levels)}.")
        size = levels[key].shape[-2:]
        return torch.cat(
            [F.interpolate(v.abs(), size, mode="bilinear") for v in levels.values()], dim=1
        )

    def ablate(self, levels: Mapping[str, Tensor], channels: Tensor, value: float) -> Any:
        """:func:`fpn_ablate`."""
        return fpn_ablate(levels, channels, value)


def fpn_ablate(levels: Mapping[str, Tensor], channels: Tensor, value: float) -> Any:
    """Copies of N rows of levels with grid channel ``channels[i]`` of row i set to ``value``:
    grid channel k is channel ``k - o_l`` of level l, where ``o_l`` is the number of channels
    of the levels before l (in the dict's order)."""
    out: OrderedDict[str, Tensor] = OrderedDict()
    offset = 0
    rows = torch.arange(channels.shape[0], device=channels.device)
    for key, level in levels.items():
        width = level.shape[1]
        copy = level.clone()
        mine = (channels >= offset) & (channels < offset + width)
        copy[rows[mine], channels[mine] - offset] = value
        out[key] = copy
        offset += width
    return out
