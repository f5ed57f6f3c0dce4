"""Confidence change of the model's target score when the input is perturbed by the CAM.

``PerturbationConfidenceMetric(perturbation)(input_tensor, cams, targets, model)`` returns,
per image, ``target(model(perturbation(x_b, cam_b))) - target(model(x_b))`` (float32, B) or,
with ``return_diff=False``, the perturbed score alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from camwall.errors import CamwallError

__all__ = [
    "AveragerAcrossThresholds",
    "PerturbationConfidenceMetric",
    "RemoveLeastRelevantFirst",
    "RemoveMostRelevantFirst",
]

Targets = Sequence[Callable[[Tensor], Tensor]]


def target_scores(model: nn.Module, x: Tensor, targets: Targets) -> np.ndarray:
    """``target_b(model(x)[b])`` for each image, float32 numpy (no gradients)."""
    with torch.no_grad():
        outputs = model(x)
    return np.asarray([t(o).cpu().numpy() for t, o in zip(targets, outputs)], dtype=np.float32)


class PerturbationConfidenceMetric:
    """Score change after ``perturbation(image C x H x W, cam H x W) -> image``."""

    def __init__(self, perturbation: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.perturbation = perturbation

    def __call__(
        self,
        input_tensor: Tensor,
        cams: np.ndarray,
        targets: Targets,
        model: nn.Module,
        return_visualization: bool = False,
        return_diff: bool = True,
    ) -> Any:
        perturbed = torch.cat(
            [
                self.perturbation(input_tensor[i].cpu(), torch.from_numpy(cams[i]))
                .to(input_tensor.device)
                .unsqueeze(0)
                for i in range(input_tensor.size(0))
            ]
        )
        result = target_scores(model, perturbed, targets)
        if return_diff:
            result = result - target_scores(model, input_tensor, targets)
        return (result, perturbed) if return_visualization else result


def _otsu_keep(mask: Tensor) -> np.ndarray:
    """OpenCV's ``THRESH_BINARY + THRESH_OTSU`` on ``uint8(mask * 255)``: 255 above the Otsu
    threshold, else 0 (float32)."""
    try:
        import cv2
    except ImportError:
        raise CamwallError(
            "percentile='auto' uses OpenCV's Otsu threshold: pip install opencv-python-headless."
        ) from None
    _, binary = cv2.threshold(
        np.asarray(mask.cpu().numpy() * 255).astype(np.uint8),
        0,
        255,
        cv2.THRESH_BINARY + cv2.THRESH_OTSU,
    )
    return np.asarray(binary, dtype=np.float32)


class RemoveMostRelevantFirst:
    """Keep the pixels whose CAM value is below the ``percentile``-th percentile (1), impute
    the others (0) with ``imputer(image, keep_mask)``. ``'auto'``: Otsu's threshold."""

    def __init__(self, percentile: Any, imputer: Callable[[Tensor, Tensor], Tensor]) -> None:
        self.percentile = percentile
        self.imputer = imputer

    def __call__(self, input_tensor: Tensor, mask: Tensor) -> Tensor:
        if self.percentile == "auto":
            keep = _otsu_keep(mask)
        else:
            threshold = np.percentile(mask.cpu().numpy(), self.percentile)
            keep = np.asarray(mask.cpu().numpy() < threshold, dtype=np.float32)
        return self.imputer(input_tensor, torch.from_numpy(keep).to(mask.device))


class RemoveLeastRelevantFirst(RemoveMostRelevantFirst):
    """:class:`RemoveMostRelevantFirst` on ``1 - cam``."""

    def __call__(self, input_tensor: Tensor, mask: Tensor) -> Tensor:
        return super().__call__(input_tensor, 1 - mask)


class AveragerAcrossThresholds:
    """The mean over ``percentiles`` of ``imputer(percentile)(input, cams, targets, model)``."""

    def __init__(
        self,
        imputer: Callable[[Any], Any],
        percentiles: Sequence[float] = (10, 20, 30, 40, 50, 60, 70, 80, 90),
    ) -> None:
        self.imputer = imputer
        self.percentiles = percentiles

    def __call__(
        self, input_tensor: Tensor, cams: np.ndarray, targets: Targets, model: nn.Module
    ) -> np.ndarray:
        scores = [self.imputer(p)(input_tensor, cams, targets, model) for p in self.percentiles]
        return np.mean(np.asarray(scores, dtype=np.float32), axis=0)
