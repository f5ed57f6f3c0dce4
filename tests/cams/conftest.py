"""Tiny CNNs for the CAM tests: small enough that the grad-cam comparisons stay fast."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import pytest
import torch
from torch import nn


class TwoConvNet(nn.Module):
    """Not a Sequential: ablationcam re-runs its torch.fx tail (``fc(mean + amax)``)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 7, 3, padding=1, stride=2)
        self.act2 = nn.ReLU()
        self.fc = nn.Linear(7, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.fc(a.mean(dim=(2, 3)) + a.amax(dim=(2, 3)))


class SkipNet(nn.Module):
    """A residual branch around the target layer ``act2``: the graph cannot be cut after it,
    so ablationcam must fall back to re-running the model with the layer's output replaced."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.act2 = nn.ReLU()
        self.fc = nn.Linear(6, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act1(self.conv1(x))
        return self.fc((self.act2(self.conv2(a)) + a).mean(dim=(2, 3)))


def flat_seq(h: int, w: int, classes: int = 5) -> nn.Sequential:
    """A plain Sequential; the target is its second ReLU, ``"4"``."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * (h // 2) * (w // 2), classes),
    )


def nested_seq(h: int, w: int, classes: int = 4) -> nn.Sequential:
    """A VGG-like nested Sequential; the target is ``"features.3"``."""
    features = nn.Sequential(
        nn.Conv2d(2, 5, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(5, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    classifier = nn.Sequential(
        nn.Flatten(), nn.Linear(6 * (h // 2) * (w // 2), 16), nn.ReLU(), nn.Linear(16, classes)
    )
    return nn.Sequential(OrderedDict(features=features, classifier=classifier))


# name -> (builder(h, w) -> model, target layer name, input channels)
TINY: dict[str, tuple[Callable[[int, int], nn.Module], str, int]] = {
    "flat": (flat_seq, "4", 3),
    "nested": (nested_seq, "features.3", 2),
    "custom": (lambda h, w: TwoConvNet(), "act2", 3),
    "skip": (lambda h, w: SkipNet(), "act2", 3),
}


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; on a shared 2-core machine they lose a lot."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_tiny() -> Callable[..., tuple[nn.Module, str, torch.Tensor]]:
    """``make_tiny(name, seed, batch, h, w) -> (model, layer_name, x)`` with seeded weights."""

    def make(
        name: str, seed: int = 0, batch: int = 2, h: int = 8, w: int = 12
    ) -> tuple[nn.Module, str, torch.Tensor]:
        builder, layer, channels = TINY[name]
        torch.manual_seed(seed)
        model = builder(h, w)
        x = torch.randn(batch, channels, h, w, generator=torch.Generator().manual_seed(seed + 1))
        return model, layer, x

    return make
