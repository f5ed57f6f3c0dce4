"""Models and helpers shared by the compat tests (a module of its own: a `conftest` name
is shared by every test folder, so importing from it depends on the collection order)."""

from __future__ import annotations

import torch
from torch import nn


def tiny_cnn(classes: int = 6) -> nn.Sequential:
    """Conv-BN-ReLU x 2 and a GAP + Linear head; the target layer is ``model[5]`` (a ReLU)."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1, stride=2),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, classes),
    )


def randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    """Give BatchNorm layers non-trivial running statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


class TinySeg(nn.Module):
    """B x 3 x H x W -> B x 4 x H x W class scores (segmentation); target layer ``act``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, stride=2)
        self.act = nn.ReLU()
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.head(self.act(self.conv(x)))
        return nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear")


def vit_grid(tokens: torch.Tensor) -> torch.Tensor:
    """grad-cam's documented ViT transform for a 4 x 4 patch grid (class token dropped)."""
    return tokens[:, 1:, :].reshape(tokens.size(0), 4, 4, tokens.size(2)).permute(0, 3, 1, 2)
