"""Shared post-processing of CAMs: ReLU, per-image min-max normalization, bilinear resize.

The order follows pytorch-grad-cam 1.5.7 (see ``docs/cam-methods.md``)::

    C -> ReLU -> N -> resize to H x W (bilinear, align_corners=False) -> clamp(0) -> N

with ``N(c) = (c - min c) / (1e-7 + max(c - min c))`` per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from camwall.cams._volume import resize_volume

__all__ = ["combine_layers", "finalize_maps", "normalize_maps", "scale_layer"]

_EPS = 1e-7


def normalize_maps(maps: Tensor) -> Tensor:
    """Per-image min-max normalization ``(c - min) / (1e-7 + max(c - min))``.

    Args:
        maps: B x H x W float tensor.

    Returns:
        B x H x W tensor in [0, 1]; a constant map becomes all zeros (never NaN).
    """
    flat = maps.flatten(1)
    shifted = flat - flat.amin(dim=1, keepdim=True)
    scaled = shifted / (_EPS + shifted.amax(dim=1, keepdim=True))
    return scaled.view_as(maps)


def finalize_maps(raw: Tensor, size: tuple[int, int]) -> Tensor:
    """Turn a method's raw low-resolution map into the final B x H x W map in [0, 1].

    Args:
        raw: B x h x w map before the ReLU (any float dtype; computed in float32).
        size: ``(H, W)`` of the model input.

    Returns:
        B x H x W float32 tensor in [0, 1] on ``raw.device``.
    """
    cam = normalize_maps(raw.float().clamp_min(0))
    cam = F.interpolate(
        cam[:, None], size=size, mode="bilinear", align_corners=False, antialias=False
    )[:, 0]
    return normalize_maps(cam.clamp_min(0))


def scale_layer(raw: Tensor, size: tuple[int, ...]) -> Tensor:
    """One layer's map at the input size: ``up(N(ReLU(raw)))`` (not yet normalized again).

    Args:
        raw: B x h x w map before the ReLU (or B x d x h x w for a 3-D layer).
        size: ``(H, W)`` (or ``(D, H, W)``: resized as grad-cam's ``scipy.ndimage.zoom``,
            cubic spline, see :mod:`camwall.cams._volume`).
    """
    cam = normalize_maps(raw.float().clamp_min(0))
    if cam.dim() == 4:
        return resize_volume(cam, size)
    return F.interpolate(
        cam[:, None], size=size, mode="bilinear", align_corners=False, antialias=False
    )[:, 0]


def combine_layers(raws: list[Tensor], size: tuple[int, ...]) -> Tensor:
    """Aggregate target layers as pytorch-grad-cam: ``N(mean_l max(up(N(ReLU(raw_l))), 0))``.

    Args:
        raws: one B x h_l x w_l (or B x d_l x h_l x w_l) raw map per layer.
        size: ``(H, W)`` (or ``(D, H, W)``) of the input.

    Returns:
        B x H x W float32 in [0, 1]; one layer gives exactly :func:`finalize_maps`.
    """
    scaled = [scale_layer(raw, size).clamp_min(0) for raw in raws]
    if len(scaled) == 1:
        return normalize_maps(scaled[0])
    return normalize_maps(torch.stack(scaled).mean(dim=0))
