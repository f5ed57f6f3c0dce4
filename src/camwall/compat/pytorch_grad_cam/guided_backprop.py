"""Guided backpropagation (Springenberg et al., 2015): the input gradient through ReLUs that
pass only positive gradients where the input was positive (grad-cam's
``GuidedBackpropReLUModel``).

Hygiene: the model's ``nn.ReLU`` modules are swapped for guided ones only during the call and
the originals are put back in ``finally`` (grad-cam puts back new ``nn.ReLU()`` modules, which
loses ``inplace``); train/eval modes are restored; the gradient comes from
``torch.autograd.grad`` on a copy of the input, so neither the input nor any parameter gets a
``.grad``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["GuidedBackpropReLU", "GuidedBackpropReLUModel", "GuidedBackpropReLUasModule"]


class GuidedBackpropReLU(torch.autograd.Function):
    """``y = x * [x > 0]``; backward ``g_in = g_out * [x > 0] * [g_out > 0]``."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x * (x > 0).type_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad_output * (x > 0).type_as(grad_output) * (grad_output > 0).type_as(grad_output)


class GuidedBackpropReLUasModule(nn.Module):
    """:class:`GuidedBackpropReLU` as a module."""

    def forward(self, x: Tensor) -> Tensor:
        return GuidedBackpropReLU.apply(x)


def _relu_slots(module: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """``(parent, name, relu)`` for every ``nn.ReLU`` child in the module tree."""
    slots: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in module.modules():
        for name, child in parent._modules.items():
            if isinstance(child, nn.ReLU):
                slots.append((parent, name, child))
    return slots


class GuidedBackpropReLUModel:
    """``gb(input_img, target_category=None)`` -> H x W x C float32 numpy guided gradient of
    ``output[0, target_category]`` (default: its argmax) for image 0 of the batch."""

    def __init__(self, model: nn.Module, device: Any = None) -> None:
        self.model = model
        if device is None:
            param = next(model.parameters(), None)
            self.device = torch.device("cpu") if param is None else param.device
        else:
            self.device = torch.device(device)
            self.model = self.model.to(self.device)

    def forward(self, input_img: Tensor) -> Tensor:
        return self.model(input_img)

    def __call__(self, input_img: Tensor, target_category: int | None = None) -> np.ndarray:
        slots = _relu_slots(self.model)
        modes = [(m, m.training) for m in self.model.modules()]
        guided = GuidedBackpropReLUasModule()
        try:
            self.model.eval()
            for parent, name, _ in slots:
                parent._modules[name] = guided
            with torch.enable_grad():
                x = input_img.detach().to(self.device).requires_grad_(True)
                output = self.forward(x)
                if target_category is None:
                    target_category = int(output[0].argmax())
                (grad,) = torch.autograd.grad(output[0, target_category], x)
        finally:
            for parent, name, relu in slots:
                parent._modules[name] = relu
            for m, mode in modes:
                m.training = mode
        return grad[0].permute(1, 2, 0).cpu().numpy()
