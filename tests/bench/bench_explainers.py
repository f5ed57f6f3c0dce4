"""``py:`` explainers for the bench tests (importable as ``py:bench_explainers:NAME``)."""

from __future__ import annotations

import torch

CALLS = {"flaky": 0}


def grad(model, x, targets):
    """The input gradient of the target logit: ``B x C x H x W`` (as captum's Saliency)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        out[torch.arange(len(targets)), torch.tensor(targets)].sum().backward()
    return x.grad


grad.camwall_family = "gradient"


def wrong_shape(model, x, targets):
    return torch.zeros(x.shape[0], 3, 3)


def nan_map(model, x, targets):
    return torch.full((x.shape[0], x.shape[-2], x.shape[-1]), float("nan"))


def not_tensor(model, x, targets):
    return [[0.0]]


def wrong_device(model, x, targets):
    return torch.zeros(x.shape[0], x.shape[-2], x.shape[-1], device="meta")


def raises(model, x, targets):
    raise RuntimeError("boom inside the user's code")


def flaky(model, x, targets):
    """``grad`` except on the 2nd call, which returns NaN (reset ``CALLS["flaky"]`` first)."""
    CALLS["flaky"] += 1
    if CALLS["flaky"] == 2:
        return nan_map(model, x, targets)
    return grad(model, x, targets)
