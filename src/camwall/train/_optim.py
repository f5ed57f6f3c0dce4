"""The optimizer and the learning-rate schedule of a :class:`TrainConfig`."""

from __future__ import annotations

import torch
from torch import nn

from camwall.train._config import TrainConfig

__all__ = ["make_optimizer", "make_scheduler"]


def head_modules(model: nn.Module) -> list[nn.Module]:
    """The head a wall cuts: the first ``WalledLinear`` and every ``nn.Linear`` after it in
    module order (``[]`` for a model without walled linear layers)."""
    from camwall.walls import WalledLinear

    linears: list[nn.Module] = [m for m in model.modules() if isinstance(m, nn.Linear)]
    first = next((i for i, m in enumerate(linears) if isinstance(m, WalledLinear)), None)
    return [] if first is None else linears[first:]


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """The trainable parameters as optimizer groups: one group at ``lr``, or, with
    ``head_lr_scale != 1``, the head's parameters (:func:`head_modules`) at
    ``lr * head_lr_scale`` and the rest at ``lr``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.head_lr_scale == 1.0:
        return [{"params": params, "lr": config.lr}]
    head = {id(p) for m in head_modules(model) for p in m.parameters()}
    groups = [
        {"params": [p for p in params if id(p) not in head], "lr": config.lr},
        {"params": [p for p in params if id(p) in head], "lr": config.lr * config.head_lr_scale},
    ]
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """``AdamW(lr, betas=(momentum, 0.999), weight_decay)`` or ``SGD(lr, momentum,
    weight_decay)`` over the trainable parameters (``config.optimizer``), in the groups of
    :func:`param_groups`."""
    params = param_groups(model, config)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=config.lr, betas=(config.momentum, 0.999), weight_decay=config.weight_decay
        )
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """``config.scheduler``: ``step`` (StepLR, stepped per epoch), ``onecycle`` (OneCycleLR over
    ``epochs * steps_per_epoch`` steps, stepped per step) or a constant rate."""
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=config.step_size, gamma=config.gamma
        )
    total = config.epochs * steps_per_epoch
    if config.scheduler == "onecycle" and total >= 3:
        # warm up over 25% of the steps (at least 1.5 steps, so that tiny runs work too)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total,
            pct_start=min(0.5, max(0.25, 1.5 / total)),
            cycle_momentum=config.optimizer == "sgd",
            base_momentum=0.85 * config.momentum,
            max_momentum=config.momentum,
        )
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
