"""grad-cam's ablation layers: which channels to ablate and how.

:class:`camwall.compat.pytorch_grad_cam.AblationCAM` reads only their type (camwall's engine
ablates to ``ablation_value`` 0 and re-runs the model's tail itself). Used directly, they behave
as grad-cam's: ``set_next_batch`` repeats one image's activations, ``__call__`` ablates channel
``indices[i]`` of copy i, to 0 when the batch's minimum is 0 and to ``min - 1e7`` otherwise.
:func:`engine_ablation_options` gives the engine options that stand for a layer.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from camwall.compat.pytorch_grad_cam.utils.svd_on_activations import get_2d_projection
from camwall.errors import CamwallError

__all__ = [
    "AblationLayer",
    "AblationLayerFasterRCNN",
    "AblationLayerVit",
    "engine_ablation_options",
]

#: grad-cam's offset below the minimum for layers without an exact zero.
ABLATION_OFFSET = 1e7
#: The value grad-cam's AblationLayerFasterRCNN gives an ablated FPN channel.
FPN_ABLATION_VALUE = -1000.0


def _ablate(output: Tensor, indices: Any) -> Tensor:
    """Copy i gets channel ``indices[i]`` (dimension 1) set to 0, or to ``min - 1e7``."""
    for i in range(output.size(0)):
        low = torch.min(output)
        output[i, indices[i], :] = 0 if low == 0 else low - ABLATION_OFFSET
    return output


class AblationLayer(nn.Module):
    """Ablation of CNN channels (B x K x h x w activations)."""

    indices: np.ndarray
    activations: Any

    def objectiveness_mask_from_svd(self, activations: np.ndarray, threshold: float = 0.01):
        """Positions where the min-max scaled ``|first principal component|`` exceeds
        ``threshold`` (K x h x w -> h x w bool)."""
        projection = np.abs(get_2d_projection(activations[None, :])[0])
        projection = projection - projection.min()
        return projection / projection.max() > threshold

    def activations_to_be_ablated(
        self, activations: np.ndarray, ratio_channels_to_ablate: float = 1.0
    ) -> np.ndarray:
        """All channels, or (ratio < 1) the channels overlapping the SVD mask most and least."""
        if ratio_channels_to_ablate == 1.0:
            self.indices = np.arange(activations.shape[0], dtype=np.int32)
            return self.indices
        mask = self.objectiveness_mask_from_svd(activations)
        flat = np.abs(activations).reshape(activations.shape[0], -1)
        flat = flat - flat.min(axis=1, keepdims=True)
        flat = flat / flat.max(axis=1, keepdims=True)
        scores = np.asarray(
            (flat * mask.reshape(1, -1)).sum(axis=1) / flat.sum(axis=1), dtype=np.float32
        )
        order = list(np.argsort(scores))
        n = int(len(order) * ratio_channels_to_ablate)
        self.indices = np.asarray(order[::-1][:n] + order[:n], dtype=np.int32)
        return self.indices

    def set_next_batch(
        self, input_batch_index: int, activations: Tensor, num_channels_to_ablate: int
    ) -> None:
        """Repeat image ``input_batch_index``'s activations ``num_channels_to_ablate`` times."""
        one = activations[input_batch_index].clone().unsqueeze(0)
        self.activations = one.repeat(num_channels_to_ablate, *[1] * (one.dim() - 1))

    def __call__(self, x: Any) -> Any:
        return _ablate(self.activations, self.indices)


class AblationLayerVit(AblationLayer):
    """Ablation of transformer token channels (B x T x C: the last dimension, every token)."""

    def __call__(self, x: Any) -> Any:
        last = self.activations.dim() - 1
        return _ablate(self.activations.transpose(1, last), self.indices).transpose(last, 1)


class AblationLayerFasterRCNN(AblationLayer):
    """Ablation of a Faster R-CNN FPN's dict of levels (``'0'``-``'3'``, ``'pool'``; 256
    channels each): channel ``indices[i]`` of level ``indices[i] // 256`` is set to -1000."""

    def set_next_batch(
        self, input_batch_index: int, activations: Any, num_channels_to_ablate: int
    ) -> None:
        self.activations = OrderedDict(
            (
                key,
                value[input_batch_index]
                .clone()
                .unsqueeze(0)
                .repeat(num_channels_to_ablate, 1, 1, 1),
            )
            for key, value in activations.items()
        )

    def __call__(self, x: Any) -> Any:
        levels = ["0", "1", "2", "3", "pool"]
        for i in range(self.activations["pool"].size(0)):
            level, channel = divmod(int(self.indices[i]), 256)
            self.activations[levels[level]][i, channel, :, :] = -1000
        return self.activations


def engine_ablation_options(layer: nn.Module, reshape_transform: Any) -> dict[str, Any]:
    """The engine options of AblationCAM for grad-cam's ``ablation_layer``: none for
    :class:`AblationLayer` / :class:`AblationLayerVit`; for :class:`AblationLayerFasterRCNN`
    ``ablation_value=-1000`` set in the FPN levels themselves, which needs a
    ``reshape_transform`` with ``ablate`` (``fasterrcnn_reshape_transform``,
    :class:`camwall.cams.FpnGrid`)."""
    if not isinstance(layer, AblationLayerFasterRCNN):
        return {}
    if not callable(getattr(reshape_transform, "ablate", None)):
        raise CamwallError(
            "AblationCAM with AblationLayerFasterRCNN ablates the FPN's levels: pass "
            "reshape_transform=fasterrcnn_reshape_transform (from "
            "camwall.compat.pytorch_grad_cam.utils.reshape_transforms) or camwall.cams.FpnGrid()."
        )
    return {"ablation_value": FPN_ABLATION_VALUE}
