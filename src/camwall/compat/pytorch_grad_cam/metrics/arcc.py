"""ARCC: the harmonic combination of Complexity, Coherency and ROAD (grad-cam's ``arcc``).

``ARCC = 3 / (1 / (coherency + 1e-8) + 1 / (1 - complexity + 1e-8) + 1 / (road' + 1e-8))`` with
``road' = clip(2 ROADCombined, 0, 1)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from camwall.compat.pytorch_grad_cam.metrics.road import ROADCombined

__all__ = ["ARCC", "Coherency", "Complexity", "batch_pearson_coherency"]

Targets = Sequence[Callable[[Tensor], Tensor]]


def batch_pearson_coherency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row Pearson correlation of two B x ... arrays (``1e-8`` guard on the std product)."""
    x = a.reshape(a.shape[0], -1)
    y = b.reshape(b.shape[0], -1)
    x = x - x.mean(axis=1, keepdims=True)
    y = y - y.mean(axis=1, keepdims=True)
    n = x.shape[1] - 1
    cov = (x * y).sum(axis=1) / n
    sx = np.sqrt((x**2).sum(axis=1) / n)
    sy = np.sqrt((y**2).sum(axis=1) / n)
    return cov / (sx * sy + 1e-8)


class Complexity:
    """The mean ``|cam|`` per image (the L1 norm over the number of pixels)."""

    def __call__(self, grayscale_cams: np.ndarray) -> np.ndarray:
        flat = grayscale_cams.reshape(grayscale_cams.shape[0], -1)
        return np.abs(flat).sum(axis=1) / flat.shape[1]


class Coherency:
    """``(pearson(cam(x * cam), cam) + 1) / 2`` per image, ``cam`` from ``base_method``."""

    def __call__(
        self,
        input_tensor: Tensor,
        grayscale_cams: np.ndarray,
        targets: Targets,
        model: nn.Module,
        base_method: Any,
    ) -> np.ndarray:
        masks = torch.from_numpy(grayscale_cams).unsqueeze(1).to(input_tensor.device)
        again = base_method(input_tensor=input_tensor * masks, targets=targets)
        return (batch_pearson_coherency(again, grayscale_cams) + 1) / 2


class ARCC:
    """ARCC of ``base_method``'s maps (a CAM object called as ``cam(input_tensor, targets)``)."""

    def __init__(self, base_method: Any, road_percentiles: Sequence[float] = (20, 40, 60, 80)):
        self.complexity = Complexity()
        self.coherency = Coherency()
        self.road = ROADCombined(percentiles=road_percentiles)
        self.base_method = base_method

    def __call__(
        self, input_tensor: Tensor, grayscale_cams: np.ndarray, targets: Targets, model: nn.Module
    ) -> np.ndarray:
        complexity = self.complexity(grayscale_cams)
        coherency = self.coherency(input_tensor, grayscale_cams, targets, model, self.base_method)
        road = (self.road(input_tensor, grayscale_cams, targets, model) * 2).clip(0, 1)
        inverse = 1 / (coherency + 1e-8) + 1 / ((1 - complexity) + 1e-8) + 1 / (road + 1e-8)
        return 3 * inverse ** (-1)
