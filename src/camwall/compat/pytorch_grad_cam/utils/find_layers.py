"""Finding and replacing submodules (grad-cam's helpers; they walk ``module._modules``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

__all__ = [
    "find_layer_predicate_recursive",
    "find_layer_types_recursive",
    "replace_all_layer_type_recursive",
    "replace_layer_recursive",
]


def replace_layer_recursive(model: nn.Module, old_layer: Any, new_layer: Any) -> bool:
    """Replace the first child equal to ``old_layer`` (depth first); whether one was found."""
    for name, layer in model._modules.items():
        if layer == old_layer:
            model._modules[name] = new_layer
            return True
        if layer is not None and replace_layer_recursive(layer, old_layer, new_layer):
            return True
    return False


def replace_all_layer_type_recursive(model: nn.Module, old_layer_type: Any, new_layer: Any) -> None:
    """Replace every descendant of type ``old_layer_type`` by (the same) ``new_layer``."""
    for name, layer in model._modules.items():
        if isinstance(layer, old_layer_type):
            model._modules[name] = new_layer
        if layer is not None:
            replace_all_layer_type_recursive(layer, old_layer_type, new_layer)


def find_layer_predicate_recursive(model: nn.Module, predicate: Callable[[Any], bool]) -> list:
    """Every descendant (pre-order) for which ``predicate`` holds."""
    found = []
    for layer in model._modules.values():
        if predicate(layer):
            found.append(layer)
        if layer is not None:
            found.extend(find_layer_predicate_recursive(layer, predicate))
    return found


def find_layer_types_recursive(model: nn.Module, layer_types: Any) -> list:
    """Every descendant whose exact type is in ``layer_types``."""
    return find_layer_predicate_recursive(model, lambda layer: type(layer) in layer_types)
