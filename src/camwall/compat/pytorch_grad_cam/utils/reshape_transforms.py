"""Reshape transforms of grad-cam, each with the ``inverse`` camwall needs for ablation.

A transform maps a target layer's output to a B x C x h x w feature map;
``f.inverse(grid, original_output)`` maps a (modified) grid back, so that AblationCAM can
re-run the model from ablated token grids. ``fasterrcnn_reshape_transform.ablate`` sets an
FPN level's channel itself (:func:`camwall.cams._reshape.fpn_ablate`), as grad-cam's
``AblationLayerFasterRCNN``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from camwall.cams._reshape import fpn_ablate

__all__ = ["fasterrcnn_reshape_transform", "swinT_reshape_transform", "vit_reshape_transform"]


def fasterrcnn_reshape_transform(x: Any) -> Tensor:
    """An FPN's dict of levels -> ``|level|`` resized (bilinear) to the ``'pool'`` level's
    size, concatenated along channels."""
    size = x["pool"].size()[-2:]
    return torch.cat(
        [F.interpolate(torch.abs(v), size, mode="bilinear") for v in x.values()], dim=1
    )


def swinT_reshape_transform(tensor: Tensor, height: int = 7, width: int = 7) -> Tensor:
    """B x (h*w) x C (or B x h x w x C) Swin tokens -> B x C x h x w."""
    return tensor.reshape(tensor.size(0), height, width, tensor.size(-1)).permute(0, 3, 1, 2)


def _swin_inverse(grid: Tensor, original: Tensor) -> Tensor:
    return grid.permute(0, 2, 3, 1).reshape(original.shape).to(original.dtype)


def vit_reshape_transform(tensor: Tensor, height: int = 14, width: int = 14) -> Tensor:
    """B x (1 + h*w) x C ViT tokens -> B x C x h x w (the class token dropped)."""
    body = tensor[:, 1:, :]
    return body.reshape(tensor.size(0), height, width, tensor.size(2)).permute(0, 3, 1, 2)


def _vit_inverse(grid: Tensor, original: Tensor) -> Tensor:
    body = grid.flatten(2).transpose(1, 2)
    return torch.cat([original[:, :1, :].to(body.dtype), body], dim=1)


setattr(fasterrcnn_reshape_transform, "ablate", fpn_ablate)  # noqa: B010
setattr(swinT_reshape_transform, "inverse", _swin_inverse)  # noqa: B010
setattr(vit_reshape_transform, "inverse", _vit_inverse)  # noqa: B010
