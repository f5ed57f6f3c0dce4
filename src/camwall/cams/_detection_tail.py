"""The part of a torchvision two-stage detector after its backbone, as a tail.

torch.fx cannot trace ``GeneralizedRCNN.forward`` (it loops over the input images), so the
graph split of :mod:`camwall.cams._tail` never reaches a Faster / Mask / Keypoint R-CNN, and
AblationCAM on ``model.backbone`` (pytorch-grad-cam's detection recipe) re-ran the whole model,
backbone included, for every ablated batch. That forward is, in eval mode::

    sizes = [img.shape[-2:] for img in x]          # before the layer: captured per image
    images, _ = transform(x)                       # an ImageList (resized, padded batch)
    features = backbone(images.tensors)            # the target layer
    proposals, _ = rpn(images, features)           # the tail
    detections, _ = roi_heads(features, proposals, images.image_sizes)
    return transform.postprocess(detections, images.image_sizes, sizes)

so ``tail(features, images, sizes)`` runs the same modules on the same values, and the
captured ``(images, sizes)`` are taken by row (the images' tensor rows and size entries).
Only for ``GeneralizedRCNN`` subclasses that keep its ``forward`` and for the layer
``"backbone"`` (the module whose output is the feature dict).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["detection_tail_parts"]


def detection_tail_parts(model: nn.Module, layer_name: str) -> tuple[Any, Any, Any] | None:
    """``(fn, prefix, take)`` for a torchvision two-stage detector's backbone, else ``None``."""
    try:
        from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    if layer_name != "backbone" or not isinstance(model, GeneralizedRCNN):
        return None
    if type(model).forward is not GeneralizedRCNN.forward or "forward" in model.__dict__:
        return None
    return _tail_fn(model), _prefix_fn(model), _take


def _tail_fn(model: Any) -> Any:
    def tail(features: Any, images: Any, sizes: list[tuple[int, int]]) -> Any:
        """Detections of the images whose backbone output is ``features`` (eval mode)."""
        if isinstance(features, torch.Tensor):
            features = OrderedDict([("0", features)])
        proposals, _ = model.rpn(images, features)
        detections, _ = model.roi_heads(features, proposals, images.image_sizes)
        return model.transform.postprocess(detections, images.image_sizes, sizes)

    return tail


def _prefix_fn(model: Any) -> Any:
    def prefix(x: torch.Tensor) -> tuple[Any, list[tuple[int, int]]]:
        """``(images, sizes)`` of the B inputs ``x``: the transform's ImageList and the
        original sizes, as the model's forward computes them."""
        sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in x]
        images, _ = model.transform(list(x))
        return images, sizes

    return prefix


def _take(captured: tuple[Any, ...], rows: Sequence[int] | torch.Tensor | None) -> tuple[Any, ...]:
    """The ImageList rows and size entries of the images ``rows`` (``None``: all)."""
    if rows is None:
        return captured
    from torchvision.models.detection.image_list import ImageList

    images, sizes = captured
    index = [int(r) for r in rows]
    picked = ImageList(images.tensors[index], [images.image_sizes[r] for r in index])
    return picked, [sizes[r] for r in index]
