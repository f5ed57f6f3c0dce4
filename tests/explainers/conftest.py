"""Fixtures for the explainer tests: fashion-vgg (random weights) and a tiny walled GAP CNN."""

from __future__ import annotations

import pytest
import torch
from explainer_refs import tiny_walled

from camwall.walls import create_model, dead_zone


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny():
    """``(model, x 3 x 1 x 16 x 16, dead zone 16 x 16)``."""
    model = tiny_walled()
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    return model, x, dead_zone(model, (1, 16, 16))


@pytest.fixture(scope="module")
def vgg_model():
    torch.manual_seed(0)
    return create_model("fashion-vgg")


@pytest.fixture
def vgg(vgg_model):
    """``(fashion-vgg with random weights, x 2 x 1 x 64 x 64, dead zone 64 x 64)``."""
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    return vgg_model, x, dead_zone(vgg_model, (1, 64, 64))
