"""Validation of what comes from files and command lines: integers, shapes, state dicts.

Every check raises :class:`~camwall.errors.CamwallError` naming where the value came from
(``where``: a file and key, or an argument) and what is expected.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from camwall.errors import CamwallError
from camwall.walls._modules import WalledLinear

__all__ = [
    "MAX_CLASSES",
    "check_finite_state",
    "check_wall_zeros",
    "class_count",
    "input_shape_of",
    "positive_int",
]

MAX_CLASSES = 100_000
"""The most outputs a model may be built with: ImageNet-21k has 21,843 classes; 10^8 would
allocate a head of billions of weights (e.g. 64 x 10^8 for fashion-vgg, 26 GB)."""


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def positive_int(value: Any, where: str) -> int:
    """``value`` if it is an integer >= 1 (not a bool), else a CamwallError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise CamwallError(f"{where} must be a positive integer, got {_shown(value)}.")
    return int(value)


def class_count(value: Any, where: str) -> int:
    """``value`` if it is an integer in ``1 .. MAX_CLASSES``, else a CamwallError."""
    count = positive_int(value, where)
    if count > MAX_CLASSES:
        raise CamwallError(
            f"{where} is {count:,}; at most {MAX_CLASSES:,} classes are supported (the "
            "classifier head would not fit in memory)."
        )
    return count


def input_shape_of(value: Any, where: str) -> tuple[int, int, int]:
    """``(C, H, W)`` from a 3-element sequence of positive integers (e.g. a JSON list)."""
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise CamwallError(
            f"{where} must be [C, H, W] (three positive integers), got {_shown(value)}."
        )
    c, h, w = (positive_int(v, f"{where} {value!r}: each entry") for v in value)
    return c, h, w


def check_finite_state(state: Mapping[str, Tensor], source: str) -> None:
    """Refuse a state dict holding NaN or Inf in a floating-point tensor.

    Raises:
        CamwallError: ``"{source}: features.0.weight has 1 NaN and 0 Inf values ..."`` for the
        first such tensor (and how many tensors are affected).
    """
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if not bad:
        return
    first = state[bad[0]]
    nan, inf = int(torch.isnan(first).sum()), int(torch.isinf(first).sum())
    more = f" ({len(bad)} tensors are affected)" if len(bad) > 1 else ""
    raise CamwallError(
        f"{source}: {bad[0]} has {nan} NaN and {inf} Inf values{more}; the weights are "
        "corrupt (e.g. the training diverged). Use an earlier checkpoint or retrain."
    )


def check_wall_zeros(model: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Refuse a state dict whose walled weights (of ``model``'s :class:`WalledLinear` layers,
    under ``model``'s names) are not exactly 0, or that a layer's ``camwall_check_state(state,
    prefix)`` finds wrong (a walled ViT's attention masks). Weights of the wrong shape are
    skipped (the strict load reports them).
    """
    for name, m in model.named_modules():
        check = getattr(m, "camwall_check_state", None)  # a layer that checks its own wall
        problem = check(state, f"{name}." if name else "") if callable(check) else None
        if problem:
            raise CamwallError(f"{source}: {problem}; refusing to load it.")
        if not isinstance(m, WalledLinear):
            continue
        w = state.get(f"{name}.weight" if name else "weight")
        if w is None or tuple(w.shape) != tuple(m.weight.shape):
            continue
        bad, worst = m.walled_stats(w)
        if bad:
            raise CamwallError(
                f"{source}: the wall of layer {name!r} is broken: {bad} weights that must be "
                f"exactly 0 are not (max |w| = {worst:.3g}). The file was modified, trained "
                "without enforce_walls, or holds another model; refusing to load it."
            )
