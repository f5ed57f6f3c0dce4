"""Models for the compat tests: a tiny CNN, random-weight torchvision resnet18, a tiny ViT,
and a tiny segmentation net; small inputs so that running grad-cam beside camwall stays cheap."""

from __future__ import annotations

import pytest
import torch
import torchvision
from compat_models import randomize_bn, tiny_cnn
from torch import nn


@pytest.fixture
def cnn() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(tiny_cnn(), 1)


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.resnet18(weights=None, num_classes=10), 2)


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    """A tiny ViT (image 32, patch 8: a 4 x 4 grid) with a random head and random LayerNorm
    affine parameters.

    torchvision initializes the ViT head with zeros: every logit is 0, so gradients are 0 and
    ScoreCAM's weights uniform; the maps are then all zero (trivially equal) or rounding noise
    (ScoreCAM: max diff 1.0 seen). With a random head: <= 6e-6 (ScoreCAM), <= 1e-6 (others).
    """
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=5,
    ).eval()
    g = torch.Generator().manual_seed(4)
    for m in model.modules():
        if isinstance(m, nn.LayerNorm):
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.5)
    model.heads.head.weight.data.copy_(torch.randn(model.heads.head.weight.shape, generator=g))
    return model
