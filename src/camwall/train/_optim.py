"""The optimizer and the learning-rate schedule of a :class:`TrainConfig`."""

from __future__ import annotations

import torch
from torch import nn

from camwall.train._config import TrainConfig

__all__ = ["make_optimizer", "make_scheduler"]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """``AdamW(lr, betas=(momentum, 0.999), weight_decay)`` or ``SGD(lr, momentum,
    weight_decay)`` over the trainable parameters (``config.optimizer``)."""
    params = [p for p in model.parameters() if p.requires_grad]
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
            max_lr=config.lr,
            total_steps=total,
            pct_start=min(0.5, max(0.25, 1.5 / total)),
            cycle_momentum=config.optimizer == "sgd",
            base_momentum=0.85 * config.momentum,
            max_momentum=config.momentum,
        )
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
