"""grad-cam's target callables: each maps one image's model output to the score to explain.

They work with camwall's engine as they are (``compute_cams(..., targets=[...])``): the engine
calls a target on one output row (``num_classes``, or C x H x W for segmentation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

__all__ = [
    "BinaryClassifierOutputTarget",
    "ClassifierOutputReST",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputTarget",
    "FasterRCNNBoxScoreTarget",
    "FinerWeightedTarget",
    "RawScoresOutputTarget",
    "SemanticSegmentationTarget",
    "SoftmaxOutputTarget",
]


class ClassifierOutputTarget:
    """The raw score of ``category``: ``out[category]`` (a row) or ``out[:, category]``."""

    def __init__(self, category: Any) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        if model_output.dim() == 1:
            return model_output[self.category]
        return model_output[:, self.category]


class ClassifierOutputSoftmaxTarget(ClassifierOutputTarget):
    """The softmax probability of ``category`` (softmax over the last dimension)."""

    def __call__(self, model_output: Tensor) -> Tensor:
        return super().__call__(torch.softmax(model_output, dim=-1))


class ClassifierOutputReST(ClassifierOutputTarget):
    """ReST (https://arxiv.org/abs/2501.06261): ``y_c - cross_entropy(y, c)``, i.e. the raw
    score plus the log-softmax probability of ``category``."""

    def __call__(self, model_output: Tensor) -> Tensor:
        rows = model_output.unsqueeze(0) if model_output.dim() == 1 else model_output
        labels = torch.full((rows.shape[0],), int(self.category), device=rows.device)
        ce = F.cross_entropy(rows, labels, reduction="none")
        score = rows[:, self.category] - ce
        return score[0] if model_output.dim() == 1 else score


class BinaryClassifierOutputTarget:
    """A one-logit binary classifier: ``out`` for category 1, ``-out`` otherwise."""

    def __init__(self, category: Any) -> None:
        self.category = category

    def __call__(self, model_output: Tensor) -> Tensor:
        return model_output * (1 if self.category == 1 else -1)


class SoftmaxOutputTarget:
    """The softmax of the output (a vector: for the metrics, not for gradients)."""

    def __call__(self, model_output: Tensor) -> Tensor:
        return torch.softmax(model_output, dim=-1)


class RawScoresOutputTarget:
    """The output itself (a vector: for the metrics, not for gradients)."""

    def __call__(self, model_output: Tensor) -> Tensor:
        return model_output


class SemanticSegmentationTarget:
    """``sum_ij out[category, i, j] * mask[i, j]`` for one image's C x H x W output."""

    def __init__(self, category: int, mask: np.ndarray) -> None:
        self.category = category
        self.mask = torch.from_numpy(mask)

    def __call__(self, model_output: Tensor) -> Tensor:
        return (model_output[self.category, :, :] * self.mask.to(model_output.device)).sum()


class FasterRCNNBoxScoreTarget:
    """Detection: for each reference box ``r`` with its label, ``IoU(r, d) + score(d)`` of the
    detected box ``d = argmax_j IoU(r, d_j)`` (the first maximum) if that IoU exceeds
    ``iou_threshold`` and the labels agree; the sum over the reference boxes in their order (a
    1-element tensor on the outputs' device and dtype; 0 without detections).

    All ``M`` reference boxes are matched at once (one ``M x P`` IoU matrix for ``P``
    detections, the same elementwise values as grad-cam's one-row calls) and the terms summed
    in grad-cam's order (a running sum from 0, a miss adding an exact 0), so the score equals
    grad-cam's while an ablation pass that scores thousands of outputs calls ``box_iou`` once
    per output instead of ``M`` times.
    """

    def __init__(
        self, labels: Sequence[Any], bounding_boxes: Sequence[Any], iou_threshold: float = 0.5
    ) -> None:
        self.labels = labels
        self.bounding_boxes = bounding_boxes
        self.iou_threshold = iou_threshold
        self._refs: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def _references(self, like: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The ``M x 4`` reference boxes and their ``M`` labels on ``like``'s device (cached)."""
        key = (like.device, like.dtype)
        if key not in self._refs:
            boxes = [torch.as_tensor(np.asarray(b), dtype=like.dtype) for b in self.bounding_boxes]
            refs = torch.stack(boxes).reshape(-1, 4) if boxes else like.new_zeros(0, 4)
            wanted = torch.as_tensor(np.asarray(self.labels), dtype=labels.dtype).reshape(-1)
            self._refs[key] = (refs.to(like.device), wanted.to(like.device))
        return self._refs[key]

    def __call__(self, model_outputs: dict[str, Tensor]) -> Tensor:
        boxes, labels = model_outputs["boxes"], model_outputs["labels"]
        total = torch.zeros(1, device=boxes.device, dtype=boxes.dtype)
        if len(boxes) == 0 or len(self.bounding_boxes) == 0:
            return total
        refs, wanted = self._references(boxes, labels)
        ious = torchvision.ops.box_iou(refs, boxes)  # M x P
        best = ious.argmax(dim=1)
        iou = ious.gather(1, best[:, None])[:, 0]
        hit = (iou > self.iou_threshold) & (labels[best] == wanted)
        terms = torch.where(hit, iou + model_outputs["scores"][best], 0.0)
        for term in terms.unbind(0):  # grad-cam's float order; a miss adds an exact 0
            total = total + term
        return total


class FinerWeightedTarget:
    """Finer-CAM's target: ``sum_j p_j (y_m - alpha y_j) / (sum_j p_j + 1e-9)`` over the
    comparison categories j, ``p = softmax(y)``, m the main category."""

    def __init__(
        self, main_category: int, comparison_categories: Sequence[int], alpha: float
    ) -> None:
        self.main_category = main_category
        self.comparison_categories = comparison_categories
        self.alpha = alpha

    def __call__(self, model_output: Tensor) -> Tensor:
        prob = torch.softmax(model_output, dim=-1)
        main = model_output[..., self.main_category]
        num: Any = 0
        den: Any = 0
        for j in self.comparison_categories:
            num = num + prob[..., j] * (main - self.alpha * model_output[..., j])
            den = den + prob[..., j]
        return num / (den + 1e-9)
