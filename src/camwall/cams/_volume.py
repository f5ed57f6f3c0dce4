"""Volumetric maps (3-D convolutions): the resize pytorch-grad-cam 1.5.7 uses for them.

grad-cam's ``scale_cam_image`` resizes a d x h x w map with ``scipy.ndimage.zoom`` (cubic
B-spline, ``order=3``, ``grid_mode=False``, ``mode="constant"``). Along each axis that is a
linear map ``f -> M f`` from n samples to m samples:

* prefilter: spline coefficients ``c = B^-1 f`` with ``B`` tridiagonal ``(1, 4, 1) / 6`` and
  mirror boundaries (``c_-1 = c_1``, ``c_n = c_(n-2)``);
* evaluation at ``t_i = i (n - 1) / (m - 1)``: ``sum_j c_j beta3(t_i - j)`` over the four
  nearest ``j``, mirrored at the edges.

The three axis matrices are applied in turn (the spline is a tensor product), in float64.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["resize_volume", "spline_zoom_matrix"]


def _mirror(j: Tensor, n: int) -> Tensor:
    """Mirror indices into ``0 .. n-1`` (whole-sample symmetric, as scipy's ``mirror``)."""
    if n == 1:
        return torch.zeros_like(j)
    period = 2 * (n - 1)
    j = j.remainder(period)
    return torch.where(j >= n, period - j, j)


def _beta3(t: Tensor) -> Tensor:
    """The cubic B-spline kernel."""
    t = t.abs()
    near = (4 - 6 * t**2 + 3 * t**3) / 6
    far = (2 - t).clamp_min(0) ** 3 / 6
    return torch.where(t < 1, near, far)


@functools.lru_cache(maxsize=64)
def spline_zoom_matrix(n: int, m: int) -> Tensor:
    """The m x n float64 matrix of scipy's order-3 ``zoom`` along one axis (n -> m samples)."""
    eye = torch.eye(n, dtype=torch.float64)
    if n == 1:
        return torch.ones(m, 1, dtype=torch.float64)
    band = torch.zeros(n, n, dtype=torch.float64)
    idx = torch.arange(n)
    band[idx, idx] = 4 / 6
    for j in (idx - 1, idx + 1):
        band.index_put_((idx, _mirror(j, n)), torch.full((n,), 1 / 6, dtype=torch.float64), True)
    coeffs = torch.linalg.solve(band, eye)  # n x n: samples -> spline coefficients
    t = torch.arange(m, dtype=torch.float64) * ((n - 1) / (m - 1) if m > 1 else 0.0)
    evaluate = torch.zeros(m, n, dtype=torch.float64)
    base = t.floor().long()
    for offset in (-1, 0, 1, 2):
        j = base + offset
        weight = _beta3(t - j.double())
        evaluate.index_put_((torch.arange(m), _mirror(j, n)), weight, accumulate=True)
    return evaluate @ coeffs


def resize_volume(maps: Tensor, size: tuple[int, ...]) -> Tensor:
    """B x d x h x w maps to B x D x H x W as ``scipy.ndimage.zoom(order=3)``, float32 out."""
    out = maps.double()
    for axis, target in enumerate(size, start=1):
        matrix = spline_zoom_matrix(int(out.shape[axis]), int(target)).to(out.device)
        out = torch.movedim(torch.tensordot(matrix, out, dims=([1], [axis])), 0, axis)
    return out.float()
