"""The biased layers of a model and their outputs during one pass (for fullgrad)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from camwall.errors import CamwallError

__all__ = [
    "BiasCall",
    "bias_layers",
    "capture_bias_gradients",
    "check_bias_calls",
    "effective_bias",
]


def bias_layers(model: nn.Module) -> list[nn.Module]:
    """Every ``nn.Conv2d`` / ``nn.BatchNorm2d`` (exact types) with a bias, in module order."""
    found: list[nn.Module] = []

    def walk(module: nn.Module) -> None:
        for child in module._modules.values():
            if child is None:
                continue
            if type(child) in (nn.Conv2d, nn.BatchNorm2d) and child.bias is not None:
                found.append(child)
            walk(child)

    walk(model)
    return found


def effective_bias(layer: nn.Module) -> Tensor:
    """The bias as the layer applies it, float32, detached.

    ``b`` for a convolution; ``b - mu * g / sqrt(var + eps)`` for a BatchNorm in eval mode.
    """
    if isinstance(layer, nn.BatchNorm2d):
        mean, var, weight = layer.running_mean, layer.running_var, layer.weight
        if mean is None or var is None or weight is None or layer.bias is None:
            raise CamwallError(
                "fullgrad needs BatchNorm2d layers with running statistics and an affine bias."
            )
        return (layer.bias - mean * weight / torch.sqrt(var + layer.eps)).detach().float()
    bias = layer.bias
    assert isinstance(bias, Tensor)
    return bias.detach().float()


@dataclass
class BiasCall:
    """One call of a biased layer during a recorded pass, and the gradient ``dy/dz`` that the
    following backward pass sends to its output ``z`` (``None``: ``z`` does not reach ``y``)."""

    layer: nn.Module
    grad: Tensor | None = None

    def keep(self, grad: Tensor) -> None:
        if self.grad is None:  # the first backward's; a second derivative's pass may follow
            self.grad = grad.detach()


@contextmanager
def capture_bias_gradients(layers: list[nn.Module], calls: list[BiasCall]) -> Iterator[None]:
    """Record each call of ``layers`` in ``calls`` and, by a tensor hook on its output, the
    gradient that reaches that output in the next backward pass.

    A hook registered before an in-place op on the output (``ReLU(inplace=True)``) receives the
    gradient of the output as the layer returned it (pre-activation), so nothing is copied.
    Only this thread's forwards are recorded: another thread's plain ``model(x)`` during the
    block passes untouched. Hooks exist only inside the block; no layers: nothing is registered.
    """
    thread = threading.get_ident()

    def hook(module: nn.Module, inputs: Any, output: Any) -> None:
        if threading.get_ident() != thread:
            return
        call = BiasCall(module)
        calls.append(call)
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(call.keep)

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def check_bias_calls(model: nn.Module, layers: list[nn.Module], calls: list[BiasCall]) -> None:
    """Refuse a model whose biased layers did not each run exactly once."""
    ran = {id(c.layer) for c in calls}
    if len(calls) != len(layers) or ran != {id(layer) for layer in layers}:
        raise CamwallError(
            f"fullgrad needs every biased Conv2d/BatchNorm2d of {type(model).__name__} to run "
            f"exactly once per forward pass ({len(layers)} layers, {len(calls)} calls)."
        )
