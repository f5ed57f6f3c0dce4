"""Confidence change when the (normalized) input is multiplied by the CAM."""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import Tensor

from camwall.compat.pytorch_grad_cam.metrics.perturbation_confidence import (
    PerturbationConfidenceMetric,
)

__all__ = [
    "CamMultImageConfidenceChange",
    "DropInConfidence",
    "IncreaseInConfidence",
    "multiply_tensor_with_cam",
]


def multiply_tensor_with_cam(input_tensor: Tensor, cam: Tensor) -> Tensor:
    """``x * cam`` (C x H x W times H x W)."""
    return input_tensor * cam


class CamMultImageConfidenceChange(PerturbationConfidenceMetric):
    """``target(model(x * cam)) - target(model(x))`` per image."""

    def __init__(self) -> None:
        super().__init__(multiply_tensor_with_cam)


class DropInConfidence(CamMultImageConfidenceChange):
    """``max(0, -(score change))``: how much the score drops."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return np.maximum(-super().__call__(*args, **kwargs), 0)


class IncreaseInConfidence(CamMultImageConfidenceChange):
    """``1.0`` where the score increases, else ``0.0``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return np.asarray(super().__call__(*args, **kwargs) > 0, dtype=np.float32)
