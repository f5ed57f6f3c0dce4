"""The biased layers of a model and their outputs during one pass (for fullgrad)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from camwall.errors import CamwallError

__all__ = ["bias_layers", "capture_outputs", "check_bias_calls", "effective_bias"]


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


@contextmanager
def capture_outputs(layers: list[nn.Module], store: list[Tensor]) -> Iterator[None]:
    """Record each layer's output and hand the model a copy, so that a following in-place op
    (``ReLU(inplace=True)``) leaves the recorded tensor, and its gradient, pre-activation.

    Only this thread's forwards are recorded: another thread's plain ``model(x)`` during the
    block passes untouched. Hooks exist only inside the block; no layers: nothing is registered.
    """
    thread = threading.get_ident()

    def hook(module: nn.Module, inputs: Any, output: Any) -> Any:
        if threading.get_ident() != thread:
            return None
        store.append(output)
        return output.clone()

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def check_bias_calls(model: nn.Module, layers: list[nn.Module], store: list[Tensor]) -> None:
    """Refuse a model whose biased layers did not each run exactly once."""
    if len(store) != len(layers):
        raise CamwallError(
            f"fullgrad needs every biased Conv2d/BatchNorm2d of {type(model).__name__} to run "
            f"exactly once per forward pass ({len(layers)} layers, {len(store)} calls)."
        )
